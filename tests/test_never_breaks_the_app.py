"""Telemetry never raises into the app: our own failures are logged (once per interval) and the
app's call carries on. Under the test suite the guard re-raises, so this test turns that off."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import pytest
from opentelemetry.trace import SpanContext
from opentelemetry.util.types import AttributeValue

import brixo_otel
from brixo_otel import attributes as attrs
from brixo_otel._correlation._index import IndexedSpan
from brixo_otel.exporters import InMemorySignalExporter
from brixo_otel.testing import SpanCapture
from tests._services import wait_for
from tests.conftest import Local


class BrokenIndex:
    """A span index whose backend fails in a way it did not foresee."""

    def put(
        self, message_id: str, span_context: SpanContext, attributes: Mapping[str, AttributeValue]
    ) -> None:
        raise RuntimeError("index backend exploded")

    def get(self, message_id: str) -> IndexedSpan | None:
        raise RuntimeError("index backend exploded")


def test_internal_failures_are_logged_and_the_app_carries_on(
    capture: SpanCapture,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    local: Local,
) -> None:
    monkeypatch.setenv("BRIXO_OTEL_RAISE_INTERNAL_ERRORS", "0")
    memory = InMemorySignalExporter()
    local(exporters=[memory], span_index=BrokenIndex(), link_window=0.3)

    @brixo_otel.message(message_id="m", name="answer")
    def answer() -> str:
        return "the app's answer"

    assert [answer() for _ in range(3)] == ["the app's answer"] * 3
    signal = brixo_otel.feedback("thumbs_up", message_id="m")
    assert brixo_otel.flush(timeout=5)
    # The pipeline retries the lookup within the link window, then emits the span unlinked.
    wait_for(
        lambda: capture.spans(attrs.FEEDBACK_SPAN_NAME) or None, 5, "the unlinked feedback span"
    )

    assert len(capture.spans("answer")) == 3
    feedback = capture.one(attrs.FEEDBACK_SPAN_NAME)
    assert feedback.parent is None  # unlinked, but emitted
    assert feedback.attributes[attrs.LINK_STATUS] == "unresolved"
    assert [s.id for s in memory.signals()] == [signal.id]  # and delivered
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "brixo_otel: internal error in indexing a message span"
    ]  # once, not once per call
    assert all(r.exc_info for r in errors)
    lookups = [r.getMessage() for r in caplog.records if "failed a lookup" in r.getMessage()]
    assert lookups == ["brixo_otel: the span index failed a lookup (RuntimeError); retrying"]
