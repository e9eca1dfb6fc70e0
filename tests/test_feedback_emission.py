"""The OpenTelemetry record of a signal, emitted by the pipeline: the `brixo.feedback` span in
the rated trace, the `gen_ai.evaluation.result` log event, and late spans still linked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

import brixo_otel
from brixo_otel import attributes as attrs
from brixo_otel.exporters import InMemorySignalExporter
from brixo_otel.testing import SpanCapture
from tests._services import wait_for
from tests.conftest import Local


def emitted(capture: SpanCapture, timeout: float = 5.0) -> list[object]:
    """Wait (bounded) until the pipeline has emitted a feedback span."""
    return wait_for(
        lambda: capture.spans(attrs.FEEDBACK_SPAN_NAME) or None,
        timeout,
        "the feedback span",
        interval=0.02,
    )


@pytest.fixture
def memory(local: Local, signal_capture: InMemorySignalExporter) -> InMemorySignalExporter:
    local()
    return signal_capture


@pytest.fixture
def logs() -> InMemoryLogRecordExporter:
    return InMemoryLogRecordExporter()


@pytest.fixture
def logger_provider(logs: InMemoryLogRecordExporter) -> LoggerProvider:
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    return provider


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
    assert not capture.spans(attrs.FEEDBACK_SPAN_NAME)  # the caller only committed
    assert brixo_otel.flush(timeout=5)

    rated = capture.one("answer-with-model")
    feedback = capture.one(attrs.FEEDBACK_SPAN_NAME)
    assert feedback.context.trace_id == rated.context.trace_id
    assert feedback.parent is not None and feedback.parent.span_id == rated.context.span_id
    caller = request.get_span_context()
    assert [(link.context.span_id, link.attributes) for link in feedback.links] == [
        (rated.context.span_id, {"brixo.link.role": "rated"}),
        (caller.span_id, {"brixo.link.role": "caller"}),
    ]
    assert feedback.context.trace_id != caller.trace_id
    assert feedback.start_time == int(signal.occurred_at.timestamp() * 1_000_000) * 1000
    assert feedback.attributes[attrs.SIGNAL_NAME] == "feedback"
    assert feedback.attributes[attrs.SIGNAL_VALUE] == "thumbs_up"
    assert feedback.attributes[attrs.SIGNAL_TARGET] == "message"
    assert feedback.attributes[attrs.SIGNAL_ID] == signal.id
    assert feedback.attributes[attrs.MESSAGE_ID] == "m-2"
    assert feedback.attributes[attrs.OPENINFERENCE_SPAN_KIND] == "EVALUATOR"
    assert feedback.attributes[attrs.LINK_STATUS] == "linked"
    # Namespaced, so no backend counts the feedback span as one more LLM call.
    assert feedback.attributes["brixo.rated.gen_ai.request.model"] == "gpt-5-mini"
    assert attrs.GEN_AI_REQUEST_MODEL not in feedback.attributes
    assert feedback.attributes[attrs.SESSION_ID] == "conv-1"
    assert attrs.SIGNAL_USER_MESSAGE not in feedback.attributes  # content is opt-in
    [event] = feedback.events
    assert event.name == attrs.GEN_AI_EVALUATION_EVENT
    assert dict(event.attributes or {}) == {
        attrs.GEN_AI_EVALUATION_NAME: "user_feedback",
        attrs.GEN_AI_EVALUATION_SCORE_LABEL: "thumbs_up",
        attrs.GEN_AI_EVALUATION_SCORE_VALUE: 1.0,
        attrs.MESSAGE_ID: "m-2",
    }
    [delivered] = memory.signals()
    assert delivered.id == signal.id
    assert delivered.rated is not None
    assert (delivered.rated.trace_id, delivered.rated.span_id) == (
        rated.context.trace_id,
        rated.context.span_id,
    )
    assert delivered.link_status == "linked"
    assert delivered.conversation_id == "conv-1"  # learnt from the rated span


def test_the_log_event_is_emitted_in_the_rated_span_context(
    capture: SpanCapture,
    local: Local,
    logger_provider: LoggerProvider,
    logs: InMemoryLogRecordExporter,
) -> None:
    local(logger_provider=logger_provider, capture_content=True)

    @brixo_otel.message(name="answer")
    def answer(message_id: str) -> str:
        return "42"

    answer("m-log")
    signal = brixo_otel.feedback("thumbs_down", message_id="m-log", user_message="off by one")
    assert brixo_otel.flush(timeout=5)
    rated = capture.one("answer")
    [record] = [data.log_record for data in logs.get_finished_logs()]
    assert record.event_name == attrs.GEN_AI_EVALUATION_EVENT
    assert record.trace_id == rated.context.trace_id
    assert record.span_id == rated.context.span_id
    assert record.timestamp == int(signal.occurred_at.timestamp() * 1_000_000) * 1000
    assert dict(record.attributes or {}) == {
        attrs.GEN_AI_EVALUATION_NAME: "user_feedback",
        attrs.GEN_AI_EVALUATION_SCORE_LABEL: "thumbs_down",
        attrs.GEN_AI_EVALUATION_SCORE_VALUE: 0.0,
        attrs.GEN_AI_EVALUATION_EXPLANATION: "off by one",
        attrs.MESSAGE_ID: "m-log",
        attrs.SIGNAL_ID: signal.id,
    }


def test_unknown_message_is_emitted_unlinked_when_the_link_window_closes(
    capture: SpanCapture, local: Local, signal_capture: InMemorySignalExporter
) -> None:
    local(link_window=0.3)
    with capture.provider.get_tracer("web").start_as_current_span("POST /feedback"):
        signal = brixo_otel.feedback("thumbs_down", message_id="never-seen", conversation_id="c-9")
    emitted(capture)
    feedback = capture.one(attrs.FEEDBACK_SPAN_NAME)
    assert feedback.parent is None
    assert [link.attributes for link in feedback.links] == [{"brixo.link.role": "caller"}]
    assert feedback.attributes[attrs.MESSAGE_ID] == "never-seen"
    assert feedback.attributes[attrs.GEN_AI_CONVERSATION_ID] == "c-9"
    assert feedback.attributes[attrs.LINK_STATUS] == "unresolved"
    assert feedback.events[0].attributes[attrs.GEN_AI_EVALUATION_SCORE_VALUE] == 0.0  # type: ignore[index]
    # Destinations that address the message by id got it at once, not after the window.
    assert [s.id for s in signal_capture.signals()] == [signal.id]


def test_a_span_that_appears_within_the_window_is_linked(
    capture: SpanCapture, local: Local
) -> None:
    local(link_window=30)
    signal = brixo_otel.feedback("thumbs_up", message_id="late")  # before the message exists
    wait_for(
        lambda: (
            brixo_otel.get_client()._outbox.stats().get("brixo.link", {}).get("pending") or None
        ),
        5,
        "the link stage to wait for the span",
        interval=0.02,
    )

    @brixo_otel.message(name="answer")
    def answer(message_id: str) -> None:
        pass

    answer("late")
    emitted(capture, timeout=10)
    feedback = capture.one(attrs.FEEDBACK_SPAN_NAME)
    assert feedback.attributes[attrs.SIGNAL_ID] == signal.id
    assert feedback.context.trace_id == capture.one("answer").context.trace_id
    assert feedback.attributes[attrs.LINK_STATUS] == "linked"


def test_feedback_while_the_message_streams_links(capture: SpanCapture, memory: object) -> None:
    """The index holds the message span from its start: a click mid-stream links."""

    @brixo_otel.message(name="stream")
    def stream(message_id: str) -> Iterator[str]:
        yield "Hel"
        yield "lo"

    chunks = stream("m-sync")
    assert next(chunks) == "Hel"
    first = brixo_otel.feedback("thumbs_up", message_id="m-sync")
    assert brixo_otel.flush(timeout=5)
    assert list(chunks) == ["lo"]

    with brixo_otel.message_span(message_id="m-block", name="block"):
        second = brixo_otel.feedback("thumbs_down", message_id="m-block")
        assert brixo_otel.flush(timeout=5)

    by_signal = {
        span.attributes[attrs.SIGNAL_ID]: span for span in capture.spans(attrs.FEEDBACK_SPAN_NAME)
    }
    for signal, message in ((first, "stream"), (second, "block")):
        feedback = by_signal[signal.id]
        rated = capture.one(message)
        assert feedback.parent is not None and feedback.parent.span_id == rated.context.span_id
        assert feedback.attributes[attrs.LINK_STATUS] == "linked"


async def test_feedback_while_an_async_stream_runs_links(
    capture: SpanCapture, memory: object
) -> None:
    @brixo_otel.message(name="stream")
    async def stream(message_id: str) -> AsyncIterator[str]:
        yield "a"
        await asyncio.sleep(0)
        yield "b"

    chunks = stream("m-async-stream")
    assert await chunks.__anext__() == "a"
    signal = await brixo_otel.afeedback("thumbs_up", message_id="m-async-stream")
    assert brixo_otel.flush(timeout=5)
    assert [chunk async for chunk in chunks] == ["b"]
    feedback = capture.one(attrs.FEEDBACK_SPAN_NAME)
    assert feedback.attributes[attrs.SIGNAL_ID] == signal.id
    assert feedback.parent is not None
    assert feedback.parent.span_id == capture.one("stream").context.span_id


def test_conversation_feedback(capture: SpanCapture, memory: InMemorySignalExporter) -> None:
    signal = brixo_otel.feedback("thumbs_up", conversation_id="conv-7")
    assert brixo_otel.flush(timeout=5)
    feedback = capture.one(attrs.FEEDBACK_SPAN_NAME)
    assert feedback.attributes[attrs.SIGNAL_TARGET] == "conversation"
    assert feedback.attributes[attrs.SESSION_ID] == "conv-7"
    assert feedback.attributes[attrs.LINK_STATUS] == "not_applicable"
    assert attrs.MESSAGE_ID not in feedback.attributes
    assert memory.signals()[0].target_id == "conv-7" == signal.target_id


def test_user_text_is_recorded_only_with_capture_content(
    capture: SpanCapture, local: Local
) -> None:
    local(capture_content=True, link_window=0.1)
    brixo_otel.feedback("thumbs_down", message_id="m", user_message="wrong answer")
    emitted(capture)
    feedback = capture.one(attrs.FEEDBACK_SPAN_NAME)
    assert feedback.attributes[attrs.SIGNAL_USER_MESSAGE] == "wrong answer"
    assert feedback.events[0].attributes[attrs.GEN_AI_EVALUATION_EXPLANATION] == "wrong answer"  # type: ignore[index]


async def test_afeedback(capture: SpanCapture, memory: InMemorySignalExporter) -> None:
    signal = await brixo_otel.afeedback("thumbs_up", conversation_id="c-async")
    assert brixo_otel.flush(timeout=5)
    assert capture.one(attrs.FEEDBACK_SPAN_NAME).attributes[attrs.SIGNAL_ID] == signal.id
    assert [s.id for s in memory.signals()] == [signal.id]
    with pytest.raises(brixo_otel.InvalidSignal):
        await brixo_otel.afeedback("meh", message_id="m")


def test_feedback_without_destination_is_still_recorded_and_says_so(
    capture: SpanCapture, local: Local, caplog: pytest.LogCaptureFixture
) -> None:
    local(exporters=None)
    assert "no signal destination is configured" in caplog.text
    brixo_otel.feedback("thumbs_up", conversation_id="c")
    assert brixo_otel.flush(timeout=5)
    assert capture.one(attrs.FEEDBACK_SPAN_NAME)


def test_a_re_emission_reuses_the_span_id(capture: SpanCapture, memory: object) -> None:
    """The ids come from the signal id: emitting the same signal again (as a restarted process
    does after a crash between emission and commit) yields the same span, not a second one."""
    from brixo_otel._feedback._span import feedback_span_ids

    signal = brixo_otel.feedback("thumbs_up", conversation_id="c-ids")
    assert brixo_otel.flush(timeout=5)
    feedback = capture.one(attrs.FEEDBACK_SPAN_NAME)
    assert feedback.context.span_id == feedback_span_ids(signal.id)[1]
    assert feedback.context.trace_id == feedback_span_ids(signal.id)[0]


def test_resource_dimensions_travel_with_the_rated_message(local: Local) -> None:
    """Agent version and environment in the provider's resource (as when brixo-otel makes the
    provider) still dimension the feedback: the process that rates cannot read this resource."""
    from opentelemetry.sdk.resources import Resource

    capture = SpanCapture(Resource.create({attrs.AGENT_VERSION: "v9", attrs.ENVIRONMENT: "prod"}))
    local(tracer_provider=capture.provider)

    @brixo_otel.message(name="answer")
    def answer(message_id: str) -> None:
        pass

    answer("m-res")
    brixo_otel.feedback("thumbs_up", message_id="m-res")
    assert brixo_otel.flush(timeout=5)
    feedback = capture.one(attrs.FEEDBACK_SPAN_NAME)
    assert feedback.attributes["brixo.rated." + attrs.AGENT_VERSION] == "v9"
    assert feedback.attributes["brixo.rated." + attrs.ENVIRONMENT] == "prod"
