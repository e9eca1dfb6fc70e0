"""The exporter contract: to signals what `SpanExporter` is to spans.

An exporter speaks one destination's API and classifies each answer; what to do about it (retry,
pause, dead-letter) is decided once, in the signal processor, so every destination gets the same
delivery guarantees.
"""

from __future__ import annotations

import abc
import enum
import threading
from dataclasses import dataclass
from typing import Protocol

from brixo_otel._signal import Signal


class DeliveryStatus(enum.Enum):
    """How a destination answered one delivery attempt."""

    #: Stored by the destination; done.
    DELIVERED = "delivered"
    #: Transient failure (connection error, timeout, 408, 5xx): retry with backoff.
    RETRY = "retry"
    #: The destination asks us to slow down (429, 503): pause it, honouring `retry_after`.
    THROTTLED = "throttled"
    #: The rated message or conversation is not known yet (404): retry within the not-found
    #: window, because feedback often arrives before its trace is ingested.
    NOT_FOUND = "not_found"
    #: The key was refused (401, 403): pause the destination and keep every signal.
    UNAUTHORIZED = "unauthorized"
    #: The destination will never accept this signal (400, 413): dead-letter it with the reason.
    PERMANENT = "permanent"


@dataclass(frozen=True)
class DeliveryResult:
    status: DeliveryStatus
    #: Why, in words fit for a log line and a dead-letter row: never the key, never a header.
    reason: str = ""
    #: Seconds the destination asked us to wait (from `Retry-After`), not yet clamped.
    retry_after: float | None = None
    #: The HTTP status of the answer, when there was one: metrics classify by it.
    http_status: int | None = None

    @classmethod
    def delivered(cls) -> DeliveryResult:
        return _DELIVERED


_DELIVERED = DeliveryResult(DeliveryStatus.DELIVERED)


class ExporterState(Protocol):
    """Small durable memory of one destination, shared by the processes of one outbox.

    For what a destination must remember between deliveries: the item it created for a message
    (so a changed mind updates it instead of adding a second), or the first step of a two-step
    submit (so a retry after a crash does not repeat it). Every `set` is committed at once.
    `compare_and_set` is for what several processes may race on: the first to move a key from
    the value it read wins, and the others learn that they lost.
    """

    def get(self, key: str) -> str | None: ...

    def set(self, key: str, value: str) -> None: ...

    def delete(self, key: str) -> None: ...

    def compare_and_set(self, key: str, expected: str | None, value: str) -> bool:
        """Set `key` to `value` only if it holds `expected` now (None: absent); True if set.
        The check and the write are one atomic step, across every process sharing the state."""
        ...


class MemoryExporterState:
    """Process-local `ExporterState`, for an exporter used without an outbox (tests, scripts)."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            return self._values.get(key)

    def set(self, key: str, value: str) -> None:
        with self._lock:
            self._values[key] = value

    def delete(self, key: str) -> None:
        with self._lock:
            self._values.pop(key, None)

    def compare_and_set(self, key: str, expected: str | None, value: str) -> bool:
        with self._lock:
            if self._values.get(key) != expected:
                return False
            self._values[key] = value
            return True


class SignalExporter(abc.ABC):
    """A destination for feedback signals.

    `export` is called from the delivery worker's threads, possibly concurrently, never from the
    app's thread. It should not raise: an exception is treated as a transient failure and logged.
    """

    #: Stable key of this destination in the outbox; two exporters with the same name share
    #: delivery state, so give each configured destination its own.
    name: str = "signals"

    _state: ExporterState | None = None

    @property
    def state(self) -> ExporterState:
        """Durable when the exporter runs behind an outbox; in memory otherwise."""
        if self._state is None:
            self._state = MemoryExporterState()
        return self._state

    def bind_state(self, state: ExporterState) -> None:
        """Called by the signal processor with this destination's slice of the outbox."""
        self._state = state

    #: Whether this destination addresses the rated *span* (Phoenix, Langfuse, MLflow, the
    #: OpenTelemetry record): its rows wait for the link stage to resolve the span (or for the
    #: link window to close); the others get the signal at once.
    needs_rated_span: bool = False

    #: Whether the first attempt should wait (bounded) until the rated span has left this
    #: process by brixo-otel's own trace export: the Signals API answers 404 for a message whose
    #: trace it has not ingested yet.
    waits_for_trace_export: bool = False

    def accepts(self, signal: Signal) -> bool:
        """Whether this destination can take `signal` at all.

        A destination that does not accept a signal is skipped for it, visibly (a `skipped`
        count in `outbox status`, a metric, a debug log), never dead-lettered; what `feedback()`
        accepts never depends on it. The default takes thumbs up/down on a message or a
        conversation.
        """
        return signal.is_thumbs

    @abc.abstractmethod
    def export(self, signal: Signal) -> DeliveryResult:
        """Deliver one signal and say how the destination answered."""

    def shutdown(self) -> None:  # noqa: B027 - optional hook, most exporters hold nothing
        """Release connections; called once when the client shuts down."""
