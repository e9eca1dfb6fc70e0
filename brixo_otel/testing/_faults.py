"""Scripted misbehaviour for the Signals endpoints, so clients can be tested against bad days.

Knobs add up in call order (`fail_next(1, 503)` then `fail_next(1, 429)` fails the next request
with 503 and the one after with 429), and each request takes at most one scripted fault, in the
order drop, hang, fail, random failure. Latency comes on top of whatever the request gets.
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


Fault = Drop | Hang | Fail


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
        self._latency = 0.0
        self._random_rate = 0.0
        self._random_status = 503
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

    def set_latency(self, seconds: float) -> None:
        _check_seconds(seconds)
        with self._lock:
            self._latency = float(seconds)

    def fail_randomly(self, rate: float, *, status: int = 503, seed: int | None = None) -> None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise ValueError(f"rate must be between 0 and 1, got {rate!r}")
        _check_status(status)
        with self._lock:
            self._random_rate = float(rate)
            self._random_status = status
            self._random = random.Random(seed)

    def reset(self) -> None:
        with self._lock:
            self._drops = 0
            self._hangs.clear()
            self._fails.clear()
            self._latency = 0.0
            self._random_rate = 0.0
            self._random_status = 503

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
            # Draw only while random failure is on, so a seed gives the same sequence of outcomes
            # however many requests came before it was set.
            if self._random_rate and self._random.random() < self._random_rate:
                return Fail(self._random_status)
            return None
