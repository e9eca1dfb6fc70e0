"""One of two processes sharing an outbox whose lease is short, while an export takes longer.

usage: lease_app.py BASE_URL OUTBOX LEASE_SECONDS ROLE

ROLE `first` rates one message and prints "QUEUED <id>"; ROLE `second` only starts (its worker
looks for rows to take: pending ones, and leases that expired). Both then wait to be killed, so
neither gives its leases back by exiting.
"""

from __future__ import annotations

import sys
import time

from opentelemetry.sdk.trace import TracerProvider

import brixo_otel
from brixo_otel import OutboxLimits, RetryPolicy
from brixo_otel.exporters import BrixoSignalExporter


def main() -> None:
    base_url, outbox, lease, role = sys.argv[1:5]
    brixo_otel.configure(
        exporters=[BrixoSignalExporter(api_key="test-key", base_url=base_url)],
        outbox_path=outbox,
        traces_endpoint="none",
        tracer_provider=TracerProvider(),
        retry_policy=RetryPolicy(initial_backoff=0.05, max_backoff=0.5),
        outbox_limits=OutboxLimits(lease_seconds=float(lease)),
    )
    if role == "first":
        signal = brixo_otel.feedback("thumbs_up", message_id="slow")
        print(f"QUEUED {signal.id}", flush=True)
    else:
        print("STARTED", flush=True)
    time.sleep(60)


if __name__ == "__main__":
    main()
