"""Start a client on an outbox others left behind, deliver what it holds, and exit.

usage: drain.py BASE_URL OUTBOX TIMEOUT

Exits 0 once `flush()` reports everything delivered, 1 if TIMEOUT seconds pass first.
"""

from __future__ import annotations

import sys

from opentelemetry.sdk.trace import TracerProvider

import brixo_otel
from brixo_otel import RetryPolicy
from brixo_otel.exporters import BrixoSignalExporter


def main() -> int:
    base_url, outbox, timeout = sys.argv[1:4]
    brixo_otel.configure(
        exporters=[BrixoSignalExporter(api_key="test-key", base_url=base_url)],
        outbox_path=outbox,
        traces_endpoint="none",
        tracer_provider=TracerProvider(),
        retry_policy=RetryPolicy(initial_backoff=0.05, max_backoff=1.0),
    )
    return 0 if brixo_otel.flush(timeout=float(timeout)) else 1


if __name__ == "__main__":
    sys.exit(main())
