"""Our own HTTP requests are never traced, even with an httpx instrumentation installed: an app
that instruments httpx must not get a span per delivered signal (or a feedback loop)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

import brixo_otel
from brixo_otel import RetryPolicy
from brixo_otel.testing import BrixoTestServer, SpanCapture
from tests._services import wait_for


@pytest.fixture
def instrumented(capture: SpanCapture) -> Iterator[SpanCapture]:
    instrumentor = HTTPXClientInstrumentor()
    instrumentor.instrument(tracer_provider=capture.provider)
    try:
        yield capture
    finally:
        instrumentor.uninstrument()


def test_deliveries_create_no_http_spans(
    brixo_server: BrixoTestServer, instrumented: SpanCapture, tmp_path: Path
) -> None:
    brixo_otel.configure(
        api_key="test-key",
        base_url=brixo_server.url,
        traces_endpoint="none",
        tracer_provider=instrumented.provider,
        outbox_path=tmp_path / "outbox.db",
        retry_policy=RetryPolicy(initial_backoff=0.02, max_backoff=0.1),
        link_window=0.2,  # the rated message is unknown here: its feedback spans go unlinked
    )
    brixo_server.register_message("m")
    brixo_server.fail_next(1, 503)  # a retry too: still no span
    for _ in range(3):
        brixo_otel.feedback("thumbs_up", message_id="m")
    assert brixo_otel.flush(timeout=10)
    assert len(brixo_server.signals()) == 3
    wait_for(
        lambda: len(instrumented.spans("brixo.feedback")) == 3 or None, 10, "the feedback spans"
    )

    # the instrumentation does work for the app's own requests
    with httpx.Client() as client:
        client.get(f"{brixo_server.url}/health")
    names = [span.name for span in instrumented.spans()]
    assert names.count("brixo.feedback") == 3
    assert len([n for n in names if n != "brixo.feedback"]) == 1, names
