"""The module-level API: `configure()` and the calls that act on the default client."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from brixo_otel import _client, _config
from brixo_otel._client import DEFAULT_INDEXED_ATTRIBUTES, Client, DeliveredHook, ErrorHook
from brixo_otel._correlation._choose import span_index_from
from brixo_otel._correlation._index import SpanIndex
from brixo_otel._correlation._metrics import DEFAULT_DIMENSIONS, check_dimensions
from brixo_otel._internal import logger
from brixo_otel._signals._model import Signal

if TYPE_CHECKING:
    from brixo_otel._signals._outbox import OutboxLimits
    from brixo_otel._signals._retry import RetryPolicy
    from brixo_otel.exporters import SignalExporter

_configure_lock = threading.Lock()
_first_use_lock = threading.Lock()

#: Messages are rated within hours, rarely days: a day covers nearly all feedback, and older
#: feedback is still delivered, only unlinked (or linked through a link token).
DEFAULT_INDEX_TTL_SECONDS = 24 * 3600.0
DEFAULT_INDEX_MAX_ENTRIES = 100_000


def configure(
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    app_name: str | None = None,
    environment: str | None = None,
    agent_version: str | None = None,
    tracer_provider: TracerProvider | None = None,
    traces_endpoint: str | None = None,
    exporters: Sequence[SignalExporter] | None = None,
    outbox_path: str | os.PathLike[str] | None = None,
    span_index: str | SpanIndex | None = None,
    link_secret: str | bytes | Sequence[str | bytes] | None = None,
    capture_content: bool | None = None,
    allow_insecure_http: bool | None = None,
    retry_policy: RetryPolicy | None = None,
    outbox_limits: OutboxLimits | None = None,
    on_error: ErrorHook | None = None,
    on_delivered: DeliveredHook | None = None,
    meter_provider: MeterProvider | None = None,
    metric_dimensions: Sequence[str] | None = None,
    indexed_attributes: Sequence[str] | None = None,
) -> Client:
    """Set up brixo-otel for this process and make the new client the default.

    Arguments win over `BRIXO_*` environment variables. With an API key, traces go to Brixo by
    OTLP/HTTP and signals to the Signals API; `exporters=[...]` chooses the signal destinations
    instead. Feedback metrics go to `meter_provider` (else the global one), dimensioned by
    `metric_dimensions` (default: model, provider, agent version, environment; never ids).
    Calling it again replaces the default client; the old one is shut down (its undelivered
    signals stay in the outbox for the new one).
    """
    settings = _config.resolve(
        api_key=api_key,
        base_url=base_url,
        app_name=app_name,
        environment=environment,
        agent_version=agent_version,
        traces_endpoint=traces_endpoint,
        outbox_path=outbox_path,
        capture_content=capture_content,
        allow_insecure_http=allow_insecure_http,
        span_index=span_index if isinstance(span_index, str) else None,
        link_secret=link_secret,
    )
    if exporters is not None and not isinstance(exporters, Sequence):
        raise TypeError(f"exporters must be a list of SignalExporter, got {exporters!r}")
    index = span_index_from(
        span_index
        if span_index is not None and not isinstance(span_index, str)
        else settings.span_index,
        ttl_seconds=DEFAULT_INDEX_TTL_SECONDS,
        max_entries=DEFAULT_INDEX_MAX_ENTRIES,
    )
    dimensions = check_dimensions(
        DEFAULT_DIMENSIONS if metric_dimensions is None else metric_dimensions
    )
    with _configure_lock:
        previous = _client.current()
        if previous is not None:
            previous.shutdown()
        client = Client(
            settings,
            tracer_provider=tracer_provider,
            exporters=exporters,
            span_index=index,
            retry_policy=retry_policy,
            outbox_limits=outbox_limits,
            on_error=on_error,
            on_delivered=on_delivered,
            meter_provider=meter_provider,
            metric_dimensions=dimensions,
            indexed_attributes=_attribute_names("indexed_attributes", indexed_attributes),
        )
        _client.set_default(client)
    return client


def _attribute_names(argument: str, names: Sequence[str] | None) -> tuple[str, ...]:
    if names is None:
        return DEFAULT_INDEXED_ATTRIBUTES
    if isinstance(names, str) or not all(isinstance(n, str) and n for n in names):
        raise TypeError(f"{argument} must be a list of attribute names, got {names!r}")
    return tuple(names)


def get_client() -> Client:
    """The default client; configured from the environment on first use if `configure()` was
    never called, so a library can call `feedback()` without owning the app's start-up."""
    client = _client.current()
    if client is not None:
        return client
    with _first_use_lock:
        client = _client.current()
        if client is None:
            logger.info("brixo_otel: configuring from the environment on first use")
            client = configure()
    return client


def feedback(
    value: str,
    *,
    message_id: str | None = None,
    conversation_id: str | None = None,
    user_message: str | None = None,
    occurred_at: datetime | str | None = None,
    link: str | None = None,
    score: int | None = None,
    reasons: Sequence[str] | None = None,
) -> Signal:
    """Record a user's rating of one assistant message (or of a whole conversation).

    Returns once the signal is committed to the outbox and its `brixo.feedback` span is emitted
    into the rated message's trace; delivery happens in the background. Raises `InvalidSignal`
    for input that could never be delivered, and never for delivery problems.

    `value` is `thumbs_up` or `thumbs_down`, or `csat` / `nps` with `score=` (1 to 5 / 0 to 10) for
    destinations that take ratings. `reasons` are short tags (`incorrect`, `too_long`).
    A user who changes their mind simply gives feedback again: destinations that keep one item
    per message update it. `link` is a token from `link_token()`, passed back by the frontend:
    it links the signal to the message's trace in any process, with no shared span index (the
    message id may then be omitted; it is in the token).
    """
    return get_client().feedback(
        value,
        message_id=message_id,
        conversation_id=conversation_id,
        user_message=user_message,
        occurred_at=occurred_at,
        link=link,
        score=score,
        reasons=reasons,
    )


async def afeedback(
    value: str,
    *,
    message_id: str | None = None,
    conversation_id: str | None = None,
    user_message: str | None = None,
    occurred_at: datetime | str | None = None,
    link: str | None = None,
    score: int | None = None,
    reasons: Sequence[str] | None = None,
) -> Signal:
    """`feedback` for async apps: the outbox commit does not run on the event loop."""
    return await get_client().afeedback(
        value,
        message_id=message_id,
        conversation_id=conversation_id,
        user_message=user_message,
        occurred_at=occurred_at,
        link=link,
        score=score,
        reasons=reasons,
    )


def retract_feedback(
    *, message_id: str | None = None, conversation_id: str | None = None
) -> Signal:
    """Take back the user's rating of a message (or conversation).

    Delivered to the destinations that can delete or withdraw a rating (refused with
    `InvalidSignal` when none of the configured ones can); recorded in the trace as a
    `brixo.feedback` span with the value `retracted`.
    """
    return get_client().retract_feedback(message_id=message_id, conversation_id=conversation_id)


def link_token(message_id: str | None = None) -> str:
    """A compact, signed, URL-safe token that links later feedback to this message's trace.

    Inside a `@message` call it names the current message; otherwise pass the `message_id` of a
    message this process's span index still holds. Needs `link_secret` (or BRIXO_LINK_SECRET).
    """
    return get_client().link_token(message_id)


def flush(timeout: float | None = None) -> bool:
    """Send what is queued (spans, then signals); True if everything went out in time."""
    client = _client.current()
    return True if client is None else client.flush(timeout)


def shutdown(timeout: float = 5.0) -> None:
    """Flush within `timeout` and stop the default client; undelivered signals stay queued."""
    client = _client.current()
    if client is not None:
        client.shutdown(timeout)
        _client.clear_default(client)
