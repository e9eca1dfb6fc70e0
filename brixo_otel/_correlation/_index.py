"""The span index: message id → span context of the message span, plus a few of its attributes.

Feedback arrives minutes after the answer, by id only; the index is what lets it be emitted as a
child of, and linked to, the very span that produced the rated message.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, Protocol, TypeAlias

from opentelemetry.trace import SpanContext
from opentelemetry.util.types import AttributeValue

from brixo_otel._forksafe import after_fork_in_child


class IndexedSpan(NamedTuple):
    """A rated message's span context and the dimensions kept from it.

    A NamedTuple, not a dataclass: one is built at the end of every message span.
    """

    span_context: SpanContext
    attributes: Mapping[str, AttributeValue]


#: One index write: message id, span context, kept attributes. A plain tuple, not a NamedTuple:
#: one is built at the start of every message span, for a shared store one more at its end.
Put: TypeAlias = tuple[str, SpanContext, Mapping[str, AttributeValue]]


class SpanIndex(Protocol):
    """What every index offers; implementations must be thread-safe and never raise.

    `put` runs on the app's thread, at the start of every message span (and at its end, unless
    the index has a `complete`, see `BrixoSpanProcessor`), so it must not wait on anything; `get`
    runs on the delivery worker's thread and may do I/O.
    """

    def put(
        self, message_id: str, span_context: SpanContext, attributes: Mapping[str, AttributeValue]
    ) -> None: ...

    def get(self, message_id: str) -> IndexedSpan | None: ...


class IndexStore(Protocol):
    """A shared backend (SQLite, Redis), written only by its background writer, in batches.

    `put_many` returns False when the store cannot take writes right now (locked, unreachable,
    skipped after a failure), so the writer keeps the batch and tries again later; True when the
    batch was handled, which includes puts dropped for a reason already logged (an id the store
    cannot hold). It may block, for at most the store's own bounded timeout.
    """

    def put_many(self, puts: Sequence[Put]) -> bool: ...

    def get(self, message_id: str) -> IndexedSpan | None: ...

    def close(self) -> None: ...


class InMemorySpanIndex:
    """Bounded by count, expiring by age: O(1) put and get, never more than `max_entries` held.

    Entries are evicted oldest-written first. A plain dict keeps write order, which is also
    expiry order, so both rules are served by looking at its first entry.

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
        # expiry, span context, attributes: a plain tuple, as one is built per message span
        self._entries: dict[str, tuple[float, SpanContext, Mapping[str, AttributeValue]]] = {}
        self._lock = threading.Lock()
        after_fork_in_child(self, InMemorySpanIndex._after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        """A fresh eviction lock: a parent thread may have held it at the fork."""
        self._lock = threading.Lock()

    #: `put` keeps the mapping it is given, so one that its caller completes in place later
    #: needs no second put: the span processor, which puts a message at its start with the dict
    #: the message gathers its attributes in, has nothing to tell this index at the end.
    complete = None

    def put(
        self, message_id: str, span_context: SpanContext, attributes: Mapping[str, AttributeValue]
    ) -> None:
        """Keep `attributes` as given (not copied): the caller may still complete it in place,
        and `get` hands out copies.

        No lock on the common path: this runs at the start of every message span,
        and each step is one dict operation, atomic under the GIL. Eviction, rare, takes the
        lock, so only one thread iterates the dict; a concurrent writer can only make it evict
        one more.
        """
        entries = self._entries
        entries.pop(message_id, None)  # re-inserted at the end: newest
        entries[message_id] = (self._clock() + self._ttl, span_context, attributes)
        if len(entries) > self._max_entries:
            with self._lock:
                while len(entries) > self._max_entries:
                    try:
                        entries.pop(next(iter(entries)), None)
                    except RuntimeError:  # a writer changed the dict mid-step: look again
                        continue

    def get(self, message_id: str) -> IndexedSpan | None:
        entry = self._entries.get(message_id)
        if entry is None:
            return None
        expires_at, span_context, attributes = entry
        if expires_at <= self._clock():
            with self._lock:
                if self._entries.get(message_id) is entry:  # not replaced meanwhile
                    del self._entries[message_id]
            return None
        # A copy: the message may still be gathering into it, and readers may treat what they
        # get as their own. One C-level copy of a dict is atomic under the GIL.
        return IndexedSpan(span_context, dict(attributes))

    #: The same as `get`, as everything here is local: offered so that app-thread callers
    #: (`link_token`) can ask any built-in index for what this process knows, without I/O.
    get_local = get

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
