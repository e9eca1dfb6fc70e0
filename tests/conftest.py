"""Shared fixtures: every test starts with no BRIXO_* settings and fails on internal errors."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

import brixo_otel
from brixo_otel.exporters import InMemorySignalExporter
from brixo_otel.testing import SpanCapture

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
    brixo_otel.shutdown(timeout=2.0)


@pytest.fixture
def outbox(tmp_path: Path) -> Path:
    """A fresh outbox file for the test."""
    return tmp_path / "outbox.db"


@pytest.fixture
def capture(span_capture: SpanCapture) -> SpanCapture:
    """The plugin's `span_capture`, under the short name these tests use."""
    return span_capture


class Local(Protocol):
    def __call__(self, **overrides: Any) -> brixo_otel.Client: ...


@pytest.fixture
def local(capture: SpanCapture, signal_capture: InMemorySignalExporter) -> Local:
    """`brixo_otel.configure` for a test: spans to `capture`, signals to `signal_capture`, no
    network, no outbox file. Keyword arguments override any of these (or add settings)."""

    def configure(**overrides: Any) -> brixo_otel.Client:
        settings: dict[str, Any] = {
            "tracer_provider": capture.provider,
            "traces_endpoint": "none",
            "exporters": [signal_capture],
            "outbox_path": ":memory:",
        }
        return brixo_otel.configure(**{**settings, **overrides})

    return configure


@pytest.fixture
def configured(local: Local) -> brixo_otel.Client:
    """A default client on the capture provider with no signal destination."""
    return local(exporters=None)
