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
from typing import Literal, Protocol

from brixo_otel._exporter import DeliveryResult, DeliveryStatus
from brixo_otel._policies import RetryPolicy


class _Uniform(Protocol):
    def uniform(self, a: float, b: float, /) -> float: ...


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


@dataclass(frozen=True)
class Decision:
    """What to do after one attempt: the whole retry policy, as a value."""

    #: "delivered", "retry" (again after `delay`), "dead" (give up with `reason`) or
    #: "key_refused" (keep the row, pause the destination until a client with a valid key).
    action: Literal["delivered", "retry", "dead", "key_refused"]
    delay: float = 0.0
    #: Pause the whole destination for `delay` (429, 503), not only this row.
    pause_destination: bool = False
    reason: str = ""
    #: A short class for metrics: `http_404`, `not_found`, `max_age`, `retry`, ...
    kind: str = ""


def reason_kind(result: DeliveryResult, fallback: str) -> str:
    """`http_<status>` when the answer had one, else `fallback`: few values, no user text."""
    return f"http_{result.http_status}" if result.http_status else fallback


def decide(
    result: DeliveryResult,
    attempts: int,
    age: float,
    policy: RetryPolicy,
    rng: _Uniform = random,
) -> Decision:
    """The decision after attempt number `attempts + 1` of a row that is `age` seconds old.

    A pure function of its inputs (and `rng` for the jitter), so the whole policy is tested as
    a table; the worker only applies what it says.
    """
    status = result.status
    if status is DeliveryStatus.DELIVERED:
        return Decision("delivered")
    if status is DeliveryStatus.UNAUTHORIZED:
        return Decision("key_refused", reason=result.reason or "unauthorized", kind="unauthorized")
    tries = attempts + 1
    if status is DeliveryStatus.PERMANENT:
        reason = result.reason or "rejected by the destination"
        return Decision("dead", reason=reason, kind=reason_kind(result, "permanent"))
    if status is DeliveryStatus.NOT_FOUND and age >= policy.not_found_window:
        return Decision(
            "dead",
            reason=f"not found after {tries} attempts over {age:.0f} s: {result.reason}",
            kind="not_found",
        )
    if age >= policy.max_age:
        return Decision(
            "dead",
            reason=f"gave up after {tries} attempts over {age:.0f} s: {result.reason}",
            kind="max_age",
        )
    return Decision(
        "retry",
        delay=retry_delay(policy, attempts, result.retry_after, rng),
        pause_destination=status is DeliveryStatus.THROTTLED,
        reason=result.reason or status.value,
        kind=reason_kind(result, status.value),
    )
