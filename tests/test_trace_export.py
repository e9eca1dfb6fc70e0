"""Traces leave by OTLP/HTTP with the Brixo-Auth header, as the vendor SDK sends them.

The receiver is the project's Brixo-compatible server on loopback, which decodes the protobuf
with opentelemetry-proto; nothing about the export is mocked.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

import brixo_otel
from brixo_otel import attributes as attrs
from brixo_otel.exporters import InMemorySignalExporter
from brixo_otel.testing import BrixoTestServer, SpanCapture
from tests.conftest import Local

ROOT = Path(__file__).resolve().parent.parent


def test_message_span_reaches_an_otlp_receiver_with_auth_header(
    brixo_server: BrixoTestServer, capture: SpanCapture
) -> None:
    brixo_otel.configure(
        api_key="test-key",
        app_name="support-bot",
        environment="staging",
        agent_version="7",
        tracer_provider=capture.provider,
        traces_endpoint=brixo_server.traces_endpoint,
        exporters=[InMemorySignalExporter()],
        outbox_path=":memory:",
    )

    @brixo_otel.message(message_id="msg/1 ü", conversation_id="conv-1", name="answer")
    def answer() -> str:
        with capture.provider.get_tracer("llm").start_as_current_span("chat") as span:
            span.set_attribute(attrs.GEN_AI_REQUEST_MODEL, "gpt-5")
        return "ok"

    answer()
    assert brixo_otel.flush(timeout=10)

    received = {span.name: span for span in brixo_server.spans()}
    assert received["answer"].attributes[attrs.MESSAGE_ID] == "msg/1 ü"
    assert received["answer"].attributes[attrs.GEN_AI_CONVERSATION_ID] == "conv-1"
    assert received["chat"].attributes[attrs.MESSAGE_ID] == "msg/1 ü"
    assert received["chat"].parent_span_id == received["answer"].span_id
    # The app's provider kept its own resource; our values ride on the message span instead.
    assert received["answer"].attributes[attrs.APP_NAME] == "support-bot"
    assert received["answer"].attributes[attrs.AGENT_VERSION] == "7"
    assert "msg/1 ü" in brixo_server.known_message_ids()

    trace_requests = [r for r in brixo_server.requests() if r.path == "/v1/traces"]
    assert trace_requests
    assert {r.headers.get("brixo-auth") for r in trace_requests} == {"Bearer test-key"}
    assert {r.headers.get("content-type") for r in trace_requests} == {"application/x-protobuf"}


def test_traces_endpoint_none_turns_export_off(
    brixo_server: BrixoTestServer, capture: SpanCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the environment names a receiver; the argument "none" must win over it
    monkeypatch.setenv("BRIXO_OTLP_TRACES_ENDPOINT", brixo_server.traces_endpoint)
    client = brixo_otel.configure(
        api_key="test-key",
        traces_endpoint="none",
        exporters=[InMemorySignalExporter()],
        outbox_path=":memory:",
        tracer_provider=capture.provider,
    )
    assert client.settings.traces_endpoint is None

    @brixo_otel.message(message_id="m-off", name="answer")
    def answer() -> None: ...

    answer()
    assert brixo_otel.flush(timeout=5)
    assert capture.one("answer")  # traced locally...
    assert brixo_server.spans() == []  # ...and nothing exported
    assert [r for r in brixo_server.requests() if r.path == "/v1/traces"] == []


def test_vendor_quickstart_runs_unchanged_through_the_stand_in(
    brixo_server: BrixoTestServer, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "BRIXO_API_KEY": "test-key",
        "BRIXO_OTLP_TRACES_ENDPOINT": brixo_server.traces_endpoint,
        "BRIXO_BASE_URL": brixo_server.url,
        "BRIXO_OUTBOX_PATH": str(tmp_path / "outbox.db"),
    }
    env.pop("BRIXO_OTEL_RAISE_INTERNAL_ERRORS", None)
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "vendor_quickstart.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "reset your password" in result.stdout

    spans = {span.name: span for span in brixo_server.spans()}
    # the three interactions, and the rating of the first (tests/test_vendor_rating.py)
    assert set(spans) == {
        "Handle support question",
        "handle_streaming",
        "Sync stream",
        "brixo.feedback",
    }
    root = spans["Handle support question"]
    assert root.attributes == {
        "brixo.span.kind": "ROOT",
        "brixo.message_id": "msg_1001",
        "brixo.account.id": "acct_42",
        "brixo.account.name": "Acme Corp",
        "brixo.account.logo_url": "https://acme.example/logo.png",
        "brixo.account.website_url": "https://acme.example",
        "brixo.user.id": "user_7",
        "brixo.user.name": "Ana",
        "brixo.user.email": "ana@acme.example",
        "brixo.session_id": "sess_1001",
        "gen_ai.conversation.id": "sess_1001",
        "brixo.metadata.plan": "enterprise",
        "brixo.metadata.channel": "web",
        "brixo.metadata.retrieval_hits": 3,
        "brixo.input": "How do I reset my password?",
        "brixo.output": root.attributes["brixo.output"],
    }
    assert root.attributes["brixo.output"].startswith("Here is how to reset")
    assert root.resource_attributes["brixo.app_name"] == "support-bot"
    assert root.resource_attributes["brixo.environment"] == "production"
    assert root.resource_attributes["brixo.agent_version"] == "2026.11.1"
    assert root.resource_attributes["brixo.sdk.version"] == brixo_otel.__version__
    # Streams (async and sync generators) keep their root span open until consumed.
    assert spans["handle_streaming"].attributes["brixo.output"] == "(streamed)"
    assert spans["Sync stream"].attributes["brixo.span.kind"] == "ROOT"
    headers = {
        r.headers.get("brixo-auth") for r in brixo_server.requests() if r.path == "/v1/traces"
    }
    assert headers == {"Bearer test-key"}


def test_context_calls_outside_an_interaction_log_and_do_nothing(
    caplog: object, capture: SpanCapture, local: Local
) -> None:
    local(exporters=None)
    brixo_otel.Brixo.begin_context(session_id="s")
    brixo_otel.Brixo.end_context(output="x")
    assert capture.spans() == []
    assert "outside an @Brixo.interaction" in caplog.text  # type: ignore[attr-defined]


def test_an_interaction_without_its_context_is_warned_about_like_the_vendor_sdk(
    caplog: pytest.LogCaptureFixture, capture: SpanCapture, local: Local
) -> None:
    local(exporters=None)
    caplog.clear()  # what configuring said (no signal destination) is not the point here

    @brixo_otel.Brixo.interaction("bare")
    def bare() -> None:
        brixo_otel.Brixo.begin_context(user={"id": "u", "name": "Ana"}, session_id="s")

    @brixo_otel.Brixo.interaction("complete")
    def complete() -> None:
        brixo_otel.Brixo.begin_context(
            account={"id": "a", "name": "Acme"}, user={"id": "u", "name": "Ana"}, session_id="s"
        )

    bare()
    bare()
    complete()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # once per missing set, not per call; content is not asked for when it is not captured
    assert warnings == [
        "brixo_otel: interaction 'bare' ended without brixo.account.id, brixo.account.name; "
        "set them with Brixo.begin_context() or update_context()"
    ]
