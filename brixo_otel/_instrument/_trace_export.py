"""brixo-otel's own OTLP trace export: where the key may go, what has left, a bounded exit.

- The Brixo key goes only to Brixo's own hosts and to loopback (the local test server): a user
  who points `traces_endpoint` at Phoenix or a collector must not hand them the key. Headers the
  app passes itself (`traces_headers`) are sent as given: that is the app saying so explicitly.
- It remembers which message spans have not left the process yet, so the Signals API is not
  asked about a message whose trace is still in the batch queue (it would answer 404).
- `flush` and `shutdown` run the SDK's calls in a helper thread and wait only until the
  caller's deadline: a hung endpoint must not stretch `shutdown(timeout)` or the exit.
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
from brixo_otel._internal import log_rate_limited
from brixo_otel._settings import Settings
from brixo_otel._urls import is_loopback_host

#: Hosts that are Brixo's own: the key may travel there.
BRIXO_DOMAIN: Final = "brixo.com"
#: Message spans remembered as "not exported yet", at most; the oldest are forgotten first.
_MAX_PENDING: Final = 100_000
#: Longest one OTLP request may take, connect to answer (the SDK default is 10 s).
EXPORT_TIMEOUT_SECONDS: Final = 5.0


def key_may_go_to(endpoint: str) -> bool:
    host = (urlsplit(endpoint).hostname or "").lower().rstrip(".")
    return host == BRIXO_DOMAIN or host.endswith("." + BRIXO_DOMAIN) or is_loopback_host(host)


class _ExportedSpans(SpanExporter):
    """Passes spans to the OTLP exporter and forgets the message spans that left."""

    def __init__(self, inner: SpanExporter, pending: dict[int, None]) -> None:
        self._inner = inner
        self._pending = pending

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self._inner.export(spans)
        if result is SpanExportResult.SUCCESS:
            for span in spans:
                if span.context is not None:
                    self._pending.pop(span.context.span_id, None)
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


class TraceExport:
    """The OTLP span export a client adds to the provider, when `traces_endpoint` is set."""

    def __init__(self, processor: BatchSpanProcessor, pending: dict[int, None]) -> None:
        self._processor = processor
        self._pending = pending

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
        exporter = OTLPSpanExporter(
            endpoint=endpoint, headers=headers, timeout=EXPORT_TIMEOUT_SECONDS
        )
        provider.add_span_processor(_MessageSpanWatcher(pending))
        processor = BatchSpanProcessor(_ExportedSpans(exporter, pending))
        provider.add_span_processor(processor)
        return cls(processor, pending)

    def pending(self, span_id: int) -> bool:
        """Whether this message span is still to leave the process."""
        return span_id in self._pending

    def flush(self, deadline: float | None) -> bool:
        budget = 30.0 if deadline is None else max(0.0, deadline - time.monotonic())
        millis = int(budget * 1000)
        return _within(budget, lambda: bool(self._processor.force_flush(millis)))

    def shutdown(self, deadline: float) -> None:
        budget = max(0.0, deadline - time.monotonic())
        self.flush(deadline)
        _within(max(0.0, deadline - time.monotonic()) or min(budget, 0.05), self._shutdown)

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
