"""Signals: what `feedback()` costs the caller, how fast the worker delivers, and memory while
the API is down.

Runs against the project's Brixo-compatible server on loopback (in a process of its own, so its
threads do not compete with ours for the GIL), with a real SQLite outbox on disk, in one run:

1. `feedback()` in the caller's thread: median and p99 over many calls, (a) with delivery paused
   (the destination answers 503: the caller's own cost) and (b) while the worker delivers the
   same burst in the background, and (c) paced at 200 calls/s while delivering.
2. Delivery throughput of the worker, against a naive loop of `httpx.post` per signal on the
   same server, same run: the ratio is the point.
3. Memory while 100,000 signals queue against a server that answers 503: RSS before and after.

    python benchmarks/signals.py [--calls N] [--throughput N] [--queued N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from opentelemetry.sdk.trace import TracerProvider

import brixo_otel
from brixo_otel.exporters import DeliveryResult, DeliveryStatus, SignalExporter
from brixo_otel.testing import BrixoTestServer


class Down(SignalExporter):
    """A destination that is down for the whole run: the caller's cost without the worker's."""

    name = "down"

    def export(self, signal: brixo_otel.Signal) -> DeliveryResult:
        return DeliveryResult(DeliveryStatus.THROTTLED, "down", retry_after=3600)


class Server:
    """The Brixo-compatible server in a subprocess (`brixo-otel dev-server`)."""

    def __init__(self, url: str) -> None:
        self.url = url


@contextmanager
def server_process(workdir: Path) -> Iterator[Server]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "brixo_otel._cli", "dev-server", "--port", str(port),
         "--api-key", "bench-key", "--accept-unknown-ids", "--db", str(workdir / "dev.db")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        yield Server(f"http://127.0.0.1:{port}")
    finally:
        process.terminate()
        process.wait(timeout=10)


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def configure(url: str, workdir: Path, name: str, **kwargs: object) -> brixo_otel.Client:
    return brixo_otel.configure(
        api_key="bench-key",
        base_url=url,
        traces_endpoint="none",
        outbox_path=workdir / f"{name}.db",
        tracer_provider=TracerProvider(),
        **kwargs,  # type: ignore[arg-type]
    )


def percentiles(timings: list[float]) -> tuple[float, float]:
    timings.sort()
    return statistics.median(timings), timings[int(len(timings) * 0.99)]


def caller_latency(
    url: str, workdir: Path, name: str, calls: int, pace: float = 0.0, **kwargs: object
) -> tuple[float, float]:
    configure(url, workdir, name, **kwargs)
    for _ in range(200):  # warm up: worker started, statements prepared
        brixo_otel.feedback("thumbs_up", message_id="m")
    brixo_otel.flush(timeout=60)
    timings = []
    for i in range(calls):
        start = time.perf_counter_ns()
        brixo_otel.feedback("thumbs_up" if i % 3 else "thumbs_down", message_id="m")
        timings.append((time.perf_counter_ns() - start) / 1000)
        if pace:
            time.sleep(pace)
    brixo_otel.shutdown(timeout=30)
    return percentiles(timings)


def worker_throughput(url: str, workdir: Path, count: int) -> float:
    configure(url, workdir, "throughput")
    for _ in range(count):
        brixo_otel.feedback("thumbs_up", message_id="m")
    start = time.perf_counter()
    assert brixo_otel.flush(timeout=300), "not everything was delivered"
    elapsed = time.perf_counter() - start
    brixo_otel.shutdown()
    return count / elapsed


def naive_throughput(server: Server, count: int) -> float:
    body = json.dumps(
        {"data": {"type": "signals", "attributes": {"name": "feedback", "value": "thumbs_up"}}}
    )
    headers = {"Authorization": "Bearer bench-key", "Content-Type": "application/vnd.api+json"}
    start = time.perf_counter()
    for _ in range(count):
        response = httpx.post(f"{server.url}/v1/messages/m/signals", content=body, headers=headers)
        assert response.status_code == 204
    return count / (time.perf_counter() - start)


def memory_while_down(server: BrixoTestServer, workdir: Path, count: int) -> tuple[float, float]:
    server.fail_randomly(1.0, status=503)
    configure(server.url, workdir, "down")
    brixo_otel.feedback("thumbs_up", message_id="m")
    before = rss_mib()
    for _ in range(count):
        brixo_otel.feedback("thumbs_up", message_id="m")
    after = rss_mib()
    brixo_otel.shutdown(timeout=1)
    server.reset_faults()
    return before, after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--throughput", type=int, default=2000)
    parser.add_argument("--naive", type=int, default=300)
    parser.add_argument("--queued", type=int, default=100_000)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="brixo-bench-"))
    with server_process(workdir) as server:
        print(f"feedback() in the caller ({args.calls} calls, disk outbox):")
        for label, options in (
            ("delivery paused (caller's own cost)", {"exporters": [Down()]}),
            ("burst, worker delivering meanwhile", {}),
            ("paced 200/s, worker delivering", {"pace": 0.005}),
        ):
            median, p99 = caller_latency(server.url, workdir, label[:5], args.calls, **options)
            print(f"  {label:<38} median {median:7.1f} µs   p99 {p99:8.1f} µs")
        ours = worker_throughput(server.url, workdir, args.throughput)
        naive = naive_throughput(server, args.naive)
        print(
            f"delivery: worker {ours:.0f} signals/s, naive httpx.post loop {naive:.0f} "
            f"signals/s: ratio {ours / naive:.1f}x"
        )
    with BrixoTestServer(api_key="bench-key", db_path=str(workdir / "server.db")) as local:
        local.register_message("m")
        before, after = memory_while_down(local, workdir, args.queued)
        print(
            f"{args.queued} signals queued against a 503 server: RSS {before:.1f} MiB -> "
            f"{after:.1f} MiB (+{after - before:.1f} MiB)"
        )


if __name__ == "__main__":
    main()
