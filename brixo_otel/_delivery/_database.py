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
next check tries again); it also checkpoints the WAL (and the worker does after its commits,
once it is past its share of the cap). The byte cap counts what is on disk, not only the rows'
payloads: `bytes_on_disk` adds the WAL, SQLite's own pages, and the
pages and index entries of the rows (at the ratio `check_file` measures). Dead letters are
counted apart, by their own cap and retention. A connection that SQLite opened read-only
(the file or its directory was not writable then) is reopened after a refused write, so a write
that fails for that reason succeeds once the permissions are back.

Connections never cross a fork. SQLite is not fork-safe: besides the connections, a child
inherits SQLite's table of the files this process has open and the locks it holds on them, but
not the locks themselves (POSIX locks belong to a process), so even a connection the child opens
anew on the same file would skip taking locks it believes held, and the parent's commits could
be lost. So before a fork, every outbox waits (at most `FORK_WAIT_SECONDS` in all, so
`os.fork()` is never held up) for its transactions in progress and closes its connections; the
parent reopens them at its next use, and the child starts with nothing of SQLite's inherited.
An outbox that could not be closed in time is barred in the child (`OutboxInherited`): its
connections are set aside untouched (closing one could roll back into the parent's shared WAL),
and the child's signals wait in memory, loudly, rather than risk the file.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import socket
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Concatenate, Final, ParamSpec

from brixo_otel._forksafe import after_fork_in_child
from brixo_otel._internal import log_rate_limited, logger
from brixo_otel._policies import OutboxLimits

P = ParamSpec("P")

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
#: How long a checkpoint waits for readers and writers to move on, in milliseconds: meanwhile
#: it holds the write lock, so `feedback()` holds its signals in memory instead of committing.
CHECKPOINT_WAIT_MS: Final = 20
#: The worker waits for the write lock in steps this long, letting go of the process's own lock
#: in between (see `_transaction`).
_BEGIN_STEP_MS: Final = 20
#: Longest the worker holds a write back while the WAL is too large to take it (see
#: `_transaction`): past it, the write goes ahead, since delivery must go on.
_WAL_THROTTLE_SECONDS: Final = 0.5
#: What one more commit may add to the WAL beyond its payload (page images of the rows, their
#: index entries and the totals): counted up front, so that a commit admitted under the cap stays
#: so. The largest commits are the worker's, one per round (a batch's fan-outs, answers and next
#: claim: some 20 pages), which can take the WAL past twice its share before the next checkpoint.
COMMIT_OVERHEAD_BYTES: Final = 128 * 1024
#: The pages an outbox holds whatever it stores (schema, totals, counters, exporter state).
BASE_BYTES: Final = 64 * 1024
#: SQLite's shared-memory file beside the WAL (32 KiB per 4 MiB of WAL).
SHM_BYTES: Final = 32 * 1024
#: Bytes on disk per byte of payload (the row's page share, its index entries) until
#: `check_file` has measured it on at least `_RATIO_SAMPLE_BYTES` of rows; 1.3 to 2.5 is typical
#: (more for small signals, and for pages left part-empty by deletes).
DEFAULT_PAGE_RATIO: Final = 2.5
_RATIO_SAMPLE_BYTES: Final = 256 * 1024
#: How long a reading of the database's used pages stands in for reading them again (the
#: worker reads them at every poll, once a second): a commit estimates them from that reading and
#: the payload bytes stored since, and reads them exactly (three header reads) only when the
#: estimate comes within half of what the cap leaves them, or the reading is older.
PAGES_ESTIMATE_SECONDS: Final = 2.0
#: How often the app's commits look at the WAL's size (a `stat`), at most, while it is far below
#: twice its share of the cap; each of this process's commits counts `COMMIT_OVERHEAD_BYTES`
#: more toward it meanwhile (see `_beside_used_pages`).
WAL_LOOK_SECONDS: Final = 0.001
#: The largest signal (its payload, in bytes) that `feedback()` commits under the byte cap's
#: lease (see `OutboxDatabase.stored_bytes_bound`); larger ones work the bound out anew.
LEASED_SIGNAL_BYTES: Final = 32 * 1024
#: How much other processes' commits could add to the WAL within one `WAL_LOOK_SECONDS`, unseen
#: (a generous bound: SQLite serialises commits, a few tens of KiB each, some tens per
#: millisecond): the app's commits look at the WAL at every commit once it may be this close to
#: twice its share.
WAL_UNSEEN_BYTES: Final = 2 * 1024 * 1024
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


class OutboxInherited(sqlite3.OperationalError):
    """This process was forked while the outbox was in use, so it must not open the file."""


#: Connections inherited across fork: never used nor closed in the child, and held here so they
#: are never collected (collection would close them).
_inherited: list[sqlite3.Connection] = []


def _abandon(conn: sqlite3.Connection) -> None:
    """Keep a connection a forked child inherited from ever being closed, even by the
    interpreter's teardown at exit, which frees what modules hold: closing it would roll back
    the parent's transaction in progress into the WAL index the processes share (commits of the
    parent lost). One reference more than anyone will drop; the process's end frees it
    without SQLite's close ever running."""
    _inherited.append(conn)
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(conn))


class OutboxDatabase:
    """The file and its connections; `Outbox` adds the queue, and the mixins the rest."""

    def __init__(self, path: str, limits: OutboxLimits = OutboxLimits()) -> None:
        self.path = path
        self.limits = limits
        share = self.wal_share
        #: The byte cap's figures that only depend on the limits (see `bytes_on_disk`).
        self._wal_limit = 2 * share
        self._wal_exact_above = max(share // 4, 2 * share - WAL_UNSEEN_BYTES)
        self._room_beside_pages = 2 * share + SHM_BYTES + COMMIT_OVERHEAD_BYTES
        self._host = socket.gethostname()
        self._closed = False
        self._init_process_state()
        with self._lock:
            self._connection()
        after_fork_in_child(self, OutboxDatabase._init_process_state)
        _live.add(self)

    def _init_process_state(self) -> None:
        """Locks and connections of this process; a forked child starts here again."""
        #: Why this process must not open the file (see the module), or None.
        self._barred: str | None = None
        #: True while a fork waits for this outbox to be idle: the app's threads and the worker
        #: then keep out of it, so the wait is short.
        self._forking = False
        for conn in (getattr(self, "_conn", None), getattr(self, "_app_conn", None)):
            if conn is not None:
                _abandon(conn)
                if self.path != ":memory:":
                    self._barred = (
                        f"this process was forked while the outbox {self.path!r} was in use "
                        "by another thread, and SQLite cannot be used safely on a file that a "
                        "parent had open at the fork; its signals are held in memory (lost at "
                        "exit). Fork when brixo-otel is idle, or configure it after the fork"
                    )
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._app_lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._app_conn: sqlite3.Connection | None = None
        self._file_id: tuple[int, int] | None = None
        #: Bytes on disk per byte of payload, and the bytes of dead letters' pages, as last
        #: measured by `check_file`.
        self._page_ratio = DEFAULT_PAGE_RATIO
        self._dead_pages = 0
        #: The last exact reading of the used pages: (bytes in use, payload bytes stored then,
        #: when, monotonic), or None before the first.
        self._pages_read: tuple[int, int, float] | None = None
        #: The WAL's size as last looked at (plus this process's commits since), and when.
        self._wal_seen = 0
        self._wal_seen_at = -math.inf
        #: `stored_bytes_bound`'s lease: the bound, until when it stands, and what this
        #: process's commits may add to the WAL meanwhile.
        self._lease_bound = 0
        self._lease_until = -math.inf
        self._lease_wal_room = 0

    @property
    def wal_bytes(self) -> int:
        """Bytes of the WAL beside the database right now (one `stat`), 0 when there is none."""
        if self.path == ":memory:":
            return 0
        try:
            return os.stat(self.path + "-wal").st_size
        except OSError:
            return 0

    def bytes_on_disk(self, conn: sqlite3.Connection, stored: int, adding: int) -> int:
        """What the files would hold once `adding` more bytes of payload are stored (`stored`
        are already), as the byte cap counts it: twice the WAL's share of the cap (the worker
        checkpoints it back to empty past its share; past twice, `OutboxBusy` is raised instead
        of an answer, so the signal waits in memory), the shared-memory file, the
        database's pages in use (free pages are reused before the file grows, and dead letters'
        pages are counted by their own cap instead), the new rows' pages at the ratio
        `check_file` measured, and room for one commit's page images.

        So the files on disk respect the cap: the database file only grows when its used pages
        do, and they stay within the cap less what the WAL may take. An in-memory outbox counts
        its payloads alone.

        The app's commits ask `stored_bytes_bound` first, which needs no transaction; this, the
        exact answer, is for when that cannot tell."""
        if self.path == ":memory:":
            return stored + adding
        others = self._beside_used_pages(adding, time.monotonic())
        return others + self._used_bytes(conn, stored, room=self.limits.max_bytes - others)

    def stored_bytes_bound(self, adding: int) -> int | None:
        """The most payload bytes the outbox may already hold for `adding` more to pass the
        byte cap by `bytes_on_disk`'s estimate, or None when only an exact reading can tell
        (no fresh reading of the used pages, or the estimate near the cap).

        So `feedback()` checks the cap inside its one INSERT statement (the bound against the
        totals row), with no transaction of its own around it and no read of the file's
        pages: a bound lets through no more than `bytes_on_disk` would, and a commit it
        refuses is tried again the exact way. Raises `OutboxBusy` as `bytes_on_disk`.

        One bound, worked out for a signal of `LEASED_SIGNAL_BYTES`, serves the commits of the
        next moments (a *lease*): until the WAL is due to be looked at again, and while this
        process's commits have not added so much to it that it must be looked at sooner. App
        threads update the lease without a lock: two at once may count one commit instead of
        two, for at most the lease's millisecond, far within `WAL_UNSEEN_BYTES`."""
        now = time.monotonic()
        if now < self._lease_until and adding <= LEASED_SIGNAL_BYTES:
            room = self._lease_wal_room - adding - COMMIT_OVERHEAD_BYTES
            if room >= 0:
                self._lease_wal_room = room
                return self._lease_bound
        return self._bound_anew(adding, now)

    def _bound_anew(self, adding: int, now: float) -> int | None:
        """`stored_bytes_bound` worked out, and a new lease taken when one can be."""
        limit = self.limits.max_bytes
        if self.path == ":memory:":
            return limit - adding
        if self._lease_until != -math.inf:  # the WAL estimate, with the lease's commits
            leased = self._wal_exact_above - self._lease_wal_room
            self._wal_seen = max(self._wal_seen, leased)  # the worker may have added meanwhile
            self._lease_until = -math.inf
        self._beside_used_pages(adding, now)  # the WAL looked at (`OutboxBusy` past its bound)
        reading = self._pages_read
        if reading is None or now - reading[2] >= PAGES_ESTIMATE_SECONDS:
            return None
        used, stored_then, read_at = reading
        ratio = self._page_ratio
        # `bytes_on_disk` for a signal of at least `LEASED_SIGNAL_BYTES`, so the same bound
        # serves the lease's commits: `_used_bytes` estimates `used + ceil((stored -
        # stored_then) * ratio)` and keeps the estimate only while it is within half the room
        # the cap leaves; the most `stored` that does so. A commit of a smaller signal it
        # refuses near that point is decided the exact way.
        reserve = max(adding, LEASED_SIGNAL_BYTES)
        others = self._room_beside_pages + math.ceil(reserve * ratio)
        budget = (limit - others) // 2 - used
        if budget < 0:
            return None
        bound = stored_then + int(budget / ratio)
        if adding <= LEASED_SIGNAL_BYTES and self._wal_seen <= self._wal_exact_above:
            self._lease_bound = bound
            self._lease_wal_room = self._wal_exact_above - self._wal_seen
            self._lease_until = min(
                self._wal_seen_at + WAL_LOOK_SECONDS, read_at + PAGES_ESTIMATE_SECONDS
            )
        return bound

    def _beside_used_pages(self, adding: int, now: float) -> int:
        """What the cap counts besides the database's used pages: twice the WAL's share (the
        WAL is never let past it), the shared memory, one commit's room and the new rows'
        pages. Raises `OutboxBusy` while the WAL is past twice its share: the worker
        checkpoints it at its next commit, and until then the signal waits in memory rather
        than grow it further (and is not refused, which a full outbox would be).

        The WAL's size is looked at (a `stat`) once the last look is a millisecond old, and at
        every commit once the WAL may be near twice its share (within `WAL_UNSEEN_BYTES`, or
        past a quarter of its share, whichever comes first). In between, each commit of this
        process adds what it may write at most (its payload and `COMMIT_OVERHEAD_BYTES`), so
        only other processes' commits of the last millisecond go uncounted, and only while
        the WAL is too far below twice its share for them to take it there (the worker
        checkpoints it at its share)."""
        wal = self._wal_seen
        if wal > self._wal_exact_above or now - self._wal_seen_at >= WAL_LOOK_SECONDS:
            wal = self.wal_bytes
            self._wal_seen_at = now
        self._wal_seen = wal + adding + COMMIT_OVERHEAD_BYTES
        if wal > self._wal_limit:
            raise OutboxBusy(f"outbox {self.path!r}: its WAL ({wal} bytes) is being checkpointed")
        return self._room_beside_pages + math.ceil(adding * self._page_ratio)

    def _used_bytes(self, conn: sqlite3.Connection, stored: int, *, room: int) -> int:
        """The database's pages in use, less the dead letters' share: estimated from the last
        reading and the payload stored since (at the measured ratio; never less than the
        reading, as pages freed by deletes are only reused, not returned) while that stays
        within half the `room` the cap leaves them; read exactly otherwise, which also renews
        the reading."""
        reading = self._pages_read
        if reading is not None:
            used, stored_then, read_at = reading
            estimate = used + math.ceil(max(0, stored - stored_then) * self._page_ratio)
            if 2 * estimate <= room and time.monotonic() - read_at < PAGES_ESTIMATE_SECONDS:
                return estimate
        return self._note_used_pages(_pages_in_use(conn), stored)

    def _note_used_pages(self, in_use: int, stored: int) -> int:
        """Keep a reading of the pages in use (less the dead letters' share) while `stored`
        payload bytes are stored; that share of them."""
        used = max(0, in_use - self._dead_pages)
        self._pages_read = (used, stored, time.monotonic())
        return used

    @property
    def wal_share(self) -> int:
        """How large the WAL may grow before the worker checkpoints it back to empty."""
        return min(WAL_CHECKPOINT_BYTES, self.limits.max_bytes // 8)

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
        if self._barred is not None:
            raise OutboxInherited(self._barred)
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
        """A connection: the worker's (`busy_timeout_ms` > 0), which makes the file and its
        schema when they are missing, or the app's, which only opens a file that exists. A file
        deleted under a running process is the worker's to make again, with the rows the old
        one held (`check_file`): one the app made first would be empty meanwhile, without even
        its tables, and its signals would fail there instead of waiting in memory."""
        target = self.path
        if target != ":memory:" and busy_timeout_ms and not os.path.exists(target):
            directory = os.path.dirname(os.path.abspath(target))
            os.makedirs(directory, exist_ok=True)
            # Signals can carry user comments: keep the file (and SQLite's WAL and shm files,
            # which copy its mode) readable by this user only.
            with contextlib.suppress(FileExistsError):
                os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        elif target != ":memory:" and not busy_timeout_ms:
            target = Path(target).absolute().as_uri() + "?mode=rw"
        conn = sqlite3.connect(
            target,
            timeout=busy_timeout_ms / 1000,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=64,
            uri=target is not self.path,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
            if busy_timeout_ms:  # the worker's connection sets the file up
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            # SQLite's own checkpoints (PASSIVE, at a commit past 1000 pages) never stop the
            # WAL from growing while several processes write without pause, and would run on
            # the app's thread too: the worker checkpoints instead (`_checkpoint_if_large`).
            conn.execute("PRAGMA wal_autocheckpoint = 0")
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
        lock up front, so a reader that later writes never fails on a stale snapshot.

        While another process holds the write lock, it waits up to `BUSY_TIMEOUT_MS`, but in
        steps of `_BEGIN_STEP_MS` with this process's lock let go in between: a fork meanwhile
        then finds the outbox idle and closes it (see the module) instead of leaving a child
        that cannot use it. A WAL past twice its share is emptied first (waiting up to
        `_WAL_THROTTLE_SECONDS` if another process is checkpointing it), so the worker's
        writes cannot grow it without bound either."""
        now = time.monotonic()
        deadline = now + BUSY_TIMEOUT_MS / 1000
        throttle = now + _WAL_THROTTLE_SECONDS
        while True:
            if self._forking and time.monotonic() < deadline:
                time.sleep(0.001)
                continue
            with self._lock:
                conn = self._connection()
                if self._wal_too_large(conn) and time.monotonic() < throttle:
                    ready = False
                else:
                    try:
                        ready = self._begin_step(conn, last=time.monotonic() >= deadline)
                    except sqlite3.Error as exc:
                        if _needs_reopen(exc):
                            self._discard_worker_connection(conn)
                        raise
                if ready:
                    try:
                        yield conn
                        conn.execute("COMMIT")
                    except BaseException as exc:
                        rollback(conn)
                        if isinstance(exc, sqlite3.Error) and _needs_reopen(exc):
                            self._discard_worker_connection(conn)
                        raise
                    self._checkpoint_if_large(conn)
                    return
            time.sleep(0.002)

    def _wal_too_large(self, conn: sqlite3.Connection) -> bool:
        """Whether the WAL is past twice its share even after a checkpoint; caller holds
        `_lock`."""
        if self.wal_bytes <= 2 * self.wal_share:
            return False
        self._checkpoint_if_large(conn)
        return self.wal_bytes > 2 * self.wal_share

    @staticmethod
    def _begin_step(conn: sqlite3.Connection, *, last: bool) -> bool:
        """`BEGIN IMMEDIATE`, waiting at most one step for the write lock; False if it is still
        held by another process (the error itself on the `last` step)."""
        conn.execute(f"PRAGMA busy_timeout = {_BEGIN_STEP_MS}")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if last or not _is_busy(exc):
                raise
            return False
        finally:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        return True

    def _checkpoint_if_large(self, conn: sqlite3.Connection, attempts: int = 1) -> None:
        """Copy the WAL into the database and empty it, once it has grown past its share of the
        cap. Runs on the worker's thread after its commits (one `stat` when there is nothing to
        do), so the WAL stays bounded however fast the processes sharing the file write.
        TRUNCATE (unlike SQLite's own PASSIVE checkpoints) waits for readers and writers and then
        restarts the WAL from its start; it is busy at once while another process checkpoints,
        which is then doing it for all. Caller holds `_lock`."""
        if self.path == ":memory:":
            return
        if self.wal_bytes <= self.wal_share:
            return
        try:
            conn.execute(f"PRAGMA busy_timeout = {CHECKPOINT_WAIT_MS}")
            try:
                for attempt in range(attempts):
                    (busy, _, _) = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                    if not busy or self._forking:
                        return  # done, or a fork waits for this process's lock: later
                    if attempt + 1 < attempts:
                        time.sleep(0.005)
            finally:
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        except sqlite3.Error:
            pass  # the next commit, or check, tries again

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._connection()

    def _app_execute(self, wait: float, sql: str, parameters: tuple[object, ...]) -> int:
        """One statement in a transaction of its own (SQLite's autocommit) for the app's
        thread: the rows it changed, or `OutboxBusy` after `wait` seconds. A write statement
        takes the write lock before it reads anything, as `BEGIN IMMEDIATE` would, so one
        statement is a whole capped commit (see `Outbox.add`) at a quarter of the calls."""
        lock, conn, left = self._app_enter(wait)
        try:
            try:
                return conn.execute(sql, parameters).rowcount
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
            # Busy: what is left of the wait counts from now (the clock is read only here,
            # off the usual path).
            deadline = time.monotonic() + left
            return _execute_until(conn, deadline, sql, parameters, self.path).rowcount
        except sqlite3.Error as exc:
            self._app_failed(exc)
            raise
        finally:
            lock.release()

    def _app_commit(
        self,
        wait: float,
        write: Callable[Concatenate[sqlite3.Connection, P], None],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> None:
        """`write(conn, ...)` in a write transaction for the app's thread, or `OutboxBusy` after
        `wait` seconds. A call, not a context manager: a generator-based `with` costs a tenth
        of the Python work around the commit."""
        lock, conn, left = self._app_enter(wait)
        try:
            _execute_until(conn, time.monotonic() + left, "BEGIN IMMEDIATE", (), self.path)
            try:
                write(conn, *args, **kwargs)
                conn.execute("COMMIT")
            except BaseException:
                rollback(conn)
                raise
        except sqlite3.Error as exc:
            self._app_failed(exc)
            raise
        finally:
            lock.release()

    def _app_enter(self, wait: float) -> tuple[threading.Lock, sqlite3.Connection, float]:
        """The lock (held: the caller releases it), the connection for an app-thread write and
        what is left of `wait`, or `OutboxBusy` when this process's lock is not free within
        `wait`. An in-memory outbox is one database on one connection: the worker's, under
        its lock."""
        if self._forking:
            raise OutboxBusy(f"outbox {self.path!r} closing for a fork")
        shared = self.path == ":memory:"
        lock = self._lock if shared else self._app_lock
        left = wait
        if not lock.acquire(blocking=False):
            started = time.monotonic()
            if wait <= 0 or not lock.acquire(timeout=wait):
                raise OutboxBusy(f"outbox {self.path!r} busy in this process")
            left = max(0.0, wait - (time.monotonic() - started))
        try:
            return lock, self._connection() if shared else self._app_connection(), left
        except BaseException:
            lock.release()
            raise

    def _app_failed(self, exc: sqlite3.Error) -> None:
        """After an app-thread write failed: a connection opened read-only (or whose file is
        gone) is dropped, so the next call opens a fresh one. Caller holds the lock."""
        if _needs_reopen(exc) and self._app_conn is not None:
            conn, self._app_conn = self._app_conn, None
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _close_for_fork(self) -> None:
        """Close this process's connections before a fork (see the module); caller holds both
        locks. Not an in-memory outbox (closing would lose it), and not while the file was
        deleted under the connection (it is the only way left to what the old file holds)."""
        if self.path == ":memory:" or self._pid != os.getpid():
            return
        if self._conn is not None and self._current_file_id() != self._file_id:
            return
        for conn in (self._app_conn, self._conn):
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
        self._conn = self._app_conn = None
        self._file_id = None

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
                    _abandon(conn)
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
            self._checkpoint_if_large(conn, attempts=5)
            with contextlib.suppress(sqlite3.Error):
                self._measure_pages(conn)

    def _measure_pages(self, conn: sqlite3.Connection) -> None:
        """The bytes of used pages (beyond `BASE_BYTES`) per byte of payload, dead letters'
        included (the last ratio while there are too few rows to tell), and the dead letters'
        share of the pages."""
        in_use = _pages_in_use(conn)
        row = conn.execute("SELECT bytes FROM totals WHERE id = 0").fetchone()
        (dead,) = conn.execute(
            "SELECT COALESCE(SUM(size), 0) FROM deliveries WHERE state = 2"
        ).fetchone()
        stored = int(row[0]) if row is not None else 0
        payload = stored + int(dead)
        if payload >= _RATIO_SAMPLE_BYTES:
            self._page_ratio = max(1.0, (in_use - BASE_BYTES) / payload)
        self._dead_pages = math.ceil(int(dead) * self._page_ratio)
        self._note_used_pages(in_use, stored)

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
            self._pages_read = None  # a reading of the old file says nothing of the new
            self._lease_until = -math.inf
        logger.error(
            "brixo_otel: the outbox file %r was deleted or replaced while in use; recreated it "
            "with the %d rows this process still held",
            self.path,
            len(rows),
        )


def _pages_in_use(conn: sqlite3.Connection) -> int:
    """Bytes of the database's pages in use: its pages less the free list (three header
    reads)."""
    page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    return (pages - free) * page_size


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return (code & 0xFF) in (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED
    return "locked" in str(exc) or "busy" in str(exc)


def _execute_until(
    conn: sqlite3.Connection,
    deadline: float,
    sql: str,
    parameters: tuple[object, ...],
    path: str,
) -> sqlite3.Cursor:
    """`sql` on a connection that does not wait for locks itself, tried again in short, growing
    steps while another connection holds the write lock, until `deadline` (monotonic): then
    `OutboxBusy`."""
    delay = 0.0005
    while True:
        try:
            return conn.execute(sql, parameters)
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise
        if time.monotonic() + delay > deadline:
            raise OutboxBusy(f"outbox {path!r} locked by another process") from None
        time.sleep(delay)
        delay = min(delay * 2, 0.005)


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
    """Wait, briefly, for transactions in progress, then close the connections, so a child
    inherits nothing of SQLite's (see the module)."""
    deadline = time.monotonic() + FORK_WAIT_SECONDS
    databases = list(_live)
    for database in databases:
        database._forking = True
    for database in databases:
        held = 0
        for lock in (database._lock, database._app_lock):
            if lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                _held_for_fork.append(lock)
                held += 1
        if held == 2:
            with contextlib.suppress(Exception):  # never stand in the way of the fork
                database._close_for_fork()


def _after_fork_in_parent() -> None:
    for database in list(_live):
        database._forking = False
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
