"""Process A of the mid-stream cross-process tests: a message that stays open until told.

Starts a `message_span` with the given id on a shared span index, prints its trace and span id
as one JSON line, then waits for a line on stdin while the span is still open (the answer is
"streaming"). On that line it makes an LLM child span (model `gpt-5`), ends the message span,
flushes the index writer and prints `{"ended": true, "flushed": ...}`.
"""

from __future__ import annotations

import json
import sys

import brixo_otel
from brixo_otel import attributes as attrs
from brixo_otel.exporters import InMemorySignalExporter
from brixo_otel.testing import SpanCapture


def main() -> None:
    span_index, message_id = sys.argv[1], sys.argv[2]
    capture = SpanCapture()
    client = brixo_otel.configure(
        tracer_provider=capture.provider,
        span_index=span_index,
        traces_endpoint="none",
        exporters=[InMemorySignalExporter()],
        outbox_path=":memory:",
    )
    with brixo_otel.message_span(message_id=message_id, name="answer") as span:
        context = span.get_span_context()
        print(json.dumps({"trace_id": context.trace_id, "span_id": context.span_id}), flush=True)
        sys.stdin.readline()  # still streaming until the test says so
        with capture.provider.get_tracer("llm").start_as_current_span("chat") as llm:
            llm.set_attribute(attrs.GEN_AI_REQUEST_MODEL, "gpt-5")
    flush = getattr(client.span_index, "flush", None)
    flushed = flush(10.0) if callable(flush) else True
    print(json.dumps({"ended": True, "flushed": flushed}), flush=True)
    brixo_otel.shutdown()


if __name__ == "__main__":
    main()
