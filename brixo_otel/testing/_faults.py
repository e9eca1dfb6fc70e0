"""Scripted misbehaviour for the Signals endpoints, so clients can be tested against bad days.

Knobs add up in call order (`fail_next(1, 503)` then `fail_next(1, 429)` fails the next request
with 503 and the one after with 429), and each request takes at most one scripted fault, in the
order drop, hang, fail, drop after storing, trickle, random fault. Latency comes on top of
whatever the request gets.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Drop:
    """Read the request, then close the connection without a word."""


@dataclass(frozen=True)
class Hang:
    """Sit on the request this long, then answer it normally."""

    seconds: float


@dataclass(frozen=True)
class Fail:
    """Answer with this status instead of handling the request."""

    status: int
    retry_after: str | None = None
    body: dict[str, Any] | None = None


@dataclass(frozen=True)
class DropAfterStore:
    """Handle the request (store the signal), then close the connection without answering: the
    client cannot tell whether it was stored, and must retry under the same idempotency key."""


@dataclass(frozen=True)
class Trickle:
    """Handle the request, then send the answer one byte every `interval` seconds: each read
    the client makes gets a byte well within any read timeout, so only a bound on the whole
    request ends it."""

    interval: float


Fault = Drop | Hang | Fail | DropAfterStore | Trickle


def _check_count(count: int) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be a non-negative int, got {count!r}")


def _check_seconds(seconds: float) -> None:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
        raise ValueError(f"seconds must be a non-negative number, got {seconds!r}")


def _check_status(status: int) -> None:
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise ValueError(f"status must be an HTTP status code, got {status!r}")


class FaultPlan:
    """Thread-safe: tests script faults while request threads consume them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._drops = 0
        self._hangs: deque[Hang] = deque()
        self._fails: deque[Fail] = deque()
        self._after: deque[DropAfterStore | Trickle] = deque()
        self._latency = 0.0
        self._random_rate = 0.0
        self._random_fault: Fault = Fail(503)
        self._random = random.Random()

    def fail_next(
        self,
        count: int,
        status: int,
        *,
        retry_after: str | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        _check_count(count)
        _check_status(status)
        fail = Fail(status, retry_after, body)
        with self._lock:
            self._fails.extend([fail] * count)

    def drop_next(self, count: int) -> None:
        _check_count(count)
        with self._lock:
            self._drops += count

    def hang_next(self, count: int, seconds: float) -> None:
        _check_count(count)
        _check_seconds(seconds)
        with self._lock:
            self._hangs.extend([Hang(float(seconds))] * count)

    def drop_after_store_next(self, count: int) -> None:
        _check_count(count)
        with self._lock:
            self._after.extend([DropAfterStore()] * count)

    def trickle_next(self, count: int, interval: float) -> None:
        _check_count(count)
        _check_seconds(interval)
        with self._lock:
            self._after.extend([Trickle(float(interval))] * count)

    def set_latency(self, seconds: float) -> None:
        _check_seconds(seconds)
        with self._lock:
            self._latency = float(seconds)

    def fail_randomly(self, rate: float, *, status: int = 503, seed: int | None = None) -> None:
        _check_status(status)
        self.fault_randomly(rate, Fail(status), seed=seed)

    def fault_randomly(self, rate: float, fault: Fault, *, seed: int | None = None) -> None:
        """Give this share (0 to 1) of the requests that no scripted fault takes `fault`."""
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise ValueError(f"rate must be between 0 and 1, got {rate!r}")
        if not isinstance(fault, (Drop, Hang, Fail, DropAfterStore, Trickle)):
            raise TypeError(f"fault must be one of the fault types, got {fault!r}")
        with self._lock:
            self._random_rate = float(rate)
            self._random_fault = fault
            self._random = random.Random(seed)

    def reset(self) -> None:
        with self._lock:
            self._drops = 0
            self._hangs.clear()
            self._fails.clear()
            self._after.clear()
            self._latency = 0.0
            self._random_rate = 0.0
            self._random_fault = Fail(503)

    @property
    def latency(self) -> float:
        with self._lock:
            return self._latency

    def take(self) -> Fault | None:
        """The fault for the request now arriving, if any, consumed so the next one moves on."""
        with self._lock:
            if self._drops:
                self._drops -= 1
                return Drop()
            if self._hangs:
                return self._hangs.popleft()
            if self._fails:
                return self._fails.popleft()
            if self._after:
                return self._after.popleft()
            # Draw only while random failure is on, so a seed gives the same sequence of outcomes
            # however many requests came before it was set.
            if self._random_rate and self._random.random() < self._random_rate:
                return self._random_fault
            return None
