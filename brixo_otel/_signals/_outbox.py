"""The durable outbox: every signal is on disk before `feedback()` returns.

One SQLite file in WAL mode, one row per (signal, destination). A row moves
pending → in flight (owner "host:pid" and a lease expiry) → delivered (row deleted, counted) or dead
(kept with its reason). Several processes may share the file: claims run under `BEGIN IMMEDIATE`
so two of them never take the same row, and every transaction is short.

`synchronous=NORMAL` in WAL mode makes a committed `add` survive the death of the process (the
commit is in the WAL file before `add` returns); only a power loss can take the last commits back,
which is the trade that keeps `add` in the tens of microseconds instead of an fsync per click.

Row and byte totals live in a one-row table kept exact by triggers, so the caps are checked without
scanning, and stay right when other processes write to the same file.
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
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

from brixo_otel._internal import log_rate_limited
from brixo_otel._signals._model import Signal

PENDING: Final = 0
IN_FLIGHT: Final = 1
DEAD: Final = 2

#: Reason stored on rows whose payload no longer parses.
CORRUPT_ROW: Final = "corrupt row"

#: How long a writer waits for another process's transaction before giving up, in milliseconds.
BUSY_TIMEOUT_MS: Final = 5000

_SCHEMA_VERSION: Final = 2

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
    """CREATE TRIGGER IF NOT EXISTS deliveries_added AFTER INSERT ON deliveries BEGIN
        UPDATE totals SET rows = rows + 1, bytes = bytes + NEW.size WHERE id = 0;
    END""",
    """CREATE TRIGGER IF NOT EXISTS deliveries_removed AFTER DELETE ON deliveries BEGIN
        UPDATE totals SET rows = rows - 1, bytes = bytes - OLD.size WHERE id = 0;
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
)

#: Exporter state unused for this long is forgotten; a user rarely changes a rating later.
STATE_TTL_SECONDS: Final = 90 * 86400.0

_INSERT: Final = (
    "INSERT INTO deliveries"
    " (signal_id, destination, payload, size, created_at, next_attempt_at)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_COUNT: Final = (
    "INSERT INTO counters (destination, name, value) VALUES (?, ?, ?)"
    " ON CONFLICT (destination, name) DO UPDATE SET value = value + excluded.value"
)
_TOTALS: Final = "SELECT rows, bytes FROM totals WHERE id = 0"
_MINE: Final = "id = ? AND owner = ? AND state = 1"


@dataclass(frozen=True)
class OutboxLimits:
    """Caps past which new signals are refused (loudly), and the claim lease."""

    max_rows: int = 100_000
    max_bytes: int = 50 * 1024 * 1024
    #: How long a claimed row belongs to its claimer before any process may take it back.
    lease_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.max_rows < 1 or self.max_bytes < 1 or not self.lease_seconds > 0:
            raise ValueError(f"outbox limits must be positive, got {self!r}")


class OutboxFull(Exception):
    """A cap was reached; the signal was not stored. The message names the cap."""


class OutboxClosed(RuntimeError):
    """The outbox was used after `close()`."""


@dataclass(frozen=True)
class Delivery:
    """One claimed (signal, destination) row, leased to this process."""

    signal: Signal
    destination: str
    #: Attempts already made before this one.
    attempts: int
    #: When the signal entered the outbox (epoch seconds): the clock for `max_age`.
    created_at: float
    row_id: int


@dataclass(frozen=True)
class DeadLetter:
    """A row that was given up on, with why; `signal` is None when the payload is corrupt."""

    signal: Signal | None
    signal_id: str
    destination: str
    reason: str
    attempts: int
    created_at: float
    row_id: int


_live: weakref.WeakSet[Outbox] = weakref.WeakSet()
_live_lock = threading.Lock()
#: Connections inherited across fork. They are never used nor closed in the child: closing one
#: could roll back into the parent's shared WAL index. Held here so they are never collected.
_inherited: list[sqlite3.Connection] = []
#: Outbox locks taken before a fork, released after it in the parent.
_held_for_fork: list[threading.Lock] = []
_FORK_LOCK_TIMEOUT: Final = 10.0


class Outbox:
    """A SQLite-backed queue of deliveries, safe to share between threads and processes."""

    def __init__(self, path: str, limits: OutboxLimits = OutboxLimits()) -> None:
        self.path = path
        self.limits = limits
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._closed = False
        self._host = socket.gethostname()
        with self._lock:
            self._connection()
        with _live_lock:
            _live.add(self)

    # -- connection -----------------------------------------------------------------------------

    @property
    def owner(self) -> str:
        """This process's name on the rows it leases."""
        return f"{self._host}:{os.getpid()}"

    def _connection(self) -> sqlite3.Connection:
        """The connection of this process; caller holds `_lock`.

        After a fork the inherited connection is set aside untouched (SQLite connections must not
        cross a fork) and a new one is opened.
        """
        if self._closed:
            raise OutboxClosed(f"outbox {self.path!r} is closed")
        if self._pid != os.getpid():
            self._forget_inherited()
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _forget_inherited(self) -> None:
        if self._conn is not None:
            _inherited.append(self._conn)
            self._conn = None
        self._pid = os.getpid()

    def _open(self) -> sqlite3.Connection:
        if self.path != ":memory:" and not os.path.exists(self.path):
            directory = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(directory, exist_ok=True)
            # Signals can carry user comments: keep the file (and SQLite's WAL and shm files,
            # which copy its mode) readable by this user only.
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        conn = sqlite3.connect(
            self.path,
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=64,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            if conn.execute("PRAGMA user_version").fetchone()[0] != _SCHEMA_VERSION:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in _SCHEMA:
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
                    conn.execute("COMMIT")
                except BaseException:
                    _rollback(conn)
                    raise
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A short write transaction; `IMMEDIATE` takes the write lock up front, so a reader that
        later writes never fails on a snapshot another process made stale."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._connection()

    def close(self) -> None:
        """Close this process's connection; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == os.getpid():
                conn.close()
            elif conn is not None:
                _inherited.append(conn)
        with _live_lock:
            _live.discard(self)

    # -- writing --------------------------------------------------------------------------------

    def add(self, signal: Signal, destinations: Sequence[str]) -> None:
        """Store `signal` once per destination, in one committed transaction.

        Raises `OutboxFull` (and stores nothing) when the rows or bytes cap would be passed.
        This is on the app's thread, so it is written flat: one lock, four prepared statements.
        """
        payload = signal.to_json()
        size = len(payload.encode())
        count = len(destinations)
        now = time.time()
        limits = self.limits
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows, stored = conn.execute(_TOTALS).fetchone()
                if rows + count > limits.max_rows:
                    raise OutboxFull(
                        f"outbox full: {rows} rows stored, max_rows={limits.max_rows}; "
                        f"signal {signal.id} was refused"
                    )
                if stored + size * count > limits.max_bytes:
                    raise OutboxFull(
                        f"outbox full: {stored} bytes stored, max_bytes={limits.max_bytes}; "
                        f"signal {signal.id} was refused"
                    )
                if count == 1:
                    conn.execute(_INSERT, (signal.id, destinations[0], payload, size, now, now))
                else:
                    conn.executemany(
                        _INSERT,
                        [(signal.id, dest, payload, size, now, now) for dest in destinations],
                    )
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise

    def claim(
        self,
        destinations: Collection[str],
        limit: int,
        now: float | None = None,
        *,
        on_corrupt: Callable[[str], None] | None = None,
    ) -> list[Delivery]:
        """Lease up to `limit` rows that are due, or whose lease expired, to this process.

        Rows whose payload does not parse are dead-lettered as "corrupt row" instead of returned;
        `on_corrupt(destination)` is called for each, so the caller can count them.
        """
        if not destinations or limit <= 0:
            return []
        now = time.time() if now is None else now
        dests = tuple(destinations)
        marks = ",".join("?" * len(dests))
        # Expired leases first (their owner died or hung), then each destination's oldest due
        # rows, in the order given: the caller rotates it so no destination starves another.
        per_destination = " UNION ALL ".join(
            "SELECT id FROM (SELECT id FROM deliveries WHERE state = 0 AND destination = ?"
            " AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?)"
            for _ in dests
        )
        sql = (
            "UPDATE deliveries SET state = 1, owner = ?, lease_until = ? WHERE id IN ("
            " SELECT id FROM (SELECT id FROM deliveries WHERE state = 1"
            f"  AND destination IN ({marks}) AND lease_until <= ? LIMIT ?)"
            f" UNION ALL {per_destination} LIMIT ?)"
            " RETURNING id, signal_id, destination, payload, attempts, created_at"
        )
        params: list[object] = [self.owner, now + self.limits.lease_seconds, *dests, now, limit]
        for dest in dests:
            params += (dest, now, limit)
        params.append(limit)
        # BEGIN IMMEDIATE: the write lock is taken before the rows are chosen, so no other
        # process can choose the same ones.
        with self._transaction() as conn:
            rows = conn.execute(sql, params).fetchall()
        claimed: list[Delivery] = []
        corrupt: list[tuple[int, str, str]] = []
        for row_id, signal_id, destination, payload, attempts, created_at in sorted(rows):
            try:
                signal = Signal.from_json(payload)
            except Exception as exc:  # any shape of damage: bad JSON, missing key, bad date
                corrupt.append((row_id, signal_id, destination))
                log_rate_limited(
                    logging.WARNING,
                    "outbox:corrupt",
                    "brixo_otel: outbox row %s (signal %s, destination %s) is corrupt (%s); "
                    "dead-lettered",
                    row_id,
                    signal_id,
                    destination,
                    type(exc).__name__,
                )
                continue
            claimed.append(Delivery(signal, destination, attempts, created_at, row_id))
        if corrupt:
            with self._transaction() as conn:
                for row_id, _, destination in corrupt:
                    conn.execute(
                        "UPDATE deliveries SET state = 2, reason = ?, owner = NULL,"
                        f" lease_until = NULL WHERE {_MINE}",
                        (CORRUPT_ROW, row_id, self.owner),
                    )
                    conn.execute(_COUNT, (destination, "corrupt", 1))
            if on_corrupt is not None:
                for _, _, destination in corrupt:
                    on_corrupt(destination)
        return claimed

    def mark_delivered(self, delivery: Delivery) -> bool:
        """Delete the delivered row and count it. False if the lease was lost to another process
        (which will then deliver and count it itself)."""
        return self.mark_delivered_many((delivery,))[0]

    def mark_delivered_many(self, deliveries: Sequence[Delivery]) -> list[bool]:
        """`mark_delivered` for a batch, in one transaction: a busy worker commits once per
        batch instead of once per signal, which leaves the outbox free for the app's thread."""
        done: list[bool] = []
        owner = self.owner
        with self._transaction() as conn:
            for delivery in deliveries:
                deleted = conn.execute(
                    f"DELETE FROM deliveries WHERE {_MINE}", (delivery.row_id, owner)
                ).rowcount
                if deleted:
                    conn.execute(_COUNT, (delivery.destination, "delivered", 1))
                done.append(bool(deleted))
        return done

    def reschedule(self, delivery: Delivery, next_attempt_at: float, reason: str) -> bool:
        """Count the failed attempt and make the row due again at `next_attempt_at`."""
        return self._unlease(
            delivery,
            "state = 0, attempts = attempts + 1, next_attempt_at = ?, reason = ?",
            next_attempt_at,
            reason,
        )

    def dead_letter(self, delivery: Delivery, reason: str) -> bool:
        """Count the final attempt and keep the row, with `reason`, out of delivery."""
        return self._unlease(delivery, "state = 2, attempts = attempts + 1, reason = ?", reason)

    def release(self, delivery: Delivery) -> bool:
        """Give the row back, due at once, without counting an attempt (pause, shutdown)."""
        return self._unlease(delivery, "state = 0")

    def _unlease(self, delivery: Delivery, assignments: str, *values: object) -> bool:
        """End this process's lease on the row with `assignments`; False if the lease was lost."""
        with self._transaction() as conn:
            return bool(
                conn.execute(
                    f"UPDATE deliveries SET {assignments}, owner = NULL, lease_until = NULL"
                    f" WHERE {_MINE}",
                    (*values, delivery.row_id, self.owner),
                ).rowcount
            )

    def reclaim_dead_owners(self) -> int:
        """Return to pending, at once, rows leased by processes of this host that no longer exist.

        Their leases would expire anyway; this spares a restarted app the wait. A reused pid can
        hide a dead owner until its lease expires, never the other way round.
        """
        prefix = f"{self._host}:"
        with self._reading() as conn:
            owners = [
                owner
                for (owner,) in conn.execute(
                    "SELECT DISTINCT owner FROM deliveries WHERE state = 1 AND owner IS NOT NULL"
                )
            ]
        dead = [
            owner
            for owner in owners
            if owner.startswith(prefix) and not _pid_alive(owner[len(prefix) :])
        ]
        if not dead:
            return 0
        reclaimed = 0
        with self._transaction() as conn:
            for owner in dead:
                reclaimed += conn.execute(
                    "UPDATE deliveries SET state = 0, owner = NULL, lease_until = NULL"
                    " WHERE state = 1 AND owner = ?",
                    (owner,),
                ).rowcount
        return reclaimed

    # -- exporter state ---------------------------------------------------------------------

    def state_get(self, destination: str, key: str) -> str | None:
        with self._reading() as conn:
            row = conn.execute(
                "SELECT value FROM exporter_state WHERE destination = ? AND key = ?",
                (destination, key),
            ).fetchone()
        return None if row is None else str(row[0])

    def state_set(self, destination: str, key: str, value: str) -> None:
        """Store and commit at once: the next step may crash, and must find this on retry."""
        now = time.time()
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO exporter_state (destination, key, value, updated_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (destination, key)"
                " DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (destination, key, value, now),
            )
            conn.execute(  # bounded clean-up, a little at a time
                "DELETE FROM exporter_state WHERE rowid IN (SELECT rowid FROM exporter_state"
                " WHERE updated_at < ? LIMIT 50)",
                (now - STATE_TTL_SECONDS,),
            )

    def state_delete(self, destination: str, key: str) -> None:
        with self._transaction() as conn:
            conn.execute(
                "DELETE FROM exporter_state WHERE destination = ? AND key = ?",
                (destination, key),
            )

    def requeue_dead(self, destination: str | None = None) -> int:
        """Give dead letters a fresh start (new age, no attempts); corrupt rows stay dead."""
        now = time.time()
        where, params = _destination_filter(destination)
        with self._transaction() as conn:
            return conn.execute(
                "UPDATE deliveries SET state = 0, attempts = 0, created_at = ?,"
                " next_attempt_at = ?, reason = NULL"
                f" WHERE state = 2 AND reason IS NOT ? {where}",
                (now, now, CORRUPT_ROW, *params),
            ).rowcount

    # -- reading --------------------------------------------------------------------------------

    def pending_count(self, destinations: Collection[str] | None = None) -> int:
        """Rows still to deliver: pending and in flight."""
        sql = "SELECT COUNT(*) FROM deliveries WHERE state IN (0, 1)"
        params: tuple[str, ...] = ()
        if destinations is not None:
            if not destinations:
                return 0
            params = tuple(destinations)
            sql += f" AND destination IN ({','.join('?' * len(params))})"
        with self._reading() as conn:
            count: int = conn.execute(sql, params).fetchone()[0]
        return count

    def next_due(self, destinations: Collection[str]) -> float | None:
        """Earliest `next_attempt_at` of a pending row, so the worker sleeps exactly that long."""
        if not destinations:
            return None
        params = tuple(destinations)
        with self._reading() as conn:
            due: float | None = conn.execute(
                "SELECT MIN(next_attempt_at) FROM deliveries WHERE state = 0"
                f" AND destination IN ({','.join('?' * len(params))})",
                params,
            ).fetchone()[0]
        return due

    def stats(self) -> dict[str, dict[str, int]]:
        """destination → counts of pending, in flight, delivered, dead (and corrupt) rows."""
        names = {PENDING: "pending", IN_FLIGHT: "in_flight", DEAD: "dead"}
        result: dict[str, dict[str, int]] = {}

        def entry(destination: str) -> dict[str, int]:
            return result.setdefault(
                destination, {"pending": 0, "in_flight": 0, "delivered": 0, "dead": 0, "corrupt": 0}
            )

        with self._reading() as conn:
            for destination, state, count in conn.execute(
                "SELECT destination, state, COUNT(*) FROM deliveries GROUP BY destination, state"
            ):
                entry(destination)[names[state]] = count
            for destination, name, value in conn.execute(
                "SELECT destination, name, value FROM counters"
            ):
                entry(destination)[name] = value
        return result

    def dead_letters(self, destination: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """The oldest dead letters, with their reasons."""
        where, params = _destination_filter(destination)
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT id, signal_id, destination, payload, reason, attempts, created_at"
                f" FROM deliveries WHERE state = 2 {where} ORDER BY id LIMIT ?",
                (*params, limit),
            ).fetchall()
        letters = []
        for row_id, signal_id, dest, payload, reason, attempts, created_at in rows:
            try:
                signal: Signal | None = Signal.from_json(payload)
            except Exception:
                signal = None
            letters.append(
                DeadLetter(signal, signal_id, dest, reason or "", attempts, created_at, row_id)
            )
        return letters

    def totals(self) -> tuple[int, int]:
        """(rows, bytes) stored, as the caps see them."""
        with self._reading() as conn:
            rows, stored = conn.execute(_TOTALS).fetchone()
        return int(rows), int(stored)

    # -- fork -----------------------------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._forget_inherited()


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _destination_filter(destination: str | None) -> tuple[str, tuple[str, ...]]:
    if destination is None:
        return "", ()
    return "AND destination = ?", (destination,)


def _pid_alive(text: str) -> bool:
    try:
        pid = int(text)
    except ValueError:
        return True  # not ours to judge
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def _before_fork() -> None:
    """Take every outbox lock so no transaction is open on a connection the child inherits."""
    _live_lock.acquire()
    try:
        outboxes = list(_live)
    finally:
        _live_lock.release()
    for outbox in outboxes:
        lock = outbox._lock
        if lock.acquire(timeout=_FORK_LOCK_TIMEOUT):
            _held_for_fork.append(lock)


def _after_fork_in_parent() -> None:
    while _held_for_fork:
        _held_for_fork.pop().release()


def _after_fork_in_child() -> None:
    _held_for_fork.clear()
    global _live_lock
    _live_lock = threading.Lock()
    for outbox in list(_live):
        outbox._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
