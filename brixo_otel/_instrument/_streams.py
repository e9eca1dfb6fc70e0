"""Streamed messages whose consumer went away end within a bound, not at garbage collection.

A generator message ends its span when the stream is exhausted, fails, or is closed: `close()`,
`aclose()`, `break`, the last reference dropped, the task cancelled. A consumer can still go
away without any of these:

- it keeps a reference and never asks again. Starlette, when a client disconnects from a
  `StreamingResponse` over a *sync* iterator, cancels the task that was reading it; the stream
  stays referenced from the traceback of that cancellation until the cyclic garbage collector
  runs, which in a quiet server may be never;
- the generator is collected without its clean-up running (an async generator whose event loop
  has gone: nothing can run its `aclose()`).

One daemon thread watches the open streams that have an idle timeout. A stream that sits at a
`yield` (the consumer's turn) while its consumer does not ask for the next item within the
timeout, or whose generator was collected before it ended, gets its span ended and marked
cancelled by that thread. Time the producer spends on a step (waiting for the model) never
counts: the generator is running then.

Cost on the stream's own path: one weak reference and two dict operations per stream, one
integer increment per item.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Final

from opentelemetry.trace import Span

from brixo_otel._forksafe import module_state_after_fork
from brixo_otel._internal import swallowed

#: The longest the watcher sleeps between two looks; with the timeout's quarter, whichever is
#: shorter, this bounds how late after its timeout an abandoned stream is ended.
_MAX_TICK: Final = 1.0
_MIN_TICK: Final = 0.02

#: Why a stream's span was ended before the stream was: the values of
#: `brixo.message.cancel_reason`.
CLOSED: Final = "closed"
CANCELLED: Final = "cancelled"
IDLE: Final = "idle"
ABANDONED: Final = "abandoned"


class StreamWatch:
    """One open stream, as the watcher sees it."""

    __slots__ = ("_seen", "_since", "end", "generator", "running", "span", "timeout", "turns")

    def __init__(self, timeout: float, is_async: bool) -> None:
        self.timeout = timeout
        #: How many times the consumer asked for the next item (the stream counts them).
        self.turns = 0
        #: The stream's own generator, weakly: its running flag says whose turn it is.
        self.generator: weakref.ref[Any] | None = None
        self.running = "ag_running" if is_async else "gi_running"
        self.span: Span | None = None
        #: How the watcher ends the span: `end(span, reason)`.
        self.end: Callable[[Span, str], None] | None = None
        self._seen = -1
        self._since = 0.0

    def check(self, now: float) -> str | None:
        """Why the stream should be ended now, if it should."""
        generator = self.generator() if self.generator is not None else None
        if generator is None:
            return ABANDONED  # collected, yet its own clean-up never ended the span
        if getattr(generator, self.running, False):
            self._seen = -1  # the producer is at work: that is never idleness
            return None
        turns = self.turns
        if turns != self._seen:
            self._seen, self._since = turns, now
            return None
        return IDLE if now - self._since >= self.timeout else None


#: Streams being watched, by id of their watch. Entries are added and removed from the streams'
#: threads and the watcher's; single dict operations, atomic in CPython, so no lock is needed.
_open: dict[int, StreamWatch] = {}
_thread: threading.Thread | None = None
_start_lock = threading.Lock()


def watch(stream: StreamWatch, span: Span, end: Callable[[Span, str], None]) -> None:
    """Start watching `stream`, whose span is `span`; `end` ends it if the consumer goes away."""
    stream.span = span
    stream.end = end
    _open[id(stream)] = stream
    if _thread is None:
        _start()


def release(stream: StreamWatch) -> bool:
    """Stop watching `stream`: True if the caller is to end its span, False if the watcher
    already did (whoever removes the entry owns the ending)."""
    return _open.pop(id(stream), None) is not None


def watched() -> int:
    """How many streams are being watched (for tests)."""
    return len(_open)


def _start() -> None:
    global _thread
    with _start_lock:
        if _thread is None:
            thread = threading.Thread(target=_run, name="brixo-otel-streams", daemon=True)
            thread.start()
            _thread = thread


def _run() -> None:
    while True:
        time.sleep(_sweep(time.monotonic()))


def _sweep(now: float) -> float:
    """End the streams whose consumer went away; return how long to sleep until the next look."""
    tick = _MAX_TICK
    for stream in list(_open.values()):
        tick = min(tick, stream.timeout / 4)
        reason = stream.check(now)
        if reason is None or _open.pop(id(stream), None) is None:
            continue
        span, end = stream.span, stream.end
        if span is None or end is None:
            continue
        try:
            end(span, reason)
        except Exception as exc:
            if not swallowed("ending an abandoned stream", exc):
                raise
    return max(_MIN_TICK, tick)


def _reset_after_fork() -> None:
    # The watcher thread does not survive a fork, and the parent's streams are not the child's.
    global _thread, _start_lock
    _open.clear()
    _thread = None
    _start_lock = threading.Lock()


module_state_after_fork(_reset_after_fork)
