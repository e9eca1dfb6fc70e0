"""Small durable memory of each destination, in the outbox file, shared by its processes.

For what a destination must remember between deliveries: the item it created for a message (so
a changed mind updates it instead of adding a second), or the first step of a two-step submit
(so a retry after a crash does not repeat it). Every write is committed at once;
`compare_and_set` lets two processes that race on the same message agree on one item.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

#: Exporter state unused for this long is forgotten; a user rarely changes a rating later.
STATE_TTL_SECONDS: Final = 90 * 86400.0


class ExporterStateStore:
    """Mixed into `Outbox`; needs its `_reading` and `_transaction`."""

    if TYPE_CHECKING:  # provided by OutboxDatabase

        @contextlib.contextmanager
        def _reading(self) -> Iterator[sqlite3.Connection]: ...

        @contextlib.contextmanager
        def _transaction(self) -> Iterator[sqlite3.Connection]: ...

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

    def state_compare_and_set(
        self, destination: str, key: str, expected: str | None, value: str
    ) -> bool:
        """Set `key` to `value` only if it still holds `expected` (None: absent); True if set.
        The read and the write share one write transaction, so no other process slips in."""
        now = time.time()
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT value FROM exporter_state WHERE destination = ? AND key = ?",
                (destination, key),
            ).fetchone()
            current = None if row is None else str(row[0])
            if current != expected:
                return False
            conn.execute(
                "INSERT INTO exporter_state (destination, key, value, updated_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (destination, key)"
                " DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (destination, key, value, now),
            )
        return True
