"""Feedback metrics: thumbs and messages counted by what produced the rated message."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import brixo_otel
from brixo_otel import attributes as attrs
from brixo_otel._feedback import _metrics
from brixo_otel.exporters import InMemorySignalExporter
from brixo_otel.testing import SpanCapture

Points = Counter[tuple[tuple[str, object], ...]]


class Metrics:
    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])

    def points(self, name: str) -> Points:
        data = self.reader.get_metrics_data()
        found: Points = Counter()
        for resource_metrics in data.resource_metrics if data else []:
            for scope in resource_metrics.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        for point in metric.data.data_points:
                            found[tuple(sorted(point.attributes.items()))] += point.value
        return found


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    collected = Metrics()
    yield collected
    collected.provider.shutdown()


def configure(capture: SpanCapture, metrics: Metrics, **kwargs: object) -> None:
    brixo_otel.configure(
        tracer_provider=capture.provider,
        meter_provider=metrics.provider,
        traces_endpoint="none",
        exporters=[InMemorySignalExporter()],
        outbox_path=":memory:",
        **kwargs,  # type: ignore[arg-type]
    )


def test_thumbs_and_messages_are_counted_by_the_model_of_the_rated_message(
    capture: SpanCapture, metrics: Metrics
) -> None:
    configure(capture, metrics, agent_version="v7")
    llm = capture.provider.get_tracer("some.llm.instrumentation")

    @brixo_otel.message(conversation_id="c")
    def answer(message_id: str, model: str) -> None:
        # as LLM instrumentations do: the model is on their own child span, not on ours
        with llm.start_as_current_span("chat") as span:
            span.set_attribute(attrs.GEN_AI_REQUEST_MODEL, model)

    for n, model in enumerate(["gpt-5", "gpt-5", "gpt-5", "haiku"]):
        answer(f"m-{n}", model)
    brixo_otel.feedback("thumbs_up", message_id="m-0")
    brixo_otel.feedback("thumbs_down", message_id="m-1")
    brixo_otel.feedback("thumbs_up", message_id="m-3")
    brixo_otel.feedback("thumbs_up", conversation_id="c")
    assert brixo_otel.flush(timeout=5)  # counted by the pipeline, once the rated span is known

    v7 = (attrs.AGENT_VERSION, "v7")  # from configure(), carried on the message span
    gpt, haiku = (attrs.GEN_AI_REQUEST_MODEL, "gpt-5"), (attrs.GEN_AI_REQUEST_MODEL, "haiku")
    assert metrics.points("brixo.messages") == {(v7, gpt): 3, (v7, haiku): 1}
    message = (attrs.SIGNAL_TARGET, "message")
    up, down = (attrs.SIGNAL_VALUE, "thumbs_up"), (attrs.SIGNAL_VALUE, "thumbs_down")
    assert metrics.points("brixo.feedback") == {
        (v7, message, up, gpt): 1,  # attribute names in sorted order
        (v7, message, down, gpt): 1,
        (v7, message, up, haiku): 1,
        ((attrs.SIGNAL_TARGET, "conversation"), up): 1,
    }
    # the feedback span carries the rated message's model too, gathered from the child span
    # (namespaced: a bare gen_ai.request.model would make backends count it as an LLM call)
    feedback_models = sorted(
        str(s.attributes.get("brixo.rated." + attrs.GEN_AI_REQUEST_MODEL))
        for s in capture.spans(attrs.FEEDBACK_SPAN_NAME)
    )
    assert feedback_models == ["None", "gpt-5", "gpt-5", "haiku"]


def test_metric_dimensions_are_an_allow_list_without_ids(
    capture: SpanCapture, metrics: Metrics
) -> None:
    with pytest.raises(brixo_otel.ConfigurationError, match="may not include ids"):
        configure(
            capture, metrics, metric_dimensions=[attrs.GEN_AI_REQUEST_MODEL, attrs.MESSAGE_ID]
        )
    with pytest.raises(TypeError, match="list of attribute names"):
        configure(capture, metrics, metric_dimensions="gen_ai.request.model")

    configure(capture, metrics, metric_dimensions=["app.tier"])

    @brixo_otel.message(message_id="m", name="answer")
    def answer() -> None:
        from opentelemetry import trace

        trace.get_current_span().set_attributes(
            {"app.tier": "gold", attrs.GEN_AI_REQUEST_MODEL: "gpt-5"}
        )

    answer()
    assert metrics.points("brixo.messages") == {(("app.tier", "gold"),): 1}


def test_distinct_values_per_dimension_are_capped(metrics: Metrics) -> None:
    counters = _metrics.FeedbackMetrics(metrics.provider, max_values_per_dimension=3)
    for n in range(6):
        counters.count_message({attrs.GEN_AI_REQUEST_MODEL: f"model-{n}"})
    models = Counter(
        {
            dict(key)[attrs.GEN_AI_REQUEST_MODEL]: n
            for key, n in metrics.points("brixo.messages").items()
        }
    )
    assert models == {"model-0": 1, "model-1": 1, "model-2": 1, _metrics.OTHER_VALUE: 3}
    assert _metrics.MAX_VALUES_PER_DIMENSION == 200  # what the client uses


def test_indexed_attributes_are_configurable(capture: SpanCapture, metrics: Metrics) -> None:
    configure(capture, metrics, indexed_attributes=["app.route"])

    @brixo_otel.message(message_id="m", name="answer")
    def answer() -> None:
        from opentelemetry import trace

        trace.get_current_span().set_attributes(
            {"app.route": "/chat", "app.secret": "x", attrs.GEN_AI_REQUEST_MODEL: "gpt-5"}
        )

    answer()
    brixo_otel.feedback("thumbs_up", message_id="m")
    assert brixo_otel.flush(timeout=5)
    feedback = capture.one(attrs.FEEDBACK_SPAN_NAME)
    assert feedback.attributes["brixo.rated.app.route"] == "/chat"
    assert "brixo.rated.app.secret" not in feedback.attributes
    # the model is a metric dimension, so it is kept as well
    assert feedback.attributes["brixo.rated." + attrs.GEN_AI_REQUEST_MODEL] == "gpt-5"
    with pytest.raises(TypeError, match="indexed_attributes must be a list"):
        configure(capture, metrics, indexed_attributes="app.route")


def test_messages_ended_in_many_threads_are_all_counted_and_the_queue_stays_bounded(
    metrics: Metrics,
) -> None:
    import threading

    counters = _metrics.FeedbackMetrics(metrics.provider)
    model = {attrs.GEN_AI_REQUEST_MODEL: "gpt-5", attrs.AGENT_VERSION: "v1"}
    per_thread = _metrics.MAX_UNCOUNTED_MESSAGES  # past the bound: counted on the way too

    def end_messages() -> None:
        for n in range(per_thread):
            counters.count_message(model if n % 2 else {})
            assert len(counters._uncounted) <= _metrics.MAX_UNCOUNTED_MESSAGES + 4

    threads = [threading.Thread(target=end_messages) for _ in range(4)]
    for thread in threads:
        thread.start()
    metrics.points("brixo.messages")  # a collection while messages end
    for thread in threads:
        thread.join()
    by_model = ((attrs.AGENT_VERSION, "v1"), (attrs.GEN_AI_REQUEST_MODEL, "gpt-5"))
    assert metrics.points("brixo.messages") == {by_model: 2 * per_thread, (): 2 * per_thread}


def test_a_client_configured_again_on_the_same_provider_keeps_counting(
    capture: SpanCapture, metrics: Metrics
) -> None:
    @brixo_otel.message(name="answer")
    def answer(message_id: str) -> None:
        pass

    configure(capture, metrics, agent_version="v1")
    answer("m-1")
    configure(capture, metrics, agent_version="v2")  # shuts the first client down
    answer("m-2")
    answer("m-3")
    assert metrics.points("brixo.messages") == {
        ((attrs.AGENT_VERSION, "v1"),): 1,
        ((attrs.AGENT_VERSION, "v2"),): 2,
    }


def test_ended_messages_never_pile_up_past_the_bound() -> None:
    counters = _metrics.FeedbackMetrics(None)  # counted, or dropped if nothing can read them
    for _ in range(_metrics.MAX_UNCOUNTED_MESSAGES):
        counters.count_message({attrs.GEN_AI_REQUEST_MODEL: "gpt-5"})
    assert counters._uncounted == []
