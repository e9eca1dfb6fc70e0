"""The `brixo.feedback` span: the signal, written into the trace of the message it rates.

A child of the rated message span *and* a link to it: the parent places the thumbs inside the
trace in every trace viewer; the link survives backends and samplers that drop or re-root
late children. When the message is unknown here, the span starts a trace of its own and carries
the ids, so a backend can still join on them.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, NonRecordingSpan
from opentelemetry.util.types import AttributeValue

from brixo_otel import attributes as attrs
from brixo_otel._correlation._index import IndexedSpan
from brixo_otel._signals._model import THUMBS_UP, Signal


def emit_feedback_span(
    tracer: trace.Tracer,
    signal: Signal,
    rated: IndexedSpan | None,
    *,
    capture_content: bool,
) -> None:
    span_attributes: dict[str, AttributeValue] = {
        attrs.SIGNAL_NAME: signal.name,
        attrs.SIGNAL_VALUE: signal.value,
        attrs.SIGNAL_TARGET: signal.target,
        attrs.SIGNAL_ID: signal.id,
    }
    if signal.score is not None:
        span_attributes[attrs.SIGNAL_SCORE] = signal.score
    if signal.message_id is not None:
        span_attributes[attrs.MESSAGE_ID] = signal.message_id
    if signal.conversation_id is not None:
        span_attributes[attrs.SESSION_ID] = signal.conversation_id
        span_attributes[attrs.GEN_AI_CONVERSATION_ID] = signal.conversation_id
    if signal.reasons:
        span_attributes[attrs.SIGNAL_REASONS] = list(signal.reasons)
    if capture_content and signal.user_message is not None:
        span_attributes[attrs.SIGNAL_USER_MESSAGE] = signal.user_message

    if rated is not None:
        # The rated span's dimensions (model, agent version) make the feedback span queryable by
        # them; the ids we were given win over the stored ones.
        span_attributes = {**rated.attributes, **span_attributes}
        parent = trace.set_span_in_context(NonRecordingSpan(rated.span_context), Context())
        links = [Link(rated.span_context)]
    else:
        parent = Context()  # a new trace, never a child of whatever request is current
        links = []

    span = tracer.start_span(
        attrs.FEEDBACK_SPAN_NAME, context=parent, links=links, attributes=span_attributes
    )
    if not signal.is_retraction:  # a withdrawn rating is no evaluation result
        event: dict[str, AttributeValue] = {
            attrs.GEN_AI_EVALUATION_NAME: attrs.USER_FEEDBACK_EVALUATION,
            attrs.GEN_AI_EVALUATION_SCORE_LABEL: signal.value,
            attrs.GEN_AI_EVALUATION_SCORE_VALUE: _score(signal),
        }
        if capture_content and signal.user_message is not None:
            event[attrs.GEN_AI_EVALUATION_EXPLANATION] = signal.user_message
        span.add_event(attrs.GEN_AI_EVALUATION_EVENT, event)
    span.end()


def _score(signal: Signal) -> float:
    """1.0 / 0.0 for thumbs; the score itself for ratings (csat 1 to 5, nps 0 to 10)."""
    if signal.score is not None:
        return float(signal.score)
    return 1.0 if signal.value == THUMBS_UP else 0.0
