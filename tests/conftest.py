"""Shared fixtures: every test starts with no BRIXO_* settings and fails on internal errors."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import brixo_otel
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
    import brixo_otel

    brixo_otel.shutdown(timeout=2.0)


@pytest.fixture
def capture(span_capture: SpanCapture) -> SpanCapture:
    """The plugin's `span_capture`, under the short name these tests use."""
    return span_capture


@pytest.fixture
def configured(capture: SpanCapture) -> Iterator[brixo_otel.Client]:
    """A default client on the capture provider, no network, no outbox file."""
    import brixo_otel

    client = brixo_otel.configure(
        tracer_provider=capture.provider, traces_endpoint="none", outbox_path=":memory:"
    )
    yield client
