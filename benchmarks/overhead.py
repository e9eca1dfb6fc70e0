"""What `@message` costs per call, as a ratio to the same span written by hand on a provider
*without* brixo-otel, and what brixo-otel's span processors cost every other span.

Two TracerProviders in one process, each with the same BatchSpanProcessor over an exporter that
discards (as an app exporting over OTLP would have):

- the *bare* provider: nothing else; brixo-otel never touches it;
- the *joined* provider: the one `brixo_otel.configure(tracer_provider=...)` joined, so it also
  runs brixo-otel's span processor (tagging, the span index entry made at the message's start and
  completed at its end, the message count).

"Hand-written" is what a careful engineer writes for the same span on the bare provider:
`tracer.start_as_current_span(name, attributes={"brixo.message_id": ...})` around the call.
Each round takes the ratios in a shuffled order and measures the two sides of each back to back
(in a random order), with the garbage collector paused while a case runs; each ratio is the
median of its per-round ratios, of wall time and of this thread's CPU time (the drift of a
shared machine moves whole moments, so it cancels out of each ratio). Per-call times are the
median over all the runs of a case.

    python benchmarks/overhead.py [--rounds N] [--calls N] [--import-runs N]
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
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import wrapt
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import brixo_otel
from brixo_otel.attributes import MESSAGE_ID

CHUNKS = 100
Run = Callable[[int], None]


class DiscardingExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def provider_with_exporter() -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DiscardingExporter(), max_queue_size=1 << 16))
    return provider


def work(message_id: str) -> int:
    return len(message_id)


async def awork(message_id: str) -> int:
    return len(message_id)


def stream(message_id: str) -> Iterator[int]:
    yield from range(CHUNKS)


def hand_written(provider: TracerProvider) -> dict[str, Callable[..., Any]]:
    """The spans written by hand on `provider`: plain, with the id, async, streaming, and
    through a wrapt decorator (the reference for what any decorator costs)."""
    tracer = provider.get_tracer("bench")

    def plain(message_id: str) -> int:
        with tracer.start_as_current_span("answer"):
            return work(message_id)

    def tagged(message_id: str) -> int:
        with tracer.start_as_current_span("answer", attributes={MESSAGE_ID: message_id}):
            return work(message_id)

    async def atagged(message_id: str) -> int:
        with tracer.start_as_current_span("answer", attributes={MESSAGE_ID: message_id}):
            return await awork(message_id)

    def stagged(message_id: str) -> Iterator[int]:
        with tracer.start_as_current_span("answer", attributes={MESSAGE_ID: message_id}):
            yield from stream(message_id)

    @wrapt.decorator
    def traced(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        with tracer.start_as_current_span("answer", attributes={MESSAGE_ID: args[0]}):
            return wrapped(*args, **kwargs)

    return {
        "plain": plain,
        "tagged": tagged,
        "async": atagged,
        "stream": stagged,
        "wrapt": traced(work),
    }


def build_cases(bare: TracerProvider, joined: TracerProvider) -> dict[str, Run]:
    loop = asyncio.new_event_loop()

    def run_sync(fn: Callable[[str], Any]) -> Run:
        def many(n: int) -> None:
            for _ in range(n):
                fn("msg-1")

        return many

    def run_async(fn: Callable[[str], Any]) -> Run:
        async def many(n: int) -> None:
            for _ in range(n):
                await fn("msg-1")

        return lambda n: loop.run_until_complete(many(n))

    def run_stream(fn: Callable[[str], Any]) -> Run:
        def many(n: int) -> None:
            for _ in range(n):
                for _chunk in fn("msg-1"):
                    pass

        return many

    on_bare = hand_written(bare)
    on_joined = hand_written(joined)
    return {
        "bare function": run_sync(work),
        "bare provider: plain span": run_sync(on_bare["plain"]),
        "joined provider: plain span": run_sync(on_joined["plain"]),
        "bare provider: span with the id": run_sync(on_bare["tagged"]),
        "joined provider: span with the id": run_sync(on_joined["tagged"]),
        "bare provider: wrapt + span": run_sync(on_bare["wrapt"]),
        "@message sync": run_sync(brixo_otel.message(work)),
        "bare provider: async span": run_async(on_bare["async"]),
        "@message async": run_async(brixo_otel.message(awork)),
        "bare provider: stream(100)": run_stream(on_bare["stream"]),
        "@message stream(100)": run_stream(brixo_otel.message(stream)),
    }


#: (label, case, baseline, target): what each printed ratio compares.
RATIOS: tuple[tuple[str, str, str, float | None], ...] = (
    ("@message sync / hand-written span, bare provider", "@message sync",
     "bare provider: span with the id", 1.05),
    ("@message async / hand-written async span, bare", "@message async",
     "bare provider: async span", 1.05),
    ("@message stream(100) / hand-written stream, bare", "@message stream(100)",
     "bare provider: stream(100)", None),
    ("tax on a foreign span: plain span joined / bare", "joined provider: plain span",
     "bare provider: plain span", None),
    ("span with the id: joined / bare", "joined provider: span with the id",
     "bare provider: span with the id", None),
    ("@message sync / hand-written span, joined provider", "@message sync",
     "joined provider: span with the id", None),
    ("reference: wrapt decorator + span / span, bare", "bare provider: wrapt + span",
     "bare provider: span with the id", None),
)  # fmt: skip


def timed(run: Run, n: int) -> tuple[float, float]:
    """µs per call of `n` calls, wall time and this thread's CPU time (which leaves out the
    moments this shared machine ran other processes), with the garbage collector paused (it
    would bill one case for the garbage of all; it runs between cases)."""
    gc.collect()
    gc.disable()
    try:
        start, start_cpu = time.perf_counter_ns(), time.thread_time_ns()
        run(n)
        end, end_cpu = time.perf_counter_ns(), time.thread_time_ns()
    finally:
        gc.enable()
    return (end - start) / n / 1000, (end_cpu - start_cpu) / n / 1000


def measure(
    cases: dict[str, Run], rounds: int, calls: int
) -> tuple[dict[str, list[float]], dict[str, tuple[list[float], list[float]]]]:
    """Per-call µs of every case (wall), and for every ratio of `RATIOS` its per-round ratios
    (wall, CPU). Each round takes the ratios in a shuffled order and measures the two sides of
    each back to back, in a random order: the drift of a shared machine, which moves whole
    moments, then cancels out of each ratio."""
    per_case: dict[str, list[float]] = {name: [] for name in cases}
    ratios: dict[str, tuple[list[float], list[float]]] = {label: ([], []) for label, *_ in RATIOS}
    for run in cases.values():  # warm up
        run(max(1, calls // 10))
    order = list(RATIOS)
    shuffler = random.Random(7)
    for _ in range(rounds):
        shuffler.shuffle(order)
        for label, case, baseline, _target in order:
            n = calls // 10 if "stream" in case else calls
            sides = [case, baseline]
            shuffler.shuffle(sides)
            took = {side: timed(cases[side], n) for side in sides}
            for side, (wall, _cpu) in took.items():
                per_case[side].append(wall)
            ratios[label][0].append(took[case][0] / took[baseline][0])
            ratios[label][1].append(took[case][1] / took[baseline][1])
        per_case["bare function"].append(timed(cases["bare function"], calls)[0])
    return per_case, ratios


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
    parser.add_argument("--rounds", type=int, default=61)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--import-runs", type=int, default=7)
    args = parser.parse_args()

    bare = provider_with_exporter()
    joined = provider_with_exporter()
    brixo_otel.configure(tracer_provider=joined, traces_endpoint="none", outbox_path=":memory:")
    per_case, ratios = measure(build_cases(bare, joined), args.rounds, args.calls)

    print(f"@message: per-call cost, median over {args.rounds} rounds (µs, wall)")
    for name, values in per_case.items():
        print(f"  {name:<36} {statistics.median(values):9.2f}")
    print("ratios, median of per-round ratios of the two sides measured back to back (wall / CPU)")
    for label, _case, _baseline, target in RATIOS:
        wall, cpu = (statistics.median(values) for values in ratios[label])
        verdict = (
            ""
            if target is None
            else f"   target <= {target}: " + ("met" if wall <= target else "NOT met")
        )
        print(f"  {label:<52} {wall:6.3f} {cpu:6.3f}{verdict}")
    ours, deps = import_cost(args.import_runs)
    print(
        f"import brixo_otel {ours * 1000:.1f} ms vs core dependencies {deps * 1000:.1f} ms: "
        f"ratio {ours / deps:.2f}"
    )
    brixo_otel.shutdown()
    bare.shutdown()
    joined.shutdown()


if __name__ == "__main__":
    main()
