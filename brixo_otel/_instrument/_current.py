"""The tracer that decorators use, swapped when a client is configured.

Decorators are applied at import time, long before `configure()` runs; they look the tracer up
here on every call (a module attribute read), so they follow the current client.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import trace

from brixo_otel._version import __version__

INSTRUMENTATION_NAME = "brixo_otel"

#: Until a client is configured, spans go to the global provider through OpenTelemetry's proxy.
tracer: trace.Tracer = trace.get_tracer(INSTRUMENTATION_NAME, __version__)


#: Set on the message and interaction spans we start: the `brixo.*` resource values that the
#: app's own TracerProvider lacks (we join its provider, so we cannot change its resource).
root_span_attributes: Mapping[str, str] = {}

#: Whether the current client records content (`brixo.input`/`brixo.output`) on spans.
capture_content = False


def use_tracer(
    new_tracer: trace.Tracer | None,
    span_attributes: Mapping[str, str] | None = None,
    *,
    content: bool = False,
) -> None:
    global tracer, root_span_attributes, capture_content
    tracer = new_tracer or trace.get_tracer(INSTRUMENTATION_NAME, __version__)
    root_span_attributes = dict(span_attributes or {})
    capture_content = content
