"""Span index costs: what a `put` costs the app's thread, what a lookup costs here and from
another process, how fast the background writer stores, and what indexing adds to `@message`.

    python benchmarks/index.py [--ops N] [--rounds N] [--calls N]

Backends: in-memory, SQLite (a file in a temp dir), Redis (a real `redis-server` on loopback,
started here). A shared index (SQLite, Redis) is a memory tier in front of the store, written by
one background writer in batches: `put` on the app's thread only queues, and a lookup in the same
process is answered by the memory tier; another process (here: a second index on the same store,
with an empty memory tier) reads the store. The span-end figure compares the same `@message` call
with the memory index and with an index that stores nothing, in one process, interleaved round by
round (wall time and this thread's CPU time).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanContext, TraceFlags
from opentelemetry.util.types import AttributeValue

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import brixo_otel
from brixo_otel._correlation._index import IndexedSpan
from brixo_otel._correlation._index_url import span_index_from
from tests._redis import RedisServer

ATTRIBUTES = {"gen_ai.request.model": "gpt-5", "brixo.agent_version": "v7"}


class NothingIndex:
    def put(
        self, message_id: str, span_context: SpanContext, attributes: Mapping[str, AttributeValue]
    ) -> None:
        return None

    def get(self, message_id: str) -> IndexedSpan | None:
        return None


class Discard(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def per_op_micros(choice: str, ops: int) -> dict[str, float]:
    """µs per operation: `put` (the app's thread), `get` here, and for a shared store the
    writer's time per put (from the first put until all are stored) and `get` from another
    process's view."""
    index = span_index_from(choice, ttl_seconds=3600, max_entries=1_000_000)
    context = SpanContext(0x1234, 0x5678, is_remote=False, trace_flags=TraceFlags(1))
    figures: dict[str, float] = {}
    start = time.perf_counter()
    for i in range(ops):
        index.put(f"msg-{i}", context, ATTRIBUTES)
    figures["put"] = (time.perf_counter() - start) / ops * 1e6
    flush = getattr(index, "flush", None)
    if callable(flush):
        assert flush(timeout=120), "the writer did not store every put"
        figures["stored"] = (time.perf_counter() - start) / ops * 1e6
    start = time.perf_counter()
    for i in range(ops):
        assert index.get(f"msg-{i}") is not None
    figures["get"] = (time.perf_counter() - start) / ops * 1e6
    if callable(flush):
        other = span_index_from(choice, ttl_seconds=3600, max_entries=1_000_000)
        start = time.perf_counter()
        for i in range(ops):
            assert other.get(f"msg-{i}") is not None
        figures["get elsewhere"] = (time.perf_counter() - start) / ops * 1e6
        other.close()  # type: ignore[attr-defined]
    close = getattr(index, "close", None)
    if callable(close):
        close()
    return figures


def span_end_ratio(rounds: int, calls: int) -> tuple[float, float, float, float]:
    """Two clients, each on its own provider, built once; each round points the decorator at
    one then the other (no re-configuring, which would pile processors onto one provider)."""
    from brixo_otel._instrument import _current

    clients = {}
    index: str | NothingIndex
    for name, index in (("memory index", "memory"), ("no index", NothingIndex())):
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Discard(), max_queue_size=1 << 16))
        clients[name] = brixo_otel.Client(
            tracer_provider=provider,
            span_index=index,
            traces_endpoint="none",
            outbox_path=":memory:",
        )

    @brixo_otel.message
    def answer(message_id: str) -> None:
        return None

    def run(n: int) -> None:
        for i in range(n):
            answer(f"m-{i}")

    wall: dict[str, list[float]] = {name: [] for name in clients}
    cpu: dict[str, list[float]] = {name: [] for name in clients}
    for _ in range(rounds):
        for name, client in clients.items():
            _current.use_tracer(client.tracer)
            run(200)  # warm up after the switch
            gc.collect()
            gc.disable()  # no case billed for the garbage of another
            try:
                start, start_cpu = time.perf_counter_ns(), time.thread_time_ns()
                run(calls)
                end, end_cpu = time.perf_counter_ns(), time.thread_time_ns()
            finally:
                gc.enable()
            wall[name].append((end - start) / calls / 1000)
            cpu[name].append((end_cpu - start_cpu) / calls / 1000)
    for client in clients.values():
        client.shutdown()
        client.tracer_provider.shutdown()
    _current.use_tracer(None)

    def ratio(samples: dict[str, list[float]]) -> float:
        pairs = zip(samples["memory index"], samples["no index"], strict=True)
        return statistics.median(a / b for a, b in pairs)

    with_index = statistics.median(wall["memory index"])
    without = statistics.median(wall["no index"])
    return with_index, without, ratio(wall), ratio(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="brixo-index-bench-"))
    print(f"span index, µs per operation, {args.ops} distinct ids")
    print("  backend  put (app thread)  stored by the writer  get here  get elsewhere")
    with RedisServer(workdir / "redis") as redis:
        for name, choice in (
            ("memory", "memory"),
            ("sqlite", f"sqlite:///{workdir / 'index.db'}"),
            ("redis", redis.url),
        ):
            figures = per_op_micros(choice, args.ops)
            stored = figures.get("stored")
            elsewhere = figures.get("get elsewhere")
            print(
                f"  {name:<7} {figures['put']:17.1f} "
                + (f"{stored:21.1f}" if stored is not None else f"{'-':>21}")
                + f" {figures['get']:9.1f} "
                + (f"{elsewhere:13.1f}" if elsewhere is not None else f"{'-':>13}")
            )
    with_index, without, wall, cpu = span_end_ratio(args.rounds, args.calls)
    print(
        f"@message call with the memory index {with_index:.2f} µs vs without {without:.2f} µs: "
        f"ratio {wall:.3f} (wall), {cpu:.3f} (CPU)"
    )


if __name__ == "__main__":
    main()
