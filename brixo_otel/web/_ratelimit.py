"""An optional per-client rate limit: one token bucket per client address.

The endpoint is public by nature (any page that shows a message can post to it), so a limit
keeps one client from filling the outbox. Buckets are kept for the most recently seen clients
only, so an attacker with many addresses costs bounded memory; a bucket that was evicted starts
full again, which errs on the side of accepting feedback.

Behind a reverse proxy every request comes from the proxy's address: put the limit in the
proxy, or make the server report the client's address (uvicorn `--proxy-headers`, werkzeug
`ProxyFix`).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

#: How many clients' buckets are kept at most.
MAX_CLIENTS: Final = 10_000


@dataclass(frozen=True)
class RateLimit:
    """`per_second` requests per second on average, bursts of up to `burst`, per client."""

    per_second: float = 1.0
    burst: int = 10

    def __post_init__(self) -> None:
        rate = self.per_second
        if isinstance(rate, bool) or not isinstance(rate, (int, float)):
            raise TypeError(f"RateLimit.per_second must be a number, got {rate!r}")
        if not math.isfinite(rate) or rate <= 0:
            raise ValueError(f"RateLimit.per_second must be positive, got {rate!r}")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int):
            raise TypeError(f"RateLimit.burst must be an int, got {self.burst!r}")
        if self.burst < 1:
            raise ValueError(f"RateLimit.burst must be at least 1, got {self.burst!r}")


class RateLimiter:
    """Thread-safe (WSGI servers run requests in threads); the lock guards a few arithmetic
    operations, never I/O."""

    __slots__ = ("_buckets", "_clock", "_limit", "_lock")

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        #: client → (tokens left, when they were counted); most recently used last.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def acquire(self, client: str) -> float | None:
        """Take a token for `client`: None if granted, else seconds until one is available."""
        limit = self._limit
        now = self._clock()
        with self._lock:
            tokens, then = self._buckets.pop(client, (float(limit.burst), now))
            tokens = min(float(limit.burst), tokens + (now - then) * limit.per_second)
            granted = tokens >= 1.0
            if granted:
                tokens -= 1.0
            self._buckets[client] = (tokens, now)
            if len(self._buckets) > MAX_CLIENTS:
                self._buckets.popitem(last=False)
        return None if granted else (1.0 - tokens) / limit.per_second
