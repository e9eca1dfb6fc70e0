"""Span index costs: `put` + `get` per backend, and what indexing adds to a message span.

    python benchmarks/index.py [--ops N]

Backends: in-memory, SQLite (a file in a temp dir), Redis (a real `redis-server` on loopback,
started here). The span-end figure compares the same `@message` call with the memory index and
with an index that stores nothing, in one process, interleaved round by round.
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


def per_op_micros(choice: str, ops: int) -> tuple[float, float]:
    index = span_index_from(choice, ttl_seconds=3600, max_entries=1_000_000)
    context = SpanContext(0x1234, 0x5678, is_remote=False, trace_flags=TraceFlags(1))
    start = time.perf_counter()
    for i in range(ops):
        index.put(f"msg-{i}", context, ATTRIBUTES)
    put = (time.perf_counter() - start) / ops * 1e6
    start = time.perf_counter()
    for i in range(ops):
        assert index.get(f"msg-{i}") is not None
    get = (time.perf_counter() - start) / ops * 1e6
    close = getattr(index, "close", None)
    if callable(close):
        close()
    return put, get


def span_end_ratio(rounds: int, calls: int) -> tuple[float, float, float]:
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

    samples: dict[str, list[float]] = {name: [] for name in clients}
    for _ in range(rounds):
        for name, client in clients.items():
            _current.use_tracer(client.tracer)
            run(200)  # warm up after the switch
            gc.collect()
            gc.disable()  # no case billed for the garbage of another
            try:
                start = time.perf_counter_ns()
                run(calls)
                samples[name].append((time.perf_counter_ns() - start) / calls / 1000)
            finally:
                gc.enable()
    for client in clients.values():
        client.shutdown()
        client.tracer_provider.shutdown()
    _current.use_tracer(None)
    with_index = statistics.median(samples["memory index"])
    without = statistics.median(samples["no index"])
    pairs = zip(samples["memory index"], samples["no index"], strict=True)
    return with_index, without, statistics.median(a / b for a, b in pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="brixo-index-bench-"))
    print(f"index put / get per operation (µs), {args.ops} distinct ids")
    with RedisServer(workdir / "redis") as redis:
        for name, choice in (
            ("memory", "memory"),
            ("sqlite", f"sqlite:///{workdir / 'index.db'}"),
            ("redis", redis.url),
        ):
            put, get = per_op_micros(choice, args.ops)
            print(f"  {name:<7} put {put:8.1f}   get {get:8.1f}")
    with_index, without, ratio = span_end_ratio(args.rounds, args.calls)
    print(
        f"@message call with the memory index {with_index:.2f} µs vs without {without:.2f} µs: "
        f"ratio {ratio:.3f}"
    )


if __name__ == "__main__":
    main()
