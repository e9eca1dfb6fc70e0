"""The delivery policies an app may tune: how to retry, and how much the outbox holds.

Plain frozen values, checked when built, so a wrong one fails at `configure()` rather than on the
first failed delivery; a leaf, because the settings table checks them and delivery obeys them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from brixo_otel._errors import ConfigurationError


def _number(name: str, value: object, accepted: str, ok: Callable[[float], bool]) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds {accepted}, got {value!r}")
    if math.isnan(value) or not ok(value):
        raise ConfigurationError(f"{name} must be {accepted}, got {value!r}")


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
            _number(f"RetryPolicy.{name}", value, ">= 0", lambda v: v >= 0)
        _number("RetryPolicy.multiplier", self.multiplier, ">= 1", lambda v: v >= 1)


@dataclass(frozen=True)
class OutboxLimits:
    """Caps past which new signals are refused (loudly), and the claim lease."""

    max_rows: int = 100_000
    max_bytes: int = 50 * 1024 * 1024
    #: How long a claimed row belongs to its claimer before any process may take it back.
    lease_seconds: float = 60.0
    #: Dead letters kept at most this many, and this long (seconds), apart from the caps above:
    #: they are for diagnosis and `outbox retry`, and must not crowd out new signals.
    max_dead_letters: int = 10_000
    dead_letter_retention: float = 7 * 86400.0

    def __post_init__(self) -> None:
        for name in ("max_rows", "max_bytes", "max_dead_letters"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"OutboxLimits.{name} must be an int, got {value!r}")
            if value < 1:
                raise ConfigurationError(f"OutboxLimits.{name} must be at least 1, got {value!r}")
        for name in ("lease_seconds", "dead_letter_retention"):
            _number(f"OutboxLimits.{name}", getattr(self, name), "> 0", lambda v: v > 0)
