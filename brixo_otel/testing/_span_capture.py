"""`SpanCapture`: a private TracerProvider whose finished spans a test can read back."""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


class SpanCapture:
    """A fresh provider per test, never installed globally, so tests cannot see each other's spans.

    Spans are exported synchronously (SimpleSpanProcessor), so they are readable the moment they
    end. Hand `provider` to the code under test (`configure(tracer_provider=...)`).
    """

    def __init__(self, resource: Resource | None = None) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(resource=resource or Resource.create({}))
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        """Finished spans (only those called `name`, if given), in the order they ended."""
        return [s for s in self.exporter.get_finished_spans() if name is None or s.name == name]

    def one(self, name: str) -> ReadableSpan:
        """The single finished span called `name`; fails the test if there are none or several."""
        found = self.spans(name)
        if len(found) != 1:
            names = [s.name for s in self.spans()]
            raise AssertionError(f"expected one span named {name!r}, found {len(found)} in {names}")
        return found[0]

    def clear(self) -> None:
        self.exporter.clear()

    def shutdown(self) -> None:
        self.provider.shutdown()
