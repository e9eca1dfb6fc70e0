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
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

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
    reader = InMemoryMetricReader()  # in production: the Prometheus reader, see docs/dashboards.md
    meters = MeterProvider(metric_readers=[reader])
    with BrixoTestServer(api_key="demo-key", db_path=str(workdir / "server.db")) as server:
        brixo_otel.configure(
            api_key="demo-key",
            base_url=server.url,
            traces_endpoint=server.traces_endpoint,
            app_name="shop-assistant",
            environment="demo",
            agent_version="2026.11",
            outbox_path=workdir / "outbox.db",
            meter_provider=meters,
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
        print_rates(reader)
        meters.shutdown()


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


def counts(reader: InMemoryMetricReader, name: str) -> list[tuple[dict[str, object], float]]:
    data = reader.get_metrics_data()
    return [
        (dict(point.attributes or {}), point.value)
        for resource_metrics in (data.resource_metrics if data else [])
        for scope in resource_metrics.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points  # type: ignore[union-attr]
    ]


def print_rates(reader: InMemoryMetricReader) -> None:
    """The correlated view: thumbs by the model that wrote the rated message, from the metrics."""
    messages: dict[object, float] = {}
    for labels, value in counts(reader, "brixo.messages"):
        model = labels.get(attrs.GEN_AI_REQUEST_MODEL)
        messages[model] = messages.get(model, 0) + value
    rated: dict[object, float] = {}
    up: dict[object, float] = {}
    for labels, value in counts(reader, "brixo.feedback"):
        if labels.get(attrs.SIGNAL_TARGET) != "message":
            continue
        model = labels.get(attrs.GEN_AI_REQUEST_MODEL)
        rated[model] = rated.get(model, 0) + value
        if labels.get(attrs.SIGNAL_VALUE) == "thumbs_up":
            up[model] = up.get(model, 0) + value
    print("\nfrom the feedback metrics (brixo.feedback / brixo.messages, by the rated model):")
    print(f"{'model':<14} {'messages':>8} {'rated':>6} {'thumbs-up rate':>15}")
    for model in sorted(messages, key=str):
        n_rated = rated.get(model, 0)
        rate = f"{up.get(model, 0) / n_rated:.0%}" if n_rated else "-"
        print(f"{model!s:<14} {messages[model]:>8.0f} {n_rated:>6.0f} {rate:>15}")


if __name__ == "__main__":
    main()
