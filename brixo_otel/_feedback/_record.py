"""The OpenTelemetry record of a signal, as one stage of the durable pipeline.

It is a destination like any other — its own outbox row, lease and retries — so a crash between
the commit and the emission only delays it: the next process emits it, with the same span id.
It runs in the delivery worker once the rated span is resolved (or the link window closed), never
on the app's thread, and emits three things:

- the `brixo.feedback` span in the rated trace (see `_span`);
- the `gen_ai.evaluation.result` event as a log record through the Logs API, in the rated span's
  context: the GenAI semantic conventions move evaluation results from span events to log events
  (the span event is kept for backends that read only spans);
- the `brixo.feedback` counter, dimensioned by the rated message.

With brixo-otel's own trace export, the stage is done only once the span has left the process
(the worker defers the row until then), so a SIGKILL after the emission but before the export
re-emits it, with the same span id, in the next process.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from opentelemetry import trace
from opentelemetry._logs import Logger, LogRecord, SeverityNumber
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from brixo_otel import attributes as attrs
from brixo_otel._exporter import DeliveryResult, SignalExporter
from brixo_otel._feedback._metrics import FeedbackMetrics
from brixo_otel._feedback._span import (
    SignalIdGenerator,
    emit_feedback_span,
    evaluation_attributes,
    feedback_span_ids,
)
from brixo_otel._signal import Signal

#: The outbox name of this stage.
RECORD_STAGE = "opentelemetry"


class OpenTelemetryRecord(SignalExporter):
    """Emits a signal's span, log event and counter; takes every valid signal."""

    name = RECORD_STAGE
    #: The span is emitted in the rated trace, so it waits for the link stage to find it.
    needs_rated_span = True

    def __init__(
        self,
        tracer: trace.Tracer,
        ids: SignalIdGenerator,
        logger: Logger,
        metrics: FeedbackMetrics,
        *,
        capture_content: bool,
        expect_export: Callable[[int], None] | None = None,
    ) -> None:
        #: Told each feedback span id before it is emitted, when brixo-otel's own trace export
        #: runs: the worker then waits for that span to leave before calling the stage done.
        self._expect_export = expect_export
        self._tracer = tracer
        self._ids = ids
        self._logger = logger
        self._metrics = metrics
        self._capture_content = capture_content

    def accepts(self, signal: Signal) -> bool:
        return True

    def export(self, signal: Signal) -> DeliveryResult:
        if self._expect_export is not None:
            self._expect_export(feedback_span_ids(signal.id)[1])
        feedback_span = emit_feedback_span(
            self._tracer, self._ids, signal, capture_content=self._capture_content
        )
        if not signal.is_retraction:
            self._emit_log_event(signal, feedback_span)
        self._metrics.count_feedback(
            signal.value, signal.target, signal.rated.attributes if signal.rated else {}
        )
        return DeliveryResult.delivered()

    def _emit_log_event(self, signal: Signal, feedback_span: SpanContext) -> None:
        rated = signal.rated
        placed_in = (
            SpanContext(rated.trace_id, rated.span_id, is_remote=True, trace_flags=TraceFlags(1))
            if rated is not None
            else feedback_span
        )
        context = trace.set_span_in_context(NonRecordingSpan(placed_in))
        attributes = evaluation_attributes(signal, capture_content=self._capture_content)
        attributes[attrs.SIGNAL_ID] = signal.id
        self._logger.emit(
            LogRecord(
                timestamp=int(signal.occurred_at.timestamp() * 1_000_000) * 1000,
                observed_timestamp=time.time_ns(),
                context=context,
                severity_number=SeverityNumber.INFO,
                event_name=attrs.GEN_AI_EVALUATION_EVENT,
                attributes=attributes,
            )
        )
