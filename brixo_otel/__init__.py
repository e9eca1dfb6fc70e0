"""brixo-otel: link user feedback to the OpenTelemetry traces of the LLM messages it rates."""

import logging

from brixo_otel._signals._model import InvalidSignal, Signal

logging.getLogger("brixo_otel").addHandler(logging.NullHandler())

__all__ = ["InvalidSignal", "Signal"]
