"""What `@message` costs per call, as a ratio to a raw span around the same function.

"Raw span" is what a careful engineer writes by hand for the same result:
`tracer.start_as_current_span(name, attributes={"brixo.message_id": ...})` around the call. The
ratio against a raw span *without* the attribute is printed too, so the cost of the id itself is
visible. Everything runs in one process on one TracerProvider (a BatchSpanProcessor over an
exporter that discards, plus brixo-otel's tagging processor, as in production), and the cases are
interleaved round by round in a shuffled order, with the garbage collector paused while a case runs.
Per-call times are the median over rounds; each ratio is the median of per-round ratios.

    python benchmarks/overhead.py [--rounds N] [--calls N]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import wrapt
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import brixo_otel
from brixo_otel.attributes import MESSAGE_ID

CHUNKS = 100


class DiscardingExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def build_cases(provider: TracerProvider) -> dict[str, Callable[[], Any]]:
    tracer = provider.get_tracer("bench")

    def work(message_id: str) -> int:
        return len(message_id)

    def raw(message_id: str) -> int:
        with tracer.start_as_current_span("raw"):
            return work(message_id)

    def tagged(message_id: str) -> int:
        with tracer.start_as_current_span("raw", attributes={MESSAGE_ID: message_id}):
            return work(message_id)

    @wrapt.decorator
    def hand_written(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        with tracer.start_as_current_span("hand"):
            return wrapped(*args, **kwargs)

    hand = hand_written(work)
    decorated = brixo_otel.message(work)

    async def awork(message_id: str) -> int:
        return len(message_id)

    async def araw(message_id: str) -> int:
        with tracer.start_as_current_span("raw", attributes={MESSAGE_ID: message_id}):
            return await awork(message_id)

    adecorated = brixo_otel.message(awork)

    def stream(message_id: str) -> Any:
        yield from range(CHUNKS)

    def raw_stream(message_id: str) -> Any:
        with tracer.start_as_current_span("raw", attributes={MESSAGE_ID: message_id}):
            yield from stream(message_id)

    dstream = brixo_otel.message(stream)

    loop = asyncio.new_event_loop()

    def run_async(fn: Callable[[str], Any]) -> Callable[[], Any]:
        async def many(n: int) -> None:
            for _ in range(n):
                await fn("msg-1")

        return lambda n: loop.run_until_complete(many(n))  # type: ignore[misc]

    def run_sync(fn: Callable[[str], Any]) -> Callable[[int], None]:
        def many(n: int) -> None:
            for _ in range(n):
                fn("msg-1")

        return many

    def run_stream(fn: Callable[[str], Any]) -> Callable[[int], None]:
        def many(n: int) -> None:
            for _ in range(n):
                for _chunk in fn("msg-1"):
                    pass

        return many

    return {
        "bare": run_sync(work),
        "raw span, no attributes": run_sync(raw),
        "raw span": run_sync(tagged),
        "hand-written wrapt + span": run_sync(hand),
        "@message sync": run_sync(decorated),
        "raw span async": run_async(araw),
        "@message async": run_async(adecorated),
        "raw span stream(100)": run_stream(raw_stream),
        "@message stream(100)": run_stream(dstream),
    }


def measure(
    cases: dict[str, Callable[[int], None]], rounds: int, calls: int
) -> dict[str, list[float]]:
    """Per-call µs of each case, one sample per round.

    The cyclic garbage collector is paused while a case runs (it would bill one case for the
    garbage of all) and runs between cases; the order of cases is shuffled each round (so no
    case always follows the same neighbour).
    """
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for run in cases.values():  # warm up
        run(max(1, calls // 10))
    order = list(cases)
    shuffler = random.Random(7)
    for _ in range(rounds):
        shuffler.shuffle(order)
        for name in order:
            n = calls // 10 if "stream" in name else calls
            gc.collect()
            gc.disable()
            try:
                start = time.perf_counter_ns()
                cases[name](n)
                samples[name].append((time.perf_counter_ns() - start) / n / 1000)
            finally:
                gc.enable()
    return samples


def paired_ratio(samples: dict[str, list[float]], case: str, baseline: str) -> float:
    """Median of the per-round ratios: each pair was measured moments apart, so the drift of a
    shared machine (which moves whole rounds) cancels out of each ratio."""
    return statistics.median(a / b for a, b in zip(samples[case], samples[baseline], strict=True))


def import_cost(runs: int) -> tuple[float, float]:
    """Best-of-`runs` wall time of `import brixo_otel` vs importing its core dependencies."""
    deps = (
        "import opentelemetry.trace, opentelemetry.sdk.trace, wrapt, httpx, "
        "opentelemetry.exporter.otlp.proto.http.trace_exporter"
    )

    def best(statement: str) -> float:
        timings = []
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", statement], check=True)
            timings.append(time.perf_counter() - start)
        return min(timings)

    baseline = best("pass")
    return best("import brixo_otel") - baseline, best(deps) - baseline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--import-runs", type=int, default=7)
    args = parser.parse_args()

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DiscardingExporter(), max_queue_size=1 << 16))
    brixo_otel.configure(tracer_provider=provider, traces_endpoint="none", outbox_path=":memory:")
    samples = measure(build_cases(provider), args.rounds, args.calls)

    print(f"per-call cost, median of {args.rounds} rounds (µs)")
    for name, values in samples.items():
        print(f"  {name:<28} {statistics.median(values):9.2f}")
    print("ratios, median of per-round ratios (decorated / raw span with the same message id)")
    ratios = {
        "sync": paired_ratio(samples, "@message sync", "raw span"),
        "sync vs raw span without the id": paired_ratio(
            samples, "@message sync", "raw span, no attributes"
        ),
        "hand-written wrapt (reference)": paired_ratio(
            samples, "hand-written wrapt + span", "raw span, no attributes"
        ),
        "async": paired_ratio(samples, "@message async", "raw span async"),
        "stream(100)": paired_ratio(samples, "@message stream(100)", "raw span stream(100)"),
    }
    for name, ratio in ratios.items():
        print(f"  {name:<32} {ratio:6.3f}")
    ours, deps = import_cost(args.import_runs)
    print(
        f"import brixo_otel {ours * 1000:.1f} ms vs core dependencies {deps * 1000:.1f} ms: "
        f"ratio {ours / deps:.2f}"
    )
    brixo_otel.shutdown()
    provider.shutdown()


if __name__ == "__main__":
    main()
