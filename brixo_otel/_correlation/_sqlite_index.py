"""A span index in one SQLite file, shared by every process of a host.

Built for the usual deployment of a Python web app: several worker processes (gunicorn, uvicorn
workers, Celery) on one machine, where the answer is produced by one worker and the thumbs arrive
at another. Each process writes the message spans it starts and ends, and reads whatever any of
them wrote. The app's puts reach this class through the background writer (`_writer.py`), in
batches; `put` and `get` here are plain blocking calls, made on the writer's and the delivery
worker's threads.

- WAL mode, so readers never wait for writers and writers wait for each other only for one
  short transaction (`BEGIN IMMEDIATE`, the batch's upserts, a bounded clean-up).
- `synchronous=NORMAL`: a power loss may take back the last entries, which costs only the
  linking of feedback for messages answered in that instant; an fsync per message span would
  cost every request.
- One connection per process, opened again after a fork: SQLite forbids using a connection in a
  child, and a pre-forking server configures before it forks. A fork that lands inside one of
  the parent's write transactions (well under a millisecond each) leaves the child unable to
  use the file at all, as SQLite's lock records are per process; the child says so in a
  warning and links through its memory tier only.
- Entries expire by wall-clock time (comparable between processes, unlike a monotonic clock).
  Expired rows are ignored by `get` and deleted a few at a time by each write, so no call ever
  does unbounded work and no sweeping thread is needed.
- At most `max_entries` rows: the row count is kept exact by triggers in a one-row table, so the
  bound is checked without a scan, and the oldest-written rows go first.

Nothing here raises into the app: a missing directory, a read-only disk or a corrupt file turns
the index into "not found" with a warning at most once per interval, and it is opened again a
little later, so a fixed problem heals without a restart.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from opentelemetry.trace import SpanContext
from opentelemetry.util.types import AttributeValue

from brixo_otel._correlation._codec import CodecError, decode_entry, encode_entry
from brixo_otel._correlation._index import IndexedSpan, Put
from brixo_otel._forksafe import after_fork_in_child
from brixo_otel._internal import log_rate_limited

#: How long one process waits for another's write transaction, in milliseconds. Transactions
#: last microseconds; a wait this long means the disk is in trouble, or another connection holds
#: the file exclusively. The writer then keeps its batch for later, and a lookup by the delivery
#: worker gives up, rather than either of them hanging on it.
BUSY_TIMEOUT_MS: Final = 1000

#: Expired rows deleted per put written, at most: more than one row per put, so expiry keeps up
#: with any write rate, and few enough that a write never becomes a sweep.
PURGE_BATCH: Final = 32

#: After a failure to open or use the file, how long to answer "not found" before trying again.
REOPEN_DELAY_SECONDS: Final = 5.0

# The layout version is in the table name, so a future layout can live beside this one in a file
# shared by processes running different versions during a rolling deploy.
_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS span_index_v1 ("
    " message_id TEXT PRIMARY KEY, entry TEXT NOT NULL, expires_at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS span_index_v1_expiry ON span_index_v1 (expires_at)",
    "CREATE TABLE IF NOT EXISTS span_index_v1_count ("
    " id INTEGER PRIMARY KEY CHECK (id = 0), entries INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO span_index_v1_count (id, entries) VALUES (0, 0)",
    "CREATE TRIGGER IF NOT EXISTS span_index_v1_added AFTER INSERT ON span_index_v1 BEGIN"
    " UPDATE span_index_v1_count SET entries = entries + 1 WHERE id = 0; END",
    "CREATE TRIGGER IF NOT EXISTS span_index_v1_removed AFTER DELETE ON span_index_v1 BEGIN"
    " UPDATE span_index_v1_count SET entries = entries - 1 WHERE id = 0; END",
)

# Delete, then insert, rather than INSERT OR REPLACE: a REPLACE does not fire delete triggers
# (unless recursive triggers are on), which would break the count; and a fresh insert takes a
# new, highest rowid, which keeps rowid order equal to write order for eviction.
_DELETE_ONE: Final = "DELETE FROM span_index_v1 WHERE message_id = ?"
_INSERT: Final = "INSERT INTO span_index_v1 (message_id, entry, expires_at) VALUES (?, ?, ?)"
_PURGE_EXPIRED: Final = (
    "DELETE FROM span_index_v1 WHERE rowid IN"
    " (SELECT rowid FROM span_index_v1 WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)"
)
_COUNT: Final = "SELECT entries FROM span_index_v1_count WHERE id = 0"
_EVICT_OLDEST: Final = (
    "DELETE FROM span_index_v1 WHERE rowid IN"
    " (SELECT rowid FROM span_index_v1 ORDER BY rowid LIMIT ?)"
)
_SELECT: Final = "SELECT entry, expires_at FROM span_index_v1 WHERE message_id = ?"

_LOG_KEY: Final = "index:sqlite"


def _is_busy(exc: sqlite3.Error) -> bool:
    """Whether the error only means "another connection holds the lock right now"."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return (int(code) & 0xFF) in (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED (extended codes included)
    return "locked" in str(exc) or "busy" in str(exc)


class SqliteSpanIndex:
    """Message id → span context, in a SQLite file every process of the host can reach.

    Thread-safe: calls in one process share its connection under a lock (each is one short
    statement or transaction, so the lock is held for microseconds).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        ttl_seconds: float = 86400.0,
        max_entries: int = 100_000,
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        reopen_delay: float = REOPEN_DELAY_SECONDS,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        if not ttl_seconds > 0:
            raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds}")
        # Absolute now: a later chdir in the app must not move the index to another file.
        self.path = os.path.abspath(os.fspath(path))
        self._ttl = float(ttl_seconds)
        self._max_entries = max_entries
        self._clock = clock
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._reopen_delay = reopen_delay
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._retry_at = 0.0
        # Connections inherited over a fork: never used again, and never closed either, because
        # closing may checkpoint or unlock on behalf of the parent. Kept referenced so that
        # garbage collection does not close them behind our back.
        self._inherited: list[sqlite3.Connection] = []
        after_fork_in_child(self, SqliteSpanIndex._after_fork_in_child)
        # Opened now so that a path that cannot work is reported at start-up, not at the first
        # message; a failure only logs, as it would later.
        with self._lock:
            self._connection()

    def _after_fork_in_child(self) -> None:
        """A fresh lock: a parent thread may have held it at the fork."""
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SqliteSpanIndex({self.path!r})"

    # -- the SpanIndex protocol ----------------------------------------------------------------

    def put(
        self, message_id: str, span_context: SpanContext, attributes: Mapping[str, AttributeValue]
    ) -> None:
        """One put, written now, on the calling thread (the app's puts go through the writer)."""
        self.put_many([(message_id, span_context, attributes)])

    def put_many(self, puts: Sequence[Put]) -> bool:
        """Write `puts` in one transaction; False if the file cannot take writes right now.

        A batch is one `BEGIN IMMEDIATE` ... `COMMIT`, so the background writer pays one lock
        and one WAL append per batch, not per message. Expired rows are purged, and rows over
        `max_entries` evicted, at most `PURGE_BATCH` per put in the batch. A put that cannot be
        stored (an id with lone surrogates, an unencodable span) is dropped with a warning and
        does not spoil the rest.
        """
        rows: list[tuple[str, str]] = []
        for message_id, span_context, attributes in puts:
            try:
                rows.append((message_id, encode_entry(span_context, attributes)))
            # RuntimeError: a span ending on another thread changed the attributes mid-read
            except (TypeError, ValueError, RuntimeError) as exc:
                self._warn("could not encode a span for the index", exc)
        if not rows:
            return True
        now = self._clock()
        expires_at = now + self._ttl
        bound = PURGE_BATCH * len(rows)
        with self._lock:
            conn = self._connection()
            if conn is None:
                return False
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for message_id, entry in rows:
                        try:
                            conn.execute(_DELETE_ONE, (message_id,))
                        except ValueError as exc:  # an id SQLite cannot store (lone surrogates)
                            self._warn("could not store a message id in the index", exc)
                            continue
                        conn.execute(_INSERT, (message_id, entry, expires_at))
                    conn.execute(_PURGE_EXPIRED, (now, bound))
                    (count,) = conn.execute(_COUNT).fetchone()
                    if count > self._max_entries:
                        # Bounded like the purge: a lowered max_entries converges over puts.
                        conn.execute(_EVICT_OLDEST, (min(count - self._max_entries, bound),))
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                self._fail("could not write to", exc)
                return False
        return True

    def get(self, message_id: str) -> IndexedSpan | None:
        now = self._clock()
        with self._lock:
            conn = self._connection()
            if conn is None:
                return None
            try:
                row = conn.execute(_SELECT, (message_id,)).fetchone()
            except sqlite3.Error as exc:
                self._fail("could not read from", exc)
                return None
            except ValueError as exc:  # an id SQLite cannot store (lone surrogates)
                self._warn("could not look up a message id in the index", exc)
                return None
        if row is None:
            return None
        entry, expires_at = row
        if not isinstance(expires_at, (int, float)) or expires_at <= now:
            return None
        try:
            return decode_entry(entry)
        except CodecError as exc:
            self._warn("ignored an unreadable entry in the index", exc)
            return None

    # -- housekeeping --------------------------------------------------------------------------

    def __len__(self) -> int:
        """Entries held, expired ones not yet purged included; 0 when the file is unusable."""
        with self._lock:
            conn = self._connection()
            if conn is None:
                return 0
            try:
                (count,) = conn.execute(_COUNT).fetchone()
            except sqlite3.Error as exc:
                self._fail("could not read from", exc)
                return 0
        return int(count)

    def close(self) -> None:
        """Close this process's connection; a later call opens it again."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == os.getpid():
                conn.close()

    # -- internals (called with the lock held) --------------------------------------------------

    def _connection(self) -> sqlite3.Connection | None:
        pid = os.getpid()
        if pid != self._pid:
            if self._conn is not None:
                self._inherited.append(self._conn)
                if self._conn.in_transaction:
                    self._warn_forked_mid_write()
            self._conn = None
            self._pid = pid
            self._retry_at = 0.0
        if self._conn is not None:
            return self._conn
        if time.monotonic() < self._retry_at:
            return None
        try:
            self._conn = self._open()
        except (sqlite3.Error, OSError) as exc:
            self._retry_at = time.monotonic() + self._reopen_delay
            self._warn(f"cannot use the span index file {self.path}", exc)
            return None
        return self._conn

    def _open(self) -> sqlite3.Connection:
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        conn = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout_ms / 1000,
            isolation_level=None,  # transactions are explicit, and as short as possible
            check_same_thread=False,  # shared by threads under self._lock
        )
        try:
            # busy_timeout first: switching to WAL and creating the tables take locks that
            # another process opening the file at the same moment may hold.
            conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"journal mode is {mode}, WAL is needed")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except BaseException:
            conn.close()
            raise
        return conn

    def _fail(self, doing: str, exc: sqlite3.Error) -> None:
        """A statement failed: drop the connection, so the next try starts from a fresh open.

        A corrupt or replaced file often fails only at the first real statement; reopening is
        what lets the index heal once the file is fixed, and the delay keeps a broken file from
        costing an open attempt on every write. Waiting too long for another process's lock
        is not such a failure: that one call gives up, and the connection stays.
        """
        if _is_busy(exc):
            self._warn(f"timed out waiting for another process on the span index {self.path}", exc)
            return
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._retry_at = time.monotonic() + self._reopen_delay
        self._warn(f"{doing} the span index file {self.path}", exc)

    def _warn_forked_mid_write(self) -> None:
        """The fork landed inside one of the parent's write transactions (they last well under
        a millisecond). SQLite keeps its lock records per process, and the child inherited
        "locked by a connection of this process" for good: no connection of the child can take
        the file. Nothing here can undo that safely, so say it plainly, once."""
        log_rate_limited(
            logging.WARNING,
            _LOG_KEY + ":fork",
            "brixo_otel: this process was forked while its parent was writing to the span index "
            "%s; SQLite cannot be used on that file from this process, so feedback here links "
            "only to messages of this process (or through link tokens). Fork before serving "
            "messages, as pre-forking servers do, to avoid this",
            self.path,
        )

    def _warn(self, what: str, exc: BaseException) -> None:
        log_rate_limited(
            logging.WARNING,
            _LOG_KEY,
            "brixo_otel: %s (%s: %s); feedback for these messages will not be linked to their "
            "traces",
            what,
            type(exc).__name__,
            exc,
        )
