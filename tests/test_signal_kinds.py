"""Ratings, reasons and retractions, and destinations that declare what they accept."""

from __future__ import annotations

from pathlib import Path

import pytest

import brixo_otel
from brixo_otel import attributes as attrs
from brixo_otel._cli import main as cli
from brixo_otel._signal import Signal
from brixo_otel.exporters import (
    BrixoSignalExporter,
    DeliveryResult,
    InMemorySignalExporter,
    SignalExporter,
)
from brixo_otel.testing import BrixoTestServer, SpanCapture
from tests._delivery import FAST
from tests.conftest import Local


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"value": "csat"}, "csat needs score= an integer from 1 to 5, got None"),
        ({"value": "csat", "score": 6}, "from 1 to 5"),
        ({"value": "nps", "score": -1}, "from 0 to 10"),
        ({"value": "nps", "score": 7.5}, "from 0 to 10"),
        ({"value": "csat", "score": True}, "from 1 to 5"),
        ({"value": "thumbs_up", "score": 3}, "score is only for csat, nps"),
        ({"value": "thumbs_up", "reasons": "too_long"}, "reasons must be a list"),
        ({"value": "thumbs_up", "reasons": ["too long"]}, "is not a short tag"),
        ({"value": "thumbs_up", "reasons": ["x"] * 11}, "at most 10"),
        ({"value": "retracted"}, "accepted: thumbs_up, thumbs_down, csat, nps"),
    ],
)
def test_ratings_and_reasons_are_validated(
    kwargs: dict[str, object], fragment: str, capture: SpanCapture, local: Local
) -> None:
    local()
    value = kwargs.pop("value")
    with pytest.raises(brixo_otel.InvalidSignal, match=fragment):
        brixo_otel.feedback(value, conversation_id="c", **kwargs)  # type: ignore[arg-type]


def test_what_feedback_accepts_does_not_depend_on_the_destinations(
    brixo_server: BrixoTestServer,
    capture: SpanCapture,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    local: Local,
) -> None:
    """The same input is accepted with no destination and with each destination; one that
    cannot take a signal skips it, visibly (status, metric, debug log)."""
    outbox = tmp_path / "outbox.db"
    inputs = [
        lambda: brixo_otel.feedback("csat", score=4, conversation_id="c-1", reasons=["fast"]),
        lambda: brixo_otel.feedback("thumbs_up", conversation_id="c-1"),
        lambda: brixo_otel.retract_feedback(conversation_id="c-1"),
    ]
    memory = InMemorySignalExporter()
    for exporters in ([], [BrixoSignalExporter(api_key="test-key", base_url=brixo_server.url)]):
        local(exporters=exporters or None, outbox_path=outbox, retry_policy=FAST)
        assert [make().value for make in inputs] == ["csat", "thumbs_up", "retracted"]
        brixo_otel.shutdown()

    brixo_server.register_conversation("c-1")
    local(
        exporters=[BrixoSignalExporter(api_key="test-key", base_url=brixo_server.url), memory],
        outbox_path=outbox,
        retry_policy=FAST,
    )
    rating, thumbs, retraction = (make() for make in inputs)
    assert brixo_otel.flush(timeout=10)
    assert [s.id for s in memory.signals()] == [rating.id, thumbs.id, retraction.id]
    assert memory.signals()[0].score == 4 and memory.signals()[0].reasons == ("fast",)
    # Brixo takes thumbs only: the first client's thumbs and this one's.
    assert len(brixo_server.signals()) == 2
    assert thumbs.id in [s.idempotency_key for s in brixo_server.signals()]
    # Every signal is in the trace, whichever destination took it.
    assert len(capture.spans(attrs.FEEDBACK_SPAN_NAME)) == 9

    assert cli(["outbox", "status", "--path", str(outbox)]) == 0
    table = capsys.readouterr().out.splitlines()
    header = table[0].split()
    rows = {
        line.split()[0]: dict(zip(header[1:], line.split()[1:], strict=True))
        for line in table[1:-2]
    }
    assert rows["brixo"]["delivered"] == "2"
    assert rows["brixo"]["skipped"] == "4"  # two csat, two retractions
    assert rows["memory"]["delivered"] == "3"
    assert rows["opentelemetry"]["delivered"] == "9"
    assert table[-1] == (
        "links: 0 linked, 0 unresolved (window closed first), 0 waiting for their span, "
        "9 conversation ratings"
    )


def test_ratings_and_retractions_in_the_trace(capture: SpanCapture, local: Local) -> None:
    local()
    brixo_otel.feedback("nps", score=9, conversation_id="c", reasons=["helpful", "fast"])
    brixo_otel.retract_feedback(conversation_id="c")
    assert brixo_otel.flush(timeout=5)
    rating, retraction = capture.spans(attrs.FEEDBACK_SPAN_NAME)
    assert rating.attributes[attrs.SIGNAL_VALUE] == "nps"
    assert rating.attributes[attrs.SIGNAL_SCORE] == 9
    assert list(rating.attributes[attrs.SIGNAL_REASONS]) == ["helpful", "fast"]
    assert rating.events[0].attributes[attrs.GEN_AI_EVALUATION_SCORE_VALUE] == 9.0
    assert retraction.attributes[attrs.SIGNAL_VALUE] == "retracted"
    assert retraction.events == ()


class Remembering(SignalExporter):
    """Counts its deliveries in its durable state, as a two-step destination would."""

    name = "remembering"

    def export(self, signal: Signal) -> DeliveryResult:
        seen = int(self.state.get("count") or 0)
        self.state.set("count", str(seen + 1))
        self.state.set(f"item:{signal.conversation_id}", signal.id)
        return DeliveryResult.delivered()


def test_exporter_state_survives_the_client_and_is_per_destination(
    capture: SpanCapture, tmp_path: Path, local: Local
) -> None:
    outbox = tmp_path / "outbox.db"
    for expected in (1, 2):
        exporter = Remembering()
        local(exporters=[exporter], outbox_path=outbox)
        signal = brixo_otel.feedback("thumbs_up", conversation_id=f"c-{expected}")
        assert brixo_otel.flush(timeout=10)
        assert exporter.state.get("count") == str(expected)
        assert exporter.state.get(f"item:c-{expected}") == signal.id
        brixo_otel.shutdown()
    assert InMemorySignalExporter().state.get("count") is None
