"""The Client: owns the tracing hook-up, the span index and the signal pipeline of one app.

It joins the app's OpenTelemetry setup rather than replacing it: span processors are added to
the app's TracerProvider when there is one, and a provider is created (and made global) only
when there is none; the same for the LoggerProvider.

`feedback()` here only validates and commits. Everything else — finding the rated span, the
OpenTelemetry record, every destination — is a stage of the durable pipeline (`_delivery`).
"""

from __future__ import annotations

import atexit
import dataclasses
import inspect
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Concatenate, Final, ParamSpec

from opentelemetry import _logs, trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider

from brixo_otel import attributes as attrs
from brixo_otel._correlation._index import SpanIndex
from brixo_otel._correlation._index_url import span_index_from
from brixo_otel._correlation._tokens import decode_link_token, encode_link_token
from brixo_otel._delivery._outbox import Outbox
from brixo_otel._delivery._worker import SignalProcessor, exit_time_left
from brixo_otel._errors import ConfigurationError, InvalidSignal, UnknownMessage
from brixo_otel._exporter import SignalExporter
from brixo_otel._feedback._metrics import FeedbackMetrics, check_dimensions
from brixo_otel._feedback._record import OpenTelemetryRecord
from brixo_otel._feedback._span import SignalIdGenerator
from brixo_otel._instrument._processor import BrixoSpanProcessor
from brixo_otel._instrument._scope import current_message
from brixo_otel._instrument._trace_export import TraceExport
from brixo_otel._internal import guard, log_rate_limited, logger
from brixo_otel._policies import OutboxLimits, RetryPolicy
from brixo_otel._settings import MEMORY_OUTBOX, Settings, resolve
from brixo_otel._signal import RatedSpan, Signal, SpanRef, retraction, validate
from brixo_otel._urls import redacted_url
from brixo_otel._version import __version__

#: Messages are rated within hours, rarely days: a day covers nearly all feedback, and older
#: feedback is still delivered, only unlinked (or linked through a link token).
DEFAULT_INDEX_TTL_SECONDS = 24 * 3600.0
DEFAULT_INDEX_MAX_ENTRIES = 100_000


P = ParamSpec("P")


def _parameters_of(
    sync: Callable[Concatenate[Client, P], Signal],
) -> Callable[
    [Callable[..., Awaitable[Signal]]], Callable[Concatenate[Client, P], Awaitable[Signal]]
]:
    """Give an async twin the parameters of its sync method, for type checkers and `help()`,
    so the parameter list is written once."""

    def adopt(
        function: Callable[..., Awaitable[Signal]],
    ) -> Callable[Concatenate[Client, P], Awaitable[Signal]]:
        function.__signature__ = inspect.signature(sync)  # type: ignore[attr-defined]
        return function

    return adopt


class Client:
    """One configured brixo-otel. `brixo_otel.configure(...)` builds one and makes it the
    default; `Client(...)` builds one that is not (several apps in one process, tests).

    Every argument is optional; an argument wins over its `BRIXO_*` environment variable.
    docs/configuration.md lists them all, with defaults (generated from the settings table).
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        app_name: str | None = None,
        environment: str | None = None,
        agent_version: str | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        logger_provider: _logs.LoggerProvider | None = None,
        traces_endpoint: str | None = None,
        traces_headers: Mapping[str, str] | None = None,
        exporters: Sequence[SignalExporter] | None = None,
        outbox_path: str | os.PathLike[str] | None = None,
        span_index: str | object | None = None,
        link_secret: str | bytes | Sequence[str | bytes] | None = None,
        link_window: float | None = None,
        capture_content: bool | None = None,
        allow_insecure_http: bool | None = None,
        retry_policy: RetryPolicy | None = None,
        outbox_limits: OutboxLimits | None = None,
        on_error: Callable[[Signal, str, str], None] | None = None,
        on_delivered: Callable[[Signal, str], None] | None = None,
        metric_dimensions: Sequence[str] | None = None,
        indexed_attributes: Sequence[str] | None = None,
    ) -> None:
        options = {name: value for name, value in locals().items() if name != "self"}
        # Everything that can refuse a setting runs before anything is attached or started.
        self.settings = settings = resolve(options)
        dimensions = check_dimensions(settings.metric_dimensions)
        # metric dimensions must be kept too: feedback in another process reads them from here
        self._indexed_attributes = tuple(dict.fromkeys((*settings.indexed_attributes, *dimensions)))
        self._exporters = list(
            self._default_exporters() if settings.exporters is None else settings.exporters
        )
        if not self._exporters:
            log_rate_limited(
                logging.WARNING,
                "feedback:no-destination",
                "brixo_otel: no signal destination is configured (set BRIXO_API_KEY or pass "
                "exporters=[...]); feedback is recorded in OpenTelemetry only",
            )
        self._outbox = outbox = _open_outbox(settings)
        self._closed = False
        self._lock = threading.Lock()
        try:
            self.span_index: SpanIndex = span_index_from(
                settings.span_index,
                ttl_seconds=DEFAULT_INDEX_TTL_SECONDS,
                max_entries=DEFAULT_INDEX_MAX_ENTRIES,
            )
            self.metrics = FeedbackMetrics(settings.meter_provider, dimensions)
            self.tracer_provider = self._join_tracer_provider(settings.tracer_provider)
            self.tracer = self.tracer_provider.get_tracer("brixo_otel", __version__)
            self._trace_export = TraceExport.start(self.tracer_provider, settings)
            self._signals = SignalProcessor(
                outbox,
                [self._record_stage(dimensions), *self._exporters],
                span_index=self.span_index,
                link_window=settings.link_window,
                policy=settings.retry_policy,
                on_error=settings.on_error,
                on_delivered=settings.on_delivered,
                meter_provider=settings.meter_provider,
                traces=self._trace_export,
            )
        except BaseException:
            outbox.close()
            raise
        # Registered after the processor's own hook, so it runs first (last in, first out): the
        # span export and the signals then share the one exit budget.
        atexit.register(_shutdown_at_exit, weakref.ref(self))

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
            self.span_index,
            indexed_attributes=self._indexed_attributes,
            metrics=self.metrics,
            resource_attributes=provider.resource.attributes,
        )
        provider.add_span_processor(self._span_processor)
        return provider

    def _join_logger_provider(self) -> _logs.LoggerProvider:
        given = self.settings.logger_provider
        if given is not None:
            return given  # type: ignore[no-any-return]
        provider = _logs.get_logger_provider()
        from opentelemetry.sdk._logs import LoggerProvider as SdkLoggerProvider

        if not isinstance(provider, SdkLoggerProvider):
            # As for traces: no SDK provider yet, so one is made global; an app that sets its
            # own later keeps its own (the API refuses to override, and logs that).
            provider = SdkLoggerProvider(resource=self.tracer_provider.resource)
            _logs.set_logger_provider(provider)
        return provider

    def _record_stage(self, dimensions: Sequence[str]) -> OpenTelemetryRecord:
        """The stage that emits the feedback span, log event and counter, with span ids fixed
        per signal (a tracer of our own, so no other span gets those ids)."""
        tracer = self.tracer_provider.get_tracer("brixo_otel.feedback", __version__)
        ids = SignalIdGenerator(self.tracer_provider.id_generator)
        tracer.id_generator = ids  # type: ignore[attr-defined]
        logger = self._join_logger_provider().get_logger("brixo_otel", __version__)
        return OpenTelemetryRecord(
            tracer,
            ids,
            logger,
            self.metrics,
            capture_content=self.settings.capture_content,
            expect_export=None if self._trace_export is None else self._trace_export.expect,
        )

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
        """Record a user's rating of one assistant message (or of a whole conversation).

        Returns once the signal is committed to the outbox (or, if the outbox cannot take it
        within a few milliseconds, held in memory until it can); linking it to the rated span,
        the `brixo.feedback` span and every delivery happen in the background. Raises
        `InvalidSignal` for input that could never be delivered, and nothing else.

        `value` is `thumbs_up` or `thumbs_down`, or `csat` / `nps` with `score=` (1 to 5 / 0 to
        10). `reasons` are short tags (`incorrect`, `too_long`). A user who changes their mind
        gives feedback again: destinations that keep one item per message update it. `link` is
        a token from `link_token()`, passed back by the frontend: it names the rated span, in
        any process, with no shared index (the message id may then be omitted).
        """
        signal = self._signal(
            value, message_id, conversation_id, user_message, occurred_at, link, score, reasons
        )
        self._signals.enqueue(signal)
        return signal

    @_parameters_of(feedback)
    async def afeedback(self, value: str, **kwargs: Any) -> Signal:
        """`feedback` for async apps (same arguments): it never waits on the event loop. The
        commit is tried once without waiting for a lock; if the outbox is busy, the signal is
        held in memory and the delivery worker commits it moments later."""
        signal = self._signal(value, **kwargs)
        self._signals.enqueue(signal, wait=0.0)
        return signal

    def retract_feedback(
        self, *, message_id: str | None = None, conversation_id: str | None = None
    ) -> Signal:
        """Take back the user's rating of a message or conversation.

        Delivered to the destinations that can delete or withdraw a rating (the others skip it,
        visibly in `outbox status`); recorded in the trace as a `brixo.feedback` span with the
        value `retracted`.
        """
        signal = retraction(
            message_id=message_id, conversation_id=conversation_id, caller=_caller()
        )
        self._signals.enqueue(signal)
        return signal

    def _signal(
        self,
        value: str,
        message_id: str | None = None,
        conversation_id: str | None = None,
        user_message: str | None = None,
        occurred_at: datetime | str | None = None,
        link: str | None = None,
        score: int | None = None,
        reasons: Sequence[str] | None = None,
    ) -> Signal:
        """The validated signal, with the rated span when a link token names it. Everything
        that can raise raises `InvalidSignal`, before anything is committed. `feedback()`
        passes its arguments by position (this runs in every call); `afeedback()` by name."""
        rated = None
        if link is not None:
            token = self._read_link(link, message_id)
            message_id = message_id or token.message_id
            context = token.span_context
            rated = RatedSpan(context.trace_id, context.span_id, dict(token.attributes))
        signal = validate(
            value,
            message_id=message_id,
            conversation_id=conversation_id,
            user_message=user_message,
            occurred_at=occurred_at,
            score=score,
            reasons=reasons,
            caller=_caller(),
        )
        if rated is not None:
            known = rated.attributes.get(attrs.SESSION_ID)
            signal = _replace(
                signal,
                rated=rated,
                link_status="linked",
                conversation_id=signal.conversation_id
                or (known if isinstance(known, str) and known else None),
            )
        return signal

    def _read_link(self, link: object, message_id: str | None) -> Any:
        if not isinstance(link, str):
            raise InvalidSignal(
                f"link must be the string link_token() returned, got {type(link).__name__}",
                field="link",
                reason="wrong_type",
            )
        if not self.settings.link_secrets:
            raise InvalidSignal(
                "feedback(link=...) cannot be checked here: no link secret is configured "
                "(configure(link_secret=...) or BRIXO_LINK_SECRET, the one that signed it)",
                field="link",
                reason="not_accepted",
            )
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
        signal to the trace in any process, with no shared index. Inside a `@message` call it
        names the current message; otherwise this process's index must hold `message_id`.
        Raises `ConfigurationError` without a link secret, `UnknownMessage` when there is no
        such message here.
        """
        secret = self.settings.link_secret
        if secret is None:
            raise ConfigurationError(
                "link tokens are signed: configure(link_secret=...) or set BRIXO_LINK_SECRET"
            )
        scope = current_message()
        if message_id is None or (scope is not None and scope.message_id == message_id):
            if scope is None or scope.message_id is None or scope.span is None:
                raise UnknownMessage(
                    "link_token() without a message_id must be called inside a @message "
                    "function or message_span block whose message id is known"
                )
            return encode_link_token(
                secret,
                scope.message_id,
                scope.span.get_span_context(),
                self._span_processor.attributes_so_far(scope),
            )
        lookup = getattr(self.span_index, "get_local", self.span_index.get)
        rated = lookup(message_id)
        if rated is None:
            raise UnknownMessage(
                f"no span is known here for message id {message_id!r}; call link_token() "
                "inside the message, or in the process that produced it"
            )
        return encode_link_token(secret, message_id, rated.span_context, rated.attributes)

    # -- lifecycle ----------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Export finished spans, then deliver what is queued; True if everything went out.

        Spans go first: the Signals API answers 404 for a message whose trace it has not
        ingested yet. Returns early, False, when what is left cannot complete before the
        deadline (it waits out a pause or a not-found window).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        done = True
        with guard("flushing"):
            if self._trace_export is not None:
                done = self._trace_export.flush(deadline) and done
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            done = self._signals.flush(remaining) and done
        return done

    def shutdown(self, timeout: float = 5.0) -> None:
        """Flush within `timeout`, then stop; what is not delivered stays in the outbox.

        The span export and the signal delivery share the one budget: a hung OTLP endpoint
        cannot make this take longer than `timeout`.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        deadline = time.monotonic() + timeout
        self._span_processor.disable()
        with guard("shutting down"):
            if self._trace_export is not None:
                self._trace_export.shutdown(deadline)
            # A worker still busy past the deadline (a hung destination) keeps the outbox; it is
            # a daemon thread and holds nothing the next process needs.
            if self._signals.shutdown(max(0.0, deadline - time.monotonic())):
                self._outbox.close()
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
            f"traces_endpoint={_shown_url(self.settings.traces_endpoint)!r}, "
            f"exporters={[type(e).__name__ for e in self._exporters]}, pid={os.getpid()})"
        )


def _shutdown_at_exit(ref: weakref.ref[Client]) -> None:
    client = ref()
    if client is None:
        return
    try:
        client.shutdown(timeout=exit_time_left())
    except Exception:
        logger.debug("brixo_otel: shutdown at exit failed", exc_info=True)


def _open_outbox(settings: Settings) -> Outbox:
    """The outbox, or a `ConfigurationError` that names the path and how to fix it."""
    path = settings.outbox_path
    try:
        if path != MEMORY_OUTBOX:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return Outbox(path, settings.outbox_limits)
    except (OSError, sqlite3.Error, ValueError) as exc:
        raise ConfigurationError(
            f"outbox_path {path!r} cannot be opened as the outbox ({type(exc).__name__}: {exc}); "
            "give a writable file path in an existing or creatable directory (or set "
            "BRIXO_OUTBOX_PATH), or ':memory:' to opt out of durability"
        ) from None


_current_span: Final = trace.get_current_span
_NO_SPAN: Final = trace.INVALID_SPAN


def _caller() -> SpanRef | None:
    """The span current at the call (the request that carried the click), fixed on the signal
    so its feedback span can link back to it."""
    span = _current_span()
    if span is _NO_SPAN:  # no span current: the common case outside a request
        return None
    context = span.get_span_context()
    return SpanRef(context.trace_id, context.span_id) if context.is_valid else None


def _replace(signal: Signal, **changes: Any) -> Signal:
    return dataclasses.replace(signal, **changes)


def _shown_url(url: str | None) -> str | None:
    """A URL as a repr may show it: no userinfo, no query."""
    return None if url is None else redacted_url(url).split("?", 1)[0]
