"""What operators ask of an outbox: counts per destination, dead letters, and a retry of them.

Used by `brixo-otel outbox ...` and by tests; never on the delivery path.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from brixo_otel._signal import Signal

PENDING: Final = 0
IN_FLIGHT: Final = 1
DEAD: Final = 2
_CORRUPT_ROW: Final = "corrupt row"


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


class AdminQueries:
    """Mixed into `Outbox`; needs its `_reading` and `_transaction`."""

    if TYPE_CHECKING:  # provided by OutboxDatabase

        @contextlib.contextmanager
        def _reading(self) -> Iterator[sqlite3.Connection]: ...

        @contextlib.contextmanager
        def _transaction(self) -> Iterator[sqlite3.Connection]: ...

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
        where, params = destination_filter(destination)
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
            rows, stored = conn.execute("SELECT rows, bytes FROM totals WHERE id = 0").fetchone()
        return int(rows), int(stored)

    def requeue_dead(self, destination: str | None = None) -> int:
        """Give dead letters a fresh start (new age, no attempts); corrupt rows stay dead."""
        now = time.time()
        where, params = destination_filter(destination)
        with self._transaction() as conn:
            return conn.execute(
                "UPDATE deliveries SET state = 0, attempts = 0, created_at = ?,"
                " next_attempt_at = ?, reason = NULL"
                f" WHERE state = 2 AND reason IS NOT ? {where}",
                (now, now, _CORRUPT_ROW, *params),
            ).rowcount


def destination_filter(destination: str | None) -> tuple[str, tuple[str, ...]]:
    if destination is None:
        return "", ()
    return "AND destination = ?", (destination,)
