"""Issue 13, defect 5: every input to `feedback()` either gives a Signal that goes all the way (the
outbox stores it, a strict Brixo server accepts it) or raises `InvalidSignal`; nothing is
accepted and then lost, and nothing else is raised."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider

import brixo_otel
from brixo_otel import InvalidSignal, Signal
from brixo_otel._delivery._outbox import Outbox
from brixo_otel.exporters import BrixoSignalExporter, DeliveryStatus
from brixo_otel.testing import BrixoTestServer

pytestmark = pytest.mark.timeout(120)

#: Every code point, lone surrogates and NUL included (hypothesis leaves surrogates out of
#: `st.text()` unless asked).
ANY_CHARACTER = st.characters(codec=None, categories=None)
TEXT = st.text(ANY_CHARACTER, max_size=40) | st.text(max_size=600)
#: Ids as apps make them (UUIDs, slugs), and anything at all.
IDS = (
    st.none()
    | st.uuids().map(str)
    | st.from_regex(r"[A-Za-z0-9_.:/-]{1,40}", fullmatch=True)
    | st.sampled_from(["m-1", "a/b?c#d", "..", "x" * 512, "x" * 513, " m ", "\ud800", "a\x00b"])
    | TEXT
)
OFFSETS = st.builds(
    timezone,
    st.timedeltas(
        min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)
    ),
)
MOMENTS = (
    st.none()
    | st.datetimes(timezones=st.none() | OFFSETS)  # year 1 to 9999, naive or not
    | st.sampled_from([datetime.min, datetime.max, datetime.max.replace(tzinfo=timezone.utc)])
    | st.datetimes(timezones=OFFSETS).map(lambda d: d.isoformat())
    | TEXT
)
VALUES = st.sampled_from(["thumbs_up", "thumbs_down", "csat", "nps", "retracted"]) | TEXT
VALID_VALUES = st.sampled_from(["thumbs_up", "thumbs_down"])
REASONS = st.none() | st.lists(
    st.sampled_from(["too_long", "too_long\n", "incorrect"]) | TEXT, max_size=12
)
SCORES = st.none() | st.integers(min_value=-3, max_value=12)


@pytest.fixture(scope="module")
def server() -> Iterator[BrixoTestServer]:
    with BrixoTestServer(require_known_ids=False) as running:
        yield running


@pytest.fixture(scope="module")
def exporter(server: BrixoTestServer) -> Iterator[BrixoSignalExporter]:
    made = BrixoSignalExporter(api_key=server.api_key, base_url=server.url)
    yield made
    made.shutdown()


@pytest.fixture(scope="module")
def client() -> Iterator[brixo_otel.Client]:
    made = brixo_otel.Client(
        outbox_path=":memory:",
        exporters=[],
        traces_endpoint="none",
        tracer_provider=TracerProvider(),
    )
    yield made
    made.shutdown(timeout=2)


@pytest.fixture(scope="module")
def outbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outbox]:
    made = Outbox(str(tmp_path_factory.mktemp("property") / "o.db"))
    yield made
    made.close()


@st.composite
def feedback_inputs(draw: st.DrawFn) -> dict[str, Any]:
    """Keyword arguments for `feedback()`: each one, three times in four, of a kind an app would
    pass, else anything at all, so both accepted and refused signals are drawn often."""

    def either(usual: st.SearchStrategy[Any], anything: st.SearchStrategy[Any]) -> Any:
        return draw(usual if draw(st.integers(0, 3)) else anything)

    usual_ids = st.uuids().map(str) | st.from_regex(r"[A-Za-z0-9_.:/-]{1,40}", fullmatch=True)
    return {
        "value": either(VALID_VALUES, VALUES),
        "message_id": either(usual_ids, IDS),
        "conversation_id": either(st.none() | usual_ids, IDS),
        "user_message": either(st.none() | st.text(max_size=200), st.none() | TEXT),
        "occurred_at": either(st.none() | st.datetimes(timezones=OFFSETS), MOMENTS),
        "score": either(st.none(), SCORES),
        "reasons": either(
            st.none() | st.lists(st.sampled_from(["too_long", "incorrect"])), REASONS
        ),
    }


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
@given(inputs=feedback_inputs())
def test_every_input_is_delivered_or_refused_as_invalid(
    client: brixo_otel.Client,
    exporter: BrixoSignalExporter,
    outbox: Outbox,
    server: BrixoTestServer,
    inputs: dict[str, Any],
) -> None:
    try:
        signal = client.feedback(**inputs)
    except InvalidSignal as exc:
        assert exc.reason  # says why (and, for one input, which: `exc.field`)
        event(f"refused: {exc.reason}")
        return
    assert isinstance(signal, Signal)
    # It survives the outbox as stored on disk, unchanged ...
    assert Signal.from_json(signal.to_json()) == signal
    outbox.add(signal, ["brixo"])
    [claimed] = outbox.claim(["brixo"], 1)
    assert claimed.signal == signal
    outbox.mark_delivered(claimed)
    # ... and a strict Signals API takes what the Brixo exporter sends of it.
    event("accepted, sent to the server" if exporter.accepts(signal) else "accepted")
    if exporter.accepts(signal):
        before = len(server.signals())
        result = exporter.export(signal)
        assert result.status is DeliveryStatus.DELIVERED, result.reason
        [received] = server.signals()[before:]
        assert received.idempotency_key == signal.id
        assert received.target_id == (signal.message_id or signal.conversation_id)
