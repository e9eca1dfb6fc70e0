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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for tests._services

from brixo_otel._delivery._outbox import Outbox
from brixo_otel._delivery._worker import SignalProcessor
from brixo_otel._policies import RetryPolicy
from brixo_otel._signal import Signal, validate
from brixo_otel.exporters import DeliveryResult, SignalExporter
from tests._services import wait_for


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


def main() -> None:
    mode, outbox_path, record = sys.argv[1:4]
    count = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    hang = mode in ("kill-after-enqueue", "kill-in-flight", "exit-hang")
    os.environ["BRIXO_OTEL_EXIT_BUDGET_SECONDS"] = "1"  # keep the hang test short
    outbox = Outbox(outbox_path)
    processor = SignalProcessor(
        outbox,
        [RecordingExporter(record, hang=hang)],
        policy=RetryPolicy(initial_backoff=0.01, max_backoff=0.05),
        poll_interval=0.05,
    )
    if len(sys.argv) > 6:  # start together with the other processes
        Path(sys.argv[5]).touch()
        go = Path(sys.argv[6])
        wait_for(lambda: go.exists() or None, 20, f"{go} to appear", interval=0.005)
    for index in range(count):
        signal = validate("thumbs_up", message_id=f"{os.getpid()}-{index}")
        if not processor.enqueue(signal):
            raise SystemExit("enqueue refused")
        print(signal.id, flush=True)
        if mode == "kill-after-enqueue":
            os.kill(os.getpid(), signals.SIGKILL)
    if mode == "kill-in-flight":
        wait_for(
            lambda: outbox.stats().get("brixo", {}).get("in_flight") == 1 or None,
            10,
            "the signal to go in flight",
            interval=0.005,
        )
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
