"""The tracer that decorators use, swapped when a client is configured.

Decorators are applied at import time, long before `configure()` runs; they look the tracer up
here on every call (a module attribute read), so they follow the current client.
"""

from __future__ import annotations

from opentelemetry import trace

from brixo_otel._version import __version__

INSTRUMENTATION_NAME = "brixo_otel"

#: Until a client is configured, spans go to the global provider through OpenTelemetry's proxy.
tracer: trace.Tracer = trace.get_tracer(INSTRUMENTATION_NAME, __version__)


def use_tracer(new_tracer: trace.Tracer | None) -> None:
    global tracer
    tracer = new_tracer or trace.get_tracer(INSTRUMENTATION_NAME, __version__)
