"""The outbox's SQLite file: schema, connections, transactions, and the file's own faults.

One file in WAL mode, shared by the processes of a host. Two connections per process:

- the *app* connection, used by `feedback()` on the app's threads, waits for the write lock at
  most a few milliseconds (`APP_WAIT_SECONDS`): a longer wait becomes a signal held in memory
  by the caller's processor, never a blocked request;
- the *worker* connection, used by the delivery worker, waits patiently (`BUSY_TIMEOUT_MS`).

`synchronous=NORMAL` in WAL mode makes a commit survive the death of the process (it is in the
WAL before `add` returns); only a power loss can take the last commits back — the trade that keeps
`add` in the tens of microseconds instead of an fsync per click.

Files can vanish, fill or turn read-only: `check_file()` (called by the worker every poll) notices
an outbox file deleted or replaced under it, recreates it and copies over what the old, still
open, connection holds (if the file cannot be made, the old connection goes on serving, and the
next check tries again); it also checkpoints the WAL. The byte cap counts what is on disk, not
only the rows' payloads: `overhead_bytes` (the WAL, measured at each commit, and the database
file's own pages beyond the payloads) is added to them. A connection that SQLite opened read-only
(the file or its directory was not writable then) is reopened after a refused write, so a write
that fails for that reason succeeds once the permissions are back.

Connections never cross a fork: a child sets the inherited ones aside untouched (closing one could
roll back into the parent's shared WAL) and opens its own. SQLite's own per-process lock records
are copied into a child as they are at the fork, so a fork in the middle of one of our
transactions could leave the child unable to use the file: before a fork we wait for the
transactions in progress, but only `FORK_WAIT_SECONDS` in all, so `os.fork()` is never held up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from brixo_otel._forksafe import after_fork_in_child
from brixo_otel._internal import log_rate_limited, logger
from brixo_otel._policies import OutboxLimits

PENDING: Final = 0
IN_FLIGHT: Final = 1
DEAD: Final = 2

#: How long the worker's connection waits for another process's transaction, in milliseconds.
BUSY_TIMEOUT_MS: Final = 5000
#: How long `feedback()` waits for the outbox on the app's thread before holding the signal in
#: memory instead: the bound on what a locked outbox costs a request.
APP_WAIT_SECONDS: Final = 0.02
#: Checkpoint the WAL back into the database once it is this large (or an eighth of the cap).
WAL_CHECKPOINT_BYTES: Final = 4 * 1024 * 1024
#: What one more commit may add to the WAL beyond its payload (page images of the row, its index
#: entries and the totals): counted up front, so that a commit admitted under the cap stays so.
COMMIT_OVERHEAD_BYTES: Final = 64 * 1024
#: SQLite's primary result codes that mean "this connection can no longer write the file": it
#: was opened read-only (SQLITE_READONLY, 8), the disk failed it (SQLITE_IOERR, 10), or its
#: file could not be opened (SQLITE_CANTOPEN, 14).
_REOPEN_ERRORS: Final = frozenset({8, 10, 14})

#: Longest `os.fork()` waits, in all, for our transactions in progress to end.
FORK_WAIT_SECONDS: Final = 0.05

SCHEMA_VERSION: Final = 3

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS deliveries (
        id INTEGER PRIMARY KEY,
        signal_id TEXT NOT NULL,
        destination TEXT NOT NULL,
        payload TEXT NOT NULL,
        size INTEGER NOT NULL,
        state INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        next_attempt_at REAL NOT NULL,
        owner TEXT,
        lease_until REAL,
        reason TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (state, destination, next_attempt_at)",
    "CREATE TABLE IF NOT EXISTS totals ("
    " id INTEGER PRIMARY KEY CHECK (id = 0), rows INTEGER NOT NULL, bytes INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO totals (id, rows, bytes) VALUES (0, 0, 0)",
    # Dead letters are counted apart (they have their own cap and retention): the caps on rows
    # and bytes are for what is still to deliver, which dead letters must not crowd out.
    "DROP TRIGGER IF EXISTS deliveries_added",
    "DROP TRIGGER IF EXISTS deliveries_removed",
    """CREATE TRIGGER IF NOT EXISTS live_added AFTER INSERT ON deliveries
        WHEN NEW.state != 2 BEGIN
        UPDATE totals SET rows = rows + 1, bytes = bytes + NEW.size WHERE id = 0;
    END""",
    """CREATE TRIGGER IF NOT EXISTS live_removed AFTER DELETE ON deliveries
        WHEN OLD.state != 2 BEGIN
        UPDATE totals SET rows = rows - 1, bytes = bytes - OLD.size WHERE id = 0;
    END""",
    """CREATE TRIGGER IF NOT EXISTS live_died AFTER UPDATE OF state ON deliveries
        WHEN OLD.state != 2 AND NEW.state = 2 BEGIN
        UPDATE totals SET rows = rows - 1, bytes = bytes - OLD.size WHERE id = 0;
    END""",
    """CREATE TRIGGER IF NOT EXISTS live_revived AFTER UPDATE OF state ON deliveries
        WHEN OLD.state = 2 AND NEW.state != 2 BEGIN
        UPDATE totals SET rows = rows + 1, bytes = bytes + NEW.size WHERE id = 0;
    END""",
    "CREATE TABLE IF NOT EXISTS counters ("
    " destination TEXT NOT NULL, name TEXT NOT NULL, value INTEGER NOT NULL,"
    " PRIMARY KEY (destination, name))",
    # What a destination must remember between deliveries and across restarts: the item it
    # created for a message (to update it later), the first step of a two-step submit.
    "CREATE TABLE IF NOT EXISTS exporter_state ("
    " destination TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,"
    " updated_at REAL NOT NULL, PRIMARY KEY (destination, key))",
    "CREATE INDEX IF NOT EXISTS exporter_state_age ON exporter_state (updated_at)",
    "CREATE INDEX IF NOT EXISTS deliveries_dead ON deliveries (state, created_at)",
    # Recount what is live: schema 2 counted dead letters in the totals.
    "UPDATE totals SET rows = (SELECT COUNT(*) FROM deliveries WHERE state != 2),"
    " bytes = (SELECT COALESCE(SUM(size), 0) FROM deliveries WHERE state != 2) WHERE id = 0",
)

COUNT_SQL: Final = (
    "INSERT INTO counters (destination, name, value) VALUES (?, ?, ?)"
    " ON CONFLICT (destination, name) DO UPDATE SET value = value + excluded.value"
)


class OutboxClosed(RuntimeError):
    """The outbox was used after `close()`."""


class OutboxBusy(Exception):
    """The write lock could not be had within the caller's bound; nothing was stored."""


#: Connections inherited across fork: never used nor closed in the child, and held here so they
#: are never collected (collection would close them).
_inherited: list[sqlite3.Connection] = []


class OutboxDatabase:
    """The file and its connections; `Outbox` adds the queue, and the mixins the rest."""

    def __init__(self, path: str, limits: OutboxLimits = OutboxLimits()) -> None:
        self.path = path
        self.limits = limits
        self._host = socket.gethostname()
        self._closed = False
        self._init_process_state()
        with self._lock:
            self._connection()
        after_fork_in_child(self, OutboxDatabase._init_process_state)
        _live.add(self)

    def _init_process_state(self) -> None:
        """Locks and connections of this process; a forked child starts here again."""
        for conn in (getattr(self, "_conn", None), getattr(self, "_app_conn", None)):
            if conn is not None:
                _inherited.append(conn)
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._app_lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._app_conn: sqlite3.Connection | None = None
        self._file_id: tuple[int, int] | None = None
        #: Bytes of the database file beyond the rows' payloads (pages, indexes), as last
        #: measured by `check_file`.
        self._file_overhead = 0

    @property
    def wal_bytes(self) -> int:
        """Bytes of the WAL beside the database right now (one `stat`), 0 when there is none."""
        if self.path == ":memory:":
            return 0
        try:
            return os.stat(self.path + "-wal").st_size
        except OSError:
            return 0

    @property
    def overhead_bytes(self) -> int:
        """What the files on disk hold beyond the rows' payloads, as the byte cap counts it: the
        WAL now, the database's own pages as of the last `check_file`, and room for one more
        commit's page images."""
        if self.path == ":memory:":
            return 0
        return self.wal_bytes + self._file_overhead + COMMIT_OVERHEAD_BYTES

    @property
    def owner(self) -> str:
        """This process's name on the rows it leases."""
        return f"{self._host}:{os.getpid()}"

    # -- connections ------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        """The worker's connection; caller holds `_lock`."""
        if self._closed:
            raise OutboxClosed(f"outbox {self.path!r} is closed")
        if self._pid != os.getpid():
            self._init_process_state()
        if self._conn is None:
            self._conn = self._open(BUSY_TIMEOUT_MS)
            self._file_id = self._current_file_id()
        return self._conn

    def _app_connection(self) -> sqlite3.Connection:
        """The app threads' connection (no busy wait: the caller bounds its own); caller holds
        `_app_lock`."""
        if self._closed:
            raise OutboxClosed(f"outbox {self.path!r} is closed")
        if self._pid != os.getpid():
            self._init_process_state()
        if self._app_conn is None:
            self._app_conn = self._open(0)
        return self._app_conn

    def _open(self, busy_timeout_ms: int) -> sqlite3.Connection:
        if self.path != ":memory:" and not os.path.exists(self.path):
            directory = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(directory, exist_ok=True)
            # Signals can carry user comments: keep the file (and SQLite's WAL and shm files,
            # which copy its mode) readable by this user only.
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        conn = sqlite3.connect(
            self.path,
            timeout=busy_timeout_ms / 1000,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=64,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
            if busy_timeout_ms:  # the worker's connection sets the file up
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            if busy_timeout_ms and conn.execute("PRAGMA user_version").fetchone()[0] != (
                SCHEMA_VERSION
            ):
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in _SCHEMA:
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    conn.execute("COMMIT")
                except BaseException:
                    rollback(conn)
                    raise
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A short write transaction on the worker's connection; `IMMEDIATE` takes the write
        lock up front, so a reader that later writes never fails on a stale snapshot."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    rollback(conn)
                    raise
            except sqlite3.Error as exc:
                if _needs_reopen(exc):
                    self._discard_worker_connection(conn)
                raise

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._connection()

    @contextmanager
    def _app_transaction(self, wait: float) -> Iterator[sqlite3.Connection]:
        """A write transaction for the app's thread, or `OutboxBusy` after `wait` seconds. An
        in-memory outbox is one database on one connection: the worker's, under its lock."""
        deadline = time.monotonic() + wait
        shared = self.path == ":memory:"
        lock = self._lock if shared else self._app_lock
        acquired = lock.acquire(timeout=wait) if wait > 0 else lock.acquire(blocking=False)
        if not acquired:
            raise OutboxBusy(f"outbox {self.path!r} busy in this process")
        try:
            conn = self._connection() if shared else self._app_connection()
            delay = 0.0005
            while True:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) and "busy" not in str(exc):
                        raise
                    if time.monotonic() + delay > deadline:
                        raise OutboxBusy(
                            f"outbox {self.path!r} locked by another process"
                        ) from None
                    time.sleep(delay)
                    delay = min(delay * 2, 0.005)
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                rollback(conn)
                raise
        except sqlite3.Error as exc:
            if _needs_reopen(exc) and self._app_conn is not None:
                # Opened read-only (or its file is gone): the next call opens a fresh one.
                conn, self._app_conn = self._app_conn, None
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            raise
        finally:
            lock.release()

    def _discard_worker_connection(self, conn: sqlite3.Connection) -> None:
        """Drop the worker's connection after an error that it cannot recover from (opened
        read-only, say), so the next call opens a new one. Caller holds `_lock`.

        Not while the file was deleted under it: that connection is the only way left to what
        the old file holds, until `check_file` has carried it over.
        """
        if self._conn is not conn or self._current_file_id() != self._file_id:
            return
        self._conn = None
        with contextlib.suppress(sqlite3.Error):
            conn.close()

    def close(self) -> None:
        """Close this process's connections; idempotent."""
        with self._lock, self._app_lock:
            if self._closed:
                return
            self._closed = True
            for conn in (self._conn, self._app_conn):
                if conn is None:
                    continue
                if self._pid == os.getpid():
                    conn.close()
                else:
                    _inherited.append(conn)
            self._conn = self._app_conn = None

    # -- the file's own faults --------------------------------------------------------------

    def _current_file_id(self) -> tuple[int, int] | None:
        if self.path == ":memory:":
            return None
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return (stat.st_dev, stat.st_ino)

    def check_file(self) -> None:
        """Recreate a deleted or replaced outbox file, keeping what it held; checkpoint a WAL
        that has grown past its share of the cap; measure the file's overhead for the cap.
        Called by the worker, off the app's thread."""
        if self.path == ":memory:" or self._closed:
            return
        with self._lock:
            conn = self._connection()
            if self._current_file_id() != self._file_id:
                self._recreate(conn)
                conn = self._connection()
            if self.wal_bytes > min(WAL_CHECKPOINT_BYTES, self.limits.max_bytes // 8):
                # TRUNCATE waits (busy timeout) for readers to move on, then empties the file.
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            with contextlib.suppress(sqlite3.Error):
                self._file_overhead = self._measure_overhead(conn)

    @staticmethod
    def _measure_overhead(conn: sqlite3.Connection) -> int:
        """Bytes of the database's used pages beyond the payloads the totals count."""
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
        free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
        row = conn.execute("SELECT bytes FROM totals WHERE id = 0").fetchone()
        stored = int(row[0]) if row is not None else 0
        (dead,) = conn.execute(
            "SELECT COALESCE(SUM(size), 0) FROM deliveries WHERE state = 2"
        ).fetchone()
        return max(0, (pages - free) * page_size - stored - int(dead))

    def _recreate(self, old: sqlite3.Connection) -> None:
        """The file was deleted (or replaced) while open. The old connection still reads the
        deleted inode: copy what it holds into a new file at the path, rows keeping their ids,
        state and leases (an export in flight then records its outcome as usual). Caller holds
        `_lock`; the app threads' lock is taken before reading, so no signal committed through
        the old file meanwhile is left behind.

        If the new file cannot be made (the directory is read-only, the disk full), the old
        connection stays in use and the next check tries again: nothing it holds is lost while
        this process lives.
        """
        with self._app_lock:
            try:
                rows = old.execute(
                    "SELECT id, signal_id, destination, payload, size, state, attempts,"
                    " created_at, next_attempt_at, owner, lease_until, reason FROM deliveries"
                ).fetchall()
                state = old.execute(
                    "SELECT destination, key, value, updated_at FROM exporter_state"
                ).fetchall()
                counters = old.execute("SELECT destination, name, value FROM counters").fetchall()
            except sqlite3.Error as exc:
                log_rate_limited(
                    logging.ERROR,
                    "outbox:recreate-read",
                    "brixo_otel: the outbox file %r was deleted or replaced, and what it held "
                    "cannot be read back (%s)",
                    self.path,
                    exc,
                )
                rows, state, counters = [], [], []
            try:
                new = self._open(BUSY_TIMEOUT_MS)
            except (OSError, sqlite3.Error) as exc:
                log_rate_limited(
                    logging.ERROR,
                    "outbox:recreate-failed",
                    "brixo_otel: the outbox file %r was deleted or replaced while in use, and "
                    "cannot be recreated (%s: %s); this process keeps its %d rows in the old, "
                    "deleted file (lost if it exits) and retries",
                    self.path,
                    type(exc).__name__,
                    exc,
                    len(rows),
                )
                return
            try:
                new.execute("BEGIN IMMEDIATE")
                # Another process sharing the file may have recreated it first, from the same
                # rows: the ids make a second copy a no-op.
                new.executemany(
                    "INSERT OR IGNORE INTO deliveries (id, signal_id, destination, payload, size,"
                    " state, attempts, created_at, next_attempt_at, owner, lease_until, reason)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                new.executemany(
                    "INSERT OR IGNORE INTO exporter_state (destination, key, value, updated_at)"
                    " VALUES (?, ?, ?, ?)",
                    state,
                )
                new.executemany(COUNT_SQL, counters)
                new.execute("COMMIT")
            except BaseException as exc:
                rollback(new)
                new.close()
                if not isinstance(exc, (OSError, sqlite3.Error)):
                    raise
                log_rate_limited(
                    logging.ERROR,
                    "outbox:recreate-failed",
                    "brixo_otel: the outbox file %r was deleted or replaced while in use, and "
                    "its rows cannot be written to a new one (%s: %s); keeping the old file's "
                    "%d rows and retrying",
                    self.path,
                    type(exc).__name__,
                    exc,
                    len(rows),
                )
                return
            for conn in (old, self._app_conn):
                if conn is not None:
                    with contextlib.suppress(sqlite3.Error):
                        conn.close()
            self._app_conn = None
            self._conn = new
            self._file_id = self._current_file_id()
        logger.error(
            "brixo_otel: the outbox file %r was deleted or replaced while in use; recreated it "
            "with the %d rows this process still held",
            self.path,
            len(rows),
        )


def _needs_reopen(exc: sqlite3.Error) -> bool:
    """Whether SQLite's error means the connection itself cannot write any more (its primary
    result code is one of `_REOPEN_ERRORS`); busy, locked or full are passing states instead."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and (code & 0xFF) in _REOPEN_ERRORS


def rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


_live: weakref.WeakSet[OutboxDatabase] = weakref.WeakSet()
_held_for_fork: list[threading.Lock] = []


def _before_fork() -> None:
    """Wait, briefly, for transactions in progress, so no child inherits one half done."""
    deadline = time.monotonic() + FORK_WAIT_SECONDS
    for database in list(_live):
        for lock in (database._lock, database._app_lock):
            if lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                _held_for_fork.append(lock)


def _after_fork_in_parent() -> None:
    while _held_for_fork:
        _held_for_fork.pop().release()


def _after_fork_in_child() -> None:
    _held_for_fork.clear()  # the child's databases get fresh locks (`_init_process_state`)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
