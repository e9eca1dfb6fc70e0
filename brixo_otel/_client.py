"""The Client: owns the tracing hook-up, the span index and the signal pipeline of one app.

It joins the app's OpenTelemetry setup rather than replacing it: span processors are added to
the app's TracerProvider when there is one, and a provider is created (and made global) only
when there is none.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from brixo_otel import _runtime
from brixo_otel import attributes as attrs
from brixo_otel._config import MEMORY_OUTBOX, Settings
from brixo_otel._correlation._emit import emit_feedback_span
from brixo_otel._correlation._index import IndexedSpan, InMemorySpanIndex, SpanIndex
from brixo_otel._correlation._metrics import DEFAULT_DIMENSIONS, FeedbackMetrics
from brixo_otel._errors import ConfigurationError
from brixo_otel._instrument._processor import BrixoSpanProcessor
from brixo_otel._instrument._scope import current_message
from brixo_otel._internal import guard, log_rate_limited, logger
from brixo_otel._signals._model import InvalidSignal, Signal, retraction, validate
from brixo_otel._version import __version__

if TYPE_CHECKING:
    from brixo_otel._correlation._tokens import LinkTokenContents
    from brixo_otel._signals._outbox import OutboxLimits
    from brixo_otel._signals._processor import SignalProcessor
    from brixo_otel._signals._retry import RetryPolicy
    from brixo_otel.exporters import SignalExporter

#: Attributes of a message span kept in the index, to dimension feedback by what produced it.
DEFAULT_INDEXED_ATTRIBUTES = (
    attrs.GEN_AI_REQUEST_MODEL,
    attrs.GEN_AI_PROVIDER_NAME,
    attrs.GEN_AI_SYSTEM,
    attrs.AGENT_VERSION,
    attrs.ENVIRONMENT,
    attrs.SESSION_ID,
)

ErrorHook = Callable[[Signal, str, str], None]
DeliveredHook = Callable[[Signal, str], None]


class Client:
    """One configured brixo-otel: create it with `brixo_otel.configure()`."""

    def __init__(
        self,
        settings: Settings,
        *,
        tracer_provider: TracerProvider | None = None,
        exporters: Sequence[SignalExporter] | None = None,
        span_index: SpanIndex | None = None,
        retry_policy: RetryPolicy | None = None,
        outbox_limits: OutboxLimits | None = None,
        on_error: ErrorHook | None = None,
        on_delivered: DeliveredHook | None = None,
        meter_provider: MeterProvider | None = None,
        metric_dimensions: Sequence[str] = DEFAULT_DIMENSIONS,
        indexed_attributes: Sequence[str] = DEFAULT_INDEXED_ATTRIBUTES,
    ) -> None:
        self.settings = settings
        self._meter_provider = meter_provider
        self.metrics = FeedbackMetrics(meter_provider, metric_dimensions)
        # metric dimensions must be kept too: feedback in another process reads them from here
        self._indexed_attributes = tuple(dict.fromkeys((*indexed_attributes, *metric_dimensions)))
        self._closed = False
        self._lock = threading.Lock()
        self.span_index: SpanIndex = span_index if span_index is not None else InMemorySpanIndex()
        # Everything that can refuse a setting runs before anything is attached or started.
        self._exporters = list(exporters) if exporters is not None else self._default_exporters()
        self._signals = self._start_signal_pipeline(
            retry_policy, outbox_limits, on_error, on_delivered
        )
        try:
            self.tracer_provider = self._join_tracer_provider(tracer_provider)
            self.tracer = self.tracer_provider.get_tracer(
                _runtime.INSTRUMENTATION_NAME, __version__
            )
            self._trace_export = self._add_trace_export()
        except BaseException:
            if self._signals is not None:
                self._signals.shutdown(timeout=0.5)
            raise

    # -- set-up ---------------------------------------------------------------------------

    def _resource_attributes(self) -> dict[str, str]:
        values = {
            attrs.APP_NAME: self.settings.app_name,
            attrs.ENVIRONMENT: self.settings.environment,
            attrs.AGENT_VERSION: self.settings.agent_version,
            attrs.SDK_VERSION: __version__,
        }
        return {name: value for name, value in values.items() if value is not None}

    def _join_tracer_provider(self, given: TracerProvider | None) -> TracerProvider:
        provider: object = given if given is not None else trace.get_tracer_provider()
        if given is not None and not isinstance(given, TracerProvider):
            raise TypeError(
                "tracer_provider must be an opentelemetry.sdk.trace.TracerProvider, "
                f"got {type(given).__name__}"
            )
        if not isinstance(provider, TracerProvider):
            resource = dict(self._resource_attributes())
            if self.settings.app_name:
                resource[SERVICE_NAME] = self.settings.app_name
            provider = TracerProvider(resource=Resource.create(resource))
            trace.set_tracer_provider(provider)
        # The app's provider keeps its own resource; we carry our resource values on the spans
        # we tag instead, so Brixo still knows which app and version produced them.
        existing = provider.resource.attributes
        self.root_span_attributes = {
            name: value
            for name, value in self._resource_attributes().items()
            if name not in existing and name != attrs.SDK_VERSION
        }
        self._span_processor = BrixoSpanProcessor(
            self.span_index, indexed_attributes=self._indexed_attributes, metrics=self.metrics
        )
        provider.add_span_processor(self._span_processor)
        return provider

    def _add_trace_export(self) -> SpanProcessor | None:
        endpoint = self.settings.traces_endpoint
        if endpoint is None:
            return None
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        headers = {"Brixo-Auth": f"Bearer {self.settings.api_key}"} if self.settings.api_key else {}
        processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, headers=headers))
        self.tracer_provider.add_span_processor(processor)
        return processor

    def _default_exporters(self) -> list[SignalExporter]:
        if not self.settings.has_api_key:
            return []
        from brixo_otel.exporters import BrixoSignalExporter

        return [
            BrixoSignalExporter(
                api_key=self.settings.api_key,
                base_url=self.settings.base_url,
                allow_insecure_http=self.settings.allow_insecure_http,
            )
        ]

    def _start_signal_pipeline(
        self,
        retry_policy: RetryPolicy | None,
        outbox_limits: OutboxLimits | None,
        on_error: ErrorHook | None,
        on_delivered: DeliveredHook | None,
    ) -> SignalProcessor | None:
        if not self._exporters:
            return None
        from brixo_otel._signals._outbox import Outbox, OutboxLimits
        from brixo_otel._signals._processor import SignalProcessor
        from brixo_otel._signals._retry import RetryPolicy

        path = self.settings.outbox_path
        if path != MEMORY_OUTBOX:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        outbox = Outbox(path, outbox_limits or OutboxLimits())
        self._outbox = outbox
        return SignalProcessor(
            outbox,
            self._exporters,
            policy=retry_policy or RetryPolicy(),
            on_error=on_error,
            on_delivered=on_delivered,
            meter_provider=self._meter_provider,
        )

    # -- feedback ---------------------------------------------------------------------------

    def feedback(
        self,
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
        """Validate, record in the rated trace, commit for delivery: see `brixo_otel.feedback`."""
        signal, rated = self._prepare(
            value, message_id, conversation_id, user_message, occurred_at, link, score, reasons
        )
        self._enqueue(signal, self._accept(signal, rated))
        return signal

    async def afeedback(
        self,
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
        """`feedback` for async apps: the outbox commit runs off the event loop."""
        signal, rated = self._prepare(
            value, message_id, conversation_id, user_message, occurred_at, link, score, reasons
        )
        destinations = self._accept(signal, rated)
        await asyncio.get_running_loop().run_in_executor(None, self._enqueue, signal, destinations)
        return signal

    def retract_feedback(
        self, *, message_id: str | None = None, conversation_id: str | None = None
    ) -> Signal:
        """Take back the user's rating of a message or conversation, where destinations can."""
        signal = retraction(message_id=message_id, conversation_id=conversation_id)
        rated = self._lookup(signal.message_id)
        signal = _with_known_conversation(signal, rated)
        self._enqueue(signal, self._accept(signal, rated))
        return signal

    def _accept(self, signal: Signal, rated: IndexedSpan | None) -> list[str] | None:
        """Refuse a signal no destination takes (before anything is recorded), then record it
        in the rated trace; the destinations that take it."""
        destinations = self._destinations_for(signal)
        self._emit(signal, rated)
        return destinations

    def _lookup(self, message_id: str | None) -> IndexedSpan | None:
        rated = None
        if message_id is not None:
            with guard("looking up the rated message"):
                rated = self.span_index.get(message_id)
        return rated

    def _destinations_for(self, signal: Signal) -> list[str] | None:
        """The configured destinations that take `signal`; refuse it if none does."""
        if not self._exporters:
            return None
        chosen = [e.name for e in self._exporters if e.accepts(signal)]
        if not chosen:
            names = ", ".join(e.name for e in self._exporters)
            what = f"{signal.value} on a {signal.target}"
            raise InvalidSignal(
                f"no configured destination ({names}) accepts {what}; see each exporter's "
                "documentation for what it takes"
            )
        if len(chosen) < len(self._exporters) and logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "brixo_otel: %s on a %s skipped by %s, which do not take it",
                signal.value,
                signal.target,
                [e.name for e in self._exporters if e.name not in chosen],
            )
        return chosen

    def _prepare(
        self,
        value: str,
        message_id: str | None,
        conversation_id: str | None,
        user_message: str | None,
        occurred_at: datetime | str | None,
        link: str | None,
        score: int | None,
        reasons: Sequence[str] | None,
    ) -> tuple[Signal, IndexedSpan | None]:
        """The validated signal and the span it rates: from the link token, else the index.

        Everything here that can raise raises `InvalidSignal` (or `ConfigurationError` for a
        token with no secret configured) before anything is emitted or queued.
        """
        token = self._read_link(link, message_id) if link is not None else None
        if token is not None and message_id is None:
            message_id = token.message_id
        signal = validate(
            value,
            message_id=message_id,
            conversation_id=conversation_id,
            user_message=user_message,
            occurred_at=occurred_at,
            score=score,
            reasons=reasons,
        )
        if token is not None:
            rated: IndexedSpan | None = IndexedSpan(token.span_context, token.attributes)
        else:
            rated = self._lookup(signal.message_id)
        return _with_known_conversation(signal, rated), rated

    def _read_link(self, link: object, message_id: str | None) -> LinkTokenContents:
        from brixo_otel._correlation._tokens import decode_link_token

        if self.settings.link_secret is None:
            raise ConfigurationError(
                "feedback(link=...) needs the secret that signed the token: "
                "configure(link_secret=...) or BRIXO_LINK_SECRET"
            )
        if not isinstance(link, str):
            raise InvalidSignal(f"link must be the string link_token() returned, got {link!r}")
        first: InvalidSignal | None = None
        for secret in self.settings.link_secrets:  # the signing secret, then retired ones
            try:
                return decode_link_token(secret, link, expected_message_id=message_id)
            except InvalidSignal as exc:
                first = first or exc
        assert first is not None
        raise first

    def link_token(self, message_id: str | None = None) -> str:
        """A signed token that carries the message's span context to wherever feedback lands.

        Hand it to the frontend next to the message; `feedback(..., link=token)` then links the
        signal to the trace in any process, with no shared index.
        """
        from brixo_otel._correlation._tokens import encode_link_token

        if self.settings.link_secret is None:
            raise ConfigurationError(
                "link tokens are signed: configure(link_secret=...) or set BRIXO_LINK_SECRET"
            )
        scope = current_message()
        if message_id is None or (scope is not None and scope.message_id == message_id):
            if scope is None or scope.message_id is None or scope.span is None:
                raise ValueError(
                    "link_token() without a message_id must be called inside a @message "
                    "function or message_span block whose message id is known"
                )
            return encode_link_token(
                self.settings.link_secret,
                scope.message_id,
                scope.span.get_span_context(),
                self._span_processor.attributes_so_far(scope),
            )
        rated = self.span_index.get(message_id)
        if rated is None:
            raise ValueError(
                f"no span is known for message id {message_id!r} here; call link_token() "
                "inside the message, or where the span index holds it"
            )
        return encode_link_token(
            self.settings.link_secret, message_id, rated.span_context, rated.attributes
        )

    def _emit(self, signal: Signal, rated: IndexedSpan | None) -> None:
        with guard("emitting the feedback span"):
            emit_feedback_span(
                self.tracer, signal, rated, capture_content=self.settings.capture_content
            )
            self.metrics.count_feedback(
                signal.value, signal.target, rated.attributes if rated is not None else {}
            )

    def _enqueue(self, signal: Signal, destinations: list[str] | None = None) -> None:
        if self._signals is None:
            log_rate_limited(
                logging.WARNING,
                "feedback:no-destination",
                "brixo_otel: no signal destination is configured (set BRIXO_API_KEY or pass "
                "exporters=[...]); feedback is recorded in OpenTelemetry only",
            )
            return
        with guard("queueing a signal"):
            self._signals.enqueue(signal, destinations)

    # -- lifecycle ----------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Export finished spans, then deliver queued signals; True if everything went out.

        Spans go first: the Signals API answers 404 for a message whose trace it has not
        ingested yet.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        done = True
        with guard("flushing"):
            if self._trace_export is not None:
                millis = 30_000 if deadline is None else _remaining_ms(deadline)
                done = self._trace_export.force_flush(millis) and done
            if self._signals is not None:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                done = self._signals.flush(remaining) and done
        return done

    def shutdown(self, timeout: float = 5.0) -> None:
        """Flush within `timeout`, then stop; what is not delivered stays in the outbox."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        deadline = time.monotonic() + timeout
        with guard("shutting down"):
            if self._trace_export is not None:
                self._trace_export.force_flush(_remaining_ms(deadline))
                self._trace_export.shutdown()
            if self._signals is not None:
                # A worker still busy past the deadline (a hung destination) keeps the outbox;
                # it is a daemon thread and holds nothing the next process needs.
                stopped = self._signals.shutdown(max(0.0, deadline - time.monotonic()))
                if stopped:
                    self._outbox.close()
        self._span_processor.disable()
        close = getattr(self.span_index, "close", None)
        if callable(close):
            with guard("closing the span index"):
                close()

    @property
    def exporters(self) -> tuple[SignalExporter, ...]:
        return tuple(self._exporters)

    def __repr__(self) -> str:
        return (
            f"Client(app_name={self.settings.app_name!r}, "
            f"traces_endpoint={self.settings.traces_endpoint!r}, "
            f"exporters={[type(e).__name__ for e in self._exporters]}, pid={os.getpid()})"
        )


def _with_known_conversation(signal: Signal, rated: IndexedSpan | None) -> Signal:
    """Destinations that file message feedback under its conversation need the conversation id;
    when the app did not pass it, the rated span knows it."""
    if rated is None or signal.conversation_id is not None:
        return signal
    known = rated.attributes.get(attrs.SESSION_ID)
    if isinstance(known, str) and known:
        return dataclasses.replace(signal, conversation_id=known)
    return signal


def _remaining_ms(deadline: float) -> int:
    return max(0, int((deadline - time.monotonic()) * 1000))


# -- the default client --------------------------------------------------------------------

_default: Client | None = None
_default_lock = threading.Lock()


def set_default(client: Client) -> Client | None:
    """Make `client` the default; return the one it replaces (the caller shuts it down)."""
    global _default
    with _default_lock:
        previous, _default = _default, client
    _runtime.use_tracer(
        client.tracer, client.root_span_attributes, content=client.settings.capture_content
    )
    return previous


def current() -> Client | None:
    return _default


def clear_default(client: Client) -> None:
    global _default
    with _default_lock:
        if _default is client:
            _default = None
            _runtime.use_tracer(None)
