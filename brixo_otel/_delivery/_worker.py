"""Background delivery: from the outbox to every stage and destination, never blocking the app.

`enqueue` (the app's thread) commits one row for the *link* stage and wakes the worker; if the
outbox cannot take it within a few milliseconds (locked, full disk, deleted), the signal is held
in a bounded memory buffer that the worker commits as soon as the outbox can take it.

One daemon worker thread claims due rows and hands them to a few daemon sender threads, so a slow
destination holds at most `max_in_flight` requests open. Senders do the I/O — resolving the rated
span in the span index, calling a destination — and the worker alone records results, in one
transaction per batch, so the outbox sees one writer per process. Daemon threads are never joined
at interpreter exit, so a destination that hangs cannot hang the app's exit: whatever is not
delivered in time simply stays in the outbox.

The link stage: the rated span comes from the link token (already on the signal) or the span
index. Found, the stage's row is replaced by one row per destination that takes the signal, each
carrying the rated span. Not found yet, destinations that do not address spans get the signal at
once, and the stage retries, quickly at first, until the span appears or the link window closes;
then the span-addressed destinations get it, marked unresolved.

What each answer means (retry, pause, dead-letter) is `_retry.decide`, a pure function.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import dataclasses
import itertools
import logging
import math
import os
import queue
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Protocol

from opentelemetry.metrics import MeterProvider

from brixo_otel import attributes as attrs
from brixo_otel._delivery._database import APP_WAIT_SECONDS, OutboxBusy, OutboxClosed
from brixo_otel._delivery._exporter_state import ExporterStateStore
from brixo_otel._delivery._metrics import DeliveryMetrics
from brixo_otel._delivery._outbox import Delivery, FanOut, Outbox, OutboxFull, Outcome
from brixo_otel._delivery._retry import decide
from brixo_otel._errors import ConfigurationError
from brixo_otel._exporter import DeliveryResult, DeliveryStatus, SignalExporter
from brixo_otel._feedback._record import RECORD_STAGE
from brixo_otel._feedback._span import feedback_span_ids
from brixo_otel._forksafe import after_fork_in_child, module_state_after_fork
from brixo_otel._internal import (
    instrumentation_suppressed,
    log_rate_limited,
    logger,
    raise_internal_errors,
)
from brixo_otel._policies import RetryPolicy
from brixo_otel._signal import RatedSpan, Signal

#: The outbox name of the link stage, which every signal enters first.
LINK_STAGE: Final = "brixo.link"
#: Signals held in memory committed in one transaction, at most (see `_commit_held`).
HELD_PER_COMMIT: Final = 256
#: Total time the interpreter-exit hook may spend delivering, across every processor; read when
#: the first hook runs, from BRIXO_OTEL_EXIT_BUDGET_SECONDS if set (the project's own exit tests
#: shorten it, as BRIXO_OTEL_RAISE_INTERNAL_ERRORS is theirs too).
EXIT_BUDGET_SECONDS: Final = 5.0
#: What `flush(timeout=None)` waits at most: a flush that never returns is worse than a False.
DEFAULT_FLUSH_TIMEOUT: Final = 30.0
#: How often the worker looks for rows leased by processes that died, and prunes dead letters.
RECLAIM_INTERVAL_SECONDS: Final = 15.0
#: Longest pause between two checks of a waiting `flush`, which also sees other processes' work.
_FLUSH_RECHECK: Final = 0.05
#: Extra time `shutdown` gives the worker to release its leases after the deadline.
_RELEASE_GRACE: Final = 0.25
#: Signals held in memory at most while the outbox cannot take them; past it they are refused.
MAX_HELD: Final = 10_000
#: Rows claimed per sender, at most, so that a sender finds the next one waiting.
CLAIM_AHEAD: Final = 4
#: Longest a result waits to be recorded with others (a sender wakes the worker for a batch).
RESULT_DELAY_SECONDS: Final = 0.01
#: The link stage's first retries come fast (a span written by another process appears within
#: milliseconds), then back off to this.
LINK_RETRY_MAX_SECONDS: Final = 5.0
#: How long a first attempt to a destination that `waits_for_trace_export` waits, at most, for
#: the rated span to leave this process.
TRACE_EXPORT_WAIT_SECONDS: Final = 30.0
_TRACE_EXPORT_RECHECK: Final = 0.2

DEFAULT_POLICY: Final = RetryPolicy()
#: Left on a record-stage row whose feedback span was emitted and waits for its export.
_EMITTED: Final = "emitted; waiting for the span to be exported"


class TraceTracker(Protocol):
    """What the worker asks of brixo-otel's own trace export (`TraceExport`)."""

    def pending(self, span_id: int) -> bool: ...

    def exported(self, span_id: int) -> bool: ...

    def flush_soon(self) -> None: ...


ErrorCallback = Callable[[Signal, str, str], None]
DeliveredCallback = Callable[[Signal, str], None]
#: A sender's answer: the row, how it went, and for the link stage the resolved signal.
_Result = tuple[Delivery, DeliveryResult, Signal | None]
_RESOLVED = DeliveryResult(DeliveryStatus.DELIVERED, "rated span resolved")
_NOT_YET = DeliveryResult(DeliveryStatus.NOT_FOUND, "rated span not known yet")
#: A row claimed ahead whose destination was paused before a sender took it: not attempted.
_NOT_SENT = DeliveryResult(DeliveryStatus.RETRY, "destination paused; not sent")
#: Answers after which the worker pauses the destination (`decide`).
_PAUSING: Final = frozenset({DeliveryStatus.THROTTLED, DeliveryStatus.UNAUTHORIZED})


class SignalProcessor:
    """Runs the outbox's signals through the link stage and every exporter, in the background."""

    def __init__(
        self,
        outbox: Outbox,
        exporters: Sequence[SignalExporter],
        *,
        span_index: Any = None,
        link_window: float = 600.0,
        policy: RetryPolicy = DEFAULT_POLICY,
        max_in_flight: int = 4,
        poll_interval: float = 1.0,
        on_error: ErrorCallback | None = None,
        on_delivered: DeliveredCallback | None = None,
        meter_provider: MeterProvider | None = None,
        traces: TraceTracker | None = None,
    ) -> None:
        if not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise ConfigurationError(f"max_in_flight must be an int >= 1, got {max_in_flight!r}")
        if not poll_interval > 0:
            raise ConfigurationError(f"poll_interval must be > 0 seconds, got {poll_interval!r}")
        names = [exporter.name for exporter in exporters]
        duplicates = sorted({name for name in names if names.count(name) > 1 or name == LINK_STAGE})
        if duplicates:
            raise ConfigurationError(
                f"several exporters are named {duplicates}; each destination needs its own "
                "`name`, because the outbox keeps delivery state per name"
            )
        self._outbox = outbox
        self._exporters: dict[str, SignalExporter] = dict(zip(names, exporters, strict=True))
        for name, exporter in self._exporters.items():
            exporter.bind_state(_OutboxState(outbox, name))
        self._destinations = (LINK_STAGE, *names)
        self._index = span_index
        self._link_window = link_window
        self._policy = policy
        self._max_in_flight = max_in_flight
        self._poll_interval = poll_interval
        self._on_error = on_error
        self._on_delivered = on_delivered
        self._traces = traces
        #: Record-stage rows emitted by this process and waiting for their span to be exported:
        #: row id → when emitted (the wait is bounded; past it the span is emitted again).
        self._emitted: dict[int, float] = {}
        #: destination → until when (epoch seconds) it gets no claims; infinity: key refused.
        self._paused: dict[str, float] = {}
        self._key_refusal_logged: set[str] = set()
        self._rotation = 0
        self._stopped = False
        self._stop_deadline: float | None = None
        self._shutdown_result = True
        self._start_failed = False
        self._init_process_state()
        depth = weakref.WeakMethod(self._depth)
        self._metrics = DeliveryMetrics(meter_provider, lambda: _call_weak(depth))
        self._count_enqueued = self._metrics.enqueued_counter(LINK_STAGE)
        with _live_lock:
            _live.add(self)
        after_fork_in_child(self, SignalProcessor._init_process_state)
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

    def _init_process_state(self) -> None:
        """Threading state that must never cross a fork: a child starts here, with no threads
        and nothing held (the parent's held signals are the parent's to commit)."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._progress = threading.Condition(threading.Lock())
        self._worker: threading.Thread | None = None
        #: True from the worker's start until it ends (cleared by the worker itself, last).
        self._worker_running = False
        self._held: collections.deque[Signal] = collections.deque()
        self._held_lock = threading.Lock()
        #: False while the worker has nothing to gain from a new row (every destination paused,
        #: or all slots busy): then `enqueue` spares it a wake-up per call.
        self._wants_wake = True
        #: True while the worker records results (outbox first, then the app's callbacks).
        self._recording = False
        #: Worker rounds completed (claims made, results recorded): see `flush`.
        self._rounds = 0
        self._in_flight: dict[int, Delivery] = {}
        #: destination → rows whose answer pauses it, not recorded yet: rows claimed ahead for
        #: it are not sent meanwhile.
        self._unsettled: dict[str, set[int]] = {}

    # -- app-facing -----------------------------------------------------------------------------

    def enqueue(self, signal: Signal, *, wait: float = APP_WAIT_SECONDS) -> bool:
        """Commit `signal` to the link stage and wake the worker. Never raises.

        Waits at most `wait` seconds for the outbox; past that (or when the outbox cannot be
        written at all) the signal is held in memory and committed by the worker later. False
        means it was refused (outbox full, or the memory buffer full): that was logged, counted
        and reported to `on_error`.
        """
        try:
            self._outbox.add(signal, (LINK_STAGE,), wait=wait)
        except OutboxFull as exc:
            self._refuse(signal, str(exc), "outbox_full")
            return False
        except OutboxClosed as exc:
            self._refuse(signal, f"the client was shut down ({exc})", "closed")
            return False
        except (OutboxBusy, sqlite3.Error, OSError) as exc:
            return self._hold(signal, exc)
        except Exception as exc:
            if raise_internal_errors():
                raise
            return self._hold(signal, exc)
        self._count_enqueued()
        if self._ensure_worker() and self._wants_wake:
            self._wake.set()
        return True

    def _hold(self, signal: Signal, exc: Exception) -> bool:
        if self._pid != os.getpid():
            self._init_process_state()
        if self._stopped:
            # No worker will come for what is held: after shutdown, commit patiently here (the
            # next process delivers it), or say it was refused.
            try:
                self._outbox.add(signal, (LINK_STAGE,))
            except Exception as late:
                self._refuse(signal, f"the outbox cannot take it after shutdown ({late})", "closed")
                return False
            self._metrics.enqueued(LINK_STAGE)
            return True
        held = self._held
        if len(held) >= MAX_HELD:
            self._refuse(
                signal,
                f"the outbox cannot take signals ({type(exc).__name__}: {exc}) and the memory "
                f"buffer holds {MAX_HELD} already",
                "buffer_full",
            )
            return False
        held.append(signal)
        self._metrics.held()
        if self._stopped:  # shut down meanwhile: its worker may have committed its last
            self._commit_held()
        if not isinstance(exc, OutboxBusy):
            log_rate_limited(
                logging.ERROR,
                "outbox:hold",
                "brixo_otel: the outbox %r cannot take signals (%s: %s); holding them in memory "
                "(up to %d) until it can",
                self._outbox.path,
                type(exc).__name__,
                exc,
                MAX_HELD,
            )
        if self._ensure_worker():
            self._wake.set()
            # Let the worker run now: it is what commits this signal (and, when the WAL is
            # what refused it, checkpoints it). A caller committing in a tight loop would
            # otherwise hold the interpreter for whole switch intervals while its next calls
            # are refused too, each without touching SQLite (which lets go of the interpreter).
            time.sleep(0)
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until nothing is pending, held or in flight for our destinations; False on
        timeout, and False early when what is left cannot be sent before the deadline (it waits
        out a backoff, a pause or a not-found window that ends later)."""
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
            rounds = self._rounds
            # Early only when what is left waits past the deadline and the worker did nothing
            # while we looked (a row it claimed and re-scheduled meanwhile could be missed).
            if self._nothing_due_before(time.time() + remaining) and rounds == self._rounds:
                # What was left may have gone meanwhile (another process delivered it, which
                # this worker's rounds do not show, or this worker did and is recording it):
                # then the flush is done, or nearly, not hopeless.
                if not self._nothing_pending():
                    return False
                if not self._recording:
                    return True
            with self._progress:
                self._progress.wait(min(remaining, _FLUSH_RECHECK))

    def shutdown(self, timeout: float = 5.0) -> bool:
        """Stop delivering; idempotent. True if the worker stopped within `timeout`.

        Due rows are still delivered until the deadline; rows in flight at the deadline are
        released; everything undelivered stays in the outbox for the next process (held
        signals are committed first, if the outbox can take them).
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
        else:
            self._commit_held()
        self._metrics.tally()  # what this processor counted, before its metrics go
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
            self._init_process_state()
        if self._worker_running:  # every `feedback()` asks: a flag, not `Thread.is_alive`
            return True
        with self._lock:
            if self._stopped:
                return False
            if self._worker is not None and self._worker.is_alive():
                return True
            jobs: queue.SimpleQueue[Delivery | None] = queue.SimpleQueue()
            results: queue.SimpleQueue[_Result] = queue.SimpleQueue()
            # This worker's own: what a previous worker's senders note never reaches it.
            unsettled: dict[str, set[int]] = {}
            self._unsettled = unsettled
            started: list[threading.Thread] = []
            try:
                for index in range(self._max_in_flight):
                    sender = threading.Thread(
                        target=self._send_loop,
                        args=(jobs, results, unsettled),
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
            self._worker_running = True
            self._start_failed = False
            self._wants_wake = True
            return True

    def _send_loop(
        self,
        jobs: queue.SimpleQueue[Delivery | None],
        results: queue.SimpleQueue[_Result],
        unsettled: dict[str, set[int]],
    ) -> None:
        wake = self._wake
        # Two results per sender make a batch: half the rows claimed ahead (`CLAIM_AHEAD`).
        batch = 2 * self._max_in_flight
        paused = self._paused
        while (delivery := jobs.get()) is not None:
            destination = delivery.destination
            if unsettled.get(destination) or paused.get(destination, 0.0) > time.time():
                # Claimed ahead, and its destination was paused since, or is about to be (an
                # answer the worker has not recorded yet): given back unsent.
                results.put((delivery, _NOT_SENT, None))
            elif destination == LINK_STAGE:
                resolved = self._resolve(delivery.signal)
                results.put((delivery, _RESOLVED if resolved else _NOT_YET, resolved))
            else:
                result = self._export(delivery)
                if result.status in _PAUSING:
                    unsettled.setdefault(destination, set()).add(delivery.row_id)
                results.put((delivery, result, None))
            # The worker records results in batches: wake it for a batch, or when this
            # sender has nothing left to do (it claims more).
            if jobs.empty() or results.qsize() >= batch:
                wake.set()

    def _run(
        self,
        jobs: queue.SimpleQueue[Delivery | None],
        results: queue.SimpleQueue[_Result],
        senders: int,
    ) -> None:
        in_flight = self._in_flight
        last_reclaim = -math.inf
        last_file_check = -math.inf
        try:
            while True:
                self._wake.clear()
                deadline = self._stop_deadline
                try:
                    now = time.monotonic()
                    stopping = deadline is not None and now >= deadline
                    if stopping:
                        pass  # no upkeep: record what came back, claim nothing, and stop
                    elif now - last_file_check >= self._poll_interval:
                        last_file_check = now
                        self._outbox.check_file()
                        self._renew_long_exports(in_flight)
                    if not stopping and now - last_reclaim >= RECLAIM_INTERVAL_SECONDS:
                        last_reclaim = now
                        self._outbox.reclaim_dead_owners()
                        self._outbox.prune_dead()
                    self._recording = True
                    try:
                        # The answers and the next rows: one transaction for the round.
                        claimed = self._collect(results, in_flight, claim=not stopping)
                    finally:
                        self._recording = False
                    for delivery in claimed:
                        in_flight[delivery.row_id] = delivery
                        jobs.put(delivery)
                    self._commit_held()
                    if stopping:
                        return
                    self._notify_progress()
                    if deadline is not None and not in_flight and not self._held:
                        return  # shutting down, and nothing due is left
                    wait = self._idle_time(len(in_flight) > self._max_in_flight)
                    if not results.empty():  # results not worth a wake-up yet: soon anyway
                        wait = min(wait, RESULT_DELAY_SECONDS)
                except (sqlite3.Error, OutboxClosed, OSError) as exc:
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
            try:
                self._wind_down(jobs, senders)
            finally:
                self._worker_running = False
                self._notify_progress()

    def _wind_down(self, jobs: queue.SimpleQueue[Delivery | None], senders: int) -> None:
        """The worker's last steps: what it claimed goes back, held signals are committed,
        and its senders stop."""
        in_flight = self._in_flight
        with contextlib.suppress(queue.Empty):
            while True:  # rows claimed ahead, not started: released below, never sent
                jobs.get_nowait()
        leftovers = [Outcome(delivery, "release") for delivery in in_flight.values()]
        with contextlib.suppress(sqlite3.Error, OutboxClosed, OSError):
            # On failure their leases expire and any process takes them back.
            self._outbox.record(leftovers)
        in_flight.clear()
        self._commit_held()
        for _ in range(senders):
            jobs.put(None)

    def _commit_held(self) -> None:
        """Commit the signals held in memory, oldest first, while the outbox takes them: up to
        `HELD_PER_COMMIT` in each transaction (a burst the app's commits could not keep up
        with is taken in a few commits, not one per signal, and the app's threads wait for
        the write lock no longer than for one of them)."""
        held = self._held
        with self._held_lock:  # the worker, and app threads after shutdown: one at a time
            while held:
                batch = list(itertools.islice(held, HELD_PER_COMMIT))
                try:
                    outcomes = self._outbox.add_many(batch, (LINK_STAGE,))
                except (OutboxBusy, OutboxClosed, sqlite3.Error, OSError) as exc:
                    log_rate_limited(
                        logging.WARNING,
                        "outbox:held",
                        "brixo_otel: %d signals still held in memory; the outbox %r cannot "
                        "take them yet (%s)",
                        len(held),
                        self._outbox.path,
                        exc,
                    )
                    return
                for signal, refused in zip(batch, outcomes, strict=True):
                    held.popleft()  # only the holder of `_held_lock` takes from the left
                    if refused is None:
                        self._metrics.enqueued(LINK_STAGE)
                    else:
                        self._refuse(signal, str(refused), "outbox_full")

    def _renew_long_exports(self, in_flight: Mapping[int, Delivery]) -> None:
        """Renew the leases of everything in flight: cheap, and an export slower than the
        lease then keeps its row instead of being sent twice."""
        if in_flight:
            self._outbox.renew(list(in_flight.values()))

    def _collect(
        self,
        results: queue.SimpleQueue[_Result],
        in_flight: dict[int, Delivery],
        *,
        claim: bool = False,
    ) -> list[Delivery]:
        """Record the senders' results; with `claim`, claim the next rows in the same
        transaction (claim ahead: rows wait, leased, for the next free sender, so a sender never
        waits for the worker's round trip; refilled in one claim once no more than one per
        sender is left). The rows claimed, for the caller to put in flight."""
        outcomes: list[Outcome] = []
        followups: list[Callable[[], None]] = []
        fan_outs: list[FanOut] = []  # of the link stage's rows: one transaction for all
        while True:
            try:
                delivery, result, resolved = results.get_nowait()
            except queue.Empty:
                break
            if in_flight.pop(delivery.row_id, None) is None:
                continue
            if result is _NOT_SENT:
                outcomes.append(Outcome(delivery, "release"))
                continue
            if delivery.destination == LINK_STAGE:
                self._link(delivery, resolved, fan_outs, outcomes)
                continue
            outcomes.append(self._outcome(delivery, result, followups))
            pausing = self._unsettled.get(delivery.destination)
            if pausing:  # recorded: the pause is in place
                pausing.discard(delivery.row_id)
        wanted = 0
        if claim and len(in_flight) <= self._max_in_flight:
            wanted = CLAIM_AHEAD * self._max_in_flight - len(in_flight)
        order = self._claim_order(wanted)
        if not (fan_outs or outcomes or order):
            return []
        fanned, applied, claimed = self._outbox.settle(
            fan_outs, outcomes, order, wanted, on_corrupt=self._count_corrupt
        )
        self._after_fan_outs(fan_outs, fanned)
        for outcome, done in zip(outcomes, applied, strict=True):
            if done and outcome.action == "delivered":
                self._after_delivered(outcome.delivery)
        for followup in followups:
            followup()
        return self._defer_until_traces_left(claimed)

    # -- the link stage -------------------------------------------------------------------------

    def _resolve(self, signal: Signal) -> Signal | None:
        """The signal with its rated span, or None if the span is not known (yet). Runs in a
        sender thread: the index lookup may do I/O."""
        if signal.target == "conversation":
            return dataclasses.replace(signal, link_status="not_applicable")
        if signal.rated is not None:
            return dataclasses.replace(signal, link_status="linked")
        if self._index is None or signal.message_id is None:
            return None
        try:
            found = self._index.get(signal.message_id)
        except Exception as exc:
            if raise_internal_errors():
                raise
            log_rate_limited(
                logging.WARNING,
                "link:index",
                "brixo_otel: the span index failed a lookup (%s); retrying",
                type(exc).__name__,
            )
            return None
        if found is None:
            return None
        context = found.span_context
        attributes = dict(found.attributes)
        known = attributes.get(attrs.SESSION_ID)
        return dataclasses.replace(
            signal,
            rated=RatedSpan(context.trace_id, context.span_id, attributes),
            link_status="linked",
            conversation_id=signal.conversation_id
            or (known if isinstance(known, str) and known else None),
        )

    def _link(
        self,
        stage: Delivery,
        resolved: Signal | None,
        batch: list[FanOut] | None = None,
        outcomes: list[Outcome] | None = None,
    ) -> None:
        """Fan a link-stage row out to the destinations, or keep it waiting for the span. With
        `batch`, the fan-out joins it, and with `outcomes` a retry joins them, for the caller to
        apply with others in one transaction."""
        signal = stage.signal
        first = stage.attempts == 0
        age = max(0.0, time.time() - stage.created_at)
        if resolved is None and (age >= self._link_window or self._index is None):
            resolved = dataclasses.replace(signal, link_status="unresolved")
            logger.debug(
                "brixo_otel: signal %s: no span for message %r within the link window (%.0f s);"
                " emitted unlinked",
                signal.id,
                signal.message_id,
                self._link_window,
            )
        if resolved is not None:
            chosen = [e for e in self._exporters.values() if first or e.needs_rated_span]
            self._fan_out(stage, resolved, chosen, keep_stage_until=None, batch=batch)
            return
        delay = min(0.25 * 2 ** min(stage.attempts, 10), LINK_RETRY_MAX_SECONDS)
        when = time.time() + min(delay, max(0.05, self._link_window - age))
        if first:
            early = [e for e in self._exporters.values() if not e.needs_rated_span]
            self._fan_out(stage, signal, early, keep_stage_until=when, batch=batch)
        elif outcomes is not None:
            outcomes.append(Outcome(stage, "retry", when, "waiting for the rated span"))
        else:
            self._outbox.reschedule(stage, when, "waiting for the rated span")

    def _fan_out(
        self,
        stage: Delivery,
        signal: Signal,
        exporters: Sequence[SignalExporter],
        *,
        keep_stage_until: float | None,
        batch: list[FanOut] | None = None,
    ) -> None:
        taking = [e.name for e in exporters if self._accepts(e, signal)]
        skipped = [e.name for e in exporters if e.name not in taking]
        plan = (stage, signal, taking, skipped, keep_stage_until)
        if batch is None:
            self._apply_fan_outs([plan])
        else:
            batch.append(plan)

    def _apply_fan_outs(self, plans: Sequence[FanOut]) -> None:
        self._after_fan_outs(plans, self._outbox.fan_out_many(plans))

    def _after_fan_outs(self, plans: Sequence[FanOut], applied: Sequence[bool]) -> None:
        for (_, signal, taking, skipped, _), done in zip(plans, applied, strict=True):
            if not done:
                continue
            for name in taking:
                self._metrics.enqueued(name)
            for name in skipped:
                self._metrics.skipped(name)
            if skipped and logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "brixo_otel: %s on a %s skipped by %s, which do not take it",
                    signal.value,
                    signal.target,
                    skipped,
                )

    def _accepts(self, exporter: SignalExporter, signal: Signal) -> bool:
        try:
            return bool(exporter.accepts(signal))
        except Exception:
            if raise_internal_errors():
                raise
            log_rate_limited(
                logging.WARNING,
                f"accepts:{exporter.name}",
                "brixo_otel: exporter %r failed in accepts(); sending it the signal anyway",
                exporter.name,
                exc_info=True,
            )
            return True

    # -- claiming -------------------------------------------------------------------------------

    def _claim(self, limit: int) -> list[Delivery]:
        order = self._claim_order(limit)
        if not order:
            return []
        claimed = self._outbox.claim(order, limit, on_corrupt=self._count_corrupt)
        return self._defer_until_traces_left(claimed)

    def _claim_order(self, limit: int) -> list[str]:
        """The destinations to claim up to `limit` rows of, in this round's order (none: claim
        nothing)."""
        if limit <= 0:
            return []
        active = self._active_destinations(time.time())
        if not active:
            return []
        # Rotate the order so one destination's backlog never starves another's.
        shift = self._rotation % len(active)
        self._rotation += 1
        return active[shift:] + active[:shift]

    def _defer_until_traces_left(self, claimed: list[Delivery]) -> list[Delivery]:
        """Give back, for a moment, first attempts whose rated span is still in this process's
        trace export queue (the destination would answer 404 until the trace arrives); and
        settle record-stage rows whose feedback span was emitted here: done once it has left,
        deferred while it waits, emitted again if it never left."""
        traces = self._traces
        if traces is None:
            return claimed
        ready: list[Delivery] = []
        settled: list[Outcome] = []
        now = time.time()
        for delivery in claimed:
            exporter = self._exporters.get(delivery.destination)
            rated = delivery.signal.rated
            if delivery.reason.startswith(_EMITTED) and delivery.destination == RECORD_STAGE:
                outcome = self._settle_emitted(delivery, traces, now)
                if outcome is None:
                    ready.append(delivery)  # it never left: emit it again, same span id
                else:
                    settled.append(outcome)
            elif (
                exporter is not None
                and exporter.waits_for_trace_export
                and delivery.attempts == 0
                and rated is not None
                and now - delivery.created_at < TRACE_EXPORT_WAIT_SECONDS
                and traces.pending(rated.span_id)
            ):
                settled.append(Outcome(delivery, "defer", now + _TRACE_EXPORT_RECHECK))
            else:
                ready.append(delivery)
        if settled:
            applied = self._outbox.record(settled)
            for outcome, done in zip(settled, applied, strict=True):
                if done and outcome.action == "delivered":
                    self._after_delivered(outcome.delivery)
        return ready

    def _settle_emitted(
        self, delivery: Delivery, traces: TraceTracker, now: float
    ) -> Outcome | None:
        span_id = feedback_span_ids(delivery.signal.id)[1]
        if traces.exported(span_id):
            self._emitted.pop(delivery.row_id, None)
            return Outcome(delivery, "delivered")
        emitted_at = self._emitted.get(delivery.row_id)
        if emitted_at is not None:  # ours
            if now - emitted_at > TRACE_EXPORT_WAIT_SECONDS:
                self._emitted.pop(delivery.row_id, None)
                return None  # lost on the way out: emit it again, same span id
            traces.flush_soon()
            return Outcome(delivery, "defer", now + _TRACE_EXPORT_RECHECK)
        if self._outbox.emitter_still_waits(delivery.reason, now, TRACE_EXPORT_WAIT_SECONDS):
            return Outcome(delivery, "defer", now + _TRACE_EXPORT_RECHECK)  # its emitter's
        return None  # emitted by a process that died (or waited too long): again

    def _active_destinations(self, now: float) -> list[str]:
        return [dest for dest in self._destinations if self._paused.get(dest, 0.0) <= now]

    def _idle_time(self, full: bool) -> float:
        """How long the worker may sleep: until a result, a wake-up, the next due row or the end
        of a pause, and never longer than `poll_interval` (other processes add rows too)."""
        wait = self._poll_interval if not self._held else min(self._poll_interval, 0.05)
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
        self._rounds += 1  # a flush deciding to give up early checks no round passed meanwhile
        with self._progress:
            self._progress.notify_all()

    def _drain_inline(self, deadline: float) -> None:
        """Run what is due in the calling thread: the fallback when no thread can start."""
        try:
            self._commit_held()
            while time.monotonic() < deadline:
                batch = self._claim(self._max_in_flight)
                if not batch:
                    return
                for index, delivery in enumerate(batch):
                    if time.monotonic() >= deadline:
                        self._outbox.record([Outcome(rest, "release") for rest in batch[index:]])
                        return
                    if delivery.destination == LINK_STAGE:
                        self._link(delivery, self._resolve(delivery.signal))
                        continue
                    followups: list[Callable[[], None]] = []
                    outcome = self._outcome(delivery, self._export(delivery), followups)
                    (applied,) = self._outbox.record([outcome])
                    if applied and outcome.action == "delivered":
                        self._after_delivered(delivery)
                    for followup in followups:
                        followup()
        except (sqlite3.Error, OutboxClosed, OSError) as exc:
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
        instrumentation never traces (or loops on) our own requests — the one place that does."""
        destination = delivery.destination
        try:
            with instrumentation_suppressed():
                result = self._exporters[destination].export(delivery.signal)
        except Exception as exc:
            if raise_internal_errors() and destination == RECORD_STAGE:
                raise
            log_rate_limited(
                logging.WARNING,
                f"export:{destination}",
                "brixo_otel: exporter %r raised %s; the signal will be retried",
                destination,
                type(exc).__name__,
                exc_info=True,
            )
            return DeliveryResult(DeliveryStatus.RETRY, f"exporter raised {type(exc).__name__}")
        if not isinstance(result, DeliveryResult):
            return DeliveryResult(
                DeliveryStatus.RETRY,
                f"exporter returned {type(result).__name__}, not a DeliveryResult",
            )
        return result

    def _outcome(
        self, delivery: Delivery, result: DeliveryResult, followups: list[Callable[[], None]]
    ) -> Outcome:
        """Turn the decision for one answer into an outbox change (applied with its batch) and
        the logs, metrics and callbacks that follow once it is applied."""
        destination = delivery.destination
        now = time.time()
        decision = decide(
            result, delivery.attempts, max(0.0, now - delivery.created_at), self._policy
        )
        if decision.action == "delivered":
            traces = self._traces
            if destination == RECORD_STAGE and traces is not None:
                span_id = feedback_span_ids(delivery.signal.id)[1]
                if not traces.exported(span_id):  # emitted, not yet exported: wait for it
                    self._emitted[delivery.row_id] = now
                    traces.flush_soon()
                    # Who emitted it and when, for the other processes of the outbox: they
                    # leave it to us while we live and the wait lasts (no second emission).
                    mark = f"{_EMITTED} by {self._outbox.owner} at {now:.3f}"
                    return Outcome(delivery, "defer", now + _TRACE_EXPORT_RECHECK, mark)
            return Outcome(delivery, "delivered")
        if decision.action == "key_refused":
            self._paused[destination] = math.inf
            if destination not in self._key_refusal_logged:
                self._key_refusal_logged.add(destination)
                logger.error(
                    "brixo_otel: %s refused the API key (%s). Delivery to it is paused; its "
                    "signals are kept in the outbox until a client with a valid key sends them.",
                    destination,
                    decision.reason,
                )
            return Outcome(delivery, "release")
        if decision.action == "dead":
            followups.append(lambda: self._after_dead(delivery, decision.reason, decision.kind))
            return Outcome(delivery, "dead", reason=decision.reason)
        when = now + decision.delay
        if decision.pause_destination:
            self._paused[destination] = max(self._paused.get(destination, 0.0), when)
        self._metrics.retried(destination, decision.kind)
        logger.debug(
            "brixo_otel: signal %s to %s: %s (%s); retry in %.2f s",
            delivery.signal.id,
            destination,
            result.status.value,
            result.reason,
            decision.delay,
        )
        return Outcome(delivery, "retry", when, decision.reason)

    def _after_delivered(self, delivery: Delivery) -> None:
        self._metrics.delivered(delivery.destination)
        logger.debug(
            "brixo_otel: signal %s delivered to %s", delivery.signal.id, delivery.destination
        )
        self._callback("on_delivered", self._on_delivered, delivery.signal, delivery.destination)

    def _after_dead(self, delivery: Delivery, reason: str, kind: str) -> None:
        destination = delivery.destination
        self._metrics.dead_lettered(destination, kind)
        log_rate_limited(
            logging.WARNING,
            f"dead-letter:{destination}:{kind}",
            "brixo_otel: signal %s to %s was dead-lettered: %s (kept in the outbox; "
            "`brixo-otel outbox retry` requeues it)",
            delivery.signal.id,
            destination,
            reason,
        )
        self._callback("on_error", self._on_error, delivery.signal, destination, reason)

    def _refuse(self, signal: Signal, reason: str, kind: str) -> None:
        log_rate_limited(
            logging.ERROR,
            f"refused:{kind}",
            "brixo_otel: signal %s was refused and will not be delivered: %s",
            signal.id,
            reason,
        )
        for destination in self._exporters:  # refused for each of them
            self._metrics.refused(destination, kind)
            self._callback("on_error", self._on_error, signal, destination, reason)

    def _count_corrupt(self, destination: str) -> None:
        # No `on_error`: a corrupt row has no signal to hand it (counted, logged, kept dead).
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
        """Nothing held, pending or in flight — apart from signals waiting, within the link
        window, for the span they rate to appear: those wait for another process or a late
        span, not for delivery, and stay in the outbox across restarts."""
        if self._held:
            return False
        try:
            return self._outbox.pending_count(self._destinations, except_waiting=LINK_STAGE) == 0
        except (sqlite3.Error, OutboxClosed, OSError):
            return False

    def _nothing_due_before(self, epoch: float) -> bool:
        """Whether every row left waits (backoff, pause, not-found window) past `epoch`, so a
        flush until then cannot succeed: it may return now instead of waiting its timeout."""
        if self._held or self._in_flight or self._recording:
            return False
        try:
            for destination in self._destinations:
                if destination == LINK_STAGE and not self._outbox.pending_count(
                    [LINK_STAGE], except_waiting=LINK_STAGE
                ):
                    continue  # only signals waiting for their span, which flush does not wait for
                due = self._outbox.next_due([destination])
                if due is None:
                    continue
                if max(due, self._paused.get(destination, 0.0)) <= epoch:
                    return False
            return self._outbox.in_flight_count(self._destinations) == 0
        except (sqlite3.Error, OutboxClosed, OSError):
            return False

    def _depth(self) -> Mapping[str, int] | None:
        try:
            return {dest: self._outbox.pending_count([dest]) for dest in self._destinations}
        except (sqlite3.Error, OutboxClosed, OSError):
            return None


class _OutboxState:
    """One destination's slice of the outbox's exporter state."""

    __slots__ = ("_destination", "_outbox")

    def __init__(self, outbox: ExporterStateStore, destination: str) -> None:
        self._outbox = outbox
        self._destination = destination

    def get(self, key: str) -> str | None:
        return self._outbox.state_get(self._destination, key)

    def set(self, key: str, value: str) -> None:
        self._outbox.state_set(self._destination, key, value)

    def delete(self, key: str) -> None:
        self._outbox.state_delete(self._destination, key)

    def compare_and_set(self, key: str, expected: str | None, value: str) -> bool:
        return self._outbox.state_compare_and_set(self._destination, key, expected, value)


def _call_weak(
    method: weakref.WeakMethod[Callable[[], Mapping[str, int] | None]],
) -> Mapping[str, int] | None:
    bound = method()
    return None if bound is None else bound()


_live: weakref.WeakSet[SignalProcessor] = weakref.WeakSet()
_live_lock = threading.Lock()
_exit_deadline: float | None = None


def exit_time_left() -> float:
    """Seconds left of the one budget that every exit hook of brixo-otel shares (processors,
    and the clients' span export); the clock starts at the first call, from the first hook."""
    global _exit_deadline
    if _exit_deadline is None:
        budget = os.environ.get("BRIXO_OTEL_EXIT_BUDGET_SECONDS")
        _exit_deadline = time.monotonic() + (float(budget) if budget else EXIT_BUDGET_SECONDS)
    return max(0.0, _exit_deadline - time.monotonic())


def _shutdown_at_exit(ref: weakref.ref[SignalProcessor]) -> None:
    """Shut a processor down at interpreter exit, within one budget shared by all of them."""
    processor = ref()
    if processor is None:
        return
    try:
        processor.shutdown(timeout=exit_time_left())
    except Exception:
        logger.debug("brixo_otel: shutdown at exit failed", exc_info=True)


def _reset_module_after_fork() -> None:
    global _live_lock, _exit_deadline
    _live_lock = threading.Lock()
    _exit_deadline = None


module_state_after_fork(_reset_module_after_fork)
