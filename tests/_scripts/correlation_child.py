"""One side of a cross-process correlation test; prints what it saw as one JSON line.

`answer`: produce a decorated assistant message (the model on a child span, as LLM
instrumentations do) and print its trace id, span id and a link token.
`feedback`: give feedback on that message, by id (through the shared index) or by token, wait
(bounded, within the link window) for the pipeline to emit it, and print the `brixo.feedback`
span and the feedback metric points this process recorded. With `--ready` it first prints
`{"committed": true}` and waits for a line on stdin: the test then makes process A answer, so
the feedback was committed before A's message (and its index write) existed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for tests._services

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import brixo_otel
from brixo_otel import attributes as attrs
from brixo_otel.exporters import InMemorySignalExporter
from brixo_otel.testing import SpanCapture
from tests._services import wait_for


def main() -> None:
    mode, span_index, message_id = sys.argv[1], sys.argv[2], sys.argv[3]
    capture = SpanCapture()
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    brixo_otel.configure(
        tracer_provider=capture.provider,
        meter_provider=meters,
        span_index=span_index,
        link_secret="correlation-test-secret-0123",
        agent_version="agent-7" if mode == "answer" else "agent-in-b",
        traces_endpoint="none",
        exporters=[InMemorySignalExporter()],
        outbox_path=":memory:",
        link_window=30,
    )
    if mode == "answer":

        @brixo_otel.message(conversation_id="conv-x", name="answer")
        def answer(message_id: str) -> str:
            with capture.provider.get_tracer("llm").start_as_current_span("chat") as llm:
                llm.set_attribute(attrs.GEN_AI_REQUEST_MODEL, "gpt-5")
            return brixo_otel.link_token()

        token = answer(message_id)
        span = capture.one("answer")
        print(
            json.dumps(
                {
                    "trace_id": span.context.trace_id,
                    "span_id": span.context.span_id,
                    "token": token,
                }
            )
        )
    else:
        extra = sys.argv[4:]
        ready = "--ready" in extra
        token = next((arg for arg in extra if arg != "--ready"), None)
        brixo_otel.feedback("thumbs_up", message_id=message_id or None, link=token)
        if ready:
            print(json.dumps({"committed": True}), flush=True)
            sys.stdin.readline()
        # the pipeline links as soon as A's span is in the shared index, then emits the span
        wait_for(
            lambda: capture.spans(attrs.FEEDBACK_SPAN_NAME) or None,
            25,
            "the feedback span",
            interval=0.02,
        )
        span = capture.one(attrs.FEEDBACK_SPAN_NAME)
        points = [
            dict(point.attributes)
            for rm in reader.get_metrics_data().resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
            if metric.name == "brixo.feedback"
            for point in metric.data.data_points
        ]
        print(
            json.dumps(
                {
                    "trace_id": span.context.trace_id,
                    "parent_span_id": span.parent.span_id if span.parent else None,
                    "links": [link.context.span_id for link in span.links],
                    "attributes": dict(span.attributes),
                    "metric_points": points,
                }
            )
        )
    brixo_otel.shutdown()
    meters.shutdown()


if __name__ == "__main__":
    main()
