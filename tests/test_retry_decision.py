"""The whole retry policy as a pure function: (answer, attempts, age, policy) → decision."""

from __future__ import annotations

import pytest

from brixo_otel import RetryPolicy
from brixo_otel._delivery._retry import Decision, decide
from brixo_otel.exporters import DeliveryResult, DeliveryStatus

POLICY = RetryPolicy(initial_backoff=1.0, multiplier=2.0, max_backoff=30.0, max_retry_after=120.0)


class Fixed:
    """A jitter source that always draws the ceiling, so delays are exact."""

    def uniform(self, a: float, b: float, /) -> float:
        return b


def result(status: DeliveryStatus, **extra: object) -> DeliveryResult:
    return DeliveryResult(status, "why", **extra)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("answer", "attempts", "age", "expected"),
    [
        (DeliveryResult.delivered(), 0, 0.0, Decision("delivered")),
        (
            result(DeliveryStatus.RETRY, http_status=503),
            0,
            1.0,
            Decision("retry", delay=1.0, reason="why", kind="http_503"),
        ),
        (
            result(DeliveryStatus.RETRY),
            3,
            1.0,
            Decision("retry", delay=8.0, reason="why", kind="retry"),
        ),
        (  # the ceiling caps the growth
            result(DeliveryStatus.RETRY),
            20,
            1.0,
            Decision("retry", delay=30.0, reason="why", kind="retry"),
        ),
        (  # Retry-After is a floor, clamped to max_retry_after
            result(DeliveryStatus.THROTTLED, retry_after=1e6, http_status=429),
            0,
            1.0,
            Decision("retry", delay=120.0, pause_destination=True, reason="why", kind="http_429"),
        ),
        (  # a past date (negative) falls back to the backoff
            result(DeliveryStatus.THROTTLED, retry_after=-5.0, http_status=503),
            1,
            1.0,
            Decision("retry", delay=2.0, pause_destination=True, reason="why", kind="http_503"),
        ),
        (
            result(DeliveryStatus.UNAUTHORIZED, http_status=401),
            0,
            1.0,
            Decision("key_refused", reason="why", kind="unauthorized"),
        ),
        (
            result(DeliveryStatus.PERMANENT, http_status=400),
            0,
            1.0,
            Decision("dead", reason="why", kind="http_400"),
        ),
        (  # 404 within the not-found window: retried like any transient failure
            result(DeliveryStatus.NOT_FOUND, http_status=404),
            0,
            599.0,
            Decision("retry", delay=1.0, reason="why", kind="http_404"),
        ),
        (
            result(DeliveryStatus.NOT_FOUND, http_status=404),
            9,
            600.0,
            Decision(
                "dead", reason="not found after 10 attempts over 600 s: why", kind="not_found"
            ),
        ),
        (
            result(DeliveryStatus.RETRY),
            41,
            86_400.0,
            Decision("dead", reason="gave up after 42 attempts over 86400 s: why", kind="max_age"),
        ),
    ],
)
def test_each_answer_decides_one_action(
    answer: DeliveryResult, attempts: int, age: float, expected: Decision
) -> None:
    assert decide(answer, attempts, age, POLICY, rng=Fixed()) == expected


def test_the_jitter_stays_within_zero_and_the_ceiling() -> None:
    import random

    rng = random.Random(7)
    delays = [
        decide(result(DeliveryStatus.RETRY), 2, 1.0, POLICY, rng=rng).delay for _ in range(200)
    ]
    assert min(delays) >= 0.0 and max(delays) <= 4.0
    assert max(delays) - min(delays) > 2.0  # full jitter: spread over the whole range
