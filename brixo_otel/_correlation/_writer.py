"""The background writer: index puts for a shared store leave the app's thread, in batches.

A message span starts and ends on the app's thread (a request handler, an event loop). A SQLite
file locked by another process holds a write for up to its busy timeout, a hung Redis for up to
its socket timeout; paid there, that would be paid by every `@message` call. Here the app's
thread only appends to a bounded deque, and one daemon thread per index writes whatever has piled
up as one batch: one SQLite transaction, one Redis pipeline, so a burst costs one round trip.

- **Bounded, dropping the oldest.** When the store falls behind (or is down) and the queue is
  full, the oldest puts go: the newest messages are the ones most likely to be rated next, and
  the memory tier still answers for them in this process. Drops are counted (`dropped`) and
  logged from the writer's thread, at most once per interval, never on the app's.
- **A store that cannot take writes now** (`put_many` returns False) keeps its batch: it goes
  back to the head of the queue and is tried again after a growing pause, so a lock held for a
  second costs nothing, and a long outage ends in drops, oldest first, as above.
- **Lazy and fork-safe.** The thread starts at the first put. A forked child (a pre-forking
  server configures, then forks) inherits no thread, so it gets a fresh queue and starts its own
  writer at its first put; the parent's queue and thread are never touched. The reset runs in
  `brixo_otel._forksafe` and takes no lock, as a lock held by a parent thread
  at the fork would stay held forever in the child.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Final

from brixo_otel._correlation._index import IndexStore, Put
from brixo_otel._forksafe import after_fork_in_child
from brixo_otel._internal import log_rate_limited, swallowed

#: Puts waiting for the store, at most (about 100 bytes each, the attributes shared with the
#: memory tier): a few seconds of a busy app's messages, enough to ride out a lock or a restart.
DEFAULT_QUEUE_SIZE: Final = 10_000

#: Puts written in one transaction or pipeline, at most: large enough that a backlog drains in
#: few round trips, small enough that one transaction never holds the file for long.
DEFAULT_BATCH_SIZE: Final = 500

#: First and longest pause before writing again to a store that refused a batch, in seconds.
RETRY_DELAY_SECONDS: Final = 0.05
MAX_RETRY_DELAY_SECONDS: Final = 1.0

#: How often `flush` looks whether the writer is done, in seconds (it is a test and shutdown aid).
_FLUSH_POLL_SECONDS: Final = 0.002

_LOG_KEY: Final = "index:writer"


class IndexWriter:
    """One store's queue of puts and the one thread that writes them.

    `submit` is the app's side: a few dict and deque operations, no lock on the common path, no
    I/O, never a wait. Everything else happens on the writer's thread.
    """

    def __init__(
        self,
        store: IndexStore,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self._store = store
        self._capacity = queue_size
        self._batch_size = batch_size
        self._closed = False
        self._start_afresh()
        after_fork_in_child(self, IndexWriter._start_afresh)

    def _start_afresh(self) -> None:
        """Own state, new: at construction, and in a forked child (see the module docstring)."""
        self._queue: deque[Put] = deque()
        self._wake = threading.Event()
        self._start_lock = threading.Lock()
        self._drop_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._idle = False  # the writer waits for `_wake`: a put must set it
        self._busy = False  # the writer holds puts taken off the queue
        self._dropped = 0
        self._reported = 0  # drops already logged

    def __repr__(self) -> str:
        return f"IndexWriter({self._store!r}, pending={len(self._queue)}, dropped={self._dropped})"

    @property
    def dropped(self) -> int:
        """Puts dropped in this process because the queue was full (oldest first)."""
        return self._dropped

    @property
    def pending(self) -> int:
        """Puts waiting in the queue (not counting a batch being written)."""
        return len(self._queue)

    # -- the app's side ----------------------------------------------------------------------------

    def submit(self, put: Put) -> None:
        """Queue one put for the store. Never blocks, never raises, never does I/O."""
        if self._closed:
            return
        queue = self._queue
        if len(queue) >= self._capacity:
            self._drop_oldest(1)
        queue.append(put)
        if self._thread is None:
            self._start()
        elif self._idle:
            self._wake.set()

    def _drop_oldest(self, count: int) -> None:
        """Make room by dropping the `count` oldest puts; counted exactly, as only puts really
        taken off the queue are counted (concurrent producers may overshoot the bound by one
        each, never by more)."""
        popleft = self._queue.popleft
        dropped = 0
        for _ in range(count):
            try:
                popleft()
            except IndexError:  # the writer emptied it meanwhile
                break
            dropped += 1
        if dropped:
            with self._drop_lock:
                self._dropped += dropped

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is not None or self._closed:
                return
            thread = threading.Thread(target=self._run, name="brixo-otel-index-writer", daemon=True)
            try:
                thread.start()
            except RuntimeError as exc:  # "can't start new thread", at interpreter exit
                self._closed = True
                log_rate_limited(
                    logging.WARNING,
                    _LOG_KEY,
                    "brixo_otel: cannot start the span index writer (%s); this process writes "
                    "no more index entries to %r",
                    exc,
                    self._store,
                )
                return
            self._thread = thread

    # -- the writer's side -------------------------------------------------------------------------

    def _run(self) -> None:
        delay = RETRY_DELAY_SECONDS
        wake = self._wake
        while True:
            self._busy = True
            batch = self._take()
            if batch:
                if self._write(batch):
                    delay = RETRY_DELAY_SECONDS
                    self._report_drops()
                    continue
                self._put_back(batch)
                self._report_drops()
                if self._closed:  # shutting down and the store refuses: nothing more to do
                    self._give_up()
                    return
                wake.clear()
                if not self._closed:
                    wake.wait(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY_SECONDS)
                continue
            self._busy = False
            if self._closed:
                return
            # Announce the wait, then look once more: a put that saw `_idle` False was
            # appended before this look, and one that sees it True sets `_wake`.
            wake.clear()
            self._idle = True
            if not self._queue and not self._closed:
                wake.wait()
            self._idle = False

    def _take(self) -> list[Put]:
        """Up to a batch of puts, oldest first; of several for one message, only the last."""
        popleft = self._queue.popleft
        latest: dict[str, Put] = {}
        for _ in range(self._batch_size):
            try:
                put = popleft()
            except IndexError:
                break
            latest.pop(put[0], None)  # re-inserted: the batch keeps the order of last writes
            latest[put[0]] = put
        return list(latest.values())

    def _write(self, batch: list[Put]) -> bool:
        try:
            return self._store.put_many(batch)
        except Exception as exc:  # a bug, or a store we do not know: never retried forever
            if not swallowed("writing to the span index", exc):
                raise
            return True

    def _put_back(self, batch: list[Put]) -> None:
        """Return a refused batch to the head of the queue: it is older than everything there,
        so what does not fit is what the drop policy would drop first anyway."""
        queue = self._queue
        room = max(0, self._capacity - len(queue))
        kept = batch[len(batch) - room :] if room < len(batch) else batch
        lost = len(batch) - len(kept)
        if lost:
            with self._drop_lock:
                self._dropped += lost
        queue.extendleft(reversed(kept))

    def _give_up(self) -> None:
        """At close, with a store that takes nothing: count what is left as dropped."""
        self._drop_oldest(len(self._queue))
        self._busy = False
        self._report_drops()

    def _report_drops(self) -> None:
        dropped = self._dropped
        if dropped == self._reported:
            return
        if log_rate_limited(
            logging.WARNING,
            _LOG_KEY + ":dropped",
            "brixo_otel: the span index %r is slower than this process's messages; %d index "
            "writes dropped so far (oldest first, queue of %d); feedback on those messages "
            "links only in this process",
            self._store,
            dropped,
            self._capacity,
        ):
            self._reported = dropped

    # -- lifecycle ---------------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every put submitted so far was handed to the store; True if so in time.

        A store that refuses writes (locked, down) makes this wait out `timeout`: the puts are
        then still queued, not written. For tests and shutdown; the app never needs it.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        self._wake.set()  # cut a retry pause short: the store may be back
        while self._queue or self._busy:
            thread = self._thread
            if thread is None or not thread.is_alive():
                return not self._queue
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(_FLUSH_POLL_SECONDS)
        return True

    def close(self, timeout: float = 2.0) -> bool:
        """Write what is queued (within `timeout`), then stop the thread; True if it stopped.

        A hung store keeps the thread past the timeout: it is a daemon, holds nothing the app
        needs, and ends with the process. Later puts are ignored.
        """
        self._closed = True
        self._wake.set()
        thread = self._thread
        if thread is None:
            return True
        if thread is not threading.current_thread():
            thread.join(max(0.0, timeout))
        return not thread.is_alive()
