"""Phoenix: ratings land as annotations on the rated span, against a real Phoenix server.

Every test sends a real span with the OpenTelemetry SDK's own OTLP exporter (the docs' traces
recipe), rates it, and reads the result back through Phoenix's REST API.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import brixo_otel
from brixo_otel._errors import ConfigurationError
from brixo_otel._signal import RatedSpan, Signal, retraction, validate
from brixo_otel.exporters import BrixoSignalExporter, DeliveryStatus
from brixo_otel.exporters._langfuse import LangfuseExporter
from brixo_otel.exporters._mlflow import MLflowExporter
from brixo_otel.exporters._phoenix import PhoenixExporter
from brixo_otel.exporters._rated import UNRESOLVED
from brixo_otel.testing import BrixoTestServer
from tests._browser import chromium
from tests._contract.langfuse import LangfuseContractServer
from tests._mlflow import EXPERIMENT_HEADER, MLflowServer
from tests._phoenix import PROJECT, PROJECT_ATTRIBUTE, PhoenixServer
from tests._services import REPO, wait_for

pytest_plugins = ["tests.conftest_servers"]
pytestmark = pytest.mark.timeout(60, func_only=True)

#: Retries in tens of milliseconds, so the pipeline test sees several attempts within a second.
FAST = brixo_otel.RetryPolicy(initial_backoff=0.02, max_backoff=0.2)
T0 = datetime(2026, 2, 3, 14, 22, 10, tzinfo=timezone.utc)
MODEL = "gpt-4o-mini"


@pytest.fixture
def exporter(phoenix: PhoenixServer) -> Iterator[PhoenixExporter]:
    made = PhoenixExporter(phoenix.url, project=PROJECT)
    yield made
    made.shutdown()


@pytest.fixture(scope="module")
def provider(phoenix: PhoenixServer) -> Iterator[TracerProvider]:
    made = phoenix.tracer_provider()
    yield made
    made.shutdown()


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def message_span(
    provider: TracerProvider, message_id: str, conversation_id: str | None = None
) -> RatedSpan:
    """An LLM call's span as a decorated call site makes it, exported when it ends."""
    attributes: dict[str, Any] = {"gen_ai.request.model": MODEL, "brixo.message_id": message_id}
    if conversation_id is not None:
        attributes["gen_ai.conversation.id"] = conversation_id
    with provider.get_tracer("tests").start_as_current_span(
        f"chat {MODEL}", attributes=attributes
    ) as span:
        context = span.get_span_context()
    return RatedSpan(context.trace_id, context.span_id, {"gen_ai.request.model": MODEL})


def rating(
    value: str, rated: RatedSpan | None, message: str, *, at: float = 0, **kwargs: Any
) -> Signal:
    """A signal as the pipeline hands it to exporters: validated, its rated span resolved."""
    signal = validate(value, message_id=message, occurred_at=T0 + timedelta(seconds=at), **kwargs)
    status = "linked" if rated is not None else "unresolved"
    return dataclasses.replace(signal, rated=rated, link_status=status)


def retract(message: str, rated: RatedSpan | None, *, at: float) -> Signal:
    signal = retraction(message_id=message)
    return dataclasses.replace(
        signal, occurred_at=T0 + timedelta(seconds=at), rated=rated, link_status="linked"
    )


def rated_and_ingested(phoenix: PhoenixServer, provider: TracerProvider) -> tuple[str, RatedSpan]:
    message = new_id("msg")
    rated = message_span(provider, message)
    phoenix.wait_for_span(rated.span_id_hex)
    return message, rated


# -- the annotation -----------------------------------------------------------------------------


def test_a_thumbs_up_is_a_human_annotation_on_the_rated_span(
    phoenix: PhoenixServer, provider: TracerProvider, exporter: PhoenixExporter
) -> None:
    message, rated = rated_and_ingested(phoenix, provider)
    signal = rating(
        "thumbs_up", rated, message, user_message="spot on", reasons=["accurate", "concise"]
    )

    result = exporter.export(signal)

    assert result.status is DeliveryStatus.DELIVERED, result.reason
    [annotation] = phoenix.span_annotations(rated.span_id_hex)
    assert annotation["span_id"] == rated.span_id_hex
    assert annotation["name"] == "user_feedback"
    assert annotation["annotator_kind"] == "HUMAN"
    assert annotation["result"] == {"label": "thumbs_up", "score": 1.0, "explanation": "spot on"}
    assert annotation["identifier"] == f"brixo:user_feedback:{message}"
    assert annotation["metadata"] == {
        "brixo.message_id": message,
        "brixo.signal.id": signal.id,
        "brixo.reasons": ["accurate", "concise"],
    }


def test_a_changed_mind_updates_the_one_annotation_and_a_retraction_deletes_it(
    phoenix: PhoenixServer, provider: TracerProvider, exporter: PhoenixExporter
) -> None:
    message, rated = rated_and_ingested(phoenix, provider)
    assert (
        exporter.export(rating("thumbs_up", rated, message, at=0)).status
        is DeliveryStatus.DELIVERED
    )
    [first] = phoenix.span_annotations(rated.span_id_hex)

    down = rating("thumbs_down", rated, message, at=5, user_message="made up a citation")
    assert exporter.export(down).status is DeliveryStatus.DELIVERED

    [changed] = phoenix.span_annotations(rated.span_id_hex)
    assert changed["id"] == first["id"]
    assert changed["result"] == {
        "label": "thumbs_down",
        "score": 0.0,
        "explanation": "made up a citation",
    }
    assert changed["metadata"]["brixo.signal.id"] == down.id

    assert exporter.export(retract(message, rated, at=9)).status is DeliveryStatus.DELIVERED
    assert phoenix.span_annotations(rated.span_id_hex) == []


def test_an_older_rating_retried_after_a_newer_one_does_not_overwrite_it(
    phoenix: PhoenixServer, provider: TracerProvider, exporter: PhoenixExporter
) -> None:
    message, rated = rated_and_ingested(phoenix, provider)
    older, newer = (
        rating("thumbs_up", rated, message, at=0),
        rating("thumbs_down", rated, message, at=3),
    )
    assert exporter.export(newer).status is DeliveryStatus.DELIVERED

    result = exporter.export(older)

    assert result.status is DeliveryStatus.DELIVERED and "superseded" in result.reason
    [annotation] = phoenix.span_annotations(rated.span_id_hex)
    assert annotation["result"]["label"] == "thumbs_down"


def test_a_csat_rating_carries_its_score(
    phoenix: PhoenixServer, provider: TracerProvider, exporter: PhoenixExporter
) -> None:
    message, rated = rated_and_ingested(phoenix, provider)

    assert (
        exporter.export(rating("csat", rated, message, score=4)).status is DeliveryStatus.DELIVERED
    )

    [annotation] = phoenix.span_annotations(rated.span_id_hex)
    assert annotation["result"]["label"] == "csat" and annotation["result"]["score"] == 4.0


# -- before the trace, and without a span -------------------------------------------------------


def test_feedback_that_beats_its_trace_is_not_found_then_delivered_once_it_arrives(
    phoenix: PhoenixServer, provider: TracerProvider, exporter: PhoenixExporter
) -> None:
    held = InMemorySpanExporter()
    offline = TracerProvider(resource=provider.resource)
    offline.add_span_processor(SimpleSpanProcessor(held))
    message = new_id("msg")
    rated = message_span(offline, message)
    signal = rating("thumbs_up", rated, message)

    early = exporter.export(signal)

    assert early.status is DeliveryStatus.NOT_FOUND, early.reason
    assert "not ingested" in early.reason
    [span] = held.get_finished_spans()
    send_late(phoenix, span)
    phoenix.wait_for_span(rated.span_id_hex)
    assert exporter.export(signal).status is DeliveryStatus.DELIVERED
    [annotation] = phoenix.span_annotations(rated.span_id_hex)
    assert annotation["result"]["label"] == "thumbs_up"


def send_late(phoenix: PhoenixServer, span: ReadableSpan) -> None:
    exporter = OTLPSpanExporter(endpoint=f"{phoenix.url}/v1/traces", timeout=10)
    try:
        assert exporter.export([span]) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


def test_a_message_rating_whose_span_was_never_resolved_is_dead_lettered_unsent(
    phoenix: PhoenixServer,
) -> None:
    sent: list[httpx.Request] = []
    client = httpx.Client(event_hooks={"request": [sent.append]}, trust_env=False)
    exporter = PhoenixExporter(phoenix.url, project=PROJECT, client=client)
    try:
        result = exporter.export(rating("thumbs_down", None, new_id("msg")))
    finally:
        client.close()

    assert result.status is DeliveryStatus.PERMANENT
    assert result.reason == UNRESOLVED
    assert sent == []


# -- conversations ------------------------------------------------------------------------------


def test_a_conversation_rating_is_a_session_annotation_and_its_retraction_deletes_it(
    phoenix: PhoenixServer, provider: TracerProvider, exporter: PhoenixExporter
) -> None:
    conversation = new_id("conv")
    rated = message_span(provider, new_id("msg"), conversation)
    phoenix.wait_for_span(rated.span_id_hex)
    signal = dataclasses.replace(
        validate("nps", conversation_id=conversation, score=9, occurred_at=T0), link_status="linked"
    )

    assert exporter.export(signal).status is DeliveryStatus.DELIVERED, "session annotation"

    [annotation] = phoenix.session_annotations(conversation)
    assert annotation["session_id"] == conversation
    assert annotation["annotator_kind"] == "HUMAN"
    assert annotation["result"]["label"] == "nps" and annotation["result"]["score"] == 9.0
    withdrawn = dataclasses.replace(
        retraction(conversation_id=conversation), occurred_at=T0 + timedelta(seconds=1)
    )
    assert exporter.export(withdrawn).status is DeliveryStatus.DELIVERED
    assert phoenix.session_annotations(conversation) == []


def test_a_rating_of_an_unknown_conversation_waits_for_it(exporter: PhoenixExporter) -> None:
    signal = validate("csat", conversation_id=new_id("conv"), score=2, occurred_at=T0)

    result = exporter.export(signal)

    assert result.status is DeliveryStatus.NOT_FOUND, result.reason


# -- how Phoenix classifies the feedback span ---------------------------------------------------


def test_the_feedback_span_is_an_evaluator_span_not_an_llm_call(
    phoenix: PhoenixServer, provider: TracerProvider
) -> None:
    rated = message_span(provider, new_id("msg"))
    tracer = provider.get_tracer("tests")
    parent = _parent_context(rated)
    with tracer.start_as_current_span(
        "brixo.feedback",
        context=parent,
        attributes={
            "openinference.span.kind": "EVALUATOR",
            "brixo.rated.gen_ai.request.model": MODEL,
            "brixo.signal.value": "thumbs_up",
        },
    ) as span:
        feedback_id = f"{span.get_span_context().span_id:016x}"

    feedback = phoenix.wait_for_span(feedback_id)
    message = phoenix.wait_for_span(rated.span_id_hex)
    assert feedback["span_kind"] == "EVALUATOR"
    assert feedback["parent_id"] == rated.span_id_hex
    assert message["span_kind"] == "LLM"


def _parent_context(rated: RatedSpan) -> Any:
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    context = SpanContext(
        rated.trace_id, rated.span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)
    )
    return trace.set_span_in_context(NonRecordingSpan(context), Context())


# -- configuration ------------------------------------------------------------------------------


def test_configuration_is_checked_and_nothing_secret_is_shown() -> None:
    made = PhoenixExporter("http://127.0.0.1:6006", api_key="phx-secret-key")
    try:
        assert "phx-secret-key" not in repr(made)
        assert made.project == "default"
    finally:
        made.shutdown()
    with pytest.raises(ConfigurationError, match="plain http"):
        PhoenixExporter("http://phoenix.example.com")
    with pytest.raises(ConfigurationError, match="traces endpoint"):
        PhoenixExporter("http://127.0.0.1:6006/v1/traces")
    with pytest.raises(ConfigurationError, match="reserved"):
        PhoenixExporter("http://127.0.0.1:6006", annotation_name="note")


def test_the_api_key_goes_as_a_bearer_token(phoenix: PhoenixServer) -> None:
    sent: list[httpx.Request] = []
    client = httpx.Client(event_hooks={"request": [sent.append]}, trust_env=False)
    exporter = PhoenixExporter(phoenix.url, api_key="phx-key", project=PROJECT, client=client)
    try:
        exporter.export(validate("csat", conversation_id=new_id("conv"), score=3, occurred_at=T0))
    finally:
        client.close()
    [request] = sent
    assert request.headers["authorization"] == "Bearer phx-key"


# -- through the pipeline: one click, every destination -----------------------------------------


class GatedExporter(SpanExporter):
    """Holds spans until `release()`: a trace that reaches its backend after the feedback."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self._held: list[ReadableSpan] = []
        self._open = False
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            if not self._open:
                self._held.extend(spans)
                return SpanExportResult.SUCCESS
        return self.inner.export(spans)

    def release(self) -> None:
        with self._lock:
            self._open, held = True, self._held
            self._held = []
        assert self.inner.export(held) is SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.inner.shutdown()


def test_one_click_reaches_brixo_phoenix_mlflow_and_langfuse_even_with_one_down_and_late_traces(
    phoenix: PhoenixServer,
    mlflow: MLflowServer,
    mlflow_experiment: str,
    brixo_server: BrixoTestServer,
    tmp_path: Path,
) -> None:
    """The issue's fan-out: the traces reach Phoenix and MLflow only after the click, and
    Langfuse is down at first; each destination gets the rating, on the rated span."""
    langfuse = LangfuseContractServer("pk-lf-1", "sk-lf-1")
    late_phoenix = GatedExporter(OTLPSpanExporter(endpoint=f"{phoenix.url}/v1/traces"))
    late_mlflow = GatedExporter(
        OTLPSpanExporter(
            endpoint=f"{mlflow.url}/v1/traces", headers={EXPERIMENT_HEADER: mlflow_experiment}
        )
    )
    provider = TracerProvider(resource=Resource.create({PROJECT_ATTRIBUTE: PROJECT}))
    for exporter in (late_phoenix, late_mlflow):
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    langfuse.fail_always(502, route="POST scores")
    try:
        brixo_otel.configure(
            api_key="test-key",
            base_url=brixo_server.url,
            traces_endpoint=brixo_server.traces_endpoint,
            tracer_provider=provider,
            link_secret="fan-out-secret-0123456789",
            retry_policy=FAST,
            outbox_path=tmp_path / "outbox.db",
            exporters=[
                BrixoSignalExporter(api_key="test-key", base_url=brixo_server.url),
                PhoenixExporter(phoenix.url, project=PROJECT),
                MLflowExporter(mlflow.url),
                LangfuseExporter("pk-lf-1", "sk-lf-1", base_url=langfuse.url),
            ],
        )
        message, conversation = new_id("msg"), new_id("conv")

        @brixo_otel.message(message_id=message, conversation_id=conversation, name="answer")
        def answer() -> tuple[str, RatedSpan]:
            context = trace.get_current_span().get_span_context()
            llm = provider.get_tracer("llm").start_span(
                f"chat {MODEL}", attributes={"gen_ai.request.model": MODEL}
            )
            llm.end()
            return brixo_otel.link_token(), RatedSpan(context.trace_id, context.span_id, {})

        token, rated = answer()
        provider.force_flush()  # Brixo's batched trace export, which its first delivery awaits
        brixo_otel.feedback("thumbs_up", link=token, user_message="exactly right")

        wait_for(lambda: brixo_server.signals() or None, 15.0, "Brixo to receive the signal")
        assert phoenix.span_annotations(rated.span_id_hex) == []  # its span is not there yet
        late_phoenix.release()
        late_mlflow.release()
        [annotation] = wait_for(
            lambda: phoenix.span_annotations(rated.span_id_hex) or None, 20.0, "the annotation"
        )
        assert annotation["result"]["label"] == "thumbs_up"
        assert annotation["metadata"]["brixo.message_id"] == message
        [assessment] = wait_for(
            lambda: mlflow.assessments(rated.trace_id_hex) or None, 20.0, "the assessment"
        )
        assert assessment["span_id"] == rated.span_id_hex
        assert assessment["feedback"] == {"value": True}
        assert langfuse.scores() == []  # still down

        # The library's own feedback span, in the rated trace: an evaluator, not an LLM call.
        [feedback] = wait_for(
            lambda: (
                phoenix.find_spans({"trace_id": rated.trace_id_hex, "name": "brixo.feedback"})
                or None
            ),
            20.0,
            "Phoenix to ingest the feedback span",
        )
        assert feedback["span_kind"] == "EVALUATOR"
        assert feedback["parent_id"] == rated.span_id_hex
        assert feedback["attributes"]["brixo.rated.gen_ai.request.model"] == MODEL
        assert "gen_ai.request.model" not in feedback["attributes"]
        assert mlflow_span_type(mlflow, rated, "brixo.feedback") == "EVALUATOR"
        assert mlflow_span_type(mlflow, rated, f"chat {MODEL}") == "LLM"

        langfuse.clear_faults()
        [score] = wait_for(lambda: langfuse.scores() or None, 20.0, "the Langfuse score")
        assert (score["traceId"], score["observationId"]) == (
            rated.trace_id_hex,
            rated.span_id_hex,
        )
        assert brixo_otel.flush(timeout=10)
    finally:
        brixo_otel.shutdown(timeout=5.0)
        provider.shutdown()
        langfuse.close()


def mlflow_span_type(mlflow: MLflowServer, rated: RatedSpan, name: str) -> str | None:
    """`mlflow.spanType` of the span called `name` in the rated trace, once MLflow has it."""

    def find() -> str | None:
        stored = mlflow.trace(rated.trace_id_hex) or {}
        for span in stored.get("spans", []):
            if span["name"] == name:
                for attribute in span.get("attributes", []):
                    if attribute["key"] == "mlflow.spanType":
                        return str(next(iter(attribute["value"].values())))
        return None

    return wait_for(find, 20.0, f"MLflow to store span {name!r}")


def test_a_decorated_message_rated_by_its_id_alone_is_annotated_changed_and_retracted(
    phoenix: PhoenixServer, tmp_path: Path
) -> None:
    """The plain app flow: no link token; the pipeline finds the rated span in its index."""
    provider = phoenix.tracer_provider()
    delivered: list[str] = []
    brixo_otel.configure(
        tracer_provider=provider,
        traces_endpoint="none",
        retry_policy=FAST,
        outbox_path=tmp_path / "outbox.db",
        exporters=[PhoenixExporter(phoenix.url, project=PROJECT)],
        on_delivered=lambda signal, destination: (
            delivered.append(signal.value) if destination == "phoenix" else None
        ),
    )
    message = new_id("msg")
    try:

        @brixo_otel.message(message_id=message, name="answer")
        def answer() -> int:
            return trace.get_current_span().get_span_context().span_id

        span_id = f"{answer():016x}"
        brixo_otel.feedback("thumbs_up", message_id=message)
        wait_for(lambda: delivered == ["thumbs_up"] or None, 20.0, "the thumbs up")
        [annotation] = phoenix.span_annotations(span_id)
        assert annotation["result"]["label"] == "thumbs_up"

        brixo_otel.feedback("thumbs_down", message_id=message, user_message="wrong")
        wait_for(lambda: len(delivered) == 2 or None, 20.0, "the thumbs down")
        [changed] = phoenix.span_annotations(span_id)
        assert changed["id"] == annotation["id"]
        assert changed["result"]["label"] == "thumbs_down"

        brixo_otel.retract_feedback(message_id=message)
        wait_for(lambda: len(delivered) == 3 or None, 20.0, "the retraction")
        assert phoenix.span_annotations(span_id) == []
    finally:
        brixo_otel.shutdown(timeout=5.0)
        provider.shutdown()


def test_a_rating_of_a_message_never_seen_is_dead_lettered_when_the_link_window_closes(
    phoenix: PhoenixServer, tmp_path: Path
) -> None:
    reasons: list[str] = []
    brixo_otel.configure(
        tracer_provider=TracerProvider(),
        traces_endpoint="none",
        retry_policy=FAST,
        link_window=0.5,
        outbox_path=tmp_path / "outbox.db",
        exporters=[PhoenixExporter(phoenix.url, project=PROJECT)],
        on_error=lambda signal, destination, reason: reasons.append(reason),
    )
    try:
        brixo_otel.feedback("thumbs_up", message_id=new_id("never-seen"))
        wait_for(lambda: reasons or None, 20.0, "the dead letter")
    finally:
        brixo_otel.shutdown(timeout=5.0)
    assert reasons == [UNRESOLVED]


# -- what a person sees -------------------------------------------------------------------------

#: The picture in docs/destinations/phoenix.md; rewritten when UPDATE_DOCS_SCREENSHOTS=1.
SCREENSHOT = REPO / "docs" / "destinations" / "phoenix-annotation.png"


def test_phoenix_shows_the_thumbs_on_the_rated_span_in_its_ui(
    phoenix: PhoenixServer, tmp_path: Path
) -> None:
    """Phoenix's own UI, in headless Chromium: the rated span's annotations list the user's
    thumbs as a HUMAN annotation with its comment, and the feedback span sits under the
    message as an evaluator."""
    provider = phoenix.tracer_provider()
    delivered: list[str] = []
    brixo_otel.configure(
        tracer_provider=provider,
        traces_endpoint="none",
        retry_policy=FAST,
        outbox_path=tmp_path / "outbox.db",
        exporters=[PhoenixExporter(phoenix.url, project=PROJECT)],
        on_delivered=lambda signal, destination: (
            delivered.append(destination) if destination == "phoenix" else None
        ),
    )
    message = new_id("msg")
    try:

        @brixo_otel.message(message_id=message, conversation_id=new_id("conv"), name="answer")
        def answer() -> int:
            llm = provider.get_tracer("llm").start_span(
                f"chat {MODEL}", attributes={"gen_ai.request.model": MODEL}
            )
            llm.end()
            return trace.get_current_span().get_span_context().span_id

        span_id = f"{answer():016x}"
        brixo_otel.feedback(
            "thumbs_down", message_id=message, user_message="The renewal date is wrong"
        )
        wait_for(lambda: delivered or None, 20.0, "the annotation")
        assert brixo_otel.flush(timeout=10)
    finally:
        brixo_otel.shutdown(timeout=5.0)
        provider.shutdown()
    span = phoenix.wait_for_span(span_id)
    trace_id = span["context"]["trace_id"]
    wait_for(
        lambda: phoenix.find_spans({"trace_id": trace_id, "name": "brixo.feedback"}) or None,
        20.0,
        "the feedback span",
    )
    projects = phoenix.http.get("/v1/projects").json()["data"]
    [project_id] = [p["id"] for p in projects if p["name"] == PROJECT]

    target = SCREENSHOT if os.environ.get("UPDATE_DOCS_SCREENSHOTS") == "1" else tmp_path / "p.png"
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1600, "height": 900})
        page.goto(
            f"{phoenix.url}/projects/{project_id}/traces/{trace_id}"
            f"?selectedSpanNodeId={span['id']}",
            wait_until="networkidle",
            timeout=30_000,
        )
        toggle = page.get_by_role("button", name="Annotations", exact=True)
        toggle.wait_for(timeout=20_000)
        if toggle.get_attribute("aria-expanded") != "true":
            toggle.click()
        card = page.locator("section").filter(has=toggle)
        card.get_by_role("radio", name="Table").or_(
            card.get_by_role("button", name="Table")
        ).first.click(timeout=10_000)
        row = card.get_by_role("row").filter(has_text="HUMAN")
        row.first.wait_for(timeout=10_000)
        text = row.first.inner_text()
        assert "user_feedback" in text and "thumbs_down" in text
        assert "The renewal date is wrong" in text
        assert page.get_by_text("brixo.feedback").first.is_visible()
        page.screenshot(path=str(target))
    assert target.stat().st_size > 10_000
