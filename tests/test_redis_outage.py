"""Redis going down mid-run costs the links, never the feedback: signals are still delivered,
spans still end, and the outage is logged once per interval, not once per call."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import brixo_otel
from brixo_otel import attributes as attrs
from brixo_otel.exporters import InMemorySignalExporter
from brixo_otel.testing import SpanCapture
from tests._redis import RedisServer


def test_feedback_is_delivered_while_redis_is_down(
    tmp_path: Path, capture: SpanCapture, caplog: pytest.LogCaptureFixture
) -> None:
    memory = InMemorySignalExporter()
    with RedisServer(tmp_path / "redis") as redis:
        brixo_otel.configure(
            tracer_provider=capture.provider,
            traces_endpoint="none",
            exporters=[memory],
            outbox_path=tmp_path / "outbox.db",
            span_index=redis.url,
        )

        @brixo_otel.message(name="answer")
        def answer(message_id: str) -> str:
            return "ok"

        answer("before")
        brixo_otel.feedback("thumbs_up", message_id="before")
        linked = capture.spans(attrs.FEEDBACK_SPAN_NAME)[-1]
        assert linked.parent is not None  # Redis up: linked

        redis.stop()
        caplog.clear()
        for n in range(5):
            assert answer(f"during-{n}") == "ok"
            brixo_otel.feedback("thumbs_down", message_id=f"during-{n}")
        assert brixo_otel.flush(timeout=10)
        assert len(memory.signals()) == 6  # everything delivered
        unlinked = capture.spans(attrs.FEEDBACK_SPAN_NAME)[1:]
        assert [span.parent for span in unlinked] == [None] * 5
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert "redis" in warnings[0].getMessage().lower()
