"""The delivery worker against scripted destinations: every answer, every bounded wait."""

from __future__ import annotations

import gc
import logging
import math
import sqlite3
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import context as otel_context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from brixo_otel._delivery._outbox import Outbox
from brixo_otel._delivery._retry import backoff_delay, retry_delay
from brixo_otel._delivery._worker import SignalProcessor
from brixo_otel._errors import ConfigurationError
from brixo_otel._policies import OutboxLimits, RetryPolicy
from brixo_otel._signal import Signal, validate
from brixo_otel.exporters import DeliveryResult, DeliveryStatus, SignalExporter
from tests._services import wait_for

pytestmark = pytest.mark.timeout(60)

FAST = RetryPolicy(initial_backoff=0.01, multiplier=2.0, max_backoff=0.05, max_retry_after=2.0)
Answer = Callable[[Signal, int], DeliveryResult]


def delivered(signal: Signal, attempt: int) -> DeliveryResult:
    return DeliveryResult.delivered()


class ScriptedExporter(SignalExporter):
    """A real exporter whose answers come from a script: f(signal, attempt number)."""

    def __init__(self, name: str = "brixo", answer: Answer = delivered) -> None:
        self.name = name
        self.answer = answer
        self.lock = threading.Lock()
        self.attempts: dict[str, int] = {}
        self.calls: list[tuple[str, float]] = []
        self.delivered: list[str] = []
        self.suppressed: list[object] = []
        self.shut_down = False

    def export(self, signal: Signal) -> DeliveryResult:
        with self.lock:
            attempt = self.attempts.get(signal.id, 0)
            self.attempts[signal.id] = attempt + 1
            self.calls.append((signal.id, time.monotonic()))
            self.suppressed.append(
                otel_context.get_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY)
            )
        result = self.answer(signal, attempt)
        if result.status is DeliveryStatus.DELIVERED:
            with self.lock:
                self.delivered.append(signal.id)
        return result

    def shutdown(self) -> None:
        self.shut_down = True


def make_signal(index: int = 0) -> Signal:
    return validate("thumbs_down", message_id=f"msg-{index}", user_message="secret words")


class Harness:
    """Builds processors on one outbox file and tears every one down, whatever the test did."""

    def __init__(self, tmp_path: Path) -> None:
        self.path = str(tmp_path / "outbox.db")
        self.outboxes: list[Outbox] = []
        self.processors: list[SignalProcessor] = []

    def outbox(self, limits: OutboxLimits | None = None) -> Outbox:
        box = Outbox(self.path, limits or OutboxLimits())
        self.outboxes.append(box)
        return box

    def processor(
        self, *exporters: SignalExporter, outbox: Outbox | None = None, **options: Any
    ) -> SignalProcessor:
        options.setdefault("policy", FAST)
        options.setdefault("poll_interval", 0.1)
        processor = SignalProcessor(outbox or self.outbox(), list(exporters), **options)
        self.processors.append(processor)
        return processor

    def close(self) -> None:
        for processor in self.processors:
            processor.shutdown(timeout=2)
        for box in self.outboxes:
            box.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    built = Harness(tmp_path)
    yield built
    built.close()


def statuses(*script: DeliveryResult) -> Answer:
    """Answer the n-th attempt of every signal with script[n] (the last one repeats)."""
    return lambda signal, attempt: script[min(attempt, len(script) - 1)]


RETRY = DeliveryResult(DeliveryStatus.RETRY, "HTTP 503")
NOT_FOUND = DeliveryResult(DeliveryStatus.NOT_FOUND, "HTTP 404: message not found")
OK = DeliveryResult.delivered()


# -- each answer → its action -------------------------------------------------------------------


def test_delivers_each_signal_once_with_instrumentation_suppressed(harness: Harness) -> None:
    exporter = ScriptedExporter()
    seen: list[tuple[str, str]] = []
    processor = harness.processor(
        exporter, on_delivered=lambda signal, dest: seen.append((signal.id, dest))
    )
    signals = [make_signal(i) for i in range(10)]

    assert all(processor.enqueue(signal) for signal in signals)
    assert processor.flush(timeout=5)

    assert sorted(exporter.delivered) == sorted(s.id for s in signals)
    assert sorted(seen) == sorted((s.id, "brixo") for s in signals)
    assert exporter.suppressed == [True] * 10
    assert harness.outboxes[0].stats()["brixo"]["delivered"] == 10


def test_retry_then_delivered_counts_attempts(harness: Harness) -> None:
    exporter = ScriptedExporter(answer=statuses(RETRY, RETRY, OK))
    processor = harness.processor(exporter)
    signal = make_signal()
    processor.enqueue(signal)
    assert processor.flush(timeout=5)
    assert exporter.attempts == {signal.id: 3}
    assert exporter.delivered == [signal.id]


def test_not_found_then_delivered(harness: Harness) -> None:
    exporter = ScriptedExporter(answer=statuses(NOT_FOUND, OK))
    processor = harness.processor(exporter)
    signal = make_signal()
    processor.enqueue(signal)
    assert processor.flush(timeout=5)
    assert exporter.attempts == {signal.id: 2}


def test_not_found_past_its_window_is_dead_lettered(harness: Harness) -> None:
    errors: list[tuple[str, str, str]] = []
    exporter = ScriptedExporter(answer=statuses(NOT_FOUND))
    policy = RetryPolicy(initial_backoff=0.02, max_backoff=0.05, not_found_window=0.3)
    processor = harness.processor(
        exporter, policy=policy, on_error=lambda s, d, r: errors.append((s.id, d, r))
    )
    signal = make_signal()
    processor.enqueue(signal)

    assert processor.flush(timeout=5)

    [letter] = harness.outboxes[0].dead_letters()
    assert letter.reason.startswith(f"not found after {exporter.attempts[signal.id]} attempts")
    assert letter.reason.endswith("HTTP 404: message not found")
    assert letter.attempts == exporter.attempts[signal.id]
    assert errors == [(signal.id, "brixo", letter.reason)]


def test_retry_past_max_age_is_dead_lettered(harness: Harness) -> None:
    exporter = ScriptedExporter(answer=statuses(RETRY))
    policy = RetryPolicy(initial_backoff=0.02, max_backoff=0.05, max_age=0.3)
    processor = harness.processor(exporter, policy=policy)
    processor.enqueue(make_signal())
    assert processor.flush(timeout=5)
    [letter] = harness.outboxes[0].dead_letters()
    assert letter.reason.startswith(f"gave up after {letter.attempts} attempts over")
    assert letter.reason.endswith(": HTTP 503")


def test_permanent_is_dead_lettered_at_once_with_the_reason(harness: Harness) -> None:
    errors: list[str] = []
    rejected = DeliveryResult(DeliveryStatus.PERMANENT, "HTTP 400: value is not allowed")
    exporter = ScriptedExporter(answer=statuses(rejected))
    processor = harness.processor(exporter, on_error=lambda s, d, reason: errors.append(reason))
    signal = make_signal()
    processor.enqueue(signal)
    assert processor.flush(timeout=5)
    assert exporter.attempts == {signal.id: 1}
    [letter] = harness.outboxes[0].dead_letters()
    assert (letter.reason, letter.attempts) == ("HTTP 400: value is not allowed", 1)
    assert errors == ["HTTP 400: value is not allowed"]


def test_throttled_pauses_the_whole_destination(harness: Harness) -> None:
    throttled = DeliveryResult(DeliveryStatus.THROTTLED, "HTTP 429", retry_after=0.4)
    first: list[str] = []

    def answer(signal: Signal, attempt: int) -> DeliveryResult:
        if not first:
            first.append(signal.id)
            return throttled
        return OK

    exporter = ScriptedExporter(answer=answer)
    other = ScriptedExporter(name="mixpeek")
    processor = harness.processor(exporter, other, max_in_flight=1)
    for index in range(3):
        processor.enqueue(make_signal(index))

    assert processor.flush(timeout=5)

    brixo_times = [at for _, at in exporter.calls]
    assert len(brixo_times) == 4  # one throttled attempt, then three deliveries
    assert brixo_times[1] - brixo_times[0] >= 0.39  # nothing went to brixo while paused
    assert len(other.delivered) == 3  # the other destination was not held up
    assert max(at for _, at in other.calls) < brixo_times[1]


def test_unauthorized_keeps_rows_logs_once_and_a_good_key_delivers_them(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="brixo_otel")
    refused = DeliveryResult(DeliveryStatus.UNAUTHORIZED, "HTTP 401")
    exporter = ScriptedExporter(answer=statuses(refused))
    processor = harness.processor(exporter)
    signals = [make_signal(i) for i in range(3)]
    for signal in signals:
        processor.enqueue(signal)

    assert not processor.flush(timeout=0.5)

    outbox = harness.outboxes[0]
    assert outbox.stats()["brixo"] == {
        "pending": 3,
        "in_flight": 0,
        "delivered": 0,
        "dead": 0,
        "corrupt": 0,
    }
    attempts_while_paused = len(exporter.calls)
    assert 1 <= attempts_while_paused <= 4  # in flight when the refusal came, then nothing
    key_errors = [r for r in caplog.records if "refused the API key" in r.getMessage()]
    assert len(key_errors) == 1
    assert "kept in the outbox" in key_errors[0].getMessage()
    assert processor.shutdown(timeout=2)

    good = ScriptedExporter()
    fresh = harness.processor(good, outbox=outbox)  # a new client, valid key, same outbox
    assert fresh.flush(timeout=5)
    assert sorted(good.delivered) == sorted(s.id for s in signals)


def test_an_exporter_that_raises_is_retried_and_the_worker_survives(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    def answer(signal: Signal, attempt: int) -> DeliveryResult:
        if attempt == 0:
            raise ConnectionResetError("peer reset")
        return OK

    exporter = ScriptedExporter(answer=answer)
    processor = harness.processor(exporter)
    first, second = make_signal(1), make_signal(2)
    processor.enqueue(first)
    assert processor.flush(timeout=5)
    processor.enqueue(second)
    assert processor.flush(timeout=5)
    assert exporter.attempts == {first.id: 2, second.id: 2}
    assert any("raised ConnectionResetError" in r.getMessage() for r in caplog.records)


def test_a_failing_callback_never_stops_delivery(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(signal: Signal, destination: str) -> None:
        raise ValueError("app bug")

    exporter = ScriptedExporter()
    processor = harness.processor(exporter, on_delivered=explode)
    for index in range(5):
        processor.enqueue(make_signal(index))
    assert processor.flush(timeout=5)
    assert len(exporter.delivered) == 5
    assert any("on_delivered callback raised" in r.getMessage() for r in caplog.records)


def test_corrupt_row_is_dead_lettered_and_the_rest_delivered(harness: Harness) -> None:
    outbox = harness.outbox()
    for index in range(3):
        outbox.add(make_signal(index), ["brixo"])
    conn = sqlite3.connect(harness.path, isolation_level=None)
    try:
        conn.execute("UPDATE deliveries SET payload = 'not json' WHERE id = 1")
    finally:
        conn.close()
    exporter = ScriptedExporter()
    processor = harness.processor(exporter, outbox=outbox)
    assert processor.flush(timeout=5)
    assert len(exporter.delivered) == 2
    assert outbox.stats()["brixo"]["corrupt"] == 1


# -- start, flush, shutdown ---------------------------------------------------------------------


def test_leftovers_of_a_previous_process_are_delivered_without_new_feedback(
    harness: Harness,
) -> None:
    outbox = harness.outbox()
    outbox.add(make_signal(1), ["brixo"])
    exporter = ScriptedExporter()
    harness.processor(exporter, outbox=outbox)
    wait_for(lambda: exporter.delivered or None, 5, "the leftover to be delivered", interval=0.005)


def test_rows_added_by_another_process_are_picked_up_by_polling(harness: Harness) -> None:
    exporter = ScriptedExporter()
    processor = harness.processor(exporter)
    processor.enqueue(make_signal(1))
    assert processor.flush(timeout=5)
    harness.outbox().add(make_signal(2), ["brixo"])  # another handle: nobody wakes the worker
    wait_for(lambda: len(exporter.delivered) == 2 or None, 2, "the second delivery", interval=0.005)


def test_flush_timeout_is_honoured(harness: Harness) -> None:
    later = DeliveryResult(DeliveryStatus.RETRY, "HTTP 503", retry_after=30)
    processor = harness.processor(ScriptedExporter(answer=statuses(later)), policy=RetryPolicy())
    processor.enqueue(make_signal())
    assert processor.flush(timeout=0.05) is False  # the first attempt is made, then 30 s
    started = time.monotonic()
    # Nothing left can be sent before the deadline: flush says so at once, not in 0.3 s.
    assert not processor.flush(timeout=0.3)
    assert time.monotonic() - started < 0.2


def test_flush_waits_its_timeout_while_something_can_still_complete(harness: Harness) -> None:
    slow = ScriptedExporter(answer=lambda signal, attempt: time.sleep(2) or OK)  # type: ignore[func-returns-value]
    processor = harness.processor(slow)
    processor.enqueue(make_signal())
    started = time.monotonic()
    assert not processor.flush(timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 0.8


def test_shutdown_during_a_30s_backoff_returns_within_its_timeout(harness: Harness) -> None:
    later = DeliveryResult(DeliveryStatus.THROTTLED, "HTTP 429", retry_after=30)
    exporter = ScriptedExporter(answer=statuses(later))
    processor = harness.processor(exporter, policy=RetryPolicy(), poll_interval=30)
    processor.enqueue(make_signal())
    box = harness.outboxes[0]

    def recorded() -> bool | None:  # the answer is stored: the worker sleeps until the pause ends
        counts = box.stats().get("brixo", {})
        return bool(exporter.calls) and (counts.get("pending"), counts.get("in_flight")) == (1, 0)

    wait_for(lambda: recorded() or None, 5, "the 429 to be recorded", interval=0.005)
    assert len(exporter.calls) == 1

    started = time.monotonic()
    assert processor.shutdown(timeout=2)
    assert time.monotonic() - started < 1.0
    assert exporter.shut_down
    assert harness.outboxes[0].pending_count(["brixo"]) == 1  # kept for the next process
    assert processor.shutdown(timeout=2)  # idempotent


def test_shutdown_releases_an_export_that_hangs(harness: Harness) -> None:
    release = threading.Event()

    def hang(signal: Signal, attempt: int) -> DeliveryResult:
        release.wait(30)
        return OK

    exporter = ScriptedExporter(answer=hang)
    processor = harness.processor(exporter)
    processor.enqueue(make_signal())
    wait_for(lambda: exporter.calls or None, 5, "the export to start", interval=0.005)
    try:
        started = time.monotonic()
        assert processor.shutdown(timeout=0.5)
        assert time.monotonic() - started < 1.0
        stats = harness.outboxes[0].stats()["brixo"]
        assert (stats["pending"], stats["in_flight"]) == (1, 0)
    finally:
        release.set()


def test_shutdown_delivers_what_is_due_first(harness: Harness) -> None:
    exporter = ScriptedExporter()
    processor = harness.processor(exporter)
    for index in range(20):
        processor.enqueue(make_signal(index))
    assert processor.shutdown(timeout=5)
    assert len(exporter.delivered) == 20
    assert processor.enqueue(make_signal(99))  # still stored for the next process
    assert not processor.flush(timeout=0.1)


def test_without_threads_flush_and_shutdown_deliver_inline(harness: Harness) -> None:
    exporter = ScriptedExporter()
    processor = harness.processor(exporter)

    def no_threads(self: threading.Thread) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(threading.Thread, "start", no_threads)
        assert processor.enqueue(make_signal(1))
        assert processor.flush(timeout=5)
        assert processor.enqueue(make_signal(2))
        assert processor.shutdown(timeout=5)
    assert len(exporter.delivered) == 2


def test_many_threads_enqueue_while_flush_and_shutdown_race(harness: Harness) -> None:
    exporter = ScriptedExporter()
    processor = harness.processor(exporter)
    accepted: list[str] = []
    failures: list[BaseException] = []
    lock = threading.Lock()
    go = threading.Barrier(7)

    def produce(worker: int) -> None:
        try:
            go.wait(5)
            for index in range(150):
                signal = make_signal(worker * 1000 + index)
                if processor.enqueue(signal):
                    with lock:
                        accepted.append(signal.id)
        except BaseException as exc:  # reported below; never expected
            failures.append(exc)

    def race() -> None:
        try:
            go.wait(5)
            time.sleep(0.02)
            processor.flush(timeout=0.2)
            processor.shutdown(timeout=1)
            processor.flush(timeout=0.1)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(6)]
    threads.append(threading.Thread(target=race))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert not failures
    assert len(accepted) == 900  # shutdown never refuses: the outbox keeps what comes after

    rest = ScriptedExporter()
    assert harness.processor(rest, outbox=harness.outboxes[0]).flush(timeout=10)
    assert set(exporter.delivered) | set(rest.delivered) == set(accepted)


# -- refusal, limits, memory --------------------------------------------------------------------


def test_full_outbox_refuses_loudly(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="brixo_otel")
    errors: list[tuple[str, str]] = []
    processor = harness.processor(
        ScriptedExporter(answer=statuses(RETRY)),
        policy=RetryPolicy(),
        outbox=harness.outbox(OutboxLimits(max_rows=2)),
        on_error=lambda s, dest, reason: errors.append((dest, reason)),
    )
    assert processor.enqueue(make_signal(1))
    assert processor.enqueue(make_signal(2))
    assert not processor.enqueue(make_signal(3))
    assert not processor.enqueue(make_signal(4))

    assert [dest for dest, _ in errors] == ["brixo", "brixo"]
    assert "max_rows=2" in errors[0][1]
    refusals = [r for r in caplog.records if "was refused" in r.getMessage()]
    assert len(refusals) == 1  # rate-limited
    assert "secret words" not in caplog.text


def test_memory_stays_flat_while_the_destination_is_down(harness: Harness) -> None:
    """20,000 signals while every answer is THROTTLED or RETRY: they wait on disk, not in RAM.

    tracemalloc slows every allocation several-fold, so it watches the last 5,000 enqueues
    only; the first 15,000 are checked by the count of live Python memory blocks.
    """
    down = [
        DeliveryResult(DeliveryStatus.THROTTLED, "HTTP 429", retry_after=60),
        DeliveryResult(DeliveryStatus.RETRY, "HTTP 503"),
    ]
    exporter = ScriptedExporter(answer=lambda signal, attempt: down[attempt % 2])
    processor = harness.processor(
        exporter,
        policy=RetryPolicy(),
        poll_interval=1.0,
        outbox=harness.outbox(OutboxLimits(max_rows=200_000, max_bytes=500 * 1024 * 1024)),
    )
    template = make_signal()
    processor.enqueue(template)
    wait_for(lambda: exporter.calls or None, 5, "the first attempt", interval=0.005)

    def enqueue(first: int, count: int) -> None:
        for index in range(first, first + count):
            processor.enqueue(
                Signal(
                    value=template.value,
                    target=template.target,
                    message_id=f"m-{index}",
                    conversation_id=None,
                    occurred_at=template.occurred_at,
                    user_message=template.user_message,
                )
            )

    enqueue(0, 1000)  # warm caches before measuring
    gc.collect()
    blocks = sys.getallocatedblocks()

    def settled() -> None:
        # A burst may find the outbox busy for a moment (a checkpoint): those signals wait in
        # the bounded memory buffer until the worker commits them, which it does at once.
        wait_for(lambda: not processor._held or None, 10, "held signals committed", interval=0.01)

    enqueue(1000, 14_000)
    settled()
    gc.collect()
    assert sys.getallocatedblocks() - blocks < 3000  # queued signals would be ~10 blocks each
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        enqueue(15_000, 5_000)
        settled()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak - base < 1024 * 1024  # 5,000 signals held in memory would be ~2.5 MiB
    assert current - base < 256 * 1024
    # Every signal is on disk, waiting: in the link stage or already fanned out to the down
    # destination (waiting for the fan-out of all 20,000 would only time the worker).
    box = harness.outboxes[0]
    wait_for(
        lambda: box.pending_count() == 20_001 or None, 5, "all 20,001 to be stored", interval=0.005
    )
    assert len(exporter.calls) <= 8


# -- configuration and metrics ------------------------------------------------------------------


def test_exporters_must_have_distinct_names(harness: Harness) -> None:
    with pytest.raises(ConfigurationError, match="brixo"):
        harness.processor(ScriptedExporter(), ScriptedExporter())
    with pytest.raises(ConfigurationError):
        harness.processor(ScriptedExporter(), max_in_flight=0)


def test_metrics_count_every_outcome(harness: Harness) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    rejected = DeliveryResult(DeliveryStatus.PERMANENT, "HTTP 400: bad value", http_status=400)
    unavailable = DeliveryResult(DeliveryStatus.RETRY, "HTTP 503", retry_after=0.3, http_status=503)
    # No answer before the fourth enqueue: it must find the outbox full (three rows).
    enqueued = threading.Event()

    def answer(signal: Signal, attempt: int) -> DeliveryResult:
        enqueued.wait(5)
        if signal.message_id == "msg-0":
            return rejected
        return OK if attempt else unavailable

    try:
        processor = harness.processor(
            ScriptedExporter(answer=answer),
            meter_provider=provider,
            outbox=harness.outbox(OutboxLimits(max_rows=3)),
        )
        for index in range(4):
            processor.enqueue(make_signal(index))
        enqueued.set()
        assert processor.flush(timeout=5)
        points: dict[tuple[str, tuple[tuple[str, Any], ...]], float] = {}
        data = reader.get_metrics_data()
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        attributes = dict(point.attributes or {})
                        key = (metric.name, tuple(sorted(attributes.items())))
                        points[key] = point.value  # type: ignore[union-attr]
    finally:
        provider.shutdown()

    brixo = (("destination", "brixo"),)
    assert points[("brixo.signals.enqueued", brixo)] == 3
    assert points[("brixo.signals.refused", (*brixo, ("reason", "outbox_full")))] == 1
    assert points[("brixo.signals.delivered", brixo)] == 2
    assert points[("brixo.signals.retried", (*brixo, ("reason", "http_503")))] == 2
    assert points[("brixo.signals.dead_lettered", (*brixo, ("reason", "http_400")))] == 1
    assert points[("brixo.outbox.depth", brixo)] == 0


def _sums(reader: InMemoryMetricReader, name: str) -> dict[tuple[tuple[str, Any], ...], float]:
    data = reader.get_metrics_data()
    found: dict[tuple[tuple[str, Any], ...], float] = {}
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        key = tuple(sorted(dict(point.attributes or {}).items()))
                        found[key] = point.value  # type: ignore[union-attr]
    return found


def test_enqueued_counts_every_commit_of_concurrent_callers_exactly(harness: Harness) -> None:
    """The app threads count their commits without a lock (see `brixo_otel._tally.Count`),
    while the reader collects: every collection is a total so far, and the one after the
    processor stopped is exact."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    threads, calls = 4, 150
    seen: list[float] = []
    link = (("destination", "brixo.link"),)
    try:
        processor = harness.processor(ScriptedExporter(), meter_provider=provider)
        done = threading.Event()

        def collect() -> None:
            while not done.is_set():
                seen.append(_sums(reader, "brixo.signals.enqueued").get(link, 0))

        def call(offset: int) -> None:
            for index in range(calls):
                assert processor.enqueue(make_signal(offset + index))

        collector = threading.Thread(target=collect)
        collector.start()
        callers = [threading.Thread(target=call, args=(n * calls,)) for n in range(threads)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join()
        done.set()
        collector.join()
        processor.shutdown(timeout=2)  # counts what it had left: nothing lost with it
        final = _sums(reader, "brixo.signals.enqueued").get(link, 0)
    finally:
        provider.shutdown()
    assert len(seen) > 1 and seen == sorted(seen)
    assert final == threads * calls


# -- retry policy -------------------------------------------------------------------------------


class Extreme:
    """A random source that always draws the top (or bottom) of the range."""

    def __init__(self, top: bool) -> None:
        self.top = top

    def uniform(self, a: float, b: float) -> float:
        return b if self.top else a


@given(attempt=st.integers(min_value=0, max_value=5000))
def test_backoff_is_full_jitter_under_a_capped_ceiling(attempt: int) -> None:
    policy = RetryPolicy()
    ceiling = min(30.0, 2.0 ** min(attempt, 64))
    assert backoff_delay(policy, attempt, Extreme(top=True)) == ceiling
    assert backoff_delay(policy, attempt, Extreme(top=False)) == 0.0
    assert 0.0 <= backoff_delay(policy, attempt) <= ceiling


@given(
    attempt=st.integers(min_value=0, max_value=50),
    retry_after=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
)
def test_retry_after_is_a_clamped_minimum(attempt: int, retry_after: float | None) -> None:
    policy = RetryPolicy()
    delay = retry_delay(policy, attempt, retry_after, Extreme(top=False))
    if retry_after is None or not math.isfinite(retry_after) or retry_after <= 0:
        assert delay == 0.0  # the backoff alone (drawn at its bottom here)
    else:
        assert delay == min(retry_after, 120.0)
    assert retry_delay(policy, attempt, retry_after) <= 120.0


def test_retry_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="multiplier"):
        RetryPolicy(multiplier=0.5)
    with pytest.raises(ValueError, match="max_age"):
        RetryPolicy(max_age=-1)
