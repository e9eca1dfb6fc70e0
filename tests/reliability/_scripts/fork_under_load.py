"""Fork children while app threads call feedback() and the worker sends: no child may hang.

usage: fork_under_load.py BASE_URL OUTBOX CHILDREN TIMES SENDS

Four app threads call `feedback()` without pause, the delivery worker sends to the server; the
main thread forks CHILDREN children, one every few tens of milliseconds, at whatever moment the
threads are in. Each child gives one rating, flushes, and exits through the normal interpreter
exit (atexit hooks and all), which is where a child holding a copy of the parent's HTTP pool
lock used to hang; it appends to TIMES how long its exit hooks took. Every process appends
"pid signal-id" to SENDS as it starts each request, so the test can tell who sent what first.
The parent waits for each
child a bounded time, kills the ones that hang, and prints one JSON line: the children's exit
times, the hung ones, and the ids it acknowledged.
"""

from __future__ import annotations

import atexit
import faulthandler
import json
import os
import signal as signals
import sys
import threading
import time

from opentelemetry.sdk.trace import TracerProvider

import brixo_otel
from brixo_otel import RetryPolicy, Signal
from brixo_otel.exporters import BrixoSignalExporter, DeliveryResult

#: A child has this long from fork to exit, far more than it needs (its half-second flush, the
#: exit budget, the interpreter's own teardown of a copy of a busy parent's heap on two loaded
#: cores); a hang (for ever, before the fix) is anything longer.
CHILD_BUDGET = 15.0
#: When this child's exit began (monotonic), for the hook registered first, which runs last.
_exit_started: list[float] = []
_times_path: list[str] = []


def _exit_hooks_done() -> None:
    """Registered before brixo-otel's hooks, so it runs after them: how long they took."""
    if not _exit_started:
        return  # the parent
    client = brixo_otel.get_client()
    # What the child could not commit before its end, and whether it was barred from the outbox
    # (internals, read defensively: the script also runs against older versions).
    held = len(getattr(getattr(client, "_signals", None), "_held", ()))
    barred = getattr(getattr(client, "_outbox", None), "_barred", None) is not None
    took = time.monotonic() - _exit_started[0]
    _append(_times_path[0], f"{os.getpid()} {took:.3f} {held} {int(barred)}\n")


def _append(path: str, line: str) -> None:
    """One `O_APPEND` write: no lock, so safe in a child forked mid-write by another thread."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class NotingExporter(BrixoSignalExporter):
    """The Brixo exporter, noting which process starts each request."""

    def __init__(self, sends: str, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._sends = sends

    def export(self, signal: Signal) -> DeliveryResult:
        _append(self._sends, f"{os.getpid()} {signal.id}\n")
        return super().export(signal)


def main() -> None:
    base_url, outbox, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    _times_path.append(sys.argv[4])
    atexit.register(_exit_hooks_done)
    brixo_otel.configure(
        exporters=[NotingExporter(sys.argv[5], api_key="test-key", base_url=base_url)],
        outbox_path=outbox,
        traces_endpoint="none",
        tracer_provider=TracerProvider(),
        retry_policy=RetryPolicy(initial_backoff=0.02, max_backoff=0.25),
    )
    stop = threading.Event()
    acknowledged: list[str] = []

    def rate(worker: int) -> None:
        n = 0
        while not stop.is_set():
            signal = brixo_otel.feedback("thumbs_up", message_id=f"parent-{worker}-{n}")
            acknowledged.append(signal.id)
            n += 1
            time.sleep(0.004)

    threads = [threading.Thread(target=rate, args=(i,), daemon=True) for i in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)  # the worker is busy sending by now

    children: dict[int, float] = {}
    for index in range(count):
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            child(index)  # never returns
        children[pid] = started
        time.sleep(0.03 + 0.01 * (index % 5))

    exits: list[float] = []
    hung: list[int] = []
    deadline = {pid: started + CHILD_BUDGET for pid, started in children.items()}
    statuses: dict[int, int] = {}
    while len(statuses) < len(children):
        for pid in children:
            if pid in statuses:
                continue
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                statuses[pid] = status
                exits.append(time.monotonic() - children[pid])
            elif time.monotonic() > deadline[pid]:
                hung.append(pid)
                os.kill(pid, signals.SIGKILL)
                os.waitpid(pid, 0)
                statuses[pid] = -1
        time.sleep(0.01)
    stop.set()
    for thread in threads:
        thread.join(5)
    flushed = brixo_otel.flush(timeout=20)
    failed = [os.waitstatus_to_exitcode(s) for s in statuses.values() if s not in (0, -1)]
    print(
        json.dumps(
            {
                "parent": os.getpid(),
                "children": len(children),
                "hung": len(hung),
                "failed": len(failed),
                "failures": failed,
                "exit_seconds": exits,
                "acknowledged": acknowledged,
                "flushed": flushed,
            }
        ),
        flush=True,
    )


def child(index: int) -> None:
    """In the child: rate once, flush, and leave by the normal exit (atexit hooks run)."""
    # A child still alive near its budget writes every thread's stack to stderr: the test then
    # shows where it hangs.
    faulthandler.dump_traceback_later(CHILD_BUDGET - 0.5, exit=False)
    code = 0
    try:
        brixo_otel.feedback("thumbs_down", message_id=f"child-{index}")
        # The outbox is shared and the parent keeps adding to it: a flush here only gives the
        # child's worker a moment (its own rating may go out from the parent's worker).
        brixo_otel.flush(timeout=0.5)
    except BaseException:
        code = 4
    sys.stdout.flush()
    _exit_started.append(time.monotonic())
    # `sys.exit` from a forked child runs the interpreter's exit (atexit hooks included); the
    # threads the parent had are gone, so nothing else keeps it alive.
    sys.exit(code)


if __name__ == "__main__":
    main()
