"""The span index: message id → span context of the message span, plus a few of its attributes.

Feedback arrives minutes after the answer, by id only; the index is what lets it be emitted as a
child of, and linked to, the very span that produced the rated message.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from opentelemetry.trace import SpanContext
from opentelemetry.util.types import AttributeValue


@dataclass(frozen=True)
class IndexedSpan:
    span_context: SpanContext
    attributes: Mapping[str, AttributeValue]


class SpanIndex(Protocol):
    """What every index backend offers; implementations must be thread-safe and never raise."""

    def put(
        self, message_id: str, span_context: SpanContext, attributes: Mapping[str, AttributeValue]
    ) -> None: ...

    def get(self, message_id: str) -> IndexedSpan | None: ...


class InMemorySpanIndex:
    """Bounded LRU with a TTL: O(1) put and get, never more than `max_entries` held.

    Holds the messages of this process only; feedback handled by another process needs a shared
    index or a link token.
    """

    def __init__(
        self,
        max_entries: int = 100_000,
        ttl_seconds: float = 24 * 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        if ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds}")
        self._max_entries = max_entries
        self._ttl = ttl_seconds
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, IndexedSpan]] = OrderedDict()
        self._lock = threading.Lock()

    def put(
        self, message_id: str, span_context: SpanContext, attributes: Mapping[str, AttributeValue]
    ) -> None:
        entry = (self._clock() + self._ttl, IndexedSpan(span_context, dict(attributes)))
        with self._lock:
            self._entries[message_id] = entry
            self._entries.move_to_end(message_id)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def get(self, message_id: str) -> IndexedSpan | None:
        with self._lock:
            entry = self._entries.get(message_id)
            if entry is None:
                return None
            expires_at, indexed = entry
            if expires_at <= self._clock():
                del self._entries[message_id]
                return None
            return indexed

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
