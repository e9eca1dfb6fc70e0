"""Shared fixtures: every test starts with no BRIXO_* settings and fails on internal errors."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# Our own bugs must fail our tests rather than be swallowed by the telemetry guard.
os.environ["BRIXO_OTEL_RAISE_INTERNAL_ERRORS"] = "1"


@pytest.fixture(autouse=True)
def _clean_brixo_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("BRIXO_") and name != "BRIXO_OTEL_RAISE_INTERNAL_ERRORS":
            monkeypatch.delenv(name)
    from brixo_otel._internal import reset_rate_limits

    reset_rate_limits()
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))
    yield
    import brixo_otel

    brixo_otel.shutdown(timeout=2.0)


class SpanCapture:
    """A fresh SDK TracerProvider whose finished spans are kept in memory."""

    def __init__(self) -> None:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def spans(self, name: str | None = None) -> list:  # type: ignore[type-arg]
        finished = list(self.exporter.get_finished_spans())
        return [s for s in finished if name is None or s.name == name]

    def one(self, name: str):  # type: ignore[no-untyped-def]
        found = self.spans(name)
        assert len(found) == 1, f"expected one span named {name!r}, got {[s.name for s in self.spans()]}"
        return found[0]


@pytest.fixture
def capture() -> Iterator[SpanCapture]:
    captured = SpanCapture()
    yield captured
    captured.provider.shutdown()


@pytest.fixture
def configured(capture: SpanCapture):  # type: ignore[no-untyped-def]
    """A default client on the capture provider, no network, no outbox file."""
    import brixo_otel

    client = brixo_otel.configure(
        tracer_provider=capture.provider, traces_endpoint="none", outbox_path=":memory:"
    )
    yield client
