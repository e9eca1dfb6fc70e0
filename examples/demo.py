"""The whole round trip on one machine: a chat answers, users click 👍/👎, Brixo receives it.

Starts the local Brixo-compatible server, points brixo-otel at it for traces and signals, runs a
scripted chat against a deterministic fake model (plain, async and streaming answers), gives
thumbs to some messages and to the conversation, and prints what the server itself recorded,
joined on the message id. No API key, no network beyond loopback.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from opentelemetry import trace

import brixo_otel
from brixo_otel import attributes as attrs
from brixo_otel.testing import BrixoTestServer

CONVERSATION = "conv-demo-1"


def fake_model(prompt: str, model: str) -> str:
    """Deterministic stand-in for an LLM: the same prompt always gets the same answer."""
    return f"[{model}] You asked {prompt!r}; here are {len(prompt) % 5 + 2} steps."


def describe_call(model: str) -> None:
    span = trace.get_current_span()
    span.set_attribute(attrs.GEN_AI_REQUEST_MODEL, model)
    span.set_attribute(attrs.GEN_AI_PROVIDER_NAME, "fake")


@brixo_otel.message(conversation_id=CONVERSATION, name="chat answer")
def answer(message_id: str, prompt: str, model: str = "gpt-4o-mini") -> str:
    describe_call(model)
    return fake_model(prompt, model)


@brixo_otel.message(conversation_id=CONVERSATION, name="chat answer (async)")
async def answer_async(message_id: str, prompt: str, model: str = "claude-haiku") -> str:
    describe_call(model)
    await asyncio.sleep(0)
    return fake_model(prompt, model)


@brixo_otel.message(conversation_id=CONVERSATION, name="chat answer (stream)")
def answer_stream(message_id: str, prompt: str, model: str = "gpt-4o-mini") -> Iterator[str]:
    describe_call(model)
    yield from fake_model(prompt, model).split()


@brixo_otel.message(conversation_id=CONVERSATION, name="chat answer (async stream)")
async def answer_async_stream(
    message_id: str, prompt: str, model: str = "claude-haiku"
) -> AsyncIterator[str]:
    describe_call(model)
    for word in fake_model(prompt, model).split():
        await asyncio.sleep(0)
        yield word


async def chat() -> None:
    print("assistant:", answer("msg-001", "How do I return shoes?"))
    print("assistant:", await answer_async("msg-002", "Where is my order #1042?"))
    print("assistant:", " ".join(answer_stream("msg-003", "Do you ship to Norway?")))
    words = [w async for w in answer_async_stream("msg-004", "Can I change my size?")]
    print("assistant:", " ".join(words))


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="brixo-demo-"))
    with BrixoTestServer(api_key="demo-key", db_path=str(workdir / "server.db")) as server:
        brixo_otel.configure(
            api_key="demo-key",
            base_url=server.url,
            traces_endpoint=server.traces_endpoint,
            app_name="shop-assistant",
            environment="demo",
            agent_version="2026.11",
            outbox_path=workdir / "outbox.db",
        )
        print(f"local Brixo server at {server.url}; outbox {workdir / 'outbox.db'}\n")
        asyncio.run(chat())
        brixo_otel.flush(timeout=10)  # the traces reach Brixo while the user reads

        print("\nusers react:")
        reactions = [
            ("thumbs_up", {"message_id": "msg-001"}),
            ("thumbs_down", {"message_id": "msg-002", "user_message": "Wrong order number"}),
            ("thumbs_up", {"message_id": "msg-003"}),
            ("thumbs_up", {"conversation_id": CONVERSATION}),
        ]
        for value, ids in reactions:
            started = time.perf_counter()
            brixo_otel.feedback(value, **ids)  # type: ignore[arg-type]
            took = (time.perf_counter() - started) * 1e6
            print(f"  feedback({value!r}, {ids}) returned in {took:.0f} µs")
        delivered = brixo_otel.flush(timeout=15)
        brixo_otel.shutdown()

        print_table(server, delivered)


def print_table(server: BrixoTestServer, delivered: bool) -> None:
    spans = server.spans()
    messages = {
        s.attributes[attrs.MESSAGE_ID]: s for s in spans if s.name.startswith("chat answer")
    }
    feedback_spans = {
        s.attributes.get(attrs.MESSAGE_ID) or s.attributes.get(attrs.SESSION_ID): s
        for s in spans
        if s.name == attrs.FEEDBACK_SPAN_NAME
    }
    thumbs = {(s.target, s.target_id): s for s in server.signals()}
    print(f"\nwhat the Brixo server recorded (all signals delivered: {delivered}):")
    header = f"{'message id':<12} {'trace id':<34} {'model':<14} {'thumbs':<12} delivered  linked"
    print(header)
    print("-" * len(header))
    for message_id, span in sorted(messages.items()):
        signal = thumbs.get(("message", message_id))
        feedback = feedback_spans.get(message_id)
        linked = feedback is not None and feedback.trace_id == span.trace_id
        print(
            f"{message_id:<12} {span.trace_id:<34} "
            f"{span.attributes.get(attrs.GEN_AI_REQUEST_MODEL, '-'):<14} "
            f"{signal.value if signal else '-':<12} {'yes' if signal else '-':<10} "
            f"{'yes' if linked else '-'}"
        )
    conversation = thumbs.get(("conversation", CONVERSATION))
    print(
        f"\nconversation {CONVERSATION}: "
        f"{conversation.value if conversation else 'no rating'}"
        f"{' (delivered)' if conversation else ''}"
    )


if __name__ == "__main__":
    main()
