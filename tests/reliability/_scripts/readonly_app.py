"""An app whose outbox turns unwritable while it runs; run without the power to override file
permissions (the test starts it under `setpriv`), so a read-only file or directory is read-only.

usage: readonly_app.py MODE BASE_URL OUTBOX

MODE `file`: the outbox file is read-only from the start (SQLite opens it read-only). MODE `dir`:
the test deletes the outbox and makes its directory read-only while the app runs, so it cannot
be recreated. Either way the app rates messages, prints "HELD <latencies>", waits for a line
on stdin (the test has made things writable again), flushes, and prints a JSON report.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from opentelemetry.sdk.trace import TracerProvider

import brixo_otel
from brixo_otel import RetryPolicy
from brixo_otel.exporters import BrixoSignalExporter

RATINGS = 10


def main() -> None:
    mode, base_url, outbox = sys.argv[1:4]
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    brixo_otel.configure(
        exporters=[BrixoSignalExporter(api_key="test-key", base_url=base_url)],
        outbox_path=outbox,
        traces_endpoint="none",
        tracer_provider=TracerProvider(),
        retry_policy=RetryPolicy(initial_backoff=0.02, max_backoff=0.25),
    )
    acknowledged = []
    if mode == "dir":
        acknowledged.append(brixo_otel.feedback("thumbs_up", message_id="before").id)
        brixo_otel.flush(timeout=10)
        print("READY", flush=True)
        sys.stdin.readline()  # the outbox is gone, and its directory read-only
    latencies = []
    for n in range(RATINGS):
        started = time.perf_counter()
        acknowledged.append(brixo_otel.feedback("thumbs_down", message_id=f"{mode}-{n}").id)
        latencies.append(time.perf_counter() - started)
    time.sleep(2.5)  # the worker tries (and fails) to commit, or to recreate the file
    print("HELD " + json.dumps(latencies), flush=True)
    sys.stdin.readline()  # writable again
    flushed = brixo_otel.flush(timeout=20)
    # The worker looks at the file once a poll (1 s): give it a few to recreate it.
    deadline = time.monotonic() + 5
    while not os.path.exists(outbox) and time.monotonic() < deadline:
        time.sleep(0.05)
    report = {"acknowledged": acknowledged, "flushed": flushed, "exists": os.path.exists(outbox)}
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
