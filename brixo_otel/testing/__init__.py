"""Test utilities: a local Brixo-compatible server and the pytest fixtures built on it.

The fixtures (`brixo_server`, `span_capture`) load automatically through the `pytest11` entry
point once brixo-otel is installed.
"""

from brixo_otel.testing._records import ReceivedSignal, ReceivedSpan, RequestRecord
from brixo_otel.testing._server import BrixoTestServer, run_dev_server
from brixo_otel.testing._span_capture import SpanCapture

__all__ = [
    "BrixoTestServer",
    "ReceivedSignal",
    "ReceivedSpan",
    "RequestRecord",
    "SpanCapture",
    "run_dev_server",
]
