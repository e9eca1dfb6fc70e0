"""`message_id_from_response=True`: the provider's response id becomes the message id.

Real code paths only: the `openai` SDK talks to the fake OpenAI-compatible server on loopback
(tests/_fake_openai.py), instrumented by the official `opentelemetry-instrumentation-openai-v2`,
by OpenInference's and by OpenLLMetry's (Traceloop's) instrumentation; the response id each one
records is bound as the message id, the message is indexed under it, and feedback by that id is
linked to the message span.
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from openai import AsyncOpenAI, OpenAI
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.sdk.trace import ReadableSpan

import brixo_otel
from brixo_otel import attributes as attrs
from brixo_otel.exporters import InMemorySignalExporter
from brixo_otel.testing import SpanCapture
from tests._fake_openai import FakeOpenAI
from tests.conftest import Local

pytestmark = pytest.mark.timeout(60)

MODEL = "gpt-4o-mini"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def _official() -> BaseInstrumentor:
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    return OpenAIInstrumentor()


def _openinference() -> BaseInstrumentor:
    from openinference.instrumentation.openai import OpenAIInstrumentor

    return OpenAIInstrumentor()


def _openllmetry() -> BaseInstrumentor:
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor

    return OpenAIInstrumentor()


INSTRUMENTATIONS = {"openai-v2": _official, "openinference": _openinference}


@contextmanager
def instrumented(make: Any, capture: SpanCapture) -> Iterator[BaseInstrumentor]:
    instrumentor = make()
    with warnings.catch_warnings():
        # OpenLLMetry's import still declares a pydantic class-based config (deprecated).
        warnings.simplefilter("ignore", DeprecationWarning)
        instrumentor.instrument(tracer_provider=capture.provider)
    try:
        yield instrumentor
    finally:
        instrumentor.uninstrument()


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def memory(local: Local, signal_capture: InMemorySignalExporter) -> InMemorySignalExporter:
    local()
    return signal_capture


@pytest.fixture(params=sorted(INSTRUMENTATIONS))
def instrumentation(request: pytest.FixtureRequest, capture: SpanCapture) -> Iterator[str]:
    with instrumented(INSTRUMENTATIONS[request.param], capture):
        yield str(request.param)


def llm_span(capture: SpanCapture) -> ReadableSpan:
    """The one span the OpenAI instrumentation made."""
    spans = [
        s
        for s in capture.spans()
        if s.instrumentation_scope is not None
        and s.instrumentation_scope.name != "brixo_otel"
        and s.instrumentation_scope.name not in ("app", "brixo_otel.feedback")
    ]
    assert len(spans) == 1, [(s.name, s.instrumentation_scope) for s in capture.spans()]
    return spans[0]


def rated_and_linked(capture: SpanCapture, message: ReadableSpan, response_id: str) -> None:
    """Feedback by the response id lands on the message span, in its trace."""
    brixo_otel.feedback("thumbs_up", message_id=response_id)
    assert brixo_otel.flush(timeout=10)
    feedback = capture.one(attrs.FEEDBACK_SPAN_NAME)
    assert feedback.attributes is not None
    assert feedback.attributes[attrs.LINK_STATUS] == "linked"
    assert feedback.parent is not None
    assert feedback.parent.span_id == message.context.span_id
    assert feedback.context.trace_id == message.context.trace_id


def test_a_completion_binds_its_response_id(
    instrumentation: str,
    capture: SpanCapture,
    fake: FakeOpenAI,
    memory: InMemorySignalExporter,
) -> None:
    client = OpenAI(base_url=fake.base_url, api_key="test")
    app = capture.provider.get_tracer("app")
    seen: dict[str, Any] = {}

    @brixo_otel.message(name="answer", conversation_id="conv-1", message_id_from_response=True)
    def answer() -> str:
        with app.start_as_current_span("retrieve"):  # ends before the id is known
            pass
        with app.start_as_current_span("agent-step"):  # open around the LLM call
            completion = client.chat.completions.create(model=MODEL, messages=QUESTION)
        with app.start_as_current_span("post-process"):  # starts after the id is bound
            pass
        seen["index"] = brixo_otel.get_client().span_index.get(completion.id)
        return completion.id

    response_id = answer()
    assert response_id.startswith("chatcmpl-fake-")
    message = capture.one("answer")
    assert message.attributes is not None
    assert message.attributes[attrs.MESSAGE_ID] == response_id
    assert message.attributes[attrs.GEN_AI_CONVERSATION_ID] == "conv-1"
    # indexed while the message was still running (through the scope's on_bound callback)
    indexed = seen["index"]
    assert indexed is not None and indexed.span_context.span_id == message.context.span_id

    def carried(name: str) -> object:
        recorded = capture.one(name).attributes or {}
        return recorded.get(attrs.MESSAGE_ID)

    assert carried("retrieve") is None  # ended before: cannot be re-tagged
    assert carried("agent-step") == response_id  # still open at the binding
    assert carried("post-process") == response_id  # started after
    llm = llm_span(capture)
    # the LLM span itself ended as the id was learned: it keeps the response id it recorded
    assert (llm.attributes or {}).get(attrs.MESSAGE_ID) is None
    step = capture.one("agent-step")
    assert llm.parent is not None and llm.parent.span_id == step.context.span_id
    rated_and_linked(capture, message, response_id)


def test_a_stream_binds_its_response_id_once_the_provider_stream_ends(
    instrumentation: str,
    capture: SpanCapture,
    fake: FakeOpenAI,
    memory: InMemorySignalExporter,
) -> None:
    client = OpenAI(base_url=fake.base_url, api_key="test")
    ids: list[str | None] = []

    @brixo_otel.message(name="answer", message_id_from_response=True)
    def answer() -> Iterator[str]:
        stream = client.chat.completions.create(model=MODEL, messages=QUESTION, stream=True)
        for chunk in stream:
            ids.append(chunk.id)
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content

    text = "".join(answer())
    assert text == fake.answer
    message = capture.one("answer")
    assert message.attributes is not None
    response_id = ids[0]
    assert response_id and message.attributes[attrs.MESSAGE_ID] == response_id
    rated_and_linked(capture, message, response_id)


async def test_an_async_stream_binds_its_response_id(
    instrumentation: str,
    capture: SpanCapture,
    fake: FakeOpenAI,
    memory: InMemorySignalExporter,
) -> None:
    client = AsyncOpenAI(base_url=fake.base_url, api_key="test")
    ids: list[str] = []

    @brixo_otel.message(name="answer", message_id_from_response=True)
    async def answer() -> AsyncIterator[str]:
        stream = await client.chat.completions.create(model=MODEL, messages=QUESTION, stream=True)
        async for chunk in stream:
            ids.append(chunk.id)
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content

    assert "".join([part async for part in answer()]) == fake.answer
    message = capture.one("answer")
    assert (message.attributes or {})[attrs.MESSAGE_ID] == ids[0]
    await client.close()
    rated_and_linked(capture, message, ids[0])


def test_openllmetry_records_the_response_id_the_same_way(
    capture: SpanCapture, fake: FakeOpenAI, memory: InMemorySignalExporter
) -> None:
    with instrumented(_openllmetry, capture):
        client = OpenAI(base_url=fake.base_url, api_key="test")
        with brixo_otel.message_span(name="answer", message_id_from_response=True) as span:
            completion = client.chat.completions.create(model=MODEL, messages=QUESTION)
            assert span.attributes is not None  # type: ignore[attr-defined]
            assert span.attributes[attrs.MESSAGE_ID] == completion.id  # type: ignore[attr-defined]
    assert llm_span(capture).instrumentation_scope.name.startswith(  # type: ignore[union-attr]
        "opentelemetry.instrumentation.openai"
    )
    rated_and_linked(capture, capture.one("answer"), completion.id)


def test_only_the_first_response_binds_and_an_id_of_the_call_wins(
    capture: SpanCapture, fake: FakeOpenAI, memory: InMemorySignalExporter
) -> None:
    with instrumented(_official, capture):
        client = OpenAI(base_url=fake.base_url, api_key="test")

        @brixo_otel.message(name="agent", message_id_from_response=True)
        def agent(message_id: str | None = None) -> list[str]:
            first = client.chat.completions.create(model=MODEL, messages=QUESTION)
            second = client.chat.completions.create(model=MODEL, messages=QUESTION)
            return [first.id, second.id]

        first, second = agent()
        assert first != second
        by_response = capture.one("agent")
        assert (by_response.attributes or {})[attrs.MESSAGE_ID] == first
        capture.clear()
        agent(message_id="app-7")  # the app's own id, when it has one, is the message id
        assert (capture.one("agent").attributes or {})[attrs.MESSAGE_ID] == "app-7"
        capture.clear()

        @brixo_otel.message(name="late", message_id_from_response=True)
        def late() -> str:
            brixo_otel.set_message_id("bound-by-hand")  # bound first: the response keeps out
            return client.chat.completions.create(model=MODEL, messages=QUESTION).id

        late()
        assert (capture.one("late").attributes or {})[attrs.MESSAGE_ID] == "bound-by-hand"


def test_without_the_opt_in_nothing_is_bound(
    capture: SpanCapture, fake: FakeOpenAI, memory: InMemorySignalExporter
) -> None:
    with instrumented(_official, capture):
        client = OpenAI(base_url=fake.base_url, api_key="test")

        @brixo_otel.message(name="answer")
        def answer() -> None:
            client.chat.completions.create(model=MODEL, messages=QUESTION)

        answer()
    assert attrs.MESSAGE_ID not in (capture.one("answer").attributes or {})


def test_the_opt_in_and_a_fixed_id_contradict_each_other() -> None:
    with pytest.raises(TypeError, match="message_id_from_response"):
        brixo_otel.message(message_id="fixed", message_id_from_response=True)
    with pytest.raises(TypeError, match="message_id_from_response"):
        brixo_otel.message_span("fixed", message_id_from_response=True)
    with pytest.raises(TypeError, match="True or False"):
        brixo_otel.message(message_id_from_response="yes")  # type: ignore[arg-type]
