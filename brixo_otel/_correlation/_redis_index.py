"""A span index in Redis, shared by every process on every host that can reach it.

For apps whose answer and thumbs click can land on different machines. One key per message
(`key_prefix + message_id`), set with an expiry, so Redis does all the housekeeping: no sweeps,
and its own `maxmemory` policy bounds the size.

The app's puts reach this class through the background writer (`_writer.py`), one pipeline per
batch, so a slow Redis never holds the app's thread; lookups come from the delivery worker. Both
still must not stall for long, or the writer falls behind and the worker stops delivering:
- Socket timeouts are short (half a second to connect and to answer) and redis-py's own retries
  are off; a failed call fails once, quickly.
- After a connection failure the index answers "not found" at once for a while (`retry_interval`
  seconds, doubling up to 30 s while Redis stays away) instead of paying a timeout on every
  call; then one call tries again. Meanwhile `put_many` says "not now", and the writer keeps
  its batch for later. When Redis is back it simply works again, with no restart.
- Failures are logged at most once per interval (`log_rate_limited`, key "index:redis"), with
  the URL stripped of any password.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from opentelemetry.trace import SpanContext
from opentelemetry.util.types import AttributeValue

from brixo_otel._correlation._codec import CodecError, decode_entry, encode_entry
from brixo_otel._correlation._index import IndexedSpan, Put
from brixo_otel._errors import ConfigurationError
from brixo_otel._forksafe import after_fork_in_child
from brixo_otel._internal import log_rate_limited, logger

if TYPE_CHECKING:
    import redis

#: Seconds to wait for a TCP connection, and then for each answer.
SOCKET_TIMEOUT_SECONDS: Final = 0.5

#: Longest wait between two attempts while Redis is unreachable, in seconds.
MAX_RETRY_INTERVAL_SECONDS: Final = 30.0

_LOG_KEY: Final = "index:redis"

#: What `_ask` answers when Redis was skipped or the connection failed (None: any other failure).
_UNAVAILABLE: Final = object()


def redacted_url(url: str) -> str:
    """The URL as it may appear in logs and errors: scheme, host, port and path, no credentials."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return "<unparsable Redis URL>"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}{parts.path}"


class RedisSpanIndex:
    """Message id → span context in Redis, with a per-key expiry of `ttl_seconds`.

    Thread-safe and fork-safe as redis-py's connection pool is (it starts afresh in a child).
    """

    def __init__(
        self,
        url: str,
        ttl_seconds: float = 86400.0,
        key_prefix: str = "brixo:span:",
        *,
        retry_interval: float = 1.0,
    ) -> None:
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError as exc:
            raise ConfigurationError(
                "a redis:// span index needs the redis package: install brixo-otel[redis]"
            ) from exc
        if not ttl_seconds > 0:
            raise ConfigurationError(f"ttl_seconds must be positive, got {ttl_seconds}")
        self._url = redacted_url(url)
        try:
            self._redis: redis.Redis = redis.Redis.from_url(
                url,
                socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
                socket_timeout=SOCKET_TIMEOUT_SECONDS,
                # One attempt: recent redis-py versions retry with backoff by default, which
                # would turn one dead Redis into seconds of stall at every batch and lookup.
                retry=Retry(NoBackoff(), 0),
            )
        except ValueError as exc:
            # redis-py's message may quote the URL, password included: say only what was wrong.
            raise ConfigurationError(
                f"span index Redis URL {self._url} cannot be used: {type(exc).__name__}"
            ) from None
        self._ttl_ms = max(1, round(ttl_seconds * 1000))
        self._prefix = key_prefix
        self._retry_interval = retry_interval
        self._connection_errors: tuple[type[Exception], ...] = (
            redis.ConnectionError,
            redis.TimeoutError,
            OSError,
        )
        self._lock = threading.Lock()
        self._down = False  # a connection failed, and no call has succeeded since
        self._down_until = 0.0  # until when calls skip Redis (monotonic clock)
        self._probing = False  # one call is finding out whether Redis is back
        self._failures = 0  # connection failures in a row, for the growing wait
        after_fork_in_child(self, RedisSpanIndex._after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        """A fresh lock: a parent thread may have held it at the fork. (redis-py's pool notices
        the fork by itself and opens new connections.)"""
        self._lock = threading.Lock()
        self._probing = False

    def __repr__(self) -> str:
        return f"RedisSpanIndex({self._url!r})"

    def put(
        self, message_id: str, span_context: SpanContext, attributes: Mapping[str, AttributeValue]
    ) -> None:
        """One put, written now, on the calling thread (the app's puts go through the writer)."""
        self.put_many([(message_id, span_context, attributes)])

    def put_many(self, puts: Sequence[Put]) -> bool:
        """Write `puts` in one pipeline (one round trip); False if Redis is unreachable now.

        Not a MULTI transaction: each SET stands alone, and atomicity buys nothing here. A put
        that cannot be stored (an id or a span that does not encode) is dropped with a warning
        and does not spoil the rest; a command Redis refuses (say, out of memory) is logged and
        not tried again.
        """
        commands: list[tuple[bytes, bytes]] = []
        for message_id, span_context, attributes in puts:
            try:
                key = (self._prefix + message_id).encode("utf-8")
                commands.append((key, encode_entry(span_context, attributes).encode("ascii")))
            # RuntimeError: a span ending on another thread changed the attributes mid-read
            except (TypeError, ValueError, RuntimeError) as exc:
                self._warn("could not encode a span for", exc)
        if not commands:
            return True
        return self._ask("could not write to", self._set_all, commands) is not _UNAVAILABLE

    def _set_all(self, commands: list[tuple[bytes, bytes]]) -> list[Any]:
        pipe = self._redis.pipeline(transaction=False)
        for key, entry in commands:
            pipe.set(key, entry, px=self._ttl_ms)
        return pipe.execute()

    def get(self, message_id: str) -> IndexedSpan | None:
        raw = self._ask("could not read from", self._redis.get, self._prefix + message_id)
        if raw is None or raw is _UNAVAILABLE:
            return None
        try:
            return decode_entry(raw if isinstance(raw, (bytes, str)) else str(raw))
        except CodecError as exc:
            self._warn("ignored an unreadable entry in", exc)
            return None

    def close(self) -> None:
        """Close the pooled connections (a later call would open new ones)."""
        try:
            self._redis.close()
        except Exception as exc:  # closing must not fail a shutdown
            logger.debug("brixo_otel: closing the Redis span index failed: %r", exc)

    # -- availability --------------------------------------------------------------------------

    def _ask(self, doing: str, command: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Redis's reply to one command; `_UNAVAILABLE` when Redis is being skipped or the
        connection failed, None when the command failed otherwise.

        The one place calls go through, so every call keeps the availability state right.
        """
        if self._skipping():
            return _UNAVAILABLE
        try:
            reply = command(*args, **kwargs)
        except Exception as exc:  # a client library's failure, whatever it is, stays here
            return _UNAVAILABLE if self._failed(doing, exc) else None
        except BaseException:
            self._end_probe()  # interrupted: let the next call find out instead
            raise
        self._succeeded()
        return reply

    def _skipping(self) -> bool:
        """Whether to answer at once without asking Redis, because it failed moments ago.

        Once the wait is over, a single call (the probe) asks Redis; the others keep skipping
        until it knows, so a hung Redis costs one timeout per wait, not one per thread.
        """
        if not self._down:
            return False
        with self._lock:
            if self._probing or time.monotonic() < self._down_until:
                return True
            self._probing = True
            return False

    def _failed(self, doing: str, exc: Exception) -> bool:
        """Record a failed call; True if it was the connection (Redis is now being skipped)."""
        lost = isinstance(exc, self._connection_errors)
        with self._lock:
            self._probing = False
            if lost:
                # Waits double while Redis stays away, so a long outage costs a timeout every
                # half minute, not every second; the first wait is short, for quick recovery.
                wait = min(self._retry_interval * 2**self._failures, MAX_RETRY_INTERVAL_SECONDS)
                self._failures = min(self._failures + 1, 32)
                self._down = True
                self._down_until = time.monotonic() + wait
        self._warn(doing, exc)
        return lost

    def _succeeded(self) -> None:
        if not self._down:
            return
        with self._lock:
            was_down, self._down, self._probing, self._failures = self._down, False, False, 0
        if was_down:
            logger.info("brixo_otel: the Redis span index at %s is reachable again", self._url)

    def _end_probe(self) -> None:
        with self._lock:
            self._probing = False

    def _warn(self, doing: str, exc: BaseException) -> None:
        log_rate_limited(
            logging.WARNING,
            _LOG_KEY,
            "brixo_otel: %s the Redis span index at %s (%s: %s); feedback for these messages "
            "will not be linked to their traces until it is back",
            doing,
            self._url,
            type(exc).__name__,
            exc,
        )
