"""The public surface: exactly the documented names, settings resolution, and key hygiene."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import brixo_otel
from brixo_otel import _settings
from brixo_otel.exporters import InMemorySignalExporter
from brixo_otel.testing import SpanCapture

ROOT = Path(__file__).resolve().parent.parent

PUBLIC = {
    # DESIGN.md's API
    "link_token",
    "retract_feedback",
    "configure",
    "get_client",
    "message",
    "message_span",
    "conversation",
    "set_message_id",
    "interaction",
    "feedback",
    "afeedback",
    "flush",
    "shutdown",
    "Brixo",
    # the types those calls take and return
    "Client",
    "Signal",
    "UnknownMessage",
    "InvalidSignal",
    "ConfigurationError",
    "RetryPolicy",
    "OutboxLimits",
    "__version__",
}


def test_all_is_exactly_the_public_list_and_sorted() -> None:
    assert set(brixo_otel.__all__) == PUBLIC
    assert brixo_otel.__all__ == sorted(brixo_otel.__all__)
    for name in brixo_otel.__all__:
        assert getattr(brixo_otel, name) is not None
    assert issubclass(brixo_otel.InvalidSignal, ValueError)


def test_package_ships_py_typed() -> None:
    assert (ROOT / "brixo_otel" / "py.typed").exists()


def test_configuration_docs_list_every_environment_variable() -> None:
    docs = (ROOT / "docs" / "configuration.md").read_text()
    assert _settings.markdown_tables() in docs


def test_arguments_win_over_environment(
    monkeypatch: pytest.MonkeyPatch, capture: SpanCapture, tmp_path: Path
) -> None:
    monkeypatch.setenv("BRIXO_APP_NAME", "from-env")
    monkeypatch.setenv("BRIXO_ENVIRONMENT", "env-environment")
    client = brixo_otel.configure(
        app_name="from-arg",
        tracer_provider=capture.provider,
        traces_endpoint="none",
        outbox_path=tmp_path / "o.db",
    )
    assert client.settings.app_name == "from-arg"
    assert client.settings.environment == "env-environment"
    assert client.settings.outbox_path == str(tmp_path / "o.db")


def test_bad_environment_values_warn_and_fall_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capture: SpanCapture
) -> None:
    monkeypatch.setenv("BRIXO_CAPTURE_CONTENT", "maybe")
    client = brixo_otel.configure(
        tracer_provider=capture.provider, traces_endpoint="none", outbox_path=":memory:"
    )
    assert client.settings.capture_content is False
    assert "BRIXO_CAPTURE_CONTENT" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"app_name": 5}, TypeError, "app_name must be a string"),
        ({"capture_content": "yes"}, TypeError, "capture_content must be True or False"),
        ({"traces_endpoint": "http://collector.example:4318/v1/traces"}, ValueError, "http"),
        ({"span_index": "postgres://db/x"}, brixo_otel.ConfigurationError, "accepted: 'memory'"),
        ({"exporters": InMemorySignalExporter()}, TypeError, "exporters must be a list"),
        ({"tracer_provider": object()}, TypeError, "tracer_provider must be"),
    ],
)
def test_wrong_arguments_raise_at_once(
    kwargs: dict[str, object], error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error, match=fragment):
        brixo_otel.configure(outbox_path=":memory:", **kwargs)  # type: ignore[arg-type]


def test_insecure_http_to_a_remote_host_needs_explicit_permission(capture: SpanCapture) -> None:
    client = brixo_otel.configure(
        tracer_provider=capture.provider,
        traces_endpoint="http://collector.internal:4318/v1/traces",
        allow_insecure_http=True,
        outbox_path=":memory:",
    )
    assert client.settings.traces_endpoint == "http://collector.internal:4318/v1/traces"


def test_api_key_never_appears_in_reprs_or_logs(
    capture: SpanCapture, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key = "sk-live-secret-7f3a"
    client = brixo_otel.configure(
        api_key=key,
        tracer_provider=capture.provider,
        traces_endpoint="none",
        outbox_path=":memory:",
    )
    assert key not in repr(client)
    assert key not in repr(client.settings)
    assert all(key not in repr(exporter) for exporter in client.exporters)
    brixo_otel.shutdown(timeout=0.5)
    assert key not in caplog.text


def test_configure_joins_the_global_sdk_provider_without_replacing_it() -> None:
    # Run in a fresh interpreter: the global provider can be set only once per process.
    import subprocess
    import sys

    code = """
import brixo_otel
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
app_provider = TracerProvider()
seen = InMemorySpanExporter()
app_provider.add_span_processor(SimpleSpanProcessor(seen))
trace.set_tracer_provider(app_provider)
client = brixo_otel.configure(traces_endpoint="none", outbox_path=":memory:")
assert client.tracer_provider is app_provider is trace.get_tracer_provider()
@brixo_otel.message(message_id="m")
def answer(): pass
answer()
assert [s.attributes["brixo.message_id"] for s in seen.get_finished_spans()] == ["m"]
fresh = brixo_otel.configure(traces_endpoint="none", outbox_path=":memory:")
assert fresh.tracer_provider is app_provider
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert result.stdout.strip() == "ok", result.stderr
