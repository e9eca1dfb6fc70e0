"""What the test server hands back: plain frozen values, detached from the SQLite rows behind them.

Tests compare these with `==`, so they carry only data, and every field is exactly what arrived
on the wire (no normalising), which is what a test of a client needs to see.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

SignalTarget = Literal["message", "conversation"]


@dataclass(frozen=True)
class ReceivedSignal:
    """One signal the server accepted (answered 204 and stored)."""

    target: SignalTarget
    target_id: str
    name: str
    value: str
    occurred_at: str | None
    """As sent; `None` when the client left it out."""
    user_message: str | None
    idempotency_key: str | None
    received_at: float
    """Server clock (`time.time()`) when the request arrived."""


@dataclass(frozen=True)
class ReceivedSpan:
    """One span ingested over OTLP, with ids as lower-case hex as every OTel backend shows them."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    attributes: dict[str, Any]
    """Attribute values as Python values: str, bool, int, float, bytes, list or dict."""
    resource_attributes: dict[str, Any]


@dataclass(frozen=True)
class RequestRecord:
    """One HTTP request as the server saw it, whatever became of it."""

    method: str
    path: str
    """The raw request target, still percent-encoded, query string included."""
    status: int | None
    """The status answered; `None` while still in flight or when the server dropped the request."""
    headers: dict[str, str]
    """Header names lower-cased; repeated headers joined with ", "."""
    received_at: float
