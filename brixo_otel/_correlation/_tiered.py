"""A shared span index as the app sees it: a memory tier in front, the store behind a writer.

The shared stores (SQLite for the processes of a host, Redis across hosts) are what let feedback
that lands in another process find the rated span; but they are I/O, and a message span starts
and ends on the app's thread. So a put goes to two places at once: this process's memory tier,
which answers lookups in this process immediately (even while the store is locked or down), and
the background writer's queue, which reaches the store a moment later, batched. A lookup asks
the memory tier first and the store only for what this process never saw.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from opentelemetry.trace import SpanContext
from opentelemetry.util.types import AttributeValue

from brixo_otel._correlation._index import IndexedSpan, IndexStore, InMemorySpanIndex
from brixo_otel._correlation._writer import DEFAULT_BATCH_SIZE, DEFAULT_QUEUE_SIZE, IndexWriter

#: How long `close()` waits, by default, for queued puts to reach the store, in seconds.
CLOSE_TIMEOUT_SECONDS: Final = 2.0


class TieredSpanIndex:
    """Memory tier + shared store; `put` costs the app a dict write and a deque append.

    - `put` (app's thread): memory tier now, the store through the writer; `complete`: the
      store only, for a dict put earlier and completed in place since.
    - `get` (the delivery worker's thread; may do I/O): memory tier, else the store.
    - `get_local` (any thread; no I/O): memory tier only, for app-thread callers.
    - `flush`, `close`, `dropped`, `pending`: the writer's, see `IndexWriter`.
    """

    def __init__(
        self,
        store: IndexStore,
        *,
        max_entries: int = 100_000,
        ttl_seconds: float = 24 * 3600.0,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        self.store = store
        self.memory = InMemorySpanIndex(max_entries=max_entries, ttl_seconds=ttl_seconds)
        self.writer = IndexWriter(store, queue_size=queue_size, batch_size=batch_size)
        # Bound once: `put` runs at the start of every message span, `_submit` at its end too.
        self._remember = self.memory.put
        self._submit = self.writer.submit

    def __repr__(self) -> str:
        return f"TieredSpanIndex({self.store!r})"

    def put(
        self, message_id: str, span_context: SpanContext, attributes: Mapping[str, AttributeValue]
    ) -> None:
        """Record a message span. `attributes` is kept as given, by the memory tier and in the
        writer's queue: a dict the caller completes in place later reaches the store through
        `complete`."""
        self._remember(message_id, span_context, attributes)
        self._submit((message_id, span_context, attributes))

    def complete(
        self, message_id: str, span_context: SpanContext, attributes: Mapping[str, AttributeValue]
    ) -> None:
        """The dict put earlier for `message_id` was completed in place: the memory tier holds
        it already, so only the store needs the final write."""
        self._submit((message_id, span_context, attributes))

    def get(self, message_id: str) -> IndexedSpan | None:
        found = self.memory.get(message_id)
        return found if found is not None else self.store.get(message_id)

    def get_local(self, message_id: str) -> IndexedSpan | None:
        """What this process recorded, without I/O: safe on the app's thread or event loop."""
        return self.memory.get(message_id)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the puts made so far reached the store; True if they did within `timeout`."""
        return self.writer.flush(timeout)

    def close(self, timeout: float = CLOSE_TIMEOUT_SECONDS) -> bool:
        """Write what is queued, within `timeout`, then close the store; True if all was written.

        A store that is still busy after the timeout stays open: its writer may be inside it,
        and the daemon thread ends with the process.
        """
        stopped = self.writer.close(timeout)
        if stopped:
            self.store.close()
        return stopped and self.writer.pending == 0

    @property
    def dropped(self) -> int:
        """Index writes dropped in this process because the store fell behind (oldest first)."""
        return self.writer.dropped

    @property
    def pending(self) -> int:
        """Index writes waiting for the store."""
        return self.writer.pending
