"""Langfuse: ratings land as scores on the rated observation, against a contract server written
from specs/langfuse-scores.md (Langfuse's server cannot be installed here).

Traces reach the contract server through the docs' recipe (the app's own OTLP exporter, Basic
auth), so each test can check that the score addresses the observation Langfuse made of the
rated span.
"""

from __future__ import annotations

import base64
import dataclasses
import random
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

import brixo_otel
from brixo_otel._errors import ConfigurationError
from brixo_otel._exporter import MemoryExporterState
from brixo_otel._signal import RatedSpan, Signal, retraction, validate
from brixo_otel.exporters import DeliveryStatus
from brixo_otel.exporters._langfuse import LangfuseExporter, score_id
from brixo_otel.exporters._rated import UNRESOLVED
from brixo_otel.testing import BrixoTestServer
from tests._contract.langfuse import OTLP_TRACES, LangfuseContractServer

pytestmark = pytest.mark.timeout(60)

PUBLIC, SECRET = "pk-lf-1234", "sk-lf-secret-5678"
T0 = datetime(2026, 2, 3, 14, 22, 10, tzinfo=timezone.utc)
MODEL = "gpt-4o-mini"


@pytest.fixture
def langfuse() -> Iterator[LangfuseContractServer]:
    with LangfuseContractServer(PUBLIC, SECRET) as running:
        yield running


@pytest.fixture
def exporter(langfuse: LangfuseContractServer) -> Iterator[LangfuseExporter]:
    made = LangfuseExporter(PUBLIC, SECRET, base_url=langfuse.url)
    yield made
    made.shutdown()


def langfuse_traces(base_url: str) -> OTLPSpanExporter:
    """The docs' recipe: the app's own OTLP exporter, with the project's keys as Basic auth."""
    auth = base64.b64encode(f"{PUBLIC}:{SECRET}".encode()).decode()
    return OTLPSpanExporter(
        endpoint=f"{base_url}{OTLP_TRACES}",
        headers={"Authorization": f"Basic {auth}", "x-langfuse-ingestion-version": "4"},
        timeout=10,
    )


@pytest.fixture
def provider(langfuse: LangfuseContractServer) -> Iterator[TracerProvider]:
    made = TracerProvider()
    made.add_span_processor(SimpleSpanProcessor(langfuse_traces(langfuse.url)))
    yield made
    made.shutdown()


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def message_span(provider: TracerProvider, message_id: str) -> RatedSpan:
    attributes = {"gen_ai.request.model": MODEL, "brixo.message_id": message_id}
    with provider.get_tracer("tests").start_as_current_span(
        f"chat {MODEL}", attributes=attributes
    ) as span:
        context = span.get_span_context()
    return RatedSpan(context.trace_id, context.span_id, {"gen_ai.request.model": MODEL})


def rating(
    value: str, rated: RatedSpan | None, message: str, *, at: float = 0, **kwargs: Any
) -> Signal:
    signal = validate(value, message_id=message, occurred_at=T0 + timedelta(seconds=at), **kwargs)
    status = "linked" if rated is not None else "unresolved"
    return dataclasses.replace(signal, rated=rated, link_status=status)


def retract(message: str, *, at: float) -> Signal:
    return dataclasses.replace(
        retraction(message_id=message), occurred_at=T0 + timedelta(seconds=at)
    )


# -- the score ----------------------------------------------------------------------------------


def test_a_thumbs_up_is_a_boolean_score_on_the_rated_observation(
    langfuse: LangfuseContractServer, provider: TracerProvider, exporter: LangfuseExporter
) -> None:
    message = new_id("msg")
    rated = message_span(provider, message)
    signal = rating("thumbs_up", rated, message, user_message="spot on", reasons=["accurate"])

    result = exporter.export(signal)

    assert result.status is DeliveryStatus.DELIVERED, result.reason
    [score] = langfuse.scores()
    assert score == {
        "id": score_id("user_feedback", signal),
        "name": "user_feedback",
        "value": 1,
        "dataType": "BOOLEAN",
        "comment": "spot on",
        "traceId": rated.trace_id_hex,
        "observationId": rated.span_id_hex,
        "metadata": {
            "brixo.message_id": message,
            "brixo.signal.id": signal.id,
            "brixo.value": "thumbs_up",
            "brixo.reasons": ["accurate"],
        },
    }
    observation = langfuse.observation(score["observationId"])
    assert observation is not None and observation.trace_id == score["traceId"]
    assert observation.type == "GENERATION"
    [request] = langfuse.requests("POST scores")
    assert request.headers["authorization"] == "Basic " + base64.b64encode(
        f"{PUBLIC}:{SECRET}".encode()
    ).decode("ascii")


def test_a_changed_mind_replaces_the_one_score_and_a_retraction_deletes_it(
    langfuse: LangfuseContractServer, provider: TracerProvider, exporter: LangfuseExporter
) -> None:
    message = new_id("msg")
    rated = message_span(provider, message)
    assert exporter.export(rating("thumbs_up", rated, message)).status is DeliveryStatus.DELIVERED
    [first] = langfuse.scores()

    assert (
        exporter.export(rating("thumbs_down", rated, message, at=4)).status
        is DeliveryStatus.DELIVERED
    )

    [changed] = langfuse.scores()
    assert changed["id"] == first["id"] and changed["value"] == 0 and "comment" not in changed
    assert exporter.export(retract(message, at=8)).status is DeliveryStatus.DELIVERED
    assert langfuse.scores() == []
    again = exporter.export(retract(message, at=9))
    assert again.status is DeliveryStatus.DELIVERED and "nothing to delete" in again.reason


def test_an_older_rating_retried_late_is_superseded(
    langfuse: LangfuseContractServer, provider: TracerProvider, exporter: LangfuseExporter
) -> None:
    message = new_id("msg")
    rated = message_span(provider, message)
    assert exporter.export(retract(message, at=5)).status is DeliveryStatus.DELIVERED

    result = exporter.export(rating("thumbs_up", rated, message, at=1))

    assert result.status is DeliveryStatus.DELIVERED and "superseded" in result.reason
    assert langfuse.scores() == []


def test_csat_and_nps_are_numeric_scores(
    langfuse: LangfuseContractServer, provider: TracerProvider, exporter: LangfuseExporter
) -> None:
    message = new_id("msg")
    rated = message_span(provider, message)

    assert (
        exporter.export(rating("csat", rated, message, score=4)).status is DeliveryStatus.DELIVERED
    )

    [score] = langfuse.scores()
    assert (score["dataType"], score["value"]) == ("NUMERIC", 4.0)


def test_a_conversation_rating_is_a_session_score(
    langfuse: LangfuseContractServer, exporter: LangfuseExporter
) -> None:
    signal = validate("nps", conversation_id="conv-7", score=10, occurred_at=T0)

    assert exporter.export(signal).status is DeliveryStatus.DELIVERED

    [score] = langfuse.scores()
    assert score["sessionId"] == "conv-7" and "traceId" not in score
    assert (score["dataType"], score["value"]) == ("NUMERIC", 10.0)


def test_a_score_is_accepted_before_its_trace(
    langfuse: LangfuseContractServer, exporter: LangfuseExporter
) -> None:
    rated = RatedSpan(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, {})

    assert exporter.export(rating("thumbs_down", rated, "msg-1")).status is DeliveryStatus.DELIVERED

    [score] = langfuse.scores()
    assert score["traceId"] == "0af7651916cd43dd8448eb211c80319c"
    assert score["observationId"] == "b7ad6b7169203331"


def test_a_message_rating_whose_span_was_never_resolved_is_dead_lettered_unsent(
    langfuse: LangfuseContractServer, exporter: LangfuseExporter
) -> None:
    result = exporter.export(rating("thumbs_up", None, "msg-1"))

    assert (result.status, result.reason) == (DeliveryStatus.PERMANENT, UNRESOLVED)
    assert langfuse.requests() == []


# -- answers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, DeliveryStatus.PERMANENT),
        (401, DeliveryStatus.UNAUTHORIZED),
        (429, DeliveryStatus.THROTTLED),
        (502, DeliveryStatus.RETRY),
    ],
)
def test_answers_are_classified_and_no_key_is_ever_echoed(
    langfuse: LangfuseContractServer, exporter: LangfuseExporter, status: int, expected: Any
) -> None:
    encoded = base64.b64encode(f"{PUBLIC}:{SECRET}".encode()).decode()
    langfuse.fail_next(1, status, body={"message": f"bad key {SECRET} / Basic {encoded}"})

    result = exporter.export(rating("thumbs_up", RatedSpan(1, 2, {}), "msg-1"))

    assert result.status is expected
    assert SECRET not in result.reason and encoded not in result.reason
    assert SECRET not in repr(exporter)


def test_wrong_keys_are_unauthorized(langfuse: LangfuseContractServer) -> None:
    exporter = LangfuseExporter(PUBLIC, "sk-lf-wrong", base_url=langfuse.url)
    try:
        result = exporter.export(rating("thumbs_up", RatedSpan(1, 2, {}), "msg-1"))
    finally:
        exporter.shutdown()
    assert result.status is DeliveryStatus.UNAUTHORIZED


def test_configuration_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="secret_key"):
        LangfuseExporter(PUBLIC, "")
    with pytest.raises(ConfigurationError, match="public_key"):
        LangfuseExporter(" ", SECRET)
    with pytest.raises(ConfigurationError, match="plain http"):
        LangfuseExporter(PUBLIC, SECRET, base_url="http://langfuse.internal")
    made = LangfuseExporter(PUBLIC, SECRET)
    try:
        assert made.base_url == "https://cloud.langfuse.com"
    finally:
        made.shutdown()


# -- traces -------------------------------------------------------------------------------------


def test_the_feedback_span_is_an_evaluator_observation(
    langfuse: LangfuseContractServer, provider: TracerProvider
) -> None:
    with provider.get_tracer("tests").start_as_current_span(
        "brixo.feedback",
        attributes={
            "openinference.span.kind": "EVALUATOR",
            "brixo.rated.gen_ai.request.model": MODEL,
        },
    ):
        pass

    [observation] = langfuse.observations()
    assert observation.type == "EVALUATOR"


def test_traces_go_to_langfuse_with_its_keys_and_the_brixo_key_only_to_brixo(
    langfuse: LangfuseContractServer, brixo_server: BrixoTestServer
) -> None:
    """The docs' recipe: Langfuse's exporter on the app's provider, next to Brixo's."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(langfuse_traces(langfuse.url)))
    brixo_otel.configure(
        api_key="brixo-secret-key",
        base_url=brixo_server.url,
        traces_endpoint=brixo_server.traces_endpoint,
        tracer_provider=provider,
        exporters=[LangfuseExporter(PUBLIC, SECRET, base_url=langfuse.url)],
        outbox_path=":memory:",
    )

    @brixo_otel.message(message_id="msg-42", conversation_id="conv-42", name="answer")
    def answer() -> str:
        return "ok"

    answer()
    assert brixo_otel.flush(timeout=10)
    provider.force_flush()

    [observation] = langfuse.observations()
    assert observation.name == "answer" and observation.session_id == "conv-42"
    for request in langfuse.requests():
        assert "brixo-secret-key" not in str(request.headers)
        assert request.headers["authorization"].startswith("Basic ")
    brixo_traces = [r for r in brixo_server.requests() if r.path == "/v1/traces"]
    assert brixo_traces and all(SECRET not in str(r.headers) for r in brixo_traces)
    provider.shutdown()


def test_the_traces_endpoint_refuses_an_export_without_the_keys(
    langfuse: LangfuseContractServer,
) -> None:
    response = httpx.post(
        f"{langfuse.url}{OTLP_TRACES}",
        content=b"",
        headers={"Content-Type": "application/x-protobuf"},
        trust_env=False,
    )
    assert response.status_code == 401


# -- state: durable, ordered, shared ------------------------------------------------------------


def test_the_newest_rating_wins_however_concurrent_deliveries_interleave(
    langfuse: LangfuseContractServer, exporter: LangfuseExporter
) -> None:
    rated = RatedSpan(3, 4, {})
    signals = [
        rating("thumbs_up" if i % 2 else "thumbs_down", rated, "msg-race", at=i) for i in range(12)
    ]
    random.Random(7).shuffle(signals)
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(exporter.export, signals))

    assert {r.status for r in results} == {DeliveryStatus.DELIVERED}
    [score] = langfuse.scores()
    newest = max(signals, key=lambda s: s.occurred_at)
    assert score["metadata"]["brixo.signal.id"] == newest.id


def test_what_was_applied_is_remembered_in_the_exporters_state(
    langfuse: LangfuseContractServer,
) -> None:
    """A restarted process (a new exporter on the same outbox state) still skips a rating older
    than the one applied; a state it cannot read is treated as new, never as an error."""
    state = MemoryExporterState()
    rated = RatedSpan(5, 6, {})
    first = LangfuseExporter(PUBLIC, SECRET, base_url=langfuse.url)
    first.bind_state(state)
    assert (
        first.export(rating("thumbs_down", rated, "msg-9", at=10)).status
        is DeliveryStatus.DELIVERED
    )
    first.shutdown()

    again = LangfuseExporter(PUBLIC, SECRET, base_url=langfuse.url)
    again.bind_state(state)
    try:
        late = again.export(rating("thumbs_up", rated, "msg-9", at=1))
        assert "superseded" in late.reason
        state.set("message:msg-9", "{not json")
        assert (
            again.export(rating("thumbs_up", rated, "msg-9", at=2)).status
            is DeliveryStatus.DELIVERED
        )
    finally:
        again.shutdown()
    [score] = langfuse.scores()
    assert score["value"] == 1
