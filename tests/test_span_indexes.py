"""The shared span indexes (SQLite, Redis) and the `span_index=` setting.

The Redis tests run against a real redis-server (tests/_redis.py) and fail when none can be had:
what matters is how the index behaves when Redis goes away and comes back.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from opentelemetry.trace import SpanContext, TraceFlags

import brixo_otel._internal as internal
from brixo_otel._correlation import _sqlite_index
from brixo_otel._correlation._codec import decode_entry, encode_entry
from brixo_otel._correlation._index import IndexedSpan, InMemorySpanIndex
from brixo_otel._correlation._index_url import span_index_from
from brixo_otel._correlation._redis_index import RedisSpanIndex, redacted_url
from brixo_otel._correlation._sqlite_index import SqliteSpanIndex
from brixo_otel._correlation._tiered import TieredSpanIndex
from brixo_otel._errors import ConfigurationError
from tests._redis import RedisServer
from tests._services import free_port, wait_for

REPO = Path(__file__).resolve().parent.parent

ATTRIBUTES = {
    "gen_ai.request.model": "gpt-4o-mini",
    "brixo.agent_version": "1.4.2",
    "retries": 2,
    "temperature": 0.2,
    "streamed": True,
    "tools": ["search", "calc"],
}


def span(n: int, flags: int = 1) -> SpanContext:
    return SpanContext(
        (0xABC << 100) + n, 0x1000 + n, is_remote=False, trace_flags=TraceFlags(flags)
    )


def assert_found(found: IndexedSpan | None, expected: SpanContext, attributes: object) -> None:
    assert found is not None
    got = found.span_context
    assert (got.trace_id, got.span_id, got.trace_flags) == (
        expected.trace_id,
        expected.span_id,
        expected.trace_flags,
    )
    assert got.is_remote
    assert got.is_valid
    assert dict(found.attributes) == attributes


def warnings_from(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "brixo_otel" and r.levelno == logging.WARNING]


@pytest.fixture
def sqlite_index(tmp_path: Path) -> Iterator[SqliteSpanIndex]:
    index = SqliteSpanIndex(tmp_path / "index.db")
    yield index
    index.close()


# -- encoding -----------------------------------------------------------------------------------


def test_entry_round_trip_keeps_ids_flags_and_attribute_types() -> None:
    found = decode_entry(encode_entry(span(1, flags=0), ATTRIBUTES))
    assert_found(found, span(1, flags=0), {**ATTRIBUTES, "tools": ("search", "calc")})
    assert type(found.attributes["retries"]) is int
    assert type(found.attributes["streamed"]) is bool


def test_entry_drops_attribute_values_that_cannot_travel() -> None:
    odd: dict[str, object] = {"ok": "yes", "mixed": [1, "a"], "bytes": b"x", "obj": object()}
    found = decode_entry(encode_entry(span(2), odd))  # type: ignore[arg-type]
    assert dict(found.attributes) == {"ok": "yes"}


# -- SQLite ---------------------------------------------------------------------------------------


def test_sqlite_round_trip_and_overwrite(sqlite_index: SqliteSpanIndex) -> None:
    assert sqlite_index.get("msg_1") is None
    sqlite_index.put("msg_1", span(1), ATTRIBUTES)
    assert_found(sqlite_index.get("msg_1"), span(1), {**ATTRIBUTES, "tools": ("search", "calc")})
    sqlite_index.put("msg_1", span(2), {})
    assert_found(sqlite_index.get("msg_1"), span(2), {})
    assert len(sqlite_index) == 1


def test_sqlite_odd_strings_never_raise(
    sqlite_index: SqliteSpanIndex, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="brixo_otel")
    sqlite_index.put("msg_\udc80", span(1), {})  # a lone surrogate: not storable as UTF-8
    assert sqlite_index.get("msg_\udc80") is None
    assert len(warnings_from(caplog)) == 1
    odd = {"note": "caf\u00e9 \U0001f44d \udc80", "tags": ["\x00", "\u2028"]}
    sqlite_index.put("msg_2", span(2), odd)
    assert_found(sqlite_index.get("msg_2"), span(2), {**odd, "tags": ("\x00", "\u2028")})


def test_sqlite_is_shared_by_two_index_objects(tmp_path: Path) -> None:
    writer = SqliteSpanIndex(tmp_path / "shared.db")
    reader = SqliteSpanIndex(tmp_path / "shared.db")
    try:
        writer.put("msg_1", span(1), {"a": "b"})
        assert_found(reader.get("msg_1"), span(1), {"a": "b"})
    finally:
        writer.close()
        reader.close()


def test_sqlite_entries_expire_and_are_purged_by_later_puts(tmp_path: Path) -> None:
    now = [1_000_000.0]
    index = SqliteSpanIndex(tmp_path / "ttl.db", ttl_seconds=10, clock=lambda: now[0])
    try:
        index.put("old", span(1), {})
        now[0] += 9.9
        assert index.get("old") is not None
        now[0] += 0.1
        assert index.get("old") is None  # expired: ignored even before it is purged
        assert len(index) == 1
        index.put("new", span(2), {})  # purges the expired row
        assert len(index) == 1
        assert index.get("new") is not None
    finally:
        index.close()


def test_sqlite_purge_work_per_put_is_bounded(tmp_path: Path) -> None:
    now = [1_000_000.0]
    index = SqliteSpanIndex(tmp_path / "ttl.db", ttl_seconds=1, clock=lambda: now[0])
    try:
        for n in range(100):
            index.put(f"m{n}", span(n), {})
        now[0] += 5
        index.put("fresh", span(1000), {})
        assert len(index) == 100 + 1 - _sqlite_index.PURGE_BATCH
    finally:
        index.close()


def test_sqlite_keeps_at_most_max_entries_dropping_the_oldest(tmp_path: Path) -> None:
    index = SqliteSpanIndex(tmp_path / "cap.db", max_entries=5)
    try:
        for n in range(8):
            index.put(f"m{n}", span(n), {})
        assert len(index) == 5
        assert [index.get(f"m{n}") is not None for n in range(8)] == [False] * 3 + [True] * 5
        index.put("m3", span(3), {})  # rewritten: now the newest
        index.put("m8", span(8), {})
        assert index.get("m3") is not None
        assert index.get("m4") is None
        assert len(index) == 5
    finally:
        index.close()


def test_sqlite_put_many_is_one_transaction_and_skips_only_what_cannot_be_stored(
    sqlite_index: SqliteSpanIndex, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="brixo_otel")
    statements: list[str] = []
    assert sqlite_index._conn is not None
    sqlite_index._conn.set_trace_callback(statements.append)
    puts = [(f"m{n}", span(n), {"n": n}) for n in range(50)]
    puts.insert(10, ("bad_\udc80", span(99), {}))  # an id SQLite cannot store
    assert sqlite_index.put_many(puts) is True
    assert (statements.count("BEGIN IMMEDIATE"), statements.count("COMMIT")) == (1, 1)
    assert len(sqlite_index) == 50
    assert_found(sqlite_index.get("m49"), span(49), {"n": 49})
    assert len(warnings_from(caplog)) == 1


def test_sqlite_put_many_purges_in_proportion_to_the_batch(tmp_path: Path) -> None:
    now = [1_000_000.0]
    index = SqliteSpanIndex(tmp_path / "ttl.db", ttl_seconds=1, clock=lambda: now[0])
    try:
        index.put_many([(f"m{n}", span(n), {}) for n in range(100)])
        now[0] += 5
        index.put_many([("a", span(1000), {}), ("b", span(1001), {})])
        assert len(index) == 100 + 2 - 2 * _sqlite_index.PURGE_BATCH
    finally:
        index.close()


def test_sqlite_put_many_says_not_now_while_another_connection_holds_the_file(
    tmp_path: Path,
) -> None:
    index = SqliteSpanIndex(tmp_path / "locked.db", busy_timeout_ms=50)
    locker = sqlite3.connect(index.path, isolation_level=None)
    try:
        index.put("before", span(1), {})
        locker.execute("BEGIN EXCLUSIVE")
        assert index.put_many([("m", span(2), {})]) is False  # the writer keeps it for later
        assert index.get("before") is not None  # WAL: lookups do not wait for the lock
        locker.execute("COMMIT")
        assert index.put_many([("m", span(2), {})]) is True  # the same connection, no reopen
        assert_found(index.get("m"), span(2), {})
    finally:
        locker.close()
        index.close()


def test_sqlite_corrupt_file_degrades_to_not_found_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"this is not a database, " * 200)
    caplog.set_level(logging.WARNING, logger="brixo_otel")
    index = SqliteSpanIndex(path)
    try:
        for n in range(20):
            index.put(f"m{n}", span(n), {})
            assert index.get(f"m{n}") is None
        assert len(index) == 0
    finally:
        index.close()
    records = warnings_from(caplog)
    assert len(records) == 1  # rate-limited, not one per call
    assert str(path) in records[0].getMessage()


def test_sqlite_unreadable_row_is_not_found_with_a_warning(
    sqlite_index: SqliteSpanIndex, caplog: pytest.LogCaptureFixture
) -> None:
    sqlite_index.put("m1", span(1), {})
    with sqlite3.connect(sqlite_index.path) as conn:
        conn.execute("UPDATE span_index_v1 SET entry = '[\"zz\"]' WHERE message_id = 'm1'")
    conn.close()
    caplog.set_level(logging.WARNING, logger="brixo_otel")
    assert sqlite_index.get("m1") is None
    assert len(warnings_from(caplog)) == 1


def test_sqlite_unwritable_path_degrades_then_heals(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the index directory should be")
    caplog.set_level(logging.WARNING, logger="brixo_otel")
    index = SqliteSpanIndex(blocker / "index.db", reopen_delay=0.05)
    try:
        for _ in range(10):
            assert index.put_many([("m1", span(1), {})]) is False  # "not now": keep it for later
            assert index.get("m1") is None
        first_attempt = index._retry_at

        def tried_again() -> bool | None:
            index.put("m1", span(1), {})
            return True if index._retry_at != first_attempt else None

        wait_for(tried_again, 5, "a second attempt to open the file", interval=0.01)
        assert len(warnings_from(caplog)) == 1  # once per interval, not once per attempt

        # The operator fixes the path; after the reopen delay the index works, no restart.
        blocker.unlink()

        def healed() -> IndexedSpan | None:
            index.put("m1", span(1), {})
            return index.get("m1")

        assert_found(wait_for(healed, 10, "the index to heal", interval=0.01), span(1), {})
    finally:
        index.close()


def test_sqlite_reopens_after_fork(sqlite_index: SqliteSpanIndex) -> None:
    sqlite_index.put("parent", span(1), {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() in a threaded process
        pid = os.fork()
    if pid == 0:  # child: must not touch the parent's connection
        code = 1
        try:
            inherited = sqlite_index._conn
            sqlite_index.put("child", span(2), {})
            ok = sqlite_index.get("parent") is not None and sqlite_index._conn is not inherited
            code = 0 if ok else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert_found(sqlite_index.get("child"), span(2), {})


def test_sqlite_fork_during_a_write_is_said_plainly_in_the_child(tmp_path: Path) -> None:
    """SQLite's lock records are per process: a child forked inside the parent's write
    transaction can never take the file. It cannot be undone safely; it must not be silent."""
    sqlite_index = SqliteSpanIndex(tmp_path / "forked.db", busy_timeout_ms=10)
    assert sqlite_index._conn is not None
    sqlite_index._conn.execute("BEGIN IMMEDIATE")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() in a threaded process
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            records: list[logging.LogRecord] = []

            class Recorder(logging.Handler):
                def emit(self, record: logging.LogRecord) -> None:
                    records.append(record)

            logging.getLogger("brixo_otel").addHandler(Recorder())
            sqlite_index.put("child", span(2), {})  # never raises, never hangs
            said = any("forked while its parent was writing" in r.getMessage() for r in records)
            code = 0 if said else 1
        finally:
            os._exit(code)
    sqlite_index._conn.execute("COMMIT")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    sqlite_index.put("parent", span(1), {})  # the parent is unaffected
    assert_found(sqlite_index.get("parent"), span(1), {})
    sqlite_index.close()


WRITER = textwrap.dedent(
    """
    import logging, sys
    from opentelemetry.trace import SpanContext, TraceFlags
    from brixo_otel._correlation._sqlite_index import SqliteSpanIndex
    from brixo_otel._correlation._writer import IndexWriter

    path, worker, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("brixo_otel").addHandler(handler)
    index = SqliteSpanIndex(path)
    writer = IndexWriter(index)  # the app's path: batches, and a refused batch is kept
    print("ready", flush=True)
    sys.stdin.readline()  # every writer starts at once
    for n in range(count):
        ctx = SpanContext(worker << 64 | n + 1, worker << 32 | n + 1, False, TraceFlags(1))
        writer.submit((f"w{worker}-{n}", ctx, {"worker": worker}))
        if n % 10 == 9:  # small transactions, so the four processes contend for the lock
            writer.flush(timeout=30)
    flushed = writer.flush(timeout=30)
    writer.close()
    index.close()
    # Waiting out another process's lock is allowed (the batch is kept and written later);
    # anything else said, a drop, or a batch still queued fails the test.
    other = [r.getMessage() for r in records if "timed out waiting" not in r.getMessage()]
    for message in other:
        print(message, file=sys.stderr)
    sys.exit(0 if flushed and writer.dropped == 0 and not other else 1)
    """
)


def test_sqlite_four_writer_processes_then_a_fifth_reads_all(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    workers, per_worker = 4, 500
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, path, str(w), str(per_worker)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for w in range(1, workers + 1)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        codes = [proc.wait(timeout=60) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
    assert codes == [0] * workers  # no writer dropped a put or said anything but "busy"

    reader = SqliteSpanIndex(path)
    try:
        assert len(reader) == workers * per_worker
        for w in range(1, workers + 1):
            for n in range(per_worker):
                found = reader.get(f"w{w}-{n}")
                assert found is not None
                assert found.span_context.span_id == w << 32 | n + 1
                assert found.span_context.trace_id == w << 64 | n + 1
                assert found.attributes == {"worker": w}
    finally:
        reader.close()


# -- Redis ---------------------------------------------------------------------------------------


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis(port=redis_server.port, host="127.0.0.1")
    yield client
    client.close()


def test_redis_round_trip_sets_the_ttl_on_the_key(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    index = RedisSpanIndex(redis_server.url, ttl_seconds=3600, key_prefix="t:")
    try:
        assert index.get("msg_1") is None
        index.put("msg_\udc80", span(1), {})  # not encodable as a key: a warning, no raise
        assert index.get("msg_\udc80") is None
        index.put("msg_1", span(1), ATTRIBUTES)
        assert_found(index.get("msg_1"), span(1), {**ATTRIBUTES, "tools": ("search", "calc")})
        assert 3590 <= redis_client.ttl("t:msg_1") <= 3600
        assert redis_client.keys("*") == [b"t:msg_1"]
    finally:
        index.close()


def test_redis_put_many_skips_what_cannot_be_stored_and_says_not_now_when_unreachable(
    redis_server: RedisServer, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="brixo_otel")
    index = RedisSpanIndex(redis_server.url, key_prefix="t:")
    try:
        puts = [(f"m{n}", span(n), {"n": n}) for n in range(20)]
        puts.insert(5, ("bad_\udc80", span(99), {}))  # not encodable as a key
        assert index.put_many(puts) is True
        assert redis_client.dbsize() == 20
        assert_found(index.get("m19"), span(19), {"n": 19})
        assert len(warnings_from(caplog)) == 1

        # A command Redis refuses is logged and not tried again: True, with nothing stored.
        redis_client.config_set("maxmemory-policy", "noeviction")
        redis_client.config_set("maxmemory", "1")
        assert index.put_many([("oom", span(1), {})]) is True
        redis_client.config_set("maxmemory", "0")
        assert redis_client.get("t:oom") is None

        redis_server.stop()
        assert index.put_many([("x", span(1), {})]) is False  # refused: keep it for later
        assert index.put_many([("x", span(1), {})]) is False  # skipped while Redis is away
    finally:
        index.close()


def test_redis_garbage_value_is_not_found_with_a_warning(
    redis_server: RedisServer, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    index = RedisSpanIndex(redis_server.url)
    try:
        redis_client.set("brixo:span:m1", b"\xff not json")
        caplog.set_level(logging.WARNING, logger="brixo_otel")
        assert index.get("m1") is None
        assert len(warnings_from(caplog)) == 1
    finally:
        index.close()


def test_redis_outage_degrades_quietly_and_recovers_on_restart(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    index = RedisSpanIndex(redis_server.url, retry_interval=0.05)
    try:
        index.put("before", span(1), {})
        assert index.get("before") is not None

        redis_server.stop()
        internal.reset_rate_limits()
        caplog.set_level(logging.WARNING, logger="brixo_otel")
        started = time.monotonic()
        for n in range(50):
            assert index.put_many([(f"down{n}", span(n), {})]) is False  # never raises
            assert index.get(f"down{n}") is None

        def tried_again() -> bool | None:  # past the first wait, Redis is really tried again
            index.put("down", span(0), {})
            return True if index._failures >= 2 else None

        wait_for(tried_again, 5, "a second attempt to reach Redis", interval=0.01)
        assert time.monotonic() - started < 5  # no call waited out a long timeout
        assert len(warnings_from(caplog)) == 1  # once per interval, not once per call
        assert "redis://127.0.0.1:" in warnings_from(caplog)[0].getMessage()

        # A later interval gets one more warning, at the next real attempt (forgetting what
        # was logged stands for the interval passing).
        internal.reset_rate_limits()

        def warned_again() -> bool | None:
            assert index.get("before") is None
            return True if len(warnings_from(caplog)) >= 2 else None

        wait_for(warned_again, 5, "the next interval's warning", interval=0.05)
        assert len(warnings_from(caplog)) == 2

        redis_server.start()  # same port, empty: it keeps no data

        def back() -> IndexedSpan | None:
            index.put("after", span(2), {"back": True})
            return index.get("after")

        wait_for(back, 5, "Redis to be used again", interval=0.02)
        assert_found(index.get("after"), span(2), {"back": True})
    finally:
        index.close()


def test_redis_unreachable_from_the_start_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="brixo_otel")
    index = RedisSpanIndex(f"redis://127.0.0.1:{free_port()}/0")
    try:
        index.put("m", span(1), {})
        assert index.get("m") is None
    finally:
        index.close()
    assert len(warnings_from(caplog)) == 1


def test_a_hung_redis_costs_one_short_timeout_then_calls_return_at_once() -> None:
    with socket.socket() as listener:  # accepts connections (the kernel does), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        index = RedisSpanIndex(f"redis://127.0.0.1:{listener.getsockname()[1]}/0")
        try:
            started = time.monotonic()
            index.put("m", span(1), {})
            first = time.monotonic() - started
            assert 0.3 < first < 2.0  # the socket timeout, not redis-py's default 5 s + retries
            started = time.monotonic()
            for n in range(100):
                index.put(f"m{n}", span(n), {})
                assert index.get(f"m{n}") is None
            assert time.monotonic() - started < 0.2
        finally:
            index.close()


def test_redis_url_never_shows_its_password(caplog: pytest.LogCaptureFixture) -> None:
    assert redacted_url("redis://user:s3cret@cache.internal:6380/2") == (
        "redis://cache.internal:6380/2"
    )
    assert redacted_url("rediss://:s3cret@[::1]/0") == "rediss://[::1]/0"
    with pytest.raises(ConfigurationError) as raised:
        RedisSpanIndex("redis://:s3cret@localhost:notaport/0")
    assert "s3cret" not in str(raised.value)


def test_redis_index_without_the_redis_package_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ConfigurationError, match=r"brixo-otel\[redis\]"):
        RedisSpanIndex("redis://127.0.0.1:6379/0")


# -- span_index= ---------------------------------------------------------------------------------


def test_span_index_from_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    memory = span_index_from("memory", ttl_seconds=60, max_entries=10)
    assert isinstance(memory, InMemorySpanIndex)

    monkeypatch.chdir(tmp_path)
    relative = span_index_from("sqlite:///rel/index.db", ttl_seconds=60, max_entries=10)
    absolute = span_index_from(f"sqlite:///{tmp_path}/abs.db", ttl_seconds=60, max_entries=10)
    redis_index = span_index_from("rediss://:pw@127.0.0.1:1/0", ttl_seconds=60, max_entries=10)
    # shared stores come with a memory tier in front and a writer behind
    assert isinstance(relative, TieredSpanIndex)
    assert isinstance(absolute, TieredSpanIndex)
    assert isinstance(redis_index, TieredSpanIndex)
    try:
        assert isinstance(relative.store, SqliteSpanIndex)
        assert relative.store.path == str(tmp_path / "rel" / "index.db")
        assert isinstance(absolute.store, SqliteSpanIndex)
        assert absolute.store.path == str(tmp_path / "abs.db")
        assert isinstance(redis_index.store, RedisSpanIndex)
    finally:
        relative.close()
        absolute.close()
        redis_index.close()

    class Custom:
        def put(self, *args: object) -> None: ...
        def get(self, message_id: str) -> None: ...

    custom = Custom()
    assert span_index_from(custom, ttl_seconds=60, max_entries=10) is custom  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "choice",
    ["", "Memory", "sqlite://rel.db", "sqlite:///", "postgres://u:pw@db/x", "redsi://:pw@h:1/0"],
)
def test_span_index_from_refuses_unknown_names_listing_the_accepted_ones(choice: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        span_index_from(choice, ttl_seconds=60, max_entries=10)
    message = str(raised.value)
    assert "'memory'" in message and "sqlite:///" in message and "redis://" in message
    assert "pw" not in message


def test_span_index_from_refuses_objects_and_settings_that_cannot_work() -> None:
    with pytest.raises(ConfigurationError, match="put"):
        span_index_from(object(), ttl_seconds=60, max_entries=10)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="ttl_seconds"):
        span_index_from("memory", ttl_seconds=0, max_entries=10)
    with pytest.raises(ConfigurationError, match="max_entries"):
        span_index_from("memory", ttl_seconds=60, max_entries=0)
