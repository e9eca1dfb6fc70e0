"""When to try a failed delivery again.

Full jitter (a uniform draw between zero and the exponential ceiling) spreads the retries of many
clients that failed at the same moment, so a recovering endpoint is not hit by a synchronised wave.
A destination's `Retry-After` is honoured as a minimum, but clamped: a misconfigured or hostile
server must not be able to park our signals for days.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Protocol


class _Uniform(Protocol):
    def uniform(self, a: float, b: float, /) -> float: ...


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait between attempts, and when to give up. All values are seconds."""

    #: Ceiling of the first retry's delay.
    initial_backoff: float = 1.0
    #: Growth of the ceiling per attempt.
    multiplier: float = 2.0
    #: Largest ceiling, however many attempts failed.
    max_backoff: float = 30.0
    #: Largest `Retry-After` honoured; longer requests are clamped to this.
    max_retry_after: float = 120.0
    #: A signal still undelivered this long after it was queued is dead-lettered.
    max_age: float = 24 * 3600.0
    #: How long "not found" (404) is retried: the rated trace may not be ingested yet.
    not_found_window: float = 600.0

    def __post_init__(self) -> None:
        for name in (
            "initial_backoff",
            "max_backoff",
            "max_retry_after",
            "max_age",
            "not_found_window",
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"RetryPolicy.{name} must be a number >= 0, got {value!r}")
        if not isinstance(self.multiplier, (int, float)) or not self.multiplier >= 1:
            raise ValueError(f"RetryPolicy.multiplier must be >= 1, got {self.multiplier!r}")


def _ceiling(policy: RetryPolicy, attempt: int) -> float:
    try:
        grown = policy.initial_backoff * policy.multiplier ** max(attempt, 0)
    except OverflowError:  # after ~1000 attempts; the cap applies long before
        return policy.max_backoff
    return min(policy.max_backoff, grown)


def backoff_delay(policy: RetryPolicy, attempt: int, rng: _Uniform = random) -> float:
    """Delay before the retry that follows failed attempt number `attempt` (counted from 0)."""
    return rng.uniform(0.0, _ceiling(policy, attempt))


def retry_delay(
    policy: RetryPolicy, attempt: int, retry_after: float | None, rng: _Uniform = random
) -> float:
    """Delay before the next attempt, honouring the destination's `Retry-After` if it gave one.

    `Retry-After` is a floor, never a ceiling: we wait at least that long (clamped to
    `max_retry_after`), or the jittered backoff if that is longer. Missing, negative (a date in
    the past) or non-finite values fall back to the backoff alone.
    """
    backoff = backoff_delay(policy, attempt, rng)
    if retry_after is None or not math.isfinite(retry_after) or retry_after <= 0:
        return backoff
    return max(backoff, min(retry_after, policy.max_retry_after))
