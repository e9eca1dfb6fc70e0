"""brixo-otel's own OTLP trace export: where the key may go, what has left, a bounded exit.

- The Brixo key goes only to Brixo's own hosts and to loopback (the local test server): a user
  who points `traces_endpoint` at Phoenix or a collector must not hand them the key. Headers the
  app passes itself (`traces_headers`) are sent as given: that is the app saying so explicitly.
- It remembers which message spans have not left the process yet, so the Signals API is not
  asked about a message whose trace is still in the batch queue (it would answer 404).
- `flush` and `shutdown` run the SDK's calls in a helper thread and wait only until the
  caller's deadline: a hung endpoint must not stretch `shutdown(timeout)` or the exit. The
  provider sees the batch processor through `_BoundedProcessor`, so its own shutdown (at exit,
  or the app's `provider.shutdown()`) is bounded too, instead of the SDK's 30 s join.
- Fork-safe: a child gets an OTLP exporter (and so an HTTP session) of its own; the parent's
  session may have been locked by its export thread at the fork, for ever in the child.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final
from urllib.parse import urlsplit

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from brixo_otel import attributes as attrs
from brixo_otel._forksafe import after_fork_in_child
from brixo_otel._internal import log_rate_limited
from brixo_otel._settings import Settings
from brixo_otel._urls import is_loopback_host

#: Hosts that are Brixo's own: the key may travel there.
BRIXO_DOMAIN: Final = "brixo.com"
#: Message spans remembered as "not exported yet", at most; the oldest are forgotten first.
_MAX_PENDING: Final = 100_000
#: Longest one OTLP request may take, connect to answer (the SDK default is 10 s).
EXPORT_TIMEOUT_SECONDS: Final = 5.0
#: What a shutdown of the provider (not of brixo-otel's client) gives this export: the provider
#: shuts its processors down one after the other, at exit too, and the exit budget is shared.
PROVIDER_SHUTDOWN_SECONDS: Final = 1.0

#: Exporters a forked child inherited: never used nor shut down in the child (that would take the
#: parent's session locks), and held so that collecting them cannot either.
_inherited: list[SpanExporter] = []


def key_may_go_to(endpoint: str) -> bool:
    host = (urlsplit(endpoint).hostname or "").lower().rstrip(".")
    return host == BRIXO_DOMAIN or host.endswith("." + BRIXO_DOMAIN) or is_loopback_host(host)


class _ExportedSpans(SpanExporter):
    """Passes spans to the OTLP exporter and forgets the message spans that left; in a forked
    child, to a new OTLP exporter made by `make`."""

    def __init__(self, make: Callable[[], SpanExporter], pending: dict[int, None]) -> None:
        self._make = make
        self._inner = make()
        self._pending = pending
        #: Span ids exported lately (bounded): how the OpenTelemetry record stage learns that
        #: the feedback span it emitted has left the process.
        self.recent: dict[int, None] = {}
        #: Spans it says False for are not sent (nor waited for): `TraceExport.filter_spans`.
        self.keep: Callable[[ReadableSpan], bool] | None = None
        after_fork_in_child(self, _ExportedSpans._new_exporter_in_child)

    def _new_exporter_in_child(self) -> None:
        _inherited.append(self._inner)
        self._inner = self._make()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        keep = self.keep
        if keep is not None:
            kept = []
            for span in spans:
                if keep(span):
                    kept.append(span)
                elif span.context is not None:  # never leaves: nothing is to wait for it
                    self._pending.pop(span.context.span_id, None)
            if len(kept) != len(spans):
                if not kept:
                    return SpanExportResult.SUCCESS
                spans = kept
        result = self._inner.export(spans)
        if result is SpanExportResult.SUCCESS:
            recent = self.recent
            for span in spans:
                if span.context is not None:
                    self._pending.pop(span.context.span_id, None)
                    recent[span.context.span_id] = None
            while len(recent) > _MAX_PENDING:
                with contextlib.suppress(RuntimeError, StopIteration):
                    recent.pop(next(iter(recent)), None)
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class _MessageSpanWatcher(SpanProcessor):
    """Notes message spans as they start (and again as they end, for ids bound late)."""

    def __init__(self, pending: dict[int, None]) -> None:
        self._pending = pending

    def _note(self, span_id: int) -> None:
        pending = self._pending
        pending[span_id] = None
        if len(pending) > _MAX_PENDING:
            with contextlib.suppress(RuntimeError, StopIteration):  # a concurrent change
                pending.pop(next(iter(pending)), None)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if span.attributes and attrs.MESSAGE_ID in span.attributes:
            self._note(span.context.span_id)

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is not None and span.attributes and attrs.MESSAGE_ID in span.attributes:
            self._note(span.context.span_id)


class _BoundedProcessor(SpanProcessor):
    """The batch processor as the provider sees it: spans pass straight through; a flush or a
    shutdown from the provider waits a bounded time (a hung endpoint must not hold an exit)."""

    def __init__(self, export: TraceExport, batch: BatchSpanProcessor) -> None:
        self._export = export
        self._batch = batch

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._batch.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        self._batch.on_end(span)

    def shutdown(self) -> None:
        self._export.shutdown(time.monotonic() + PROVIDER_SHUTDOWN_SECONDS)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._export.flush(time.monotonic() + timeout_millis / 1000)


class TraceExport:
    """The OTLP span export a client adds to the provider, when `traces_endpoint` is set."""

    _exported: _ExportedSpans | None = None

    def __init__(self, processor: BatchSpanProcessor, pending: dict[int, None]) -> None:
        self._processor = processor
        self._pending = pending
        self._stopping = False
        self._flushing = False
        self._stop_lock = threading.Lock()

    @classmethod
    def start(cls, provider: TracerProvider, settings: Settings) -> TraceExport | None:
        endpoint = settings.traces_endpoint
        if endpoint is None:
            return None
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        headers = dict(settings.traces_headers)
        if settings.api_key:
            if key_may_go_to(endpoint):
                headers.setdefault("Brixo-Auth", f"Bearer {settings.api_key}")
            else:
                log_rate_limited(
                    logging.WARNING,
                    "traces:key-withheld",
                    "brixo_otel: traces_endpoint is not a Brixo host, so the Brixo API key is "
                    "not sent to it; pass traces_headers=... for the headers that endpoint needs",
                )
        pending: dict[int, None] = {}

        def make() -> SpanExporter:
            return OTLPSpanExporter(
                endpoint=endpoint, headers=headers, timeout=EXPORT_TIMEOUT_SECONDS
            )

        provider.add_span_processor(_MessageSpanWatcher(pending))
        exported = _ExportedSpans(make, pending)
        processor = BatchSpanProcessor(exported)
        export = cls(processor, pending)
        export._exported = exported
        provider.add_span_processor(_BoundedProcessor(export, processor))
        return export

    def filter_spans(self, keep: Callable[[ReadableSpan], bool] | None) -> None:
        """Send only the spans `keep` says True for (None: all). It runs on the export thread,
        never the app's; the vendor facade keeps other instrumentations' spans out with it."""
        if self._exported is not None:
            self._exported.keep = keep

    def expect(self, span_id: int) -> None:
        """Note a span about to be emitted, so `pending` says True until it has left."""
        self._pending[span_id] = None

    def exported(self, span_id: int) -> bool:
        """Whether this span left the process lately (by this export)."""
        return self._exported is not None and span_id in self._exported.recent

    def flush_soon(self) -> None:
        """Export what is queued now rather than at the next batch tick, in a helper thread
        (one at a time): the record stage waits for its spans to leave."""
        with self._stop_lock:
            if self._stopping or self._flushing:
                return
            self._flushing = True

        def run() -> None:
            try:
                self._processor.force_flush(int(EXPORT_TIMEOUT_SECONDS * 1000))
            finally:
                self._flushing = False

        try:
            threading.Thread(target=run, name="brixo-otel-span-flush", daemon=True).start()
        except RuntimeError:  # at interpreter shutdown
            self._flushing = False

    def pending(self, span_id: int) -> bool:
        """Whether this message span is still to leave the process."""
        return span_id in self._pending

    def flush(self, deadline: float | None) -> bool:
        budget = 30.0 if deadline is None else max(0.0, deadline - time.monotonic())
        millis = int(budget * 1000)
        return _within(budget, lambda: bool(self._processor.force_flush(millis)))

    def shutdown(self, deadline: float) -> None:
        """Export what is queued until `deadline`, then stop; idempotent (the provider's own
        shutdown, after the client's, returns at once)."""
        with self._stop_lock:
            if self._stopping:
                return
            self._stopping = True
        self.flush(deadline)
        # At least a moment, so the processor learns it is shut down even when the flush took
        # the whole budget: it then stops taking spans, and its thread stops after its export.
        _within(max(0.05, deadline - time.monotonic()), self._shutdown)

    def _shutdown(self) -> bool:
        self._processor.shutdown()  # type: ignore[no-untyped-call]
        return True


def _within(budget: float, call: Callable[[], bool]) -> bool:
    """Run `call` in a daemon thread; False if it has not returned within `budget` seconds
    (it carries on alone, and dies with the process)."""
    outcome: list[bool] = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception:
            outcome.append(False)

    helper = threading.Thread(target=run, name="brixo-otel-span-export", daemon=True)
    try:
        helper.start()
    except RuntimeError:  # at interpreter shutdown: no new threads
        return False
    helper.join(budget)
    return bool(outcome and outcome[0])
