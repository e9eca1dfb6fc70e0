"""Feedback metrics for Prometheus: a scripted chat whose thumbs can be scraped from /metrics.

Run it, point Prometheus (or `curl`) at the printed address, and import
docs/dashboards/grafana-feedback.json into Grafana to see the thumbs-up rate by model and by agent
version. Needs the `prometheus` extra: `pip install 'brixo-otel[prometheus]'`.

    python examples/prometheus_app.py --port 9464

The chat is deterministic so that the dashboard's numbers can be checked exactly (the test suite
does, against a real Prometheus): for every block of ten messages per model, `gpt-5` gets 8
ratings of which 6 are thumbs up, and `haiku` gets 5 ratings of which 1 is a thumbs up. The first
four messages of each block are answered by agent version `v1`, the other six by `v2`, as in a
rollout that sends most traffic to a new prompt; users never give v1 a thumbs up, which shows
that the dashboard draws a rate of 0 rather than leaving a gap. One conversation is also rated
as a whole, to show the `brixo_signal_target` label that the dashboard filters on.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import SERVICE_NAME, Resource

try:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import start_http_server
except ImportError as missing:  # say what to install rather than show a bare traceback
    raise SystemExit(
        f"{missing.name} is missing: pip install 'brixo-otel[prometheus]'"
    ) from missing

import brixo_otel
from brixo_otel import attributes as attrs
from brixo_otel.exporters import InMemorySignalExporter

#: Never expose the example beyond this machine.
LOOPBACK = "127.0.0.1"
APP_NAME = "prometheus-example"

#: What users say about each block of ten answers: U thumbs up, D thumbs down, "-" no rating.
#: Messages 0-3 of a block come from agent version v1, messages 4-9 from v2.
SCRIPT: dict[str, str] = {
    "gpt-5": "DD--UUUUUU",  # 8 rated, 6 up (v1: 0 of 2, v2: 6 of 6)
    "haiku": "DDD-UD----",  # 5 rated, 1 up (v1: 0 of 3, v2: 1 of 2)
}
V1_MESSAGES = 4
PROVIDERS: dict[str, str] = {"gpt-5": "openai", "haiku": "anthropic"}
RATINGS = {"U": "thumbs_up", "D": "thumbs_down"}
BLOCK = 10


@dataclass(frozen=True)
class Turn:
    """One assistant message of the script and the rating its user gives (if any)."""

    message_id: str
    conversation_id: str
    model: str
    agent_version: str
    rating: str | None


def script(messages_per_model: int) -> list[Turn]:
    """The whole chat, in order; the same arguments always give the same turns."""
    turns: list[Turn] = []
    for model, pattern in SCRIPT.items():
        for n in range(messages_per_model):
            position = n % BLOCK
            version = "v1" if position < V1_MESSAGES else "v2"
            turns.append(
                Turn(
                    message_id=f"{model}-msg-{n:04d}",
                    # one conversation per model, agent version and block
                    conversation_id=f"{model}-{version}-conv-{n // BLOCK}",
                    model=model,
                    agent_version=version,
                    rating=RATINGS.get(pattern[position]),
                )
            )
    return turns


def fake_model(prompt: str, model: str) -> str:
    """A stand-in for the LLM call: deterministic, instant, and no network."""
    return f"[{model}] {len(prompt)} characters considered; here is an answer."


@brixo_otel.message(conversation_id=lambda args: args["turn"].conversation_id, name="chat answer")
def answer(turn: Turn, message_id: str, prompt: str) -> str:
    """The app's call site: the agent version is the app's to know, so it tags its own span;
    the model goes on the child span, where an LLM instrumentation would put it."""
    trace.get_current_span().set_attribute(attrs.AGENT_VERSION, turn.agent_version)
    llm = trace.get_tracer("fake.llm.instrumentation")
    with llm.start_as_current_span(f"chat {turn.model}") as span:
        span.set_attribute(attrs.GEN_AI_REQUEST_MODEL, turn.model)
        span.set_attribute(attrs.GEN_AI_PROVIDER_NAME, PROVIDERS[turn.model])
        return fake_model(prompt, turn.model)


def run_chat(messages_per_model: int) -> tuple[int, int]:
    """Answer every turn, then hand out the thumbs; returns (messages, message ratings)."""
    turns = script(messages_per_model)
    for turn in turns:
        answer(turn, message_id=turn.message_id, prompt=f"question {turn.message_id}")
    rated = 0
    for turn in turns:  # minutes later, in the real world, and maybe in another process
        if turn.rating is not None:
            brixo_otel.feedback(turn.rating, message_id=turn.message_id)
            rated += 1
    if turns:
        # A rating of a whole conversation has no single message, hence no model label.
        brixo_otel.feedback("thumbs_up", conversation_id=turns[-1].conversation_id)
    return len(turns), rated


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=9464, help="loopback port for /metrics")
    parser.add_argument(
        "--messages",
        type=int,
        default=BLOCK,
        help=f"messages per model (ratios are exact for multiples of {BLOCK}; default {BLOCK})",
    )
    parser.add_argument(
        "--serve-seconds",
        type=float,
        default=None,
        help="stop serving after this many seconds (default: until SIGINT/SIGTERM)",
    )
    args = parser.parse_args(argv)
    if args.messages < 0:
        parser.error("--messages must be zero or more")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # The reader turns the SDK's cumulative counters into Prometheus text on every scrape.
    reader = PrometheusMetricReader()
    meter_provider = MeterProvider(
        metric_readers=[reader], resource=Resource.create({SERVICE_NAME: APP_NAME})
    )
    brixo_otel.configure(
        app_name=APP_NAME,
        traces_endpoint="none",
        outbox_path=":memory:",
        exporters=[InMemorySignalExporter()],
        meter_provider=meter_provider,
    )
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    # The chat runs before /metrics opens, so every scrape sees the final, stable counts.
    messages, ratings = run_chat(args.messages)
    server, thread = start_http_server(args.port, addr=LOOPBACK)
    try:
        print(f"{messages} messages, {ratings} rated; counters are final", flush=True)
        print(f"serving metrics on http://{LOOPBACK}:{args.port}/metrics", flush=True)
        stop.wait(args.serve_seconds)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        brixo_otel.shutdown(timeout=5)
        meter_provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
