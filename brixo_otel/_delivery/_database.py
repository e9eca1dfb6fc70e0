"""The outbox's SQLite file: schema, connections, transactions, and the file's own faults.

One file in WAL mode, shared by the processes of a host. Two connections per process:

- the *app* connection, used by `feedback()` on the app's threads, waits for the write lock at
  most a few milliseconds (`APP_WAIT_SECONDS`): a longer wait becomes a signal held in memory
  by the caller's processor, never a blocked request;
- the *worker* connection, used by the delivery worker, waits patiently (`BUSY_TIMEOUT_MS`).

`synchronous=NORMAL` in WAL mode makes a commit survive the death of the process (it is in the
WAL before `add` returns); only a power loss can take the last commits back — the trade that keeps
`add` in the tens of microseconds instead of an fsync per click.

Files can vanish or fill: `check_file()` (called by the worker every poll) notices an outbox file
deleted or replaced under it, recreates it and copies over what the old, still open, connection
holds; it also checkpoints the WAL so that the files on disk respect the byte cap.

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
        #: Bytes of the WAL beside the database, as last measured by `check_file`.
        self.wal_bytes = 0

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
        `_app_lock`. An in-memory outbox has one database, so it shares the worker's."""
        if self._closed:
            raise OutboxClosed(f"outbox {self.path!r} is closed")
        if self._pid != os.getpid():
            self._init_process_state()
        if self.path == ":memory:":
            with self._lock:
                return self._connection()
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
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                rollback(conn)
                raise

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._connection()

    @contextmanager
    def _app_transaction(self, wait: float) -> Iterator[sqlite3.Connection]:
        """A write transaction for the app's thread, or `OutboxBusy` after `wait` seconds."""
        deadline = time.monotonic() + wait
        if wait > 0:
            acquired = self._app_lock.acquire(timeout=wait)
        else:
            acquired = self._app_lock.acquire(blocking=False)
        if not acquired:
            raise OutboxBusy(f"outbox {self.path!r} busy in this process")
        try:
            conn = self._app_connection()
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
        finally:
            self._app_lock.release()

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
        that has grown past its share of the cap. Called by the worker, off the app's thread."""
        if self.path == ":memory:" or self._closed:
            return
        with self._lock:
            conn = self._connection()
            if self._current_file_id() != self._file_id:
                self._recreate(conn)
                conn = self._connection()
        try:
            self.wal_bytes = os.path.getsize(self.path + "-wal")
        except OSError:
            self.wal_bytes = 0
        if self.wal_bytes > min(WAL_CHECKPOINT_BYTES, self.limits.max_bytes // 8):
            with self._lock:
                with contextlib.suppress(sqlite3.Error):
                    self._connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")
            try:
                self.wal_bytes = os.path.getsize(self.path + "-wal")
            except OSError:
                self.wal_bytes = 0

    def _recreate(self, old: sqlite3.Connection) -> None:
        """The file was deleted (or replaced) while open. The old connection still reads the
        deleted inode: copy what it holds into a new file at the path. Caller holds `_lock`."""
        logger.error(
            "brixo_otel: the outbox file %r was deleted or replaced while in use; recreating it "
            "and carrying over the signals this process still holds",
            self.path,
        )
        rows = old.execute(
            "SELECT signal_id, destination, payload, size, state, attempts, created_at,"
            " next_attempt_at, reason FROM deliveries"
        ).fetchall()
        state = old.execute(
            "SELECT destination, key, value, updated_at FROM exporter_state"
        ).fetchall()
        with self._app_lock:
            for conn in (old, self._app_conn):
                if conn is not None:
                    with contextlib.suppress(sqlite3.Error):
                        conn.close()
            self._conn = self._app_conn = None
            new = self._open(BUSY_TIMEOUT_MS)
            new.execute("BEGIN IMMEDIATE")
            try:
                new.executemany(
                    "INSERT INTO deliveries (signal_id, destination, payload, size, state,"
                    " attempts, created_at, next_attempt_at, reason)"
                    " VALUES (?, ?, ?, ?, CASE WHEN ? = 2 THEN 2 ELSE 0 END, ?, ?, ?, ?)",
                    rows,
                )
                new.executemany(
                    "INSERT OR REPLACE INTO exporter_state (destination, key, value, updated_at)"
                    " VALUES (?, ?, ?, ?)",
                    state,
                )
                new.execute("COMMIT")
            except BaseException:
                rollback(new)
                raise
            self._conn = new
            self._file_id = self._current_file_id()
        log_rate_limited(
            logging.ERROR,
            "outbox:recreated",
            "brixo_otel: outbox %r recreated with %d rows carried over",
            self.path,
            len(rows),
        )


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
