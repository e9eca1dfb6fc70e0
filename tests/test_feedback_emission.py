"""The `brixo.feedback` span lands in the trace of the message it rates."""

from __future__ import annotations

import pytest

import brixo_otel
from brixo_otel import attributes as attrs
from brixo_otel.exporters import InMemorySignalExporter
from brixo_otel.testing import SpanCapture
from tests.conftest import Local


@pytest.fixture
def memory(local: Local, signal_capture: InMemorySignalExporter) -> InMemorySignalExporter:
    local()
    return signal_capture


def test_feedback_span_is_child_of_and_linked_to_the_rated_message(
    capture: SpanCapture, memory: InMemorySignalExporter
) -> None:
    @brixo_otel.message(conversation_id="conv-1", name="answer")
    def answer(message_id: str) -> None:
        with capture.provider.get_tracer("llm").start_as_current_span("chat") as llm:
            llm.set_attribute(attrs.GEN_AI_REQUEST_MODEL, "gpt-5")

    @brixo_otel.message(conversation_id="conv-1", name="answer-with-model")
    def answer_with_model(message_id: str) -> None:
        from opentelemetry import trace

        trace.get_current_span().set_attribute(attrs.GEN_AI_REQUEST_MODEL, "gpt-5-mini")

    answer("m-1")
    answer_with_model("m-2")
    with capture.provider.get_tracer("web").start_as_current_span("POST /feedback") as request:
        signal = brixo_otel.feedback("thumbs_up", message_id="m-2", user_message="great")

    rated = capture.one("answer-with-model")
    feedback = capture.one(attrs.FEEDBACK_SPAN_NAME)
    assert feedback.context.trace_id == rated.context.trace_id
    assert feedback.parent.span_id == rated.context.span_id
    assert [link.context.span_id for link in feedback.links] == [rated.context.span_id]
    assert feedback.context.trace_id != request.get_span_context().trace_id
    assert feedback.attributes[attrs.SIGNAL_NAME] == "feedback"
    assert feedback.attributes[attrs.SIGNAL_VALUE] == "thumbs_up"
    assert feedback.attributes[attrs.SIGNAL_TARGET] == "message"
    assert feedback.attributes[attrs.SIGNAL_ID] == signal.id
    assert feedback.attributes[attrs.MESSAGE_ID] == "m-2"
    assert feedback.attributes[attrs.GEN_AI_REQUEST_MODEL] == "gpt-5-mini"
    assert feedback.attributes[attrs.SESSION_ID] == "conv-1"
    assert attrs.SIGNAL_USER_MESSAGE not in feedback.attributes  # content is opt-in
    [event] = feedback.events
    assert event.name == attrs.GEN_AI_EVALUATION_EVENT
    assert dict(event.attributes) == {
        attrs.GEN_AI_EVALUATION_NAME: "user_feedback",
        attrs.GEN_AI_EVALUATION_SCORE_LABEL: "thumbs_up",
        attrs.GEN_AI_EVALUATION_SCORE_VALUE: 1.0,
    }
    assert brixo_otel.flush(timeout=5)
    assert [s.id for s in memory.signals()] == [signal.id]


def test_unknown_message_starts_a_trace_of_its_own(
    capture: SpanCapture, memory: InMemorySignalExporter
) -> None:
    with capture.provider.get_tracer("web").start_as_current_span("POST /feedback"):
        brixo_otel.feedback("thumbs_down", message_id="never-seen", conversation_id="c-9")
    feedback = capture.one(attrs.FEEDBACK_SPAN_NAME)
    assert feedback.parent is None
    assert feedback.links == ()
    assert feedback.attributes[attrs.MESSAGE_ID] == "never-seen"
    assert feedback.attributes[attrs.GEN_AI_CONVERSATION_ID] == "c-9"
    assert feedback.events[0].attributes[attrs.GEN_AI_EVALUATION_SCORE_VALUE] == 0.0


def test_conversation_feedback(capture: SpanCapture, memory: InMemorySignalExporter) -> None:
    signal = brixo_otel.feedback("thumbs_up", conversation_id="conv-7")
    feedback = capture.one(attrs.FEEDBACK_SPAN_NAME)
    assert feedback.attributes[attrs.SIGNAL_TARGET] == "conversation"
    assert feedback.attributes[attrs.SESSION_ID] == "conv-7"
    assert attrs.MESSAGE_ID not in feedback.attributes
    assert brixo_otel.flush(timeout=5)
    assert memory.signals()[0].target_id == "conv-7" == signal.target_id


def test_user_text_is_recorded_only_with_capture_content(
    capture: SpanCapture, local: Local
) -> None:
    local(capture_content=True)
    brixo_otel.feedback("thumbs_down", message_id="m", user_message="wrong answer")
    feedback = capture.one(attrs.FEEDBACK_SPAN_NAME)
    assert feedback.attributes[attrs.SIGNAL_USER_MESSAGE] == "wrong answer"
    assert feedback.events[0].attributes[attrs.GEN_AI_EVALUATION_EXPLANATION] == "wrong answer"


async def test_afeedback(capture: SpanCapture, memory: InMemorySignalExporter) -> None:
    signal = await brixo_otel.afeedback("thumbs_up", message_id="m-async")
    assert capture.one(attrs.FEEDBACK_SPAN_NAME).attributes[attrs.SIGNAL_ID] == signal.id
    assert brixo_otel.flush(timeout=5)
    assert [s.id for s in memory.signals()] == [signal.id]
    with pytest.raises(brixo_otel.InvalidSignal):
        await brixo_otel.afeedback("meh", message_id="m")


def test_feedback_without_destination_still_emits_and_warns(
    capture: SpanCapture, local: Local, caplog: pytest.LogCaptureFixture
) -> None:
    local(exporters=None)
    brixo_otel.feedback("thumbs_up", message_id="m")
    assert capture.one(attrs.FEEDBACK_SPAN_NAME)
    assert "no signal destination is configured" in caplog.text
