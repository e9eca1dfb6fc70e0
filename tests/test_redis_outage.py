"""Redis going down mid-run costs nothing in this process: spans still end, feedback is still
delivered and still linked (the memory tier answers), the outage is logged once per interval,
not once per call, and what was indexed meanwhile reaches Redis when it is back."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import brixo_otel
from brixo_otel import attributes as attrs
from brixo_otel._correlation._redis_index import RedisSpanIndex
from brixo_otel._correlation._tiered import TieredSpanIndex
from brixo_otel.exporters import InMemorySignalExporter
from brixo_otel.testing import SpanCapture
from tests._redis import RedisServer
from tests._services import wait_for


def test_feedback_is_delivered_and_linked_while_redis_is_down(
    tmp_path: Path, capture: SpanCapture, caplog: pytest.LogCaptureFixture
) -> None:
    memory = InMemorySignalExporter()
    with RedisServer(tmp_path / "redis") as redis:
        client = brixo_otel.configure(
            tracer_provider=capture.provider,
            traces_endpoint="none",
            exporters=[memory],
            outbox_path=tmp_path / "outbox.db",
            span_index=redis.url,
        )
        index = client.span_index
        assert isinstance(index, TieredSpanIndex)

        @brixo_otel.message(name="answer")
        def answer(message_id: str) -> str:
            return "ok"

        answer("before")
        brixo_otel.feedback("thumbs_up", message_id="before")
        assert index.flush(10)

        redis.stop()
        caplog.clear()
        caplog.set_level(logging.WARNING, logger="brixo_otel")
        for n in range(5):
            assert answer(f"during-{n}") == "ok"
            brixo_otel.feedback("thumbs_down", message_id=f"during-{n}")
        assert brixo_otel.flush(timeout=10)
        assert len(memory.signals()) == 6  # everything delivered
        answers = {span.context.span_id for span in capture.spans("answer")}
        feedback = capture.spans(attrs.FEEDBACK_SPAN_NAME)
        assert len(feedback) == 6
        assert all(span.parent is not None and span.parent.span_id in answers for span in feedback)

        def warnings() -> list[logging.LogRecord] | None:
            found = [r for r in caplog.records if r.levelno >= logging.WARNING]
            return found or None

        [warning] = wait_for(warnings, 5, "the writer's warning")  # the writer met the outage
        assert "redis" in warning.getMessage().lower()
        assert not index.flush(0.2)  # the outage's puts wait for Redis

        redis.start()  # back, on the same port, empty
        assert index.flush(40)  # the writer tries again within its (growing) wait
        reader = RedisSpanIndex(redis.url)
        try:
            assert all(reader.get(f"during-{n}") is not None for n in range(5))
        finally:
            reader.close()
        assert index.dropped == 0
        assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
