"""A producer process of the fault campaign: rates messages as fast as it can, on a shared outbox.

usage: producer.py BASE_URL OUTBOX NAME SECONDS LOG [MAX_BYTES [COMMENT_CHARS]]

For SECONDS it calls `feedback()` on messages NAME-0, NAME-1, ... and appends one line per call
to LOG, with one `O_APPEND` write each (so the lines survive a SIGKILL):

    A <signal id> <seconds the call took>   committed to the outbox when the call returned
    H <signal id> <seconds the call took>   held in memory when the call returned (the outbox
                                            was busy): durable once the worker commits it
    R <signal id>                           refused (outbox or memory buffer full), `on_error`

Then it exits through the interpreter's normal exit (whatever the worker has not delivered stays
in the outbox for the others), unless the test kills it first.
"""

from __future__ import annotations

import os
import sys
import time

from opentelemetry.sdk.trace import TracerProvider

import brixo_otel
from brixo_otel import OutboxLimits, RetryPolicy, Signal
from brixo_otel.exporters import BrixoSignalExporter


def main() -> None:
    base_url, outbox, name, seconds, log = sys.argv[1:6]
    limits = OutboxLimits(max_bytes=int(sys.argv[6])) if len(sys.argv) > 6 else None
    comment = "c" * int(sys.argv[7]) if len(sys.argv) > 7 else None
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def note(line: str) -> None:
        os.write(fd, (line + "\n").encode())

    def refused(signal: Signal, destination: str, reason: str) -> None:
        # Refused (not dead-lettered): reported for each destination, noted once.
        if destination == "brixo" and ("outbox full" in reason or "memory buffer" in reason):
            note(f"R {signal.id}")

    client = brixo_otel.configure(
        exporters=[BrixoSignalExporter(api_key="test-key", base_url=base_url)],
        outbox_path=outbox,
        traces_endpoint="none",
        tracer_provider=TracerProvider(),
        retry_policy=RetryPolicy(initial_backoff=0.05, max_backoff=1.0),
        link_window=2.0,  # no span will ever appear for these messages: stop looking soon
        on_error=refused,
        **({"outbox_limits": limits} if limits is not None else {}),
    )
    # Which signals sit in the memory buffer right now (internals, read defensively: the script
    # also runs against older versions that have no buffer).
    held = getattr(getattr(client, "_signals", None), "_held", ())
    deadline = time.monotonic() + float(seconds)
    n = 0
    while time.monotonic() < deadline:
        started = time.perf_counter()
        signal = brixo_otel.feedback(
            ("thumbs_up", "thumbs_down")[n % 2], message_id=f"{name}-{n}", user_message=comment
        )
        took = time.perf_counter() - started
        kind = "H" if any(s.id == signal.id for s in list(held)) else "A"
        note(f"{kind} {signal.id} {took:.6f}")
        n += 1
        time.sleep(0.002)


if __name__ == "__main__":
    main()
