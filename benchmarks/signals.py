"""Signals: what `feedback()` costs the caller, how fast the worker drains a backlog, and memory
while the destination is down — each as a ratio to a baseline measured in the same run.

1. The caller. `feedback()` against its floor: one SQLite WAL commit of the same row, written by
   hand on a plain `sqlite3` connection (a file with the outbox's own schema, WAL,
   `synchronous=NORMAL`): `BEGIN IMMEDIATE`, the totals check, the `INSERT` of the payload
   `signal.to_json()` (built beforehand, off the clock), `COMMIT`; with SQLite's default
   checkpoints in the commits (the floor), and without (the commit alone: its WAL, like the
   outbox's, is checkpointed between cases, off the clock). `afeedback()` against
   `feedback()`. The worker thread runs with every stage and destination paused (the link
   stage, the OpenTelemetry record, Brixo): it claims nothing and a commit does not wake it,
   so it does not compete with the caller. Cases interleave round by round in a shuffled
   order, garbage collector paused per case; each ratio is the median of per-round ratios, of
   wall time and of the calling thread's CPU time.
1b. A burst of back-to-back `feedback()` calls with no maintenance between them: latency and
   how many signals the outbox could not take at once (held in memory, committed later).
2. Backlog drain. The destination is down (paused, as the worker pauses it after a 503) while
   `feedback()` commits N signals, each rating a message whose span is in the index; then it
   comes back. The clock runs from the first `feedback()` until the last stage of the last
   signal is recorded as done (counted by `on_delivered`, so nothing polls the outbox): the
   commits, the link stage, the OpenTelemetry record stage (feedback span, log event, counter)
   and the N POSTs. The ideal client: the same N POSTs (same URL, body and headers) from 4
   threads sharing one pooled httpx client, no outbox, no bookkeeping, against the same
   server. The server is a minimal HTTP/1.1 keep-alive server in a process of its own (its
   threads do not compete with ours for the GIL), which counts what it received.
3. Memory while N signals queue against a server that answers 503: RSS before and after.

    python benchmarks/signals.py [--rounds N] [--calls N] [--burst N] [--drain N] [--pairs N]
                                 [--queued N] [--only caller|drain|memory]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import brixo_otel
from brixo_otel._delivery._outbox import Outbox
from brixo_otel._policies import OutboxLimits
from brixo_otel._signal import validate

KEY = "bench-key"
THREADS = 4  # the worker's default `max_in_flight`, and the ideal client's threads
#: Roomy caps: the caller benchmark commits tens of thousands of rows and never drains them.
ROOMY = OutboxLimits(max_rows=10_000_000, max_bytes=1 << 34)

# -- the loopback server ---------------------------------------------------------------------


async def _serve() -> None:
    """A minimal HTTP/1.1 server: 202 to every request (503 while down), keep-alive; GET
    /_bench/down, /_bench/up switch it, /_bench/count tells the 2xx answers to signals."""
    state = {"down": False, "count": 0}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                path = head.split(b" ", 2)[1]
                body = b"{}"
                if path.startswith(b"/_bench/"):
                    if path == b"/_bench/down":
                        state["down"] = True
                    elif path == b"/_bench/up":
                        state["down"] = False
                    elif path == b"/_bench/reset":
                        state["count"] = 0
                    body = json.dumps(state).encode()
                elif state["down"]:
                    writer.write(
                        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"
                        b"Content-Length: 0\r\n\r\n"
                    )
                    continue
                else:
                    state["count"] += 1
                writer.write(
                    b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


class Server:
    def __init__(self, url: str) -> None:
        self.url = url
        self._control = httpx.Client(base_url=url)

    def control(self, what: str) -> dict[str, Any]:
        return dict(self._control.get(f"/_bench/{what}").json())


@contextmanager
def server_process() -> Iterator[Server]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield Server(f"http://127.0.0.1:{port}")
    finally:
        process.terminate()
        process.wait(timeout=10)


# -- helpers ---------------------------------------------------------------------------------


class Discard(SpanExporter):
    """An exporter that drops spans, counting the feedback spans among them."""

    def __init__(self) -> None:
        self.feedback_spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.feedback_spans += sum(1 for span in spans if span.name == "brixo.feedback")
        return SpanExportResult.SUCCESS


def provider() -> tuple[TracerProvider, Discard]:
    exporter = Discard()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=1 << 16))
    return tracer_provider, exporter


def configure(url: str, outbox: Path, **kwargs: Any) -> tuple[brixo_otel.Client, Discard]:
    tracer_provider, exporter = provider()
    client = brixo_otel.configure(
        api_key=KEY,
        base_url=url,
        traces_endpoint="none",
        outbox_path=outbox,
        tracer_provider=tracer_provider,
        **kwargs,
    )
    return client, exporter


def pause_everything(client: brixo_otel.Client) -> None:
    """Pause every stage and destination, as the worker pauses one after a 503: it then claims
    nothing, and a commit does not wake it."""
    processor = client._signals
    for destination in processor._destinations:
        processor._paused[destination] = math.inf


def count_held(client: brixo_otel.Client) -> list[int]:
    """Count the signals `feedback()` held in memory because the outbox was busy (the worker
    commits them later): a one-item list, updated as they happen."""
    processor = client._signals
    hold = processor._hold
    held = [0]

    def counting(signal: brixo_otel.Signal, exc: Exception) -> bool:
        held[0] += 1
        return hold(signal, exc)

    processor._hold = counting  # type: ignore[method-assign]
    return held


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


Clock = tuple[int, int]


def clock() -> Clock:
    """Now, as wall time and as this thread's CPU time (ns): a case reports both, so the cost
    shows apart from the moments this shared machine gave the CPU to other processes."""
    return time.perf_counter_ns(), time.thread_time_ns()


def elapsed(start: Clock) -> Clock:
    wall, cpu = clock()
    return wall - start[0], cpu - start[1]


def interleaved(
    cases: dict[str, Callable[[int], Clock]],
    rounds: int,
    calls: int,
    between: Callable[[], None] = lambda: None,
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per-call µs of each case, wall time and CPU time, one sample per round, in a shuffled
    order per round, with the garbage collector paused while a case runs. A case runs `calls`
    calls and returns what they took (`elapsed`), so it can prepare its input off the clock;
    `between` runs before each case, off the clock."""
    wall: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    for run in cases.values():
        run(max(1, calls // 5))  # warm up: statements prepared, pages cached
    order = list(cases)
    shuffler = random.Random(11)
    for _ in range(rounds):
        shuffler.shuffle(order)
        for name in order:
            between()
            gc.collect()
            gc.disable()
            try:
                took = cases[name](calls)
            finally:
                gc.enable()
            wall[name].append(took[0] / calls / 1000)
            cpu[name].append(took[1] / calls / 1000)
    return wall, cpu


def paired_ratio(samples: dict[str, list[float]], case: str, baseline: str) -> float:
    """Median of per-round ratios: the two sides of each ran moments apart."""
    return statistics.median(a / b for a, b in zip(samples[case], samples[baseline], strict=True))


def verdict(ratio: float, target: float, *, at_least: bool = False) -> str:
    met = ratio >= target if at_least else ratio <= target
    return f"target {'>=' if at_least else '<='} {target}: {'met' if met else 'NOT met'}"


# -- 1. the caller ---------------------------------------------------------------------------

_TOTALS = "SELECT rows, bytes FROM totals WHERE id = 0"
_INSERT = (
    "INSERT INTO deliveries (signal_id, destination, payload, size, created_at, next_attempt_at)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)


def sqlite_floor(
    path: Path, *, inline_checkpoints: bool
) -> tuple[Callable[[int], Clock], Callable[[], None]]:
    """`n` hand-written WAL commits of the row `feedback()` commits, on a plain connection; the
    payloads (`signal.to_json()` of fresh signals) are built first, off the clock.

    With `inline_checkpoints`, SQLite's default: a commit that takes the WAL past 1000 pages
    checkpoints it, on the clock. Without, the WAL is checkpointed between cases, off the
    clock (the second function), as the outbox's is by its worker, never by `feedback()`."""
    Outbox(str(path), ROOMY).close()  # the outbox's own schema, triggers included
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    if not inline_checkpoints:
        conn.execute("PRAGMA wal_autocheckpoint = 0")

    def many(n: int) -> Clock:
        rows = []
        for _ in range(n):
            signal = validate("thumbs_up", message_id="m")
            rows.append((signal.id, signal.to_json()))
        execute = conn.execute
        start = clock()
        for signal_id, payload in rows:
            now = time.time()
            execute("BEGIN IMMEDIATE")
            execute(_TOTALS).fetchone()
            execute(_INSERT, (signal_id, "brixo.link", payload, len(payload.encode()), now, now))
            execute("COMMIT")
        return elapsed(start)

    def checkpoint() -> None:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    return many, checkpoint


def caller_cost(server: Server, workdir: Path, rounds: int, calls: int) -> dict[str, float]:
    """`feedback()` and `afeedback()` against the floor, with every stage paused; the outbox's
    WAL is checkpointed between cases, off the clock (with the worker paused it is otherwise
    checkpointed once per poll only: see `burst`)."""
    path = workdir / "caller.db"
    client, _ = configure(server.url, path, outbox_limits=ROOMY)
    brixo_otel.feedback("thumbs_up", message_id="m")  # the worker and its senders start
    pause_everything(client)
    held = count_held(client)
    time.sleep(0.2)  # the worker goes idle
    loop = asyncio.new_event_loop()
    maintenance = sqlite3.connect(str(path), isolation_level=None)

    def sync(n: int) -> Clock:
        feedback = brixo_otel.feedback
        start = clock()
        for _ in range(n):
            feedback("thumbs_up", message_id="m")
        return elapsed(start)

    async def many_async(n: int) -> Clock:
        afeedback = brixo_otel.afeedback
        start = clock()
        for _ in range(n):
            await afeedback("thumbs_up", message_id="m")
        return elapsed(start)

    floor_case, _ = sqlite_floor(workdir / "floor.db", inline_checkpoints=True)
    commit_case, commit_checkpoint = sqlite_floor(workdir / "commit.db", inline_checkpoints=False)

    def checkpoints() -> None:
        commit_checkpoint()
        maintenance.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    floor = "one SQLite WAL commit (floor)"
    commit = "the commit alone, no checkpoint"
    wall, cpu = interleaved(
        {
            floor: floor_case,
            commit: commit_case,
            "feedback()": sync,
            "afeedback()": lambda n: loop.run_until_complete(many_async(n)),
        },
        rounds,
        calls,
        checkpoints,
    )
    loop.close()
    maintenance.close()
    brixo_otel.shutdown(timeout=1)
    print(
        f"1. the caller, delivery paused: per call, median of {rounds} rounds x {calls}"
        " (µs, wall / CPU of the calling thread)"
    )
    for name in wall:
        print(
            f"  {name:<34} {statistics.median(wall[name]):8.1f} {statistics.median(cpu[name]):8.1f}"
        )
    pairs = (
        ("feedback() / floor", "feedback()", floor, 1.2),
        ("feedback() / the commit alone", "feedback()", commit, None),
        ("afeedback() / feedback()", "afeedback()", "feedback()", 1.5),
    )
    ratios = {}
    for label, case, baseline, target in pairs:
        ratio = ratios[label] = paired_ratio(wall, case, baseline)
        print(
            f"  {label:<34} {ratio:8.3f} {paired_ratio(cpu, case, baseline):8.3f}   "
            + ("" if target is None else f"{verdict(ratio, target)} (wall)")
        )
    print(
        f"  calls that found the outbox busy and held their signal in memory: {held[0]} of "
        f"{2 * rounds * calls + 2 * (calls // 5)}"
    )
    return ratios


def burst(server: Server, workdir: Path, count: int) -> None:
    """`count` back-to-back `feedback()` calls, no maintenance between them: latency and how
    many signals waited in memory, (a) with every stage paused (the worker then only checks the
    WAL once per poll) and (b) with only the destination paused (the worker links and records
    meanwhile, committing and checkpointing as it goes)."""
    if count <= 0:
        return
    print(f"1b. a burst of {count} back-to-back feedback() calls (µs)")
    for label, pause in (("every stage paused", True), ("destination paused", False)):
        client, _ = configure(server.url, workdir / f"burst-{pause}.db", outbox_limits=ROOMY)
        brixo_otel.feedback("thumbs_up", message_id="m")
        if pause:
            pause_everything(client)
        else:
            client._signals._paused["brixo"] = math.inf
        held = count_held(client)
        time.sleep(0.2)
        timings = []
        feedback = brixo_otel.feedback
        for _ in range(count):
            start = time.perf_counter_ns()
            feedback("thumbs_up", message_id="m")
            timings.append((time.perf_counter_ns() - start) / 1000)
        brixo_otel.shutdown(timeout=1)
        timings.sort()
        print(
            f"  {label:<20} median {statistics.median(timings):7.1f}  p99 "
            f"{timings[int(len(timings) * 0.99)]:8.1f}  max {timings[-1]:9.1f}  "
            f"held in memory {held[0]}"
        )


# -- 2. backlog drain ------------------------------------------------------------------------


def ideal_client(url: str, count: int) -> float:
    """Signals/s of the ideal non-durable client: the same POSTs from THREADS threads sharing
    one pooled httpx client; no outbox, no bookkeeping."""
    headers = {
        "Authorization": f"Bearer {KEY}",
        "Content-Type": "application/vnd.api+json",
        "Accept": "application/vnd.api+json",
    }
    numbers = iter(range(count))
    lock = threading.Lock()
    failures: list[int] = []
    with httpx.Client(
        base_url=url, limits=httpx.Limits(max_connections=8, max_keepalive_connections=8)
    ) as http:

        def post_all() -> None:
            while True:
                with lock:
                    number = next(numbers, None)
                if number is None:
                    return
                occurred = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
                body = json.dumps(
                    {"data": {"type": "signals", "attributes": {
                        "name": "feedback", "value": "thumbs_up", "occurred_at": occurred}}},
                    separators=(",", ":"),
                )  # fmt: skip
                response = http.post(
                    f"/v1/messages/m-{number}/signals",
                    content=body,
                    headers={**headers, "Idempotency-Key": str(number)},
                )
                if not 200 <= response.status_code < 300:
                    failures.append(response.status_code)

        threads = [threading.Thread(target=post_all) for _ in range(THREADS)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
    assert not failures, f"the ideal client got {len(failures)} failures"
    return count / elapsed


class Deliveries:
    """Counts deliveries per destination (the `on_delivered` callback, in the worker's thread)
    and notes when every stage of every signal is done, without polling the outbox."""

    def __init__(self, count: int, destinations: Sequence[str]) -> None:
        self._left = {destination: count for destination in destinations}
        self.done = threading.Event()
        self.finished_at = 0.0

    def __call__(self, signal: brixo_otel.Signal, destination: str) -> None:
        self._left[destination] -= 1
        if not any(self._left.values()):
            self.finished_at = time.perf_counter()
            self.done.set()


def drain(server: Server, workdir: Path, name: str, count: int) -> tuple[float, float, float]:
    """Signals/s of the worker draining `count` signals committed while the destination was
    down, timed from the first `feedback()` until the last stage of the last signal is
    recorded as done; and the split: seconds committing (the worker linking and recording
    meanwhile), seconds draining after the destination came back."""
    deliveries = Deliveries(count, ("opentelemetry", "brixo"))
    client, exporter = configure(server.url, workdir / f"{name}.db", on_delivered=deliveries)

    @brixo_otel.message
    def answer(message_id: str) -> str:
        return message_id

    for number in range(count):  # the rated messages: their spans are in the index
        answer(f"m-{number}")
    client.tracer_provider.force_flush()
    processor = client._signals
    processor._paused["brixo"] = math.inf  # the outage: as after a 503, Brixo gets no claims
    server.control("reset")
    feedback = brixo_otel.feedback
    gc.collect()
    start = time.perf_counter()
    for number in range(count):
        feedback("thumbs_up", message_id=f"m-{number}")
    committed = time.perf_counter()
    processor._paused.pop("brixo")  # the destination is back
    processor._wake.set()
    assert deliveries.done.wait(600), "the backlog was not drained"
    end = deliveries.finished_at
    assert brixo_otel.flush(timeout=60), "something is left in the outbox"
    received = server.control("count")["count"]
    client.tracer_provider.force_flush()
    brixo_otel.shutdown()
    assert received == count, f"the server received {received} of {count} signals"
    assert exporter.feedback_spans == count, f"{exporter.feedback_spans} feedback spans"
    return count / (end - start), committed - start, end - committed


def backlog(server: Server, workdir: Path, count: int, pairs: int) -> float:
    ideal_client(server.url, count // 4)  # warm up
    ratios, ours, ideals, splits = [], [], [], []
    for index in range(pairs):
        ideal = ideal_client(server.url, count)
        rate, committing, draining = drain(server, workdir, f"drain-{index}", count)
        ours.append(rate)
        ideals.append(ideal)
        splits.append((committing, draining))
        ratios.append(rate / ideal)
    ratio = statistics.median(ratios)
    print(f"2. backlog drain, {count} signals, {THREADS} threads each, {pairs} pairs")
    for rate, ideal, (committing, draining) in zip(ours, ideals, splits, strict=True):
        print(
            f"  worker {rate:7.0f} signals/s (committing {committing:.2f} s, then draining "
            f"{draining:.2f} s) vs ideal httpx client {ideal:7.0f} signals/s: {rate / ideal:.2f}"
        )
    print(f"  worker / ideal (median of pairs) {ratio:8.2f}   {verdict(ratio, 0.5, at_least=True)}")
    return ratio


# -- 3. memory while down --------------------------------------------------------------------


def memory_while_down(server: Server, workdir: Path, count: int) -> None:
    server.control("down")
    limits = OutboxLimits(max_rows=4 * count, max_bytes=1 << 34)
    configure(server.url, workdir / "down.db", outbox_limits=limits)
    brixo_otel.feedback("thumbs_up", message_id="m")
    before = rss_mib()
    for _ in range(count):
        brixo_otel.feedback("thumbs_up", message_id="m")
    after = rss_mib()
    brixo_otel.shutdown(timeout=1)
    server.control("up")
    print(
        f"3. {count} signals queued against a server answering 503: RSS {before:.1f} MiB -> "
        f"{after:.1f} MiB (+{after - before:.1f} MiB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=81)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--burst", type=int, default=20_000)
    parser.add_argument("--drain", type=int, default=2000)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--queued", type=int, default=50_000)
    parser.add_argument("--only", choices=("caller", "drain", "memory"), help="one part only")
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve())
        return

    workdir = Path(tempfile.mkdtemp(prefix="brixo-bench-"))
    with server_process() as server:
        if args.only in (None, "caller"):
            caller_cost(server, workdir, args.rounds, args.calls)
            burst(server, workdir, args.burst)
        if args.only in (None, "drain"):
            backlog(server, workdir, args.drain, args.pairs)
        if args.only in (None, "memory"):
            memory_while_down(server, workdir, args.queued)


if __name__ == "__main__":
    main()
