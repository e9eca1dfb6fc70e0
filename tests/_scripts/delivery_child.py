"""A separate process for the crash, exit and multi-process delivery tests.

usage: delivery_child.py MODE OUTBOX RECORD [COUNT] [READY GO]

It prints the id of every signal it enqueued, one a line, before doing what MODE says; the
exporter appends the id of every signal it delivers to RECORD.
"""

from __future__ import annotations

import os
import signal as signals
import sys
import threading
import time
from pathlib import Path

from brixo_otel._delivery import _worker as _processor
from brixo_otel._delivery._outbox import Outbox
from brixo_otel._delivery._worker import SignalProcessor
from brixo_otel._policies import RetryPolicy
from brixo_otel._signal import Signal, validate
from brixo_otel.exporters import DeliveryResult, SignalExporter


class RecordingExporter(SignalExporter):
    """Appends each delivered id to a file; with `hang`, never answers."""

    name = "brixo"

    def __init__(self, record: str, hang: bool = False) -> None:
        self.record = record
        self.hang = hang
        self.lock = threading.Lock()

    def export(self, signal: Signal) -> DeliveryResult:
        if self.hang:
            threading.Event().wait(3600)
        with self.lock, open(self.record, "a") as out:
            out.write(signal.id + "\n")
        return DeliveryResult.delivered()


def wait_for_file(path: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {path}")
        time.sleep(0.005)


def main() -> None:
    mode, outbox_path, record = sys.argv[1:4]
    count = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    hang = mode in ("kill-after-enqueue", "kill-in-flight", "exit-hang")
    _processor.EXIT_BUDGET_SECONDS = 1.0  # type: ignore[misc]  # keep the hang test short
    outbox = Outbox(outbox_path)
    processor = SignalProcessor(
        outbox,
        [RecordingExporter(record, hang=hang)],
        policy=RetryPolicy(initial_backoff=0.01, max_backoff=0.05),
        poll_interval=0.05,
    )
    if len(sys.argv) > 6:  # start together with the other processes
        Path(sys.argv[5]).touch()
        wait_for_file(sys.argv[6])
    for index in range(count):
        signal = validate("thumbs_up", message_id=f"{os.getpid()}-{index}")
        if not processor.enqueue(signal):
            raise SystemExit("enqueue refused")
        print(signal.id, flush=True)
        if mode == "kill-after-enqueue":
            os.kill(os.getpid(), signals.SIGKILL)
    if mode == "kill-in-flight":
        deadline = time.monotonic() + 10
        while outbox.stats().get("brixo", {}).get("in_flight") != 1:
            if time.monotonic() > deadline:
                raise SystemExit("never went in flight")
            time.sleep(0.005)
        os.kill(os.getpid(), signals.SIGKILL)
    if mode == "deliver":
        if not processor.flush(timeout=30):
            raise SystemExit(f"flush timed out: {outbox.stats()}")
        processor.shutdown(timeout=5)
        outbox.close()
    elif mode == "exit-exception":
        raise RuntimeError("the app crashed")
    elif mode == "exit-sys-exit":
        sys.exit(3)
    # exit-normal and exit-hang: just return, and let the atexit hook do its job


if __name__ == "__main__":
    main()
