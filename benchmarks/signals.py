"""Signals: what `feedback()` costs the caller, how fast the worker delivers, and memory while
the API is down.

Runs against the project's Brixo-compatible server on loopback, with a real SQLite outbox on
disk, all in one process and one run:

1. `feedback()` in the caller's thread: median and p99 over many calls, while the worker
   delivers in the background (as in production).
2. Delivery throughput of the worker, against a naive loop of `httpx.post` per signal on the
   same server, same run: the ratio is the point.
3. Memory while 100,000 signals queue against a server that answers 503: RSS before and after.

    python benchmarks/signals.py [--calls N] [--throughput N] [--queued N]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from opentelemetry.sdk.trace import TracerProvider

import brixo_otel
from brixo_otel.testing import BrixoTestServer


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def configure(server: BrixoTestServer, workdir: Path, name: str) -> brixo_otel.Client:
    return brixo_otel.configure(
        api_key="bench-key",
        base_url=server.url,
        traces_endpoint="none",
        outbox_path=workdir / f"{name}.db",
        tracer_provider=TracerProvider(),
    )


def caller_latency(server: BrixoTestServer, workdir: Path, calls: int) -> tuple[float, float]:
    configure(server, workdir, "latency")
    for _ in range(200):  # warm up: worker started, statements prepared
        brixo_otel.feedback("thumbs_up", message_id="m")
    timings = []
    for i in range(calls):
        start = time.perf_counter_ns()
        brixo_otel.feedback("thumbs_up" if i % 3 else "thumbs_down", message_id="m")
        timings.append((time.perf_counter_ns() - start) / 1000)
    brixo_otel.flush(timeout=120)
    brixo_otel.shutdown()
    timings.sort()
    return statistics.median(timings), timings[int(len(timings) * 0.99)]


def worker_throughput(server: BrixoTestServer, workdir: Path, count: int) -> float:
    configure(server, workdir, "throughput")
    for _ in range(count):
        brixo_otel.feedback("thumbs_up", message_id="m")
    start = time.perf_counter()
    assert brixo_otel.flush(timeout=300), "not everything was delivered"
    elapsed = time.perf_counter() - start
    brixo_otel.shutdown()
    return count / elapsed


def naive_throughput(server: BrixoTestServer, count: int) -> float:
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
    configure(server, workdir, "down")
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
    with BrixoTestServer(api_key="bench-key", db_path=str(workdir / "server.db")) as server:
        server.register_message("m")
        median, p99 = caller_latency(server, workdir, args.calls)
        print(
            f"feedback() in the caller: median {median:.1f} µs, p99 {p99:.1f} µs "
            f"({args.calls} calls, disk outbox, worker delivering meanwhile)"
        )
        ours = worker_throughput(server, workdir, args.throughput)
        naive = naive_throughput(server, args.naive)
        print(
            f"delivery: worker {ours:.0f} signals/s, naive httpx.post loop {naive:.0f} "
            f"signals/s: ratio {ours / naive:.1f}x"
        )
        before, after = memory_while_down(server, workdir, args.queued)
        print(
            f"{args.queued} signals queued against a 503 server: RSS {before:.1f} MiB -> "
            f"{after:.1f} MiB (+{after - before:.1f} MiB)"
        )


if __name__ == "__main__":
    main()
