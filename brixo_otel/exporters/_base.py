"""The exporter contract: to signals what `SpanExporter` is to spans.

An exporter speaks one destination's API and classifies each answer; what to do about it (retry,
pause, dead-letter) is decided once, in the signal processor, so every destination gets the same
delivery guarantees.
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass

from brixo_otel._signals._model import Signal


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

    @classmethod
    def delivered(cls) -> DeliveryResult:
        return _DELIVERED


_DELIVERED = DeliveryResult(DeliveryStatus.DELIVERED)


class SignalExporter(abc.ABC):
    """A destination for feedback signals.

    `export` is called from the delivery worker's threads, possibly concurrently, never from the
    app's thread. It should not raise: an exception is treated as a transient failure and logged.
    """

    #: Stable key of this destination in the outbox; two exporters with the same name share
    #: delivery state, so give each configured destination its own.
    name: str = "signals"

    @abc.abstractmethod
    def export(self, signal: Signal) -> DeliveryResult:
        """Deliver one signal and say how the destination answered."""

    def shutdown(self) -> None:  # noqa: B027 - optional hook, most exporters hold nothing
        """Release connections; called once when the client shuts down."""
