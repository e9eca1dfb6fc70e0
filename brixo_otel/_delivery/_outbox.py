"""The durable outbox queue: every signal is on disk before `feedback()` returns.

One row per (signal, stage or destination). `feedback()` commits a single row for the *link*
stage; the worker resolves the rated span and, in one transaction, replaces that row by one row
per destination (the OpenTelemetry record among them), each carrying the resolved signal. A row
moves pending → in flight (owner "host:pid" and a lease expiry) → delivered (row deleted,
counted) or dead (kept with its reason, apart from the caps, pruned by age and count). Several
processes may share the file: claims run under `BEGIN IMMEDIATE`, so two of them never take the
same row, and every transaction is short.

Row and byte totals of what is still to deliver live in a one-row table kept exact by triggers,
so the caps are checked without scanning, and stay right when other processes write too.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Final

from brixo_otel._delivery._admin import AdminQueries
from brixo_otel._delivery._database import COUNT_SQL, OutboxBusy, OutboxClosed, OutboxDatabase
from brixo_otel._delivery._exporter_state import ExporterStateStore
from brixo_otel._internal import log_rate_limited
from brixo_otel._signal import Signal

__all__ = ["CORRUPT_ROW", "Delivery", "Outbox", "OutboxBusy", "OutboxClosed", "OutboxFull"]

#: Reason stored on rows whose payload no longer parses.
CORRUPT_ROW: Final = "corrupt row"

_INSERT: Final = (
    "INSERT INTO deliveries"
    " (signal_id, destination, payload, size, created_at, next_attempt_at)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
#: `_INSERT` of one row, only while the totals leave room: rows at most the 7th parameter, payload
#: bytes at most the 8th.
_INSERT_IF_ROOM: Final = (
    "INSERT INTO deliveries"
    " (signal_id, destination, payload, size, created_at, next_attempt_at)"
    " SELECT ?, ?, ?, ?, ?, ? FROM totals WHERE id = 0 AND rows <= ? AND bytes <= ?"
)
_TOTALS: Final = "SELECT rows, bytes FROM totals WHERE id = 0"
_MINE: Final = "id = ? AND owner = ? AND state = 1"
_UNLEASE: Final = "owner = NULL, lease_until = NULL"
_DELETE_CHUNK: Final = 500
#: The change each outcome but "delivered" makes to its row, still leased to this process: its
#: parameters (the time, the reason; none for a release), then the row's id and owner.
_OUTCOME_UPDATES: Final = {
    "retry": "UPDATE deliveries SET state = 0, attempts = attempts + 1, next_attempt_at = ?,"
    f" reason = ?, {_UNLEASE} WHERE {_MINE}",
    "defer": "UPDATE deliveries SET state = 0, next_attempt_at = ?,"
    f" reason = COALESCE(NULLIF(?, ''), reason), {_UNLEASE} WHERE {_MINE}",
    "release": f"UPDATE deliveries SET state = 0, {_UNLEASE} WHERE {_MINE}",
    "dead": "UPDATE deliveries SET state = 2, attempts = attempts + 1, created_at = ?,"
    f" reason = ?, {_UNLEASE} WHERE {_MINE}",
}


#: One link-stage row to fan out (`Outbox.fan_out_many`): the stage's row, the signal to store, the
#: destinations that take it, those that skip it, and when the stage is due again (None: done).
FanOut = tuple["Delivery", Signal, Sequence[str], Sequence[str], "float | None"]


class OutboxFull(Exception):
    """A cap was reached; the signal was not stored. The message names the cap."""


@dataclass(frozen=True)
class Delivery:
    """One claimed (signal, destination) row, leased to this process."""

    signal: Signal
    destination: str
    #: Attempts already made before this one.
    attempts: int
    #: When the row entered the outbox (epoch seconds): the clock for `max_age`.
    created_at: float
    row_id: int
    #: What the last attempt left on the row (why it failed; for the OpenTelemetry record,
    #: that it was emitted and waits for its export).
    reason: str = ""


@dataclass(frozen=True)
class Outcome:
    """What the worker decided for one delivery; applied with the others of a batch in one
    transaction (`Outbox.record`)."""

    delivery: Delivery
    #: "delivered", "retry" (due again at `when`, attempt counted), "defer" (due again at
    #: `when`, not counted), "release" (due now, not counted), "dead" (with `reason`).
    action: str
    when: float = 0.0
    reason: str = ""


class Outbox(AdminQueries, ExporterStateStore, OutboxDatabase):
    """A SQLite-backed queue of deliveries, safe to share between threads and processes."""

    # -- writing ----------------------------------------------------------------------------

    def add(
        self, signal: Signal, destinations: Sequence[str], *, wait: float | None = None
    ) -> None:
        """Store `signal` once per destination, in one committed transaction.

        `wait=None` is the worker's patient write; a number bounds the wait for the write lock
        (the app's thread), after which `OutboxBusy` is raised and nothing is stored. Raises
        `OutboxFull` (storing nothing) when the rows or bytes cap would be passed; the WAL
        counts toward the bytes.
        """
        if wait is None:
            [refused] = self.add_many([signal], destinations)
            if refused is not None:
                raise refused
            return
        payload = signal.to_json()
        size = _size_in_bytes(payload)
        if len(destinations) != 1 or not self._insert_if_room(
            wait, signal.id, destinations[0], payload, size
        ):
            self._app_commit(wait, self._insert_within_caps, signal, destinations, payload, size)

    def add_many(
        self, signals: Sequence[Signal], destinations: Sequence[str]
    ) -> list[OutboxFull | None]:
        """`add` (the worker's patient write) for several signals, in one transaction: for
        each, None if stored, or the `OutboxFull` that refused it (the others are stored
        still). Nothing is stored if the transaction fails."""
        encoded = [signal.to_json() for signal in signals]
        outcomes: list[OutboxFull | None] = []
        with self._transaction() as conn:
            for signal, payload in zip(signals, encoded, strict=True):
                try:
                    self._insert_within_caps(
                        conn, signal, destinations, payload, _size_in_bytes(payload)
                    )
                except OutboxFull as exc:
                    outcomes.append(exc)
                else:
                    outcomes.append(None)
        return outcomes

    def _insert_if_room(
        self, wait: float, signal_id: str, destination: str, payload: str, size: int
    ) -> bool:
        """The app's commit of one row, the caps checked by the INSERT itself against the
        totals row (the bytes by `stored_bytes_bound`'s estimate): one statement, its own
        transaction. False when it stored nothing because a cap may be reached or only an
        exact reading can tell: `add` then decides the exact way."""
        bound = self.stored_bytes_bound(size)
        if bound is None:
            return False
        now = time.time()
        parameters = (
            signal_id,
            destination,
            payload,
            size,
            now,
            now,
            self.limits.max_rows - 1,
            bound,
        )
        # Stored or not: never falls through to a second insert (trigger changes are not
        # counted in the rows changed, so stored is one).
        return self._app_execute(wait, _INSERT_IF_ROOM, parameters) > 0

    def _insert_within_caps(
        self,
        conn: sqlite3.Connection,
        signal: Signal,
        destinations: Sequence[str],
        payload: str,
        size: int,
    ) -> None:
        """`add`'s rows, inside its transaction, or `OutboxFull` if they would pass a cap."""
        count = len(destinations)
        limits = self.limits
        rows, stored = conn.execute(_TOTALS).fetchone()
        if rows + count > limits.max_rows:
            raise OutboxFull(
                f"outbox full: {rows} rows stored, max_rows={limits.max_rows}; "
                f"signal {signal.id} was refused"
            )
        on_disk = self.bytes_on_disk(conn, stored, size * count)
        if on_disk > limits.max_bytes:
            raise OutboxFull(
                f"outbox full: {stored} bytes stored, {on_disk} on disk with this signal "
                "(WAL and pages counted), "
                f"max_bytes={limits.max_bytes}; signal {signal.id} was refused"
            )
        now = time.time()
        if count == 1:
            conn.execute(_INSERT, (signal.id, destinations[0], payload, size, now, now))
        else:
            conn.executemany(
                _INSERT, [(signal.id, dest, payload, size, now, now) for dest in destinations]
            )

    def fan_out_many(self, fan_outs: Sequence[FanOut]) -> list[bool]:
        """Replace each link stage's row by one row per destination, with the resolved signal,
        and count the destinations that do not take it; all in one transaction, so a worker
        linking a backlog commits once per batch. A stage with a time to keep it until stays
        (attempt counted), due again then: it still waits for the rated span on behalf of the
        destinations that need it. For each, False if the lease was lost (another process does
        it)."""
        payloads = _payloads(fan_outs)
        with self._transaction() as conn:
            return _fan_out_in(conn, fan_outs, payloads, self.owner)

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
        # BEGIN IMMEDIATE: the write lock is taken before the rows are chosen, so no other
        # process can choose the same ones.
        with self._transaction() as conn:
            rows = self._claim_in(conn, destinations, limit, now)
        return self._claimed(rows, on_corrupt)

    def settle(
        self,
        fan_outs: Sequence[FanOut],
        outcomes: Sequence[Outcome],
        destinations: Collection[str],
        limit: int,
        *,
        on_corrupt: Callable[[str], None] | None = None,
    ) -> tuple[list[bool], list[bool], list[Delivery]]:
        """`fan_out_many`, then `record`, then `claim`, in one transaction: a worker's round
        (the link stage's fan-outs, the answers, the next rows) commits once. Each part is
        applied exactly as alone (a lost lease is False), and all or none of them commit."""
        payloads = _payloads(fan_outs)
        owner = self.owner
        with self._transaction() as conn:
            fanned = _fan_out_in(conn, fan_outs, payloads, owner) if fan_outs else []
            recorded = _record_in(conn, outcomes, owner) if outcomes else []
            rows = self._claim_in(conn, destinations, limit, None)
        return fanned, recorded, self._claimed(rows, on_corrupt)

    def _claim_in(
        self,
        conn: sqlite3.Connection,
        destinations: Collection[str],
        limit: int,
        now: float | None,
    ) -> list[tuple[int, str, str, str, int, float, str | None]]:
        """Lease the rows `claim` takes, in the caller's write transaction; their raw rows."""
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
            " RETURNING id, signal_id, destination, payload, attempts, created_at, reason"
        )
        params: list[object] = [self.owner, now + self.limits.lease_seconds, *dests, now, limit]
        for dest in dests:
            params += (dest, now, limit)
        params.append(limit)
        return conn.execute(sql, params).fetchall()

    def _claimed(
        self,
        rows: list[tuple[int, str, str, str, int, float, str | None]],
        on_corrupt: Callable[[str], None] | None,
    ) -> list[Delivery]:
        """The deliveries of claimed rows, oldest first; corrupt ones dead-lettered instead."""
        claimed: list[Delivery] = []
        corrupt: list[tuple[int, str, str]] = []
        for row_id, signal_id, destination, payload, attempts, created_at, reason in sorted(rows):
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
            claimed.append(
                Delivery(signal, destination, attempts, created_at, row_id, reason or "")
            )
        if corrupt:
            with self._transaction() as conn:
                for row_id, _, destination in corrupt:
                    conn.execute(
                        "UPDATE deliveries SET state = 2, reason = ?, owner = NULL,"
                        f" lease_until = NULL WHERE {_MINE}",
                        (CORRUPT_ROW, row_id, self.owner),
                    )
                    conn.execute(COUNT_SQL, (destination, "corrupt", 1))
            if on_corrupt is not None:
                for _, _, destination in corrupt:
                    on_corrupt(destination)
        return claimed

    def record(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """Apply a batch of outcomes in one transaction: a busy worker commits once per batch
        instead of once per signal, which leaves the outbox free for the app's threads. For
        each, False if the lease was lost to another process (which then owns the row)."""
        with self._transaction() as conn:
            return _record_in(conn, outcomes, self.owner)

    def mark_delivered(self, delivery: Delivery) -> bool:
        return self.record([Outcome(delivery, "delivered")])[0]

    def reschedule(self, delivery: Delivery, next_attempt_at: float, reason: str) -> bool:
        """Count the failed attempt and make the row due again at `next_attempt_at`."""
        return self.record([Outcome(delivery, "retry", next_attempt_at, reason)])[0]

    def dead_letter(self, delivery: Delivery, reason: str) -> bool:
        """Count the final attempt and keep the row, with `reason`, out of delivery."""
        return self.record([Outcome(delivery, "dead", reason=reason)])[0]

    def release(self, delivery: Delivery) -> bool:
        """Give the row back, due at once, without counting an attempt (pause, shutdown)."""
        return self.record([Outcome(delivery, "release")])[0]

    def renew(self, deliveries: Collection[Delivery]) -> None:
        """Extend the leases of rows still being exported, so a slow export (longer than the
        lease) is not taken over and sent twice by another process."""
        if not deliveries:
            return
        until = time.time() + self.limits.lease_seconds
        with self._transaction() as conn:
            conn.executemany(
                f"UPDATE deliveries SET lease_until = ? WHERE {_MINE}",
                [(until, d.row_id, self.owner) for d in deliveries],
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

    def emitter_still_waits(self, mark: str, now: float, wait: float) -> bool:
        """Whether the process named in a record-stage mark ("... by host:pid at epoch") is
        alive on this host and still within its `wait`: it will settle the row itself. A
        process on another host cannot be checked: the wait alone decides."""
        _, _, rest = mark.rpartition(" by ")
        owner, _, at = rest.partition(" at ")
        try:
            emitted_at = float(at)
        except ValueError:
            return False
        if now - emitted_at > wait:
            return False
        host, _, pid = owner.rpartition(":")
        return host != self._host or _pid_alive(pid)

    def prune_dead(self) -> int:
        """Forget dead letters past their retention, and the oldest past their cap."""
        limits = self.limits
        with self._transaction() as conn:
            removed = conn.execute(
                "DELETE FROM deliveries WHERE state = 2 AND created_at < ?",
                (time.time() - limits.dead_letter_retention,),
            ).rowcount
            (dead,) = conn.execute("SELECT COUNT(*) FROM deliveries WHERE state = 2").fetchone()
            if dead > limits.max_dead_letters:
                removed += conn.execute(
                    "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries"
                    " WHERE state = 2 ORDER BY created_at LIMIT ?)",
                    (dead - limits.max_dead_letters,),
                ).rowcount
        return removed

    # -- reading ----------------------------------------------------------------------------

    def pending_count(
        self, destinations: Collection[str] | None = None, *, except_waiting: str | None = None
    ) -> int:
        """Rows still to deliver: pending and in flight. `except_waiting` names a stage whose
        pending rows that were already tried once (waiting for something) are not counted."""
        sql = "SELECT COUNT(*) FROM deliveries WHERE state IN (0, 1)"
        params: tuple[str, ...] = ()
        if destinations is not None:
            if not destinations:
                return 0
            params = tuple(destinations)
            sql += f" AND destination IN ({','.join('?' * len(params))})"
        if except_waiting is not None:
            sql += " AND NOT (destination = ? AND state = 0 AND attempts > 0)"
            params = (*params, except_waiting)
        with self._reading() as conn:
            count: int = conn.execute(sql, params).fetchone()[0]
        return count

    def in_flight_count(self, destinations: Collection[str]) -> int:
        """Rows leased right now, by any process."""
        if not destinations:
            return 0
        params = tuple(destinations)
        with self._reading() as conn:
            count: int = conn.execute(
                "SELECT COUNT(*) FROM deliveries WHERE state = 1"
                f" AND destination IN ({','.join('?' * len(params))})",
                params,
            ).fetchone()[0]
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


def _size_in_bytes(payload: str) -> int:
    """The payload's UTF-8 size; an ASCII string (`isascii` reads a flag) is its own length."""
    return len(payload) if payload.isascii() else len(payload.encode())


def _payloads(fan_outs: Sequence[FanOut]) -> list[str]:
    """The rows' payloads, made before the transaction (so it is not held meanwhile)."""
    return [signal.to_json() for _, signal, _, _, _ in fan_outs]


def _fan_out_in(
    conn: sqlite3.Connection, fan_outs: Sequence[FanOut], payloads: Sequence[str], owner: str
) -> list[bool]:
    """`Outbox.fan_out_many`'s changes, in the caller's write transaction."""
    now = time.time()
    done = [stage.row_id for stage, _, _, _, keep in fan_outs if keep is None]
    applied: list[bool] = []
    added: list[tuple[str, str, str, int, float, float]] = []
    counts: dict[tuple[str, str], int] = {}  # counted once per name and batch
    deleted = _delete_mine(conn, done, owner)  # the stages that end
    for (stage, signal, destinations, skipped, keep_stage_until), payload in zip(
        fan_outs, payloads, strict=True
    ):
        if keep_stage_until is None:
            changed = stage.row_id in deleted
        else:  # a retry of the stage, as `_record_in` applies one
            changed = bool(
                conn.execute(
                    _OUTCOME_UPDATES["retry"],
                    (keep_stage_until, "waiting for the rated span", stage.row_id, owner),
                ).rowcount
            )
        applied.append(changed)
        if not changed:
            continue
        size = _size_in_bytes(payload)
        added += [(signal.id, dest, payload, size, stage.created_at, now) for dest in destinations]
        ended = [(destination, "skipped") for destination in skipped]
        if keep_stage_until is None:  # how the stage ended: linked, unresolved, ...
            ended.append((stage.destination, signal.link_status))
        for counter in ended:
            counts[counter] = counts.get(counter, 0) + 1
    if added:
        conn.executemany(_INSERT, added)
    for (destination, name), count in counts.items():
        conn.execute(COUNT_SQL, (destination, name, count))
    return applied


def _record_in(conn: sqlite3.Connection, outcomes: Sequence[Outcome], owner: str) -> list[bool]:
    """`Outbox.record`'s changes, in the caller's write transaction."""
    applied: list[bool] = []
    done = [o.delivery.row_id for o in outcomes if o.action == "delivered"]
    delivered: dict[str, int] = {}  # counted once per destination and batch
    deleted = _delete_mine(conn, done, owner)  # the common case, in one go
    for outcome in outcomes:
        delivery = outcome.delivery
        action = outcome.action
        if action == "delivered":
            changed = int(delivery.row_id in deleted)
            if changed:
                destination = delivery.destination
                delivered[destination] = delivered.get(destination, 0) + 1
        else:
            update = _OUTCOME_UPDATES.get(action)
            if update is None:
                raise ValueError(f"unknown outcome {action!r}")
            parameters: tuple[object, ...] = ()
            if action != "release":  # a dead letter's clock restarts: its own retention
                when = time.time() if action == "dead" else outcome.when
                parameters = (when, outcome.reason)
            changed = conn.execute(update, (*parameters, delivery.row_id, owner)).rowcount
        applied.append(bool(changed))
    for destination, count in delivered.items():
        conn.execute(COUNT_SQL, (destination, "delivered", count))
    return applied


def _delete_mine(conn: sqlite3.Connection, row_ids: Sequence[int], owner: str) -> set[int]:
    """Delete the rows still leased to `owner`, a few statements for many rows (each at most
    `_DELETE_CHUNK` ids, well under SQLite's bound on parameters); the ids deleted."""
    deleted: set[int] = set()
    for start in range(0, len(row_ids), _DELETE_CHUNK):
        chunk = row_ids[start : start + _DELETE_CHUNK]
        marks = ",".join("?" * len(chunk))
        deleted.update(
            row_id
            for (row_id,) in conn.execute(
                "DELETE FROM deliveries WHERE owner = ? AND state = 1"
                f" AND id IN ({marks}) RETURNING id",
                (owner, *chunk),
            )
        )
    return deleted


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
