"""The outbox on real SQLite files: states, leases, caps, corrupt rows, sharing and fork."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from brixo_otel import OutboxLimits
from brixo_otel._delivery._outbox import (
    CORRUPT_ROW,
    Outbox,
    OutboxBusy,
    OutboxClosed,
    OutboxFull,
    Outcome,
)
from brixo_otel._signal import Signal, validate
from tests._services import wait_for

pytestmark = pytest.mark.timeout(30)


def make_signal(index: int = 0, comment: str | None = None) -> Signal:
    return validate("thumbs_up", message_id=f"msg-{index}", user_message=comment)


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "outbox.db")


@pytest.fixture
def outbox(path: str) -> Iterator[Outbox]:
    box = Outbox(path)
    yield box
    box.close()


#: `Outbox.add` as the worker calls it (waiting patiently) and as `feedback()` does (a bounded
#: wait, one INSERT that checks the caps itself): the caps must hold the same on both.
WRITERS = pytest.mark.parametrize("wait", [None, 0.02], ids=["worker", "app"])


def raw(path: str) -> sqlite3.Connection:
    """A side door into the file, to inspect or damage rows the way the real world does."""
    return sqlite3.connect(path, isolation_level=None, timeout=5)


def test_add_claim_deliver_deletes_payload_and_counts(outbox: Outbox, path: str) -> None:
    signal = make_signal(1, "private words")
    outbox.add(signal, ["brixo"])

    [delivery] = outbox.claim(["brixo"], 10)

    assert delivery.signal.to_json() == signal.to_json()
    assert (delivery.destination, delivery.attempts) == ("brixo", 0)
    assert outbox.stats()["brixo"]["in_flight"] == 1
    assert outbox.mark_delivered(delivery)
    assert outbox.stats()["brixo"] == {
        "pending": 0,
        "in_flight": 0,
        "delivered": 1,
        "dead": 0,
        "corrupt": 0,
    }
    assert outbox.totals() == (0, 0)
    conn = raw(path)
    try:
        assert conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] == 0
    finally:
        conn.close()


def test_one_row_per_destination_each_delivered_on_its_own(outbox: Outbox) -> None:
    signal = make_signal()
    outbox.add(signal, ["brixo", "mixpeek"])
    assert outbox.pending_count() == 2
    assert outbox.pending_count(["mixpeek"]) == 1

    [brixo] = outbox.claim(["brixo"], 10)
    outbox.mark_delivered(brixo)

    stats = outbox.stats()
    assert stats["brixo"]["delivered"] == 1
    assert stats["mixpeek"]["pending"] == 1
    [mixpeek] = outbox.claim(["mixpeek"], 10)
    assert mixpeek.signal.id == signal.id


def test_claim_respects_limit_and_order(outbox: Outbox) -> None:
    signals = [make_signal(i) for i in range(5)]
    for signal in signals:
        outbox.add(signal, ["brixo"])
    first = outbox.claim(["brixo"], 3)
    second = outbox.claim(["brixo"], 3)
    assert [d.signal.id for d in first + second] == [s.id for s in signals]
    assert outbox.claim(["brixo"], 3) == []
    assert outbox.claim([], 3) == []


def test_settle_fans_out_records_and_claims_in_one_go(outbox: Outbox) -> None:
    """A worker's round: a link stage's fan-out, an answer and the next claim, one commit,
    each part as it is alone (a row just fanned out is claimable in the same round)."""
    first, second = make_signal(1), make_signal(2)
    outbox.add(first, ["brixo.link"])
    outbox.add(second, ["brixo"])
    stage, answered = outbox.claim(["brixo.link", "brixo"], 10)
    fanned, recorded, claimed = outbox.settle(
        [(stage, first, ["brixo", "opentelemetry"], [], None)],
        [Outcome(answered, "delivered")],
        ["brixo", "opentelemetry"],
        10,
    )
    assert (fanned, recorded) == ([True], [True])
    assert sorted(d.destination for d in claimed) == ["brixo", "opentelemetry"]
    assert {d.signal.id for d in claimed} == {first.id}
    stats = outbox.stats()
    assert stats["brixo"]["delivered"] == 1
    assert stats["brixo"]["in_flight"] == 1
    assert outbox.pending_count(["brixo.link"]) == 0  # the stage's row ended
    # Lost leases are False, as alone; nothing to claim is an empty claim.
    assert outbox.settle([], [Outcome(answered, "delivered")], ["brixo"], 10) == ([], [False], [])


def test_reschedule_counts_the_attempt_and_waits(outbox: Outbox) -> None:
    outbox.add(make_signal(), ["brixo"])
    [delivery] = outbox.claim(["brixo"], 1)
    later = time.time() + 100

    assert outbox.reschedule(delivery, later, "HTTP 503")

    assert outbox.claim(["brixo"], 1) == []
    assert outbox.next_due(["brixo"]) == pytest.approx(later)
    [again] = outbox.claim(["brixo"], 1, now=later + 1)
    assert again.attempts == 1


def test_release_returns_row_without_counting_an_attempt(outbox: Outbox) -> None:
    outbox.add(make_signal(), ["brixo"])
    [delivery] = outbox.claim(["brixo"], 1)
    assert outbox.release(delivery)
    [again] = outbox.claim(["brixo"], 1)
    assert again.attempts == 0


def test_dead_letter_keeps_signal_and_reason_and_requeue_restarts(outbox: Outbox) -> None:
    signal = make_signal(7)
    outbox.add(signal, ["brixo"])
    [delivery] = outbox.claim(["brixo"], 1)

    assert outbox.dead_letter(delivery, "HTTP 400: value is invalid")

    assert outbox.claim(["brixo"], 1) == []
    assert outbox.pending_count() == 0
    assert outbox.stats()["brixo"]["dead"] == 1
    [letter] = outbox.dead_letters()
    assert letter.signal is not None and letter.signal.to_json() == signal.to_json()
    assert (letter.signal_id, letter.reason, letter.attempts) == (
        signal.id,
        "HTTP 400: value is invalid",
        1,
    )
    assert outbox.dead_letters("mixpeek") == []

    assert outbox.requeue_dead("brixo") == 1
    [again] = outbox.claim(["brixo"], 1)
    assert (again.signal.id, again.attempts) == (signal.id, 0)
    assert outbox.dead_letters() == []


def test_leased_row_is_not_claimed_twice_until_the_lease_expires(path: str) -> None:
    first = Outbox(path, OutboxLimits(lease_seconds=30))
    second = Outbox(path)
    try:
        first.add(make_signal(), ["brixo"])
        [held] = first.claim(["brixo"], 5)

        assert second.claim(["brixo"], 5) == []
        [taken] = second.claim(["brixo"], 5, now=time.time() + 31)
        assert taken.signal.id == held.signal.id
    finally:
        first.close()
        second.close()


def _set_owner(path: str, owner: str) -> None:
    conn = raw(path)
    try:
        conn.execute(
            "UPDATE deliveries SET state = 1, owner = ?, lease_until = ?",
            (owner, time.time() + 3600),
        )
    finally:
        conn.close()


def test_a_lost_lease_is_not_acted_on(outbox: Outbox, path: str) -> None:
    outbox.add(make_signal(), ["brixo"])
    [delivery] = outbox.claim(["brixo"], 1)
    _set_owner(path, "elsewhere:1")  # another process took the row after our lease expired

    assert not outbox.mark_delivered(delivery)
    assert not outbox.reschedule(delivery, time.time(), "x")
    assert not outbox.dead_letter(delivery, "x")
    assert not outbox.release(delivery)
    assert outbox.stats()["brixo"]["in_flight"] == 1


def test_dead_owner_on_this_host_is_reclaimed_at_once(outbox: Outbox, path: str) -> None:
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
        timeout=20,
    )
    dead_pid = int(finished.stdout)
    host = socket.gethostname()
    outbox.add(make_signal(1), ["brixo"])
    _set_owner(path, f"{host}:{dead_pid}")
    assert outbox.claim(["brixo"], 1) == []

    assert outbox.reclaim_dead_owners() == 1

    [delivery] = outbox.claim(["brixo"], 1)
    assert delivery.attempts == 0


@pytest.mark.parametrize("owner", [f"{socket.gethostname()}:{os.getppid()}", "other-host:1"])
def test_live_or_foreign_owners_keep_their_lease(outbox: Outbox, path: str, owner: str) -> None:
    outbox.add(make_signal(), ["brixo"])
    _set_owner(path, owner)
    assert outbox.reclaim_dead_owners() == 0
    assert outbox.claim(["brixo"], 1) == []


@WRITERS
def test_row_cap_refuses_loudly_and_stores_nothing(path: str, wait: float | None) -> None:
    box = Outbox(path, OutboxLimits(max_rows=3))
    try:
        box.add(make_signal(1), ["brixo", "mixpeek"], wait=wait)
        with pytest.raises(OutboxFull, match="max_rows=3"):
            # would need 4 rows: all or nothing
            box.add(make_signal(2), ["brixo", "mixpeek"], wait=wait)
        assert box.totals()[0] == 2
        box.add(make_signal(3), ["brixo"], wait=wait)
        with pytest.raises(OutboxFull, match="max_rows=3"):
            box.add(make_signal(4), ["brixo"], wait=wait)

        [delivery] = box.claim(["mixpeek"], 1)
        box.mark_delivered(delivery)
        box.add(make_signal(5), ["brixo"], wait=wait)  # room again
        assert box.pending_count() == 3
        assert {d.signal.message_id for d in box.claim(["brixo"], 10)} == {
            "msg-1",
            "msg-3",
            "msg-5",
        }
    finally:
        box.close()


@WRITERS
def test_each_add_stores_each_signal_once(path: str, wait: float | None) -> None:
    """The app's one-statement commit falls back to the exact one only when it stored nothing:
    never a second row for a signal it stored (the totals' trigger changes are not counted)."""
    box = Outbox(path)
    try:
        signals = [make_signal(n) for n in range(50)]
        for signal in signals:
            box.add(signal, ["brixo"], wait=wait)
        with raw(path) as conn:
            ids = [row[0] for row in conn.execute("SELECT signal_id FROM deliveries")]
        assert sorted(ids) == sorted(signal.id for signal in signals)
        assert box.totals()[0] == len(signals)
    finally:
        box.close()


@WRITERS
def test_byte_cap_refuses(path: str, wait: float | None) -> None:
    # The cap counts what is on disk (the WAL, SQLite's pages, room for one more commit), not only
    # the payloads: a cap of a few hundred kilobytes takes a hundred or so of these signals.
    limit = 400 * 1024
    box = Outbox(path, OutboxLimits(max_bytes=limit))
    try:
        stored = 0
        with pytest.raises(OutboxFull, match="max_bytes"):
            for n in range(10_000):
                signal = make_signal(n, "x" * 900)
                try:
                    box.add(signal, ["brixo"], wait=wait)
                except OutboxBusy:  # the WAL is past twice its share: the signal is held,
                    box.add(signal, ["brixo"])  # and the worker commits it, checkpointing first
                stored += 1
        assert 50 < stored < 400
        rows, payload = box.totals()
        assert rows == stored and payload < limit
        on_disk = sum(os.path.getsize(path + suffix) for suffix in ("", "-wal", "-shm"))
        assert on_disk <= limit
    finally:
        box.close()


@WRITERS
def test_caps_hold_across_two_handles_on_one_file(path: str, wait: float | None) -> None:
    first = Outbox(path, OutboxLimits(max_rows=2))
    second = Outbox(path, OutboxLimits(max_rows=2))
    try:
        first.add(make_signal(1), ["brixo"], wait=wait)
        second.add(make_signal(2), ["brixo"], wait=wait)
        with pytest.raises(OutboxFull):
            first.add(make_signal(3), ["brixo"], wait=wait)
    finally:
        first.close()
        second.close()


def test_corrupt_row_is_skipped_dead_lettered_and_counted(outbox: Outbox, path: str) -> None:
    for index in range(3):
        outbox.add(make_signal(index), ["brixo"])
    conn = raw(path)
    try:
        conn.execute("UPDATE deliveries SET payload = '{\"id\": broken' WHERE id = 2")
    finally:
        conn.close()
    seen: list[str] = []

    claimed = outbox.claim(["brixo"], 10, on_corrupt=seen.append)

    assert [d.signal.message_id for d in claimed] == ["msg-0", "msg-2"]
    assert seen == ["brixo"]
    stats = outbox.stats()["brixo"]
    assert (stats["corrupt"], stats["dead"], stats["in_flight"]) == (1, 1, 2)
    [letter] = outbox.dead_letters()
    assert (letter.signal, letter.reason, letter.attempts) == (None, CORRUPT_ROW, 0)
    assert outbox.requeue_dead() == 0  # a corrupt payload would only fail again


def test_rows_survive_reopening(path: str) -> None:
    box = Outbox(path)
    box.add(make_signal(1), ["brixo"])
    box.close()
    box = Outbox(path)
    try:
        [delivery] = box.claim(["brixo"], 1)
        assert delivery.signal.message_id == "msg-1"
    finally:
        box.close()


def test_file_is_private_to_its_user(path: str) -> None:
    Outbox(path).close()
    assert os.stat(path).st_mode & 0o077 == 0


def test_in_memory_outbox_and_closing(tmp_path: Path) -> None:
    box = Outbox(":memory:")
    box.add(make_signal(), ["brixo"])
    assert box.pending_count() == 1
    box.close()
    box.close()  # idempotent
    with pytest.raises(OutboxClosed):
        box.add(make_signal(), ["brixo"])


def test_next_due_is_the_earliest_pending(outbox: Outbox) -> None:
    assert outbox.next_due(["brixo"]) is None
    before = time.time()
    outbox.add(make_signal(), ["brixo"])
    due = outbox.next_due(["brixo"])
    assert due is not None and before <= due <= time.time()
    assert outbox.next_due([]) is None


def test_child_after_fork_opens_its_own_connection(outbox: Outbox) -> None:
    outbox.add(make_signal(1), ["brixo"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "multi-threaded fork" on 3.12+
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        code = 1
        try:
            outbox.add(make_signal(2), ["brixo"])
            claimed = outbox.claim(["brixo"], 10)
            for delivery in claimed:
                outbox.mark_delivered(delivery)
            code = 0 if len(claimed) == 2 else 2
        finally:
            os._exit(code)

    def exited() -> int | None:
        done, status = os.waitpid(pid, os.WNOHANG)
        return os.waitstatus_to_exitcode(status) if done else None

    assert wait_for(exited, 20, "the forked child to exit", interval=0.01) == 0
    assert outbox.stats()["brixo"]["delivered"] == 2
    outbox.add(make_signal(3), ["brixo"])  # the parent's connection still works
    assert outbox.pending_count() == 1
