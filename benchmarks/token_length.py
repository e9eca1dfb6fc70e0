"""Link-token length through the real pipeline: `link_token()` inside a `@message`, with the
default indexed attributes gathered from an LLM span inside it (docs/correlation.md, "Size").

    python benchmarks/token_length.py

Each case runs in a fresh interpreter, since an app configures once: brixo-otel then makes the
TracerProvider, so `agent_version` and `environment` go to its resource, not onto the spans
(cases marked "on the spans" stand for an app that brings its own provider).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, sys
import brixo_otel
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

case = json.loads(sys.argv[1])
if case["own_provider"]:
    trace.set_tracer_provider(TracerProvider())
brixo_otel.configure(
    link_secret="s" * 32, traces_endpoint="none", outbox_path=":memory:", exporters=[],
    agent_version=case["agent_version"], environment=case["environment"],
)
llm = trace.get_tracer("llm-instrumentation")

@brixo_otel.message(message_id="msg_01HZX3K9Q8", conversation_id=case["conversation"])
def answer():
    with llm.start_as_current_span("chat") as span:
        for name, value in case["llm_span"].items():
            span.set_attribute(name, value)
    return brixo_otel.link_token()

print(len(answer()))
"""

OPENAI = {
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.provider.name": "openai",
    "gen_ai.system": "openai",
}
CASES = [
    ("no attributes", {}, None, None, None, False),
    ("the model only", {"gen_ai.request.model": "gpt-4o"}, None, None, None, False),
    ("a GenAI LLM span: model, provider, system", OPENAI, "1.4.2", "production", None, False),
    ("the same in a conversation", OPENAI, "1.4.2", "production", "conv_01HZX3K9Q8", False),
    (
        "model, provider, system, agent version and environment on the spans",
        OPENAI,
        "1.4.2",
        "production",
        None,
        True,
    ),
    (
        "the same in a conversation, with the response model too",
        {**OPENAI, "gen_ai.response.model": "gpt-4o-2024-08-06"},
        "1.4.2",
        "production",
        "conv_01HZX3K9Q8",
        True,
    ),
]


def main() -> None:
    print("chars  message id msg_01HZX3K9Q8, and")
    for label, llm_span, agent_version, environment, conversation, own_provider in CASES:
        case = {
            "llm_span": llm_span,
            "agent_version": agent_version,
            "environment": environment,
            "conversation": conversation,
            "own_provider": own_provider,
        }
        result = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps(case)],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        print(f"{int(result.stdout):5d}  {label}")


if __name__ == "__main__":
    main()
