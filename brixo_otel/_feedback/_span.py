"""The `brixo.feedback` span: the signal, written into the trace of the message it rates.

A child of the rated message span *and* a link to it: the parent places the thumbs inside the
trace in every trace viewer (Phoenix stores no links, so there the parent is the only relation);
the link survives backends and samplers that drop or re-root late children. A second link points
at the request that carried the click, when there was one. When the rated span never became
known, the span starts a trace of its own, carries the ids and says `brixo.link.status=unresolved`.

The span starts at `occurred_at` — the click, not the moment the pipeline got to it — and its ids
are derived from the signal id, so a re-emission after a crash is the same span, not a second.
"""

from __future__ import annotations

import hashlib
import threading
from datetime import datetime

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.util.types import AttributeValue

from brixo_otel import attributes as attrs
from brixo_otel._signal import THUMBS_UP, Signal


def feedback_span_ids(signal_id: str) -> tuple[int, int]:
    """(trace id, span id) of a signal's feedback span: stable across retries and restarts.
    The trace id is used only when the span starts a trace of its own (unlinked)."""
    digest = hashlib.sha256(signal_id.encode()).digest()
    span_id = int.from_bytes(digest[:8], "big") or 1
    trace_id = int.from_bytes(digest[8:24], "big") or 1
    return trace_id, span_id


class SignalIdGenerator(IdGenerator):
    """Hands out the ids fixed for the feedback span being started on this thread; any other
    span started with the same tracer (none should be) gets fresh ids from `fallback`."""

    def __init__(self, fallback: IdGenerator) -> None:
        self._fallback = fallback
        self._pending = threading.local()

    def fix(self, trace_id: int, span_id: int) -> None:
        self._pending.ids = (trace_id, span_id)

    def generate_span_id(self) -> int:
        ids = getattr(self._pending, "ids", None)
        if ids is None:
            return self._fallback.generate_span_id()
        self._pending.ids = None
        return int(ids[1])

    def generate_trace_id(self) -> int:
        ids = getattr(self._pending, "ids", None)
        return self._fallback.generate_trace_id() if ids is None else int(ids[0])


def _nanos(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000) * 1000


def span_attributes(signal: Signal, *, capture_content: bool) -> dict[str, AttributeValue]:
    values: dict[str, AttributeValue] = {
        attrs.SIGNAL_NAME: signal.name,
        attrs.SIGNAL_VALUE: signal.value,
        attrs.SIGNAL_TARGET: signal.target,
        attrs.SIGNAL_ID: signal.id,
        attrs.OPENINFERENCE_SPAN_KIND: attrs.EVALUATOR_KIND,
        attrs.LINK_STATUS: signal.link_status,
    }
    if signal.score is not None:
        values[attrs.SIGNAL_SCORE] = signal.score
    if signal.message_id is not None:
        values[attrs.MESSAGE_ID] = signal.message_id
    if signal.conversation_id is not None:
        values[attrs.SESSION_ID] = signal.conversation_id
        values[attrs.GEN_AI_CONVERSATION_ID] = signal.conversation_id
    if signal.reasons:
        values[attrs.SIGNAL_REASONS] = list(signal.reasons)
    if capture_content and signal.user_message is not None:
        values[attrs.SIGNAL_USER_MESSAGE] = signal.user_message
    if signal.rated is not None:
        for name, value in signal.rated.attributes.items():
            if name not in (attrs.SESSION_ID, attrs.GEN_AI_CONVERSATION_ID, attrs.MESSAGE_ID):
                values[attrs.RATED_PREFIX + name] = value
    return values


def evaluation_attributes(signal: Signal, *, capture_content: bool) -> dict[str, AttributeValue]:
    """The GenAI semconv `gen_ai.evaluation.result` attributes of a rating."""
    values: dict[str, AttributeValue] = {
        attrs.GEN_AI_EVALUATION_NAME: attrs.USER_FEEDBACK_EVALUATION,
        attrs.GEN_AI_EVALUATION_SCORE_LABEL: signal.value,
        attrs.GEN_AI_EVALUATION_SCORE_VALUE: evaluation_score(signal),
    }
    if signal.message_id is not None:
        values[attrs.MESSAGE_ID] = signal.message_id
    if capture_content and signal.user_message is not None:
        values[attrs.GEN_AI_EVALUATION_EXPLANATION] = signal.user_message
    return values


def emit_feedback_span(
    tracer: trace.Tracer,
    ids: SignalIdGenerator,
    signal: Signal,
    *,
    capture_content: bool,
) -> SpanContext:
    """Emit the span; its context, so the log event can be placed beside it."""
    links = []
    rated = signal.rated
    if rated is not None:
        rated_context = SpanContext(
            rated.trace_id, rated.span_id, is_remote=True, trace_flags=TraceFlags(1)
        )
        parent = trace.set_span_in_context(NonRecordingSpan(rated_context), Context())
        links.append(Link(rated_context, {"brixo.link.role": "rated"}))
    else:
        parent = Context()  # a new trace, never a child of whatever is current in the worker
    if signal.caller is not None:
        caller = SpanContext(
            signal.caller.trace_id, signal.caller.span_id, is_remote=True, trace_flags=TraceFlags(1)
        )
        links.append(Link(caller, {"brixo.link.role": "caller"}))
    trace_id, span_id = feedback_span_ids(signal.id)
    ids.fix(rated.trace_id if rated is not None else trace_id, span_id)
    start = _nanos(signal.occurred_at)
    span = tracer.start_span(
        attrs.FEEDBACK_SPAN_NAME,
        context=parent,
        links=links,
        attributes=span_attributes(signal, capture_content=capture_content),
        start_time=start,
    )
    if not signal.is_retraction:  # a withdrawn rating is no evaluation result
        span.add_event(
            attrs.GEN_AI_EVALUATION_EVENT,
            evaluation_attributes(signal, capture_content=capture_content),
            timestamp=start,
        )
    span.end(end_time=start)  # a moment, not the time the pipeline took to get to it
    return span.get_span_context()


def evaluation_score(signal: Signal) -> float:
    """1.0 / 0.0 for thumbs; the score itself for ratings (csat 1 to 5, nps 0 to 10)."""
    if signal.score is not None:
        return float(signal.score)
    return 1.0 if signal.value == THUMBS_UP else 0.0
