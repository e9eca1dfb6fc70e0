"""The guard that keeps telemetry from ever breaking the app, and quiet logging.

Internal steps (tagging a span, emitting the feedback span, recording a delivery) run under
`guard`: a failure is logged at most once per interval and the app carries on. Under the project's
own tests (`BRIXO_OTEL_RAISE_INTERNAL_ERRORS=1`, set by the test suite) the guard re-raises, so our
own bugs fail our tests instead of hiding in a log.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

from opentelemetry import context as otel_context

from brixo_otel._forksafe import module_state_after_fork

logger = logging.getLogger("brixo_otel")

#: Repeated errors are logged at most once per this many seconds, per message key.
LOG_INTERVAL_SECONDS = 20.0

_last_logged: dict[str, float] = {}
_last_logged_lock = threading.Lock()


def _reset_after_fork() -> None:
    # A lock held by another thread at fork time stays held forever in the child.
    global _last_logged_lock
    _last_logged_lock = threading.Lock()


module_state_after_fork(_reset_after_fork)


def raise_internal_errors() -> bool:
    return os.environ.get("BRIXO_OTEL_RAISE_INTERNAL_ERRORS", "") == "1"


def log_rate_limited(
    level: int, key: str, message: str, *args: object, exc_info: object = False
) -> bool:
    """Log `message` unless the same `key` was logged within `LOG_INTERVAL_SECONDS`.

    Returns whether it was logged, so callers can count suppressed repeats if they care.
    """
    now = time.monotonic()
    with _last_logged_lock:
        last = _last_logged.get(key)
        if last is not None and now - last < LOG_INTERVAL_SECONDS:
            return False
        _last_logged[key] = now
    logger.log(level, message, *args, exc_info=exc_info)  # type: ignore[arg-type]
    return True


def reset_rate_limits() -> None:
    """Forget what was logged; for tests that assert on log records."""
    with _last_logged_lock:
        _last_logged.clear()


class guard:  # lower case: it reads as a function, `with guard("step"):`
    """Run an internal step; log (rate-limited) and swallow its failure.

    A class rather than `@contextmanager`: it runs on hot paths (span end, feedback), where a
    generator-based context manager costs several times more.
    """

    __slots__ = ("_step",)

    def __init__(self, step: str) -> None:
        self._step = step

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False
        return swallowed(self._step, exc)


def swallowed(step: str, exc: Exception) -> bool:
    """Log an internal failure (rate-limited) and say it may be swallowed; under our own tests,
    say it may not, so the caller re-raises. For hot paths that use `try` instead of `guard`."""
    if raise_internal_errors():
        return False
    log_rate_limited(
        logging.ERROR,
        f"internal:{step}",
        "brixo_otel: internal error in %s",
        step,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return True


@contextmanager
def instrumentation_suppressed() -> Iterator[None]:
    """Run our own requests with OpenTelemetry instrumentation suppressed, so that an app's HTTP
    instrumentation never traces (or loops on) them: the one place that does it."""
    token = otel_context.attach(
        otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True)
    )
    try:
        yield
    finally:
        otel_context.detach(token)
