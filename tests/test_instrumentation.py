"""Message-level instrumentation, proven on real SDK spans in an in-memory exporter."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import StatusCode

import brixo_otel
from brixo_otel import attributes as attrs
from brixo_otel.testing import SpanCapture
from tests.conftest import Local

pytestmark = pytest.mark.usefixtures("configured")


def ids(span: Any) -> tuple[object, object]:
    return span.attributes.get(attrs.MESSAGE_ID), span.attributes.get(attrs.GEN_AI_CONVERSATION_ID)


def test_message_span_and_children_carry_ids_including_foreign_tracers(
    capture: SpanCapture,
) -> None:
    foreign = capture.provider.get_tracer("some.llm.instrumentation")

    @brixo_otel.message(message_id="msg-1", conversation_id="conv-1")
    def answer() -> str:
        with foreign.start_as_current_span("chat gpt-5") as llm:
            llm.set_attribute(attrs.GEN_AI_REQUEST_MODEL, "gpt-5")
            with foreign.start_as_current_span("http POST"):
                pass
        return "hello"

    assert answer() == "hello"
    message_span = capture.one(answer.__qualname__)
    for span in capture.spans():
        assert ids(span) == ("msg-1", "conv-1"), span.name
        assert span.attributes[attrs.SESSION_ID] == "conv-1"
        assert span.context.trace_id == message_span.context.trace_id
    assert capture.one("http POST").parent.span_id == capture.one("chat gpt-5").context.span_id
    assert capture.one("chat gpt-5").parent.span_id == message_span.context.span_id


def test_spans_outside_any_scope_are_left_alone(capture: SpanCapture) -> None:
    with capture.provider.get_tracer("t").start_as_current_span("unrelated"):
        pass
    assert attrs.MESSAGE_ID not in capture.one("unrelated").attributes
    assert attrs.SESSION_ID not in capture.one("unrelated").attributes


def test_conversation_scope_tags_every_span_and_messages_inherit_it(capture: SpanCapture) -> None:
    tracer = capture.provider.get_tracer("t")

    @brixo_otel.message(name="reply")
    def reply(message_id: str) -> None:
        with tracer.start_as_current_span("inner"):
            pass

    with brixo_otel.conversation("conv-9"):
        with tracer.start_as_current_span("retrieval"):
            pass
        reply("m-9")
    with tracer.start_as_current_span("after"):
        pass
    assert ids(capture.one("retrieval")) == (None, "conv-9")
    assert ids(capture.one("reply")) == ("m-9", "conv-9")
    assert ids(capture.one("inner")) == ("m-9", "conv-9")
    assert ids(capture.one("after")) == (None, None)


def test_id_sources(capture: SpanCapture) -> None:
    @brixo_otel.message(message_id="fixed", name="fixed")
    def fixed() -> None: ...

    @brixo_otel.message(
        message_id=lambda a: f"{a['user']}:{a['turn']}",
        conversation_id=lambda a: a["user"],
        name="computed",
    )
    def computed(user: str, turn: int = 7) -> None: ...

    @brixo_otel.message(name="by_name")
    def by_name(prompt: str, message_id: str, conversation_id: str | None = None) -> None: ...

    @brixo_otel.message(name="late")
    def late() -> None:
        with capture.provider.get_tracer("t").start_as_current_span("before"):
            pass
        brixo_otel.set_message_id("resp_123")
        with capture.provider.get_tracer("t").start_as_current_span("after"):
            pass

    fixed()
    computed("ana")
    by_name("hi", "m-pos")
    by_name("hi", message_id="m-kw", conversation_id="c-kw")
    late()
    assert ids(capture.one("fixed")) == ("fixed", None)
    assert ids(capture.one("computed")) == ("ana:7", "ana")
    assert [ids(s) for s in capture.spans("by_name")] == [("m-pos", None), ("m-kw", "c-kw")]
    assert ids(capture.one("late")) == ("resp_123", None)
    assert ids(capture.one("before")) == (None, None)
    assert ids(capture.one("after")) == ("resp_123", None)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"message_id": 123}, "message_id must be a string"),
        ({"conversation_id": ["c"]}, "conversation_id must be a string"),
        ({"message_id": ""}, "must not be an empty string"),
        ({"name": ""}, "name must be a non-empty string"),
    ],
)
def test_bad_decorator_arguments_fail_at_decoration_time(
    kwargs: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(TypeError, match=fragment):

        @brixo_otel.message(**kwargs)
        def answer() -> None: ...


def test_positional_id_is_refused_with_a_hint() -> None:
    with pytest.raises(TypeError, match="by keyword"):
        brixo_otel.message("msg-1")  # type: ignore[call-overload]


def test_set_message_id_outside_a_message_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    brixo_otel.set_message_id("nowhere")
    assert "outside a @message" in caplog.text
    with pytest.raises(TypeError):
        brixo_otel.set_message_id(42)  # type: ignore[arg-type]


def test_decorated_callables_keep_signature_wrapped_and_binding(capture: SpanCapture) -> None:
    class Assistant:
        prefix = "cls"

        def __init__(self) -> None:
            self.prefix = "inst"

        @brixo_otel.message(name="method")
        def method(self, message_id: str, text: str) -> str:
            return f"{self.prefix}:{text}"

        @brixo_otel.message(name="klass")
        @classmethod
        def klass(cls, message_id: str) -> str:
            return cls.prefix

        @brixo_otel.message(name="static")
        @staticmethod
        def static(message_id: str) -> str:
            return "static"

    def plain(message_id: str, text: str = "x") -> str:
        """Docs stay."""
        return text

    decorated = brixo_otel.message(plain)
    assert inspect.signature(decorated) == inspect.signature(plain)
    assert decorated.__wrapped__ is plain
    assert decorated.__doc__ == "Docs stay."
    assert decorated.__name__ == "plain"

    bot = Assistant()
    assert bot.method("m-a", "hi") == "inst:hi"
    assert Assistant.method(bot, "m-b", text="yo") == "inst:yo"
    assert Assistant.klass("m-c") == "cls"
    assert bot.static("m-d") == "static"
    assert decorated("m-e") == "x"
    assert [ids(s)[0] for s in capture.spans("method")] == ["m-a", "m-b"]
    assert ids(capture.one("klass"))[0] == "m-c"
    assert ids(capture.one("static"))[0] == "m-d"
    assert ids(capture.one(decorated.__qualname__))[0] == "m-e"


def test_exception_marks_span_error_and_propagates_unchanged(capture: SpanCapture) -> None:
    class ModelDown(RuntimeError):
        pass

    original = ModelDown("upstream 503")

    @brixo_otel.message(message_id="m-err", name="failing")
    def failing() -> None:
        raise original

    with pytest.raises(ModelDown) as raised:
        failing()
    assert raised.value is original
    span = capture.one("failing")
    assert span.status.status_code is StatusCode.ERROR
    assert "upstream 503" in (span.status.description or "")
    assert [e.name for e in span.events] == ["exception"]
    assert span.events[0].attributes["exception.type"].endswith("ModelDown")


async def test_coroutine_function(capture: SpanCapture) -> None:
    @brixo_otel.message(conversation_id="c", name="acall")
    async def acall(message_id: str) -> str:
        await asyncio.sleep(0)
        with capture.provider.get_tracer("t").start_as_current_span("inner"):
            await asyncio.sleep(0)
        return "ok"

    assert await acall("m-async") == "ok"
    assert ids(capture.one("acall")) == ("m-async", "c")
    assert capture.one("inner").parent.span_id == capture.one("acall").context.span_id


# -- streams -------------------------------------------------------------------------------


def make_stream(capture: SpanCapture, fail_at: int | None = None) -> Any:
    tracer = capture.provider.get_tracer("t")

    @brixo_otel.message(name="stream")
    def stream(message_id: str, chunks: int = 5) -> Any:
        for i in range(chunks):
            if i == fail_at:
                raise ValueError("stream broke")
            with tracer.start_as_current_span("chunk"):
                pass
            yield i

    return stream


def test_generator_span_lives_until_exhausted(capture: SpanCapture) -> None:
    stream = make_stream(capture)
    iterator = stream("m-gen")
    assert next(iterator) == 0
    assert capture.spans("stream") == []  # still open while the stream is being read
    assert list(iterator) == [1, 2, 3, 4]
    span = capture.one("stream")
    assert ids(span)[0] == "m-gen"
    assert span.status.status_code is StatusCode.UNSET
    chunks = capture.spans("chunk")
    assert len(chunks) == 5
    assert all(c.parent.span_id == span.context.span_id for c in chunks)


def test_generator_closed_early_ends_span_without_error(capture: SpanCapture) -> None:
    stream = make_stream(capture)
    tracer = capture.provider.get_tracer("t")
    for item in stream("m-break"):
        if item == 1:
            break
    with tracer.start_as_current_span("consumer-after"):  # the consumer's context is intact
        pass
    span = capture.one("stream")
    assert span.end_time is not None
    assert span.status.status_code is StatusCode.UNSET
    assert len(capture.spans("chunk")) == 2
    assert capture.one("consumer-after").parent is None
    assert ids(capture.one("consumer-after")) == (None, None)


def test_generator_exception_mid_stream(capture: SpanCapture) -> None:
    stream = make_stream(capture, fail_at=2)
    received = []
    with pytest.raises(ValueError, match="stream broke"):
        for item in stream("m-broken"):
            received.append(item)
    assert received == [0, 1]
    span = capture.one("stream")
    assert span.status.status_code is StatusCode.ERROR


def test_generator_send_and_return_value_are_delegated(capture: SpanCapture) -> None:
    @brixo_otel.message(message_id="m-send", name="echo")
    def echo() -> Any:
        total = 0
        while True:
            got = yield total
            if got is None:
                return total
            total += got

    gen = echo()
    assert next(gen) == 0
    assert gen.send(2) == 2
    assert gen.send(3) == 5
    with pytest.raises(StopIteration) as stop:
        gen.send(None)
    assert stop.value.value == 5
    assert ids(capture.one("echo"))[0] == "m-send"


def test_generator_throw_is_delegated_inside_the_message(capture: SpanCapture) -> None:
    """What the consumer throws in reaches the body, in the message's context: a body that
    handles it goes on; one that does not fails the message with it."""
    seen: list[int] = []

    @brixo_otel.message(message_id="m-throw", name="retrying")
    def retrying() -> Any:
        while True:
            try:
                yield "chunk"
            except TimeoutError:
                seen.append(trace.get_current_span().get_span_context().span_id)
                yield "recovered"

    gen = retrying()
    assert next(gen) == "chunk"
    assert gen.throw(TimeoutError()) == "recovered"
    assert next(gen) == "chunk"
    with pytest.raises(KeyError):
        gen.throw(KeyError("gone"))
    span = capture.one("retrying")
    assert seen == [span.context.span_id]
    assert span.status.status_code is StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]


def make_async_stream(capture: SpanCapture, fail_at: int | None = None) -> Any:
    tracer = capture.provider.get_tracer("t")

    @brixo_otel.message(name="astream")
    async def astream(message_id: str, chunks: int = 5) -> Any:
        for i in range(chunks):
            if i == fail_at:
                raise ValueError("stream broke")
            with tracer.start_as_current_span("achunk"):
                await asyncio.sleep(0)
            yield i

    return astream


async def test_async_generator_exhausted(capture: SpanCapture) -> None:
    astream = make_async_stream(capture)
    assert [i async for i in astream("m-agen")] == [0, 1, 2, 3, 4]
    span = capture.one("astream")
    assert ids(span)[0] == "m-agen"
    assert all(c.parent.span_id == span.context.span_id for c in capture.spans("achunk"))


async def test_async_generator_closed_early(capture: SpanCapture) -> None:
    astream = make_async_stream(capture)
    agen = astream("m-abreak")
    async for item in agen:
        if item == 1:
            break
    await agen.aclose()
    span = capture.one("astream")
    assert span.status.status_code is StatusCode.UNSET
    assert len(capture.spans("achunk")) == 2
    with capture.provider.get_tracer("t").start_as_current_span("consumer-after"):
        pass
    assert capture.one("consumer-after").parent is None


async def test_async_generator_exception_mid_stream(capture: SpanCapture) -> None:
    astream = make_async_stream(capture, fail_at=3)
    received = []
    with pytest.raises(ValueError, match="stream broke"):
        async for item in astream("m-afail"):
            received.append(item)
    assert received == [0, 1, 2]
    assert capture.one("astream").status.status_code is StatusCode.ERROR


async def test_message_span_context_manager_sync_and_async(capture: SpanCapture) -> None:
    with brixo_otel.message_span("m-cm", conversation_id="c-cm", name="cm") as span:
        span.set_attribute(attrs.GEN_AI_REQUEST_MODEL, "m1")
    async with brixo_otel.message_span(name="acm"):
        brixo_otel.set_message_id("m-acm")
    assert ids(capture.one("cm")) == ("m-cm", "c-cm")
    assert ids(capture.one("acm")) == ("m-acm", None)


# -- isolation -----------------------------------------------------------------------------


async def test_ids_never_leak_between_200_concurrent_tasks(capture: SpanCapture) -> None:
    tracer = capture.provider.get_tracer("t")

    @brixo_otel.message(conversation_id=lambda a: f"c-{a['n']}", name="task")
    async def handle(n: int, message_id: str) -> None:
        for _ in range(3):
            await asyncio.sleep(0)
            with tracer.start_as_current_span(f"step-{n}"):
                await asyncio.sleep(0)

    await asyncio.gather(*(handle(n, f"m-{n}") for n in range(200)))
    for n in range(200):
        steps = capture.spans(f"step-{n}")
        assert len(steps) == 3
        assert {ids(s) for s in steps} == {(f"m-{n}", f"c-{n}")}
    assert len(capture.spans("task")) == 200


def test_ids_never_leak_between_16_threads(capture: SpanCapture) -> None:
    tracer = capture.provider.get_tracer("t")
    barrier = threading.Barrier(16)

    @brixo_otel.message(name="thread")
    def handle(n: int, message_id: str) -> None:
        barrier.wait(timeout=10)
        for _ in range(20):
            with tracer.start_as_current_span(f"work-{n}"):
                pass

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda n: handle(n, f"m-{n}"), range(16)))
    for n in range(16):
        assert {ids(s)[0] for s in capture.spans(f"work-{n}")} == {f"m-{n}"}


def test_app_provider_keeps_its_processor_after_configure(
    capture: SpanCapture, local: Local
) -> None:
    # `configured` already joined capture.provider: the app's own SimpleSpanProcessor must
    # still see every span, and configuring again must not replace the provider either.
    local(exporters=None)

    @brixo_otel.message(message_id="m-app", name="app")
    def answer() -> None: ...

    answer()
    assert ids(capture.one("app"))[0] == "m-app"
    assert brixo_otel.get_client().tracer_provider is capture.provider


def test_reconfigure_disables_the_old_client(capture: SpanCapture) -> None:
    old = brixo_otel.get_client()
    other = TracerProvider()
    try:
        new = brixo_otel.configure(
            tracer_provider=other, traces_endpoint="none", outbox_path=":memory:"
        )
        assert new is not old and brixo_otel.get_client() is new

        @brixo_otel.message(message_id="m-new", name="after-reconfigure")
        def answer() -> None: ...

        with capture.provider.get_tracer("t").start_as_current_span("old-provider"):
            with brixo_otel.conversation("c-x"):
                with capture.provider.get_tracer("t").start_as_current_span("inner-old"):
                    pass
        answer()
        # the old client's processor on capture.provider no longer tags anything
        assert ids(capture.one("inner-old")) == (None, None)
        assert capture.spans("after-reconfigure") == []  # spans went to the new provider
    finally:
        brixo_otel.shutdown()
        other.shutdown()


def test_each_kind_of_function_still_looks_like_its_kind_to_inspect() -> None:
    def plain(message_id: str) -> str:
        return message_id

    async def coroutine(message_id: str) -> str:
        return message_id

    def generator(message_id: str) -> Iterator[str]:
        yield message_id

    async def async_generator(message_id: str) -> AsyncIterator[str]:
        yield message_id

    assert inspect.isfunction(brixo_otel.message(plain))
    assert inspect.iscoroutinefunction(brixo_otel.message(coroutine))
    assert inspect.isgeneratorfunction(brixo_otel.message(generator))
    assert inspect.isasyncgenfunction(brixo_otel.message(async_generator))
    assert inspect.iscoroutinefunction(brixo_otel.interaction(coroutine))
