"""MLflow: ratings land as HUMAN assessments pinned to the rated span, against a real MLflow.

Every test sends a real span with the OpenTelemetry SDK's own OTLP exporter (the docs' traces
recipe, `x-mlflow-experiment-id` header), rates it, and reads the result back through MLflow's
REST API.
"""

from __future__ import annotations

import base64
import dataclasses
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from brixo_otel._errors import ConfigurationError
from brixo_otel._signal import RatedSpan, Signal, retraction, validate
from brixo_otel.exporters import DeliveryStatus
from brixo_otel.exporters._mlflow import MLflowExporter, assessment_id
from brixo_otel.exporters._rated import UNRESOLVED
from tests._mlflow import EXPERIMENT_HEADER, MLflowServer

pytest_plugins = ["tests.conftest_servers"]
pytestmark = pytest.mark.timeout(60, func_only=True)

T0 = datetime(2026, 2, 3, 14, 22, 10, tzinfo=timezone.utc)
MODEL = "gpt-4o-mini"


@pytest.fixture
def exporter(mlflow: MLflowServer) -> Iterator[MLflowExporter]:
    made = MLflowExporter(mlflow.url)
    yield made
    made.shutdown()


@pytest.fixture(scope="module")
def provider(mlflow: MLflowServer, mlflow_experiment: str) -> Iterator[TracerProvider]:
    made = mlflow.tracer_provider(mlflow_experiment)
    yield made
    made.shutdown()


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def message_span(provider: TracerProvider, message_id: str) -> RatedSpan:
    attributes = {
        "gen_ai.request.model": MODEL,
        "brixo.message_id": message_id,
        "gen_ai.conversation.id": "conv-1",
    }
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


def retract(message: str, rated: RatedSpan | None, *, at: float) -> Signal:
    return dataclasses.replace(
        retraction(message_id=message),
        occurred_at=T0 + timedelta(seconds=at),
        rated=rated,
        link_status="linked",
    )


def rated_and_stored(mlflow: MLflowServer, provider: TracerProvider) -> tuple[str, RatedSpan]:
    message = new_id("msg")
    rated = message_span(provider, message)
    mlflow.wait_for_trace(rated.trace_id_hex)
    return message, rated


def ours(mlflow: MLflowServer, rated: RatedSpan) -> list[dict[str, Any]]:
    return [
        a for a in mlflow.assessments(rated.trace_id_hex) if a["assessment_name"] == "user_feedback"
    ]


# -- the assessment -----------------------------------------------------------------------------


def test_a_thumbs_up_is_a_human_assessment_pinned_to_the_rated_span(
    mlflow: MLflowServer, provider: TracerProvider, exporter: MLflowExporter
) -> None:
    message, rated = rated_and_stored(mlflow, provider)
    signal = rating("thumbs_up", rated, message, user_message="spot on", reasons=["accurate"])

    result = exporter.export(signal)

    assert result.status is DeliveryStatus.DELIVERED, result.reason
    [assessment] = ours(mlflow, rated)
    assert assessment["assessment_id"] == assessment_id("user_feedback", signal)
    assert assessment["trace_id"] == f"tr-{rated.trace_id_hex}"
    assert assessment["span_id"] == rated.span_id_hex
    assert assessment["source"] == {"source_type": "HUMAN", "source_id": "end_user"}
    assert assessment["feedback"] == {"value": True}
    assert assessment["rationale"] == "spot on"
    assert assessment["metadata"] == {
        "brixo.message_id": message,
        "brixo.signal.id": signal.id,
        "brixo.value": "thumbs_up",
        "brixo.reasons": "accurate",
    }


def test_a_changed_mind_patches_the_one_assessment_and_a_retraction_deletes_it(
    mlflow: MLflowServer, provider: TracerProvider, exporter: MLflowExporter
) -> None:
    message, rated = rated_and_stored(mlflow, provider)
    up = rating("thumbs_up", rated, message, at=0, user_message="great", reasons=["accurate"])
    assert exporter.export(up).status is DeliveryStatus.DELIVERED

    down = rating("thumbs_down", rated, message, at=5)
    assert exporter.export(down).status is DeliveryStatus.DELIVERED

    [assessment] = ours(mlflow, rated)
    assert assessment["feedback"] == {"value": False}
    # Nothing of the first rating survives: MLflow merges metadata, so every key is re-sent.
    assert assessment.get("rationale", "") == ""
    assert assessment["metadata"]["brixo.reasons"] == ""
    assert assessment["metadata"]["brixo.signal.id"] == down.id

    assert exporter.export(retract(message, rated, at=9)).status is DeliveryStatus.DELIVERED
    assert ours(mlflow, rated) == []


def test_a_create_that_finds_the_assessment_already_there_patches_it(
    mlflow: MLflowServer, provider: TracerProvider
) -> None:
    """A create whose answer was lost leaves the assessment in MLflow and nothing in our state:
    the retry's POST gets 500 "constraint violation", and must end as a PATCH, not a retry."""
    message, rated = rated_and_stored(mlflow, provider)
    first, second = MLflowExporter(mlflow.url), MLflowExporter(mlflow.url)  # separate states
    try:
        assert first.export(rating("thumbs_up", rated, message)).status is DeliveryStatus.DELIVERED

        result = second.export(rating("csat", rated, message, at=2, score=2))
    finally:
        first.shutdown()
        second.shutdown()

    assert result.status is DeliveryStatus.DELIVERED, result.reason
    [assessment] = ours(mlflow, rated)
    assert assessment["feedback"] == {"value": 2.0}
    assert assessment["metadata"]["brixo.value"] == "csat"


def test_an_assessment_deleted_in_mlflow_is_made_again_on_the_next_rating(
    mlflow: MLflowServer, provider: TracerProvider, exporter: MLflowExporter
) -> None:
    message, rated = rated_and_stored(mlflow, provider)
    up = rating("thumbs_up", rated, message)
    assert exporter.export(up).status is DeliveryStatus.DELIVERED
    made = assessment_id("user_feedback", up)
    deleted = mlflow.http.delete(
        f"/api/3.0/mlflow/traces/tr-{rated.trace_id_hex}/assessments/{made}"
    )
    assert deleted.status_code == 200

    assert (
        exporter.export(rating("thumbs_down", rated, message, at=1)).status
        is DeliveryStatus.DELIVERED
    )

    [assessment] = ours(mlflow, rated)
    assert assessment["feedback"] == {"value": False}


# -- before the trace, and without a span -------------------------------------------------------


def test_feedback_that_beats_its_trace_is_not_found_then_delivered_once_it_arrives(
    mlflow: MLflowServer, mlflow_experiment: str, exporter: MLflowExporter
) -> None:
    held = InMemorySpanExporter()
    offline = TracerProvider()
    offline.add_span_processor(SimpleSpanProcessor(held))
    message = new_id("msg")
    rated = message_span(offline, message)
    signal = rating("thumbs_down", rated, message)

    early = exporter.export(signal)

    assert early.status is DeliveryStatus.NOT_FOUND, early.reason
    late = OTLPSpanExporter(
        endpoint=f"{mlflow.url}/v1/traces", headers={EXPERIMENT_HEADER: mlflow_experiment}
    )
    try:
        assert late.export(held.get_finished_spans()) is SpanExportResult.SUCCESS
    finally:
        late.shutdown()
    mlflow.wait_for_trace(rated.trace_id_hex)
    assert exporter.export(signal).status is DeliveryStatus.DELIVERED
    [assessment] = ours(mlflow, rated)
    assert assessment["feedback"] == {"value": False}


def test_a_message_rating_whose_span_was_never_resolved_is_dead_lettered_unsent(
    mlflow: MLflowServer,
) -> None:
    sent: list[httpx.Request] = []
    client = httpx.Client(event_hooks={"request": [sent.append]}, trust_env=False)
    exporter = MLflowExporter(mlflow.url, client=client)
    try:
        result = exporter.export(rating("thumbs_up", None, new_id("msg")))
    finally:
        client.close()

    assert (result.status, result.reason) == (DeliveryStatus.PERMANENT, UNRESOLVED)
    assert sent == []


def test_conversation_ratings_are_not_taken(exporter: MLflowExporter) -> None:
    assert not exporter.accepts(validate("csat", conversation_id="conv-1", score=5))
    assert exporter.accepts(validate("nps", message_id="m", score=5))
    assert exporter.accepts(retraction(message_id="m"))


# -- how MLflow types the feedback span ---------------------------------------------------------


def test_the_feedback_span_is_an_evaluator_span_not_an_llm_call(
    mlflow: MLflowServer, provider: TracerProvider
) -> None:
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    tracer = provider.get_tracer("tests")
    rated = message_span(provider, new_id("msg"))
    parent = trace.set_span_in_context(
        NonRecordingSpan(
            SpanContext(rated.trace_id, rated.span_id, True, TraceFlags(TraceFlags.SAMPLED))
        ),
        Context(),
    )
    with tracer.start_as_current_span(
        "brixo.feedback",
        context=parent,
        attributes={
            "openinference.span.kind": "EVALUATOR",
            "brixo.rated.gen_ai.request.model": MODEL,
        },
    ):
        pass

    def both_spans() -> dict[str, dict[str, Any]] | None:
        stored = mlflow.trace(rated.trace_id_hex)
        spans = {s["name"]: s for s in (stored or {}).get("spans", [])}
        return spans if len(spans) == 2 else None

    from tests._services import wait_for

    spans = wait_for(both_spans, 15.0, "mlflow to store both spans")
    feedback, message = spans["brixo.feedback"], spans[f"chat {MODEL}"]
    assert _attribute(feedback, "mlflow.spanType") == "EVALUATOR"
    assert _attribute(message, "mlflow.spanType") == "LLM"
    assert base64.b64decode(feedback["parent_span_id"]) == rated.span_id.to_bytes(8, "big")


def _attribute(span: dict[str, Any], key: str) -> Any:
    for attribute in span.get("attributes", []):
        if attribute["key"] == key:
            return next(iter(attribute["value"].values()))
    return None


# -- configuration ------------------------------------------------------------------------------


def test_the_token_goes_as_a_bearer_token_and_never_in_a_repr(mlflow: MLflowServer) -> None:
    sent: list[httpx.Request] = []
    client = httpx.Client(event_hooks={"request": [sent.append]}, trust_env=False)
    exporter = MLflowExporter(mlflow.url, token="mlf-secret-token", client=client)
    try:
        rated = RatedSpan(1, 2, {})
        exporter.export(rating("thumbs_up", rated, new_id("msg")))
    finally:
        client.close()
    [request] = sent
    assert request.headers["authorization"] == "Bearer mlf-secret-token"
    assert "mlf-secret-token" not in repr(exporter)
    with pytest.raises(ConfigurationError, match="tracking_uri"):
        MLflowExporter("databricks")
