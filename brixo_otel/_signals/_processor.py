"""Background delivery: from the outbox to every destination, without ever blocking the app.

`enqueue` (the app's thread) only commits to the outbox and wakes the worker. One daemon worker
thread claims due rows and hands them to a few daemon sender threads, so a slow destination holds
at most `max_in_flight` requests open; the worker alone records results, so the outbox sees one
writer per process. Daemon threads are never joined at interpreter exit, so a destination that
hangs cannot hang the app's exit: whatever is not delivered in time simply stays in the outbox.

What each answer means (retry, pause, dead-letter) is decided here, once, for every destination.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import queue
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from opentelemetry import context as otel_context
from opentelemetry.metrics import MeterProvider

from brixo_otel._errors import ConfigurationError
from brixo_otel._internal import log_rate_limited, logger, raise_internal_errors
from brixo_otel._signals._metrics import DeliveryMetrics, reason_class
from brixo_otel._signals._model import Signal
from brixo_otel._signals._outbox import Delivery, Outbox, OutboxClosed, OutboxFull
from brixo_otel._signals._retry import RetryPolicy, retry_delay
from brixo_otel.exporters._base import DeliveryResult, DeliveryStatus, SignalExporter

#: Total time the interpreter-exit hook may spend delivering, across every processor.
EXIT_BUDGET_SECONDS: Final = 5.0
#: What `flush(timeout=None)` waits at most: a flush that never returns is worse than a False.
DEFAULT_FLUSH_TIMEOUT: Final = 30.0
#: How often the worker looks for rows leased by processes that died.
RECLAIM_INTERVAL_SECONDS: Final = 15.0
#: Longest pause between two checks of a waiting `flush`, which also sees other processes' work.
_FLUSH_RECHECK: Final = 0.05
#: Extra time `shutdown` gives the worker to release its leases after the deadline.
_RELEASE_GRACE: Final = 0.25

DEFAULT_POLICY: Final = RetryPolicy()

ErrorCallback = Callable[[Signal, str, str], None]
DeliveredCallback = Callable[[Signal, str], None]
_Result = tuple[Delivery, DeliveryResult]


class SignalProcessor:
    """Delivers the outbox's signals to a fixed set of exporters, durably and in the background."""

    def __init__(
        self,
        outbox: Outbox,
        exporters: Sequence[SignalExporter],
        *,
        policy: RetryPolicy = DEFAULT_POLICY,
        max_in_flight: int = 4,
        poll_interval: float = 1.0,
        on_error: ErrorCallback | None = None,
        on_delivered: DeliveredCallback | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        if not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise ConfigurationError(f"max_in_flight must be an int >= 1, got {max_in_flight!r}")
        if not poll_interval > 0:
            raise ConfigurationError(f"poll_interval must be > 0 seconds, got {poll_interval!r}")
        names = [exporter.name for exporter in exporters]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ConfigurationError(
                f"several exporters are named {duplicates}; each destination needs its own "
                "`name`, because the outbox keeps delivery state per name"
            )
        self._outbox = outbox
        self._exporters: dict[str, SignalExporter] = dict(zip(names, exporters, strict=True))
        for name, exporter in self._exporters.items():
            exporter.bind_state(_OutboxState(outbox, name))
        self._destinations = tuple(names)
        self._policy = policy
        self._max_in_flight = max_in_flight
        self._poll_interval = poll_interval
        self._on_error = on_error
        self._on_delivered = on_delivered
        #: destination → until when (epoch seconds) it gets no claims; infinity: key refused.
        self._paused: dict[str, float] = {}
        self._key_refusal_logged: set[str] = set()
        self._rotation = 0
        self._stopped = False
        self._stop_deadline: float | None = None
        self._shutdown_result = True
        self._start_failed = False
        self._init_runtime()
        depth = weakref.WeakMethod(self._depth)
        self._metrics = DeliveryMetrics(meter_provider, lambda: _call_weak(depth))
        with _live_lock:
            _live.add(self)
        atexit.register(_shutdown_at_exit, weakref.ref(self))
        # Rows left by a previous process (a crash, an exit past its budget) are delivered now,
        # not at this process's first feedback, which may never come.
        try:
            outbox.reclaim_dead_owners()
            leftovers = outbox.pending_count(self._destinations)
        except sqlite3.Error as exc:
            log_rate_limited(
                logging.ERROR,
                "outbox:start",
                "brixo_otel: could not read the outbox %r: %s",
                outbox.path,
                exc,
            )
            leftovers = 0
        if leftovers:
            self._ensure_worker()

    def _init_runtime(self) -> None:
        """Threading state that must never cross a fork."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._progress = threading.Condition(threading.Lock())
        self._worker: threading.Thread | None = None
        #: False while the worker has nothing to gain from a new row (every destination paused,
        #: or all slots busy): then `enqueue` spares it a wake-up per call.
        self._wants_wake = True
        #: True while the worker records results (outbox first, then the app's callbacks).
        self._recording = False

    # -- app-facing -----------------------------------------------------------------------------

    def enqueue(self, signal: Signal, destinations: Sequence[str] | None = None) -> bool:
        """Commit `signal` for every destination (or those named) and wake the worker. Never
        raises.

        False means the signal was refused (outbox full or unwritable): that was logged, counted
        and reported to `on_error`; nothing was stored.
        """
        chosen = self._destinations if destinations is None else tuple(destinations)
        try:
            self._outbox.add(signal, chosen)
        except (OutboxFull, OutboxClosed, sqlite3.Error, OSError) as exc:
            self._refuse(signal, exc, chosen)
            return False
        except Exception as exc:
            if raise_internal_errors():
                raise
            self._refuse(signal, exc, chosen)
            return False
        for destination in chosen:
            self._metrics.enqueued(destination)
        if self._ensure_worker() and self._wants_wake:
            self._wake.set()
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until nothing is pending or in flight for our destinations; False on timeout.

        Rows waiting out a backoff or a pause count as pending: flush does not cut their wait
        short, it only waits (bounded) for the worker to get to them.
        """
        budget = DEFAULT_FLUSH_TIMEOUT if timeout is None else max(0.0, timeout)
        deadline = time.monotonic() + budget
        if self._stopped or threading.current_thread() is self._worker:
            return self._nothing_pending()
        if self._ensure_worker():
            self._wake.set()
        elif self._start_failed:
            self._drain_inline(deadline)
            return self._nothing_pending()
        while True:
            # A row leaves the outbox just before its callbacks run: wait for those too.
            if self._nothing_pending() and not self._recording:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._progress:
                self._progress.wait(min(remaining, _FLUSH_RECHECK))

    def shutdown(self, timeout: float = 5.0) -> bool:
        """Stop delivering; idempotent. True if the worker stopped within `timeout`.

        Due rows are still delivered until the deadline; rows in flight at the deadline are
        released; everything undelivered stays in the outbox for the next process.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._lock:
            if self._stopped:
                return self._shutdown_result
            self._stopped = True
            self._stop_deadline = deadline
            worker = self._worker
        if worker is not None and worker.is_alive() and worker is not threading.current_thread():
            self._wake.set()
            worker.join(max(0.0, deadline - time.monotonic()) + _RELEASE_GRACE)
            self._shutdown_result = not worker.is_alive()
        elif self._start_failed:
            self._drain_inline(deadline)
        for name, exporter in self._exporters.items():
            try:
                exporter.shutdown()
            except Exception:
                log_rate_limited(
                    logging.WARNING,
                    f"exporter-shutdown:{name}",
                    "brixo_otel: exporter %r failed to shut down",
                    name,
                    exc_info=True,
                )
        return self._shutdown_result

    # -- worker ---------------------------------------------------------------------------------

    def _ensure_worker(self) -> bool:
        """Start the worker and its senders unless they run; False if they can't run."""
        if self._pid != os.getpid():
            self._after_fork_in_child()
        worker = self._worker
        if worker is not None and worker.is_alive():
            return True
        with self._lock:
            if self._stopped:
                return False
            if self._worker is not None and self._worker.is_alive():
                return True
            jobs: queue.SimpleQueue[Delivery | None] = queue.SimpleQueue()
            results: queue.SimpleQueue[_Result] = queue.SimpleQueue()
            started: list[threading.Thread] = []
            try:
                for index in range(self._max_in_flight):
                    sender = threading.Thread(
                        target=self._send_loop,
                        args=(jobs, results),
                        name=f"brixo-otel-export-{index}",
                        daemon=True,
                    )
                    sender.start()
                    started.append(sender)
                worker = threading.Thread(
                    target=self._run,
                    args=(jobs, results, len(started)),
                    name="brixo-otel-delivery",
                    daemon=True,
                )
                worker.start()
            except RuntimeError as exc:  # at interpreter shutdown, or out of threads
                for _ in started:
                    jobs.put(None)
                self._start_failed = True
                log_rate_limited(
                    logging.DEBUG,
                    "worker:start",
                    "brixo_otel: cannot start the delivery thread (%s); delivering from "
                    "flush/shutdown instead, and the outbox keeps the rest",
                    exc,
                )
                return False
            self._worker = worker
            self._start_failed = False
            self._wants_wake = True
            return True

    def _send_loop(
        self, jobs: queue.SimpleQueue[Delivery | None], results: queue.SimpleQueue[_Result]
    ) -> None:
        wake = self._wake
        while (delivery := jobs.get()) is not None:
            results.put((delivery, self._export(delivery)))
            wake.set()

    def _run(
        self,
        jobs: queue.SimpleQueue[Delivery | None],
        results: queue.SimpleQueue[_Result],
        senders: int,
    ) -> None:
        in_flight: dict[int, Delivery] = {}
        last_reclaim = -math.inf
        try:
            while True:
                self._wake.clear()
                deadline = self._stop_deadline
                try:
                    self._recording = True
                    try:
                        self._collect(results, in_flight)
                    finally:
                        self._recording = False
                    if deadline is not None and time.monotonic() >= deadline:
                        return
                    if time.monotonic() - last_reclaim >= RECLAIM_INTERVAL_SECONDS:
                        last_reclaim = time.monotonic()
                        self._outbox.reclaim_dead_owners()
                    wanted = self._max_in_flight - len(in_flight)
                    for delivery in self._claim(wanted):
                        in_flight[delivery.row_id] = delivery
                        jobs.put(delivery)
                    self._notify_progress()
                    if deadline is not None and not in_flight:
                        return  # shutting down, and nothing due is left
                    wait = self._idle_time(len(in_flight) >= self._max_in_flight)
                except (sqlite3.Error, OutboxClosed) as exc:
                    log_rate_limited(
                        logging.ERROR,
                        "outbox:worker",
                        "brixo_otel: outbox %r unusable (%s); delivery retries in %.1f s",
                        self._outbox.path,
                        exc,
                        self._poll_interval,
                    )
                    wait = self._poll_interval
                except Exception:
                    if raise_internal_errors():
                        raise
                    log_rate_limited(
                        logging.ERROR,
                        "internal:delivery",
                        "brixo_otel: internal error in the delivery worker; it carries on",
                        exc_info=True,
                    )
                    wait = self._poll_interval
                if deadline is not None:
                    wait = min(wait, max(0.0, deadline - time.monotonic()))
                self._wake.wait(wait)
        finally:
            for delivery in in_flight.values():
                # On failure its lease expires and any process takes it back.
                with contextlib.suppress(sqlite3.Error, OutboxClosed):
                    self._outbox.release(delivery)
            for _ in range(senders):
                jobs.put(None)
            self._notify_progress()

    def _collect(self, results: queue.SimpleQueue[_Result], in_flight: dict[int, Delivery]) -> None:
        delivered: list[Delivery] = []
        while True:
            try:
                delivery, result = results.get_nowait()
            except queue.Empty:
                break
            if in_flight.pop(delivery.row_id, None) is None:
                continue
            if result.status is DeliveryStatus.DELIVERED:
                delivered.append(delivery)  # the common case: recorded together below
            else:
                self._record(delivery, result)
        if delivered:
            self._outbox.mark_delivered_many(delivered)
            for delivery in delivered:
                self._after_delivered(delivery)

    def _claim(self, limit: int) -> list[Delivery]:
        if limit <= 0:
            return []
        active = self._active_destinations(time.time())
        if not active:
            return []
        # Rotate the order so one destination's backlog never starves another's.
        shift = self._rotation % len(active)
        self._rotation += 1
        return self._outbox.claim(
            active[shift:] + active[:shift], limit, on_corrupt=self._count_corrupt
        )

    def _active_destinations(self, now: float) -> list[str]:
        return [dest for dest in self._destinations if self._paused.get(dest, 0.0) <= now]

    def _idle_time(self, full: bool) -> float:
        """How long the worker may sleep: until a result, a wake-up, the next due row or the end
        of a pause, and never longer than `poll_interval` (other processes add rows too)."""
        wait = self._poll_interval
        now = time.time()
        active = self._active_destinations(now)
        # Set before reading the outbox: a row committed after this read wakes us, one
        # committed before it is seen by `next_due`.
        self._wants_wake = bool(active) and not full
        if full:
            return wait  # a finished export wakes us
        due = self._outbox.next_due(active)
        if due is not None:
            wait = min(wait, due - now)
        for until in self._paused.values():
            if now < until < math.inf:
                wait = min(wait, until - now)
        return max(0.0, wait)

    def _notify_progress(self) -> None:
        with self._progress:
            self._progress.notify_all()

    def _drain_inline(self, deadline: float) -> None:
        """Deliver what is due in the calling thread: the fallback when no thread can start."""
        try:
            while time.monotonic() < deadline:
                batch = self._claim(self._max_in_flight)
                if not batch:
                    return
                for index, delivery in enumerate(batch):
                    if time.monotonic() >= deadline:
                        for rest in batch[index:]:
                            self._outbox.release(rest)
                        return
                    self._record(delivery, self._export(delivery))
        except (sqlite3.Error, OutboxClosed) as exc:
            log_rate_limited(
                logging.ERROR,
                "outbox:inline",
                "brixo_otel: outbox %r unusable (%s)",
                self._outbox.path,
                exc,
            )

    # -- one attempt ----------------------------------------------------------------------------

    def _export(self, delivery: Delivery) -> DeliveryResult:
        """One attempt, with OpenTelemetry instrumentation suppressed so that an app's HTTP
        instrumentation never traces (or loops on) our own requests."""
        destination = delivery.destination
        token = otel_context.attach(
            otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True)
        )
        try:
            result = self._exporters[destination].export(delivery.signal)
        except Exception as exc:
            log_rate_limited(
                logging.WARNING,
                f"export:{destination}",
                "brixo_otel: exporter %r raised %s; the signal will be retried",
                destination,
                type(exc).__name__,
                exc_info=True,
            )
            return DeliveryResult(DeliveryStatus.RETRY, f"exporter raised {type(exc).__name__}")
        finally:
            otel_context.detach(token)
        if not isinstance(result, DeliveryResult):
            return DeliveryResult(
                DeliveryStatus.RETRY,
                f"exporter returned {type(result).__name__}, not a DeliveryResult",
            )
        return result

    def _after_delivered(self, delivery: Delivery) -> None:
        self._metrics.delivered(delivery.destination)
        logger.debug(
            "brixo_otel: signal %s delivered to %s", delivery.signal.id, delivery.destination
        )
        self._callback("on_delivered", self._on_delivered, delivery.signal, delivery.destination)

    def _record(self, delivery: Delivery, result: DeliveryResult) -> None:
        """Act on one answer. Runs in the worker (or the inline drain), never concurrently."""
        status = result.status
        destination = delivery.destination
        signal = delivery.signal
        now = time.time()
        age = max(0.0, now - delivery.created_at)
        attempts = delivery.attempts + 1
        policy = self._policy
        if status is DeliveryStatus.DELIVERED:
            self._outbox.mark_delivered(delivery)
            self._after_delivered(delivery)
        elif status is DeliveryStatus.UNAUTHORIZED:
            self._outbox.release(delivery)
            self._paused[destination] = math.inf
            if destination not in self._key_refusal_logged:
                self._key_refusal_logged.add(destination)
                logger.error(
                    "brixo_otel: %s refused the API key (%s). Delivery to it is paused; its "
                    "signals are kept in the outbox until a client with a valid key sends them.",
                    destination,
                    result.reason or "unauthorized",
                )
        elif status is DeliveryStatus.PERMANENT:
            reason = result.reason or "rejected by the destination"
            self._give_up(delivery, reason, reason_class("permanent", reason))
        elif status is DeliveryStatus.NOT_FOUND and age >= policy.not_found_window:
            self._give_up(
                delivery,
                f"not found after {attempts} attempts over {age:.0f} s: {result.reason}",
                "not_found",
            )
        elif age >= policy.max_age:
            self._give_up(
                delivery,
                f"gave up after {attempts} attempts over {age:.0f} s: {result.reason}",
                "max_age",
            )
        else:  # RETRY, THROTTLED, NOT_FOUND within its window
            when = now + retry_delay(policy, delivery.attempts, result.retry_after)
            self._outbox.reschedule(delivery, when, result.reason or status.value)
            if status is DeliveryStatus.THROTTLED:
                self._paused[destination] = max(self._paused.get(destination, 0.0), when)
            self._metrics.retried(destination, reason_class(status.value, result.reason))
            logger.debug(
                "brixo_otel: signal %s to %s: %s (%s); retry in %.2f s",
                signal.id,
                destination,
                status.value,
                result.reason,
                when - now,
            )

    def _give_up(self, delivery: Delivery, reason: str, reason_kind: str) -> None:
        destination = delivery.destination
        self._outbox.dead_letter(delivery, reason)
        self._metrics.dead_lettered(destination, reason_kind)
        log_rate_limited(
            logging.WARNING,
            f"dead-letter:{destination}:{reason_kind}",
            "brixo_otel: signal %s to %s was dead-lettered: %s (kept in the outbox; "
            "`brixo-otel outbox retry` requeues it)",
            delivery.signal.id,
            destination,
            reason,
        )
        self._callback("on_error", self._on_error, delivery.signal, destination, reason)

    def _refuse(self, signal: Signal, exc: Exception, destinations: Sequence[str]) -> None:
        if isinstance(exc, OutboxFull):
            reason, kind = str(exc), "outbox_full"
        else:
            reason, kind = f"outbox unavailable: {type(exc).__name__}: {exc}", "outbox_error"
        log_rate_limited(
            logging.ERROR,
            f"refused:{kind}",
            "brixo_otel: signal %s was refused and will not be delivered: %s",
            signal.id,
            reason,
        )
        for destination in destinations:
            self._metrics.refused(destination, kind)
            self._callback("on_error", self._on_error, signal, destination, reason)

    def _count_corrupt(self, destination: str) -> None:
        self._metrics.dead_lettered(destination, "corrupt_row")

    def _callback(self, name: str, callback: Callable[..., None] | None, *args: object) -> None:
        """Run an app callback; its failure is the app's bug, logged, never ours to die of."""
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            log_rate_limited(
                logging.ERROR,
                f"callback:{name}",
                "brixo_otel: the %s callback raised; delivery carries on",
                name,
                exc_info=True,
            )

    # -- state ----------------------------------------------------------------------------------

    def _nothing_pending(self) -> bool:
        try:
            return self._outbox.pending_count(self._destinations) == 0
        except (sqlite3.Error, OutboxClosed):
            return False

    def _depth(self) -> Mapping[str, int] | None:
        try:
            return {dest: self._outbox.pending_count([dest]) for dest in self._destinations}
        except (sqlite3.Error, OutboxClosed):
            return None

    def _after_fork_in_child(self) -> None:
        """The child starts with fresh locks and no threads; its worker starts lazily. The
        parent's leases carry the parent's pid, so the child never touches them."""
        self._init_runtime()


class _OutboxState:
    """One destination's slice of the outbox's exporter state."""

    __slots__ = ("_destination", "_outbox")

    def __init__(self, outbox: Outbox, destination: str) -> None:
        self._outbox = outbox
        self._destination = destination

    def get(self, key: str) -> str | None:
        return self._outbox.state_get(self._destination, key)

    def set(self, key: str, value: str) -> None:
        self._outbox.state_set(self._destination, key, value)

    def delete(self, key: str) -> None:
        self._outbox.state_delete(self._destination, key)


def _call_weak(
    method: weakref.WeakMethod[Callable[[], Mapping[str, int] | None]],
) -> Mapping[str, int] | None:
    bound = method()
    return None if bound is None else bound()


_live: weakref.WeakSet[SignalProcessor] = weakref.WeakSet()
_live_lock = threading.Lock()
_exit_deadline: float | None = None


def _shutdown_at_exit(ref: weakref.ref[SignalProcessor]) -> None:
    """Shut a processor down at interpreter exit, within one budget shared by all of them."""
    global _exit_deadline
    processor = ref()
    if processor is None:
        return
    if _exit_deadline is None:
        _exit_deadline = time.monotonic() + EXIT_BUDGET_SECONDS
    try:
        processor.shutdown(timeout=max(0.0, _exit_deadline - time.monotonic()))
    except Exception:
        logger.debug("brixo_otel: shutdown at exit failed", exc_info=True)


def _after_fork_in_child() -> None:
    global _live_lock, _exit_deadline
    _live_lock = threading.Lock()
    _exit_deadline = None
    for processor in list(_live):
        processor._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
