"""HTTP plumbing shared by every exporter that talks to a web API.

Each destination speaks its own request format, but they all answer in HTTP, and the reliability
rules (docs/delivery.md: what each answer means, the backoff) are the same for all of them.
Keeping the classification, the `Retry-After` parsing and the endpoint safety check here means a
new destination cannot get them subtly different.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import logging
import math
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any, Final
from urllib.parse import quote

import httpcore
import httpx

from brixo_otel._errors import ConfigurationError
from brixo_otel._exporter import DeliveryResult, DeliveryStatus, SignalExporter
from brixo_otel._forksafe import after_fork_in_child
from brixo_otel._internal import instrumentation_suppressed, log_rate_limited
from brixo_otel._signal import Signal
from brixo_otel._urls import check_endpoint_url
from brixo_otel._version import __version__

try:  # httpx's own mapping of httpcore's errors and answers, for `RequestTemplate`
    from httpx._transports.default import ResponseStream as _ResponseStream
    from httpx._transports.default import map_httpcore_exceptions as _map_httpcore_exceptions
except ImportError:  # pragma: no cover - another httpx: requests go through the client
    _ResponseStream = None  # type: ignore[assignment,misc]
    _map_httpcore_exceptions = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

#: Sent with every request so destinations can tell our traffic (and its version) apart.
USER_AGENT: Final = f"brixo-otel/{__version__} python-httpx/{httpx.__version__}"

#: Connect fast (a down endpoint should not hold a worker thread long), read patiently.
DEFAULT_TIMEOUT: Final = httpx.Timeout(10.0, connect=3.0)

#: httpx's timeouts bound each network operation, not the request: a server that trickles its
#: answer a byte at a time, each within the read timeout, could hold a sender thread for ever.
#: One request, connect to last byte, takes at most its connect and read timeouts added up
#: (13 s by default), or this long when the timeout leaves them unbounded.
MAX_REQUEST_SECONDS: Final = 30.0

#: The processor exports from a handful of threads at once; a few kept-alive connections serve
#: them without re-handshaking TLS on every signal.
DEFAULT_LIMITS: Final = httpx.Limits(
    max_connections=8, max_keepalive_connections=8, keepalive_expiry=30.0
)

#: Longest error detail kept in a reason: enough to diagnose, short enough for a log line.
MAX_DETAIL_CHARS: Final = 300

#: Most of an answer's body read: an error page can be large, and only its start explains it.
MAX_BODY_BYTES: Final = 64 * 1024

_DELTA_SECONDS: Final = re.compile(r"^\d+(\.\d+)?$")
_WHITESPACE: Final = re.compile(r"\s+")
#: What an HTTP header value may hold without escaping: visible ASCII only.
_HEADER_SAFE: Final = re.compile(r"^[\x21-\x7e]+$")
#: What replaces a secret that a server or an error message echoed back.
REDACTED: Final = "[redacted]"
#: The media type of a plain JSON request or answer.
JSON_MEDIA_TYPE: Final = "application/json"


def new_client(timeout: httpx.Timeout | None = None) -> httpx.Client:
    """One pooled client per exporter, shared by the processor's threads (it is thread-safe).

    Its connections hold every request to `request_seconds(timeout)` in all (see
    `_DeadlineBackend`).
    """
    return httpx.Client(
        timeout=timeout if timeout is not None else DEFAULT_TIMEOUT,
        limits=DEFAULT_LIMITS,
        follow_redirects=False,
        transport=_DeadlineTransport(limits=DEFAULT_LIMITS),
    )


def request_seconds(timeout: httpx.Timeout | None) -> float:
    """The total time one request may take: its connect and read timeouts added up, capped at
    `MAX_REQUEST_SECONDS` (which also stands in for an unbounded one)."""
    timeout = timeout if timeout is not None else DEFAULT_TIMEOUT
    if timeout.connect is None or timeout.read is None:
        return MAX_REQUEST_SECONDS
    return min(MAX_REQUEST_SECONDS, timeout.connect + timeout.read)


# -- the whole-request deadline ---------------------------------------------------------------

#: The deadline (monotonic seconds) of the request the current thread is sending, if any. A
#: sender thread sends one request at a time, from start to last byte, so a thread-local fits.
_deadline = threading.local()


def _cut(timeout: float | None, expired: type[Exception]) -> float | None:
    """`timeout` shortened to what is left of the current request's deadline; `expired` raised
    once nothing is left."""
    deadline: float | None = getattr(_deadline, "at", None)
    if deadline is None:
        return timeout
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise expired("the request took longer than its total time allowed")
    return remaining if timeout is None else min(timeout, remaining)


@contextmanager
def _request_deadline(seconds: float) -> Iterator[None]:
    previous = getattr(_deadline, "at", None)
    _deadline.at = time.monotonic() + seconds
    try:
        yield
    finally:
        _deadline.at = previous


def _past_deadline() -> bool:
    deadline: float | None = getattr(_deadline, "at", None)
    return deadline is not None and time.monotonic() >= deadline


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read, write and TLS handshake waits at most until the current
    request's deadline (and its own timeout): the bound httpx's per-read timeout is not."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _cut(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _cut(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        upgraded = self._inner.start_tls(
            ssl_context, server_hostname, _cut(timeout, httpcore.ConnectTimeout)
        )
        return _DeadlineStream(upgraded)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's own socket backend, with `_DeadlineStream` connections."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(
            host, port, _cut(timeout, httpcore.ConnectTimeout), local_address, socket_options
        )
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_unix_socket(
            path, _cut(timeout, httpcore.ConnectTimeout), socket_options
        )
        return _DeadlineStream(stream)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _DeadlineTransport(httpx.HTTPTransport):
    """httpx's own transport, its pool connecting through `_DeadlineBackend`.

    httpx offers no way to pass a network backend, so the pool it built is given one; with an
    httpx whose pool is not laid out so, requests keep httpx's per-operation timeouts, and
    `send_request` still stops reading a body past the deadline.
    """

    def __init__(self, *, limits: httpx.Limits) -> None:
        super().__init__(limits=limits)
        pool = getattr(self, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if isinstance(pool, httpcore.ConnectionPool) and isinstance(
            backend, httpcore.NetworkBackend
        ):
            pool._network_backend = _DeadlineBackend(backend)


def path_segment(identifier: str) -> str:
    """The id as exactly one path segment, whatever characters it holds.

    `quote(safe="")` escapes `/`, `?`, `#`, `%` and non-ASCII; a bare `.` or `..` survives
    quoting but would be collapsed as a dot segment by httpx and by servers, so its dots are
    escaped too (equivalent under RFC 3986, and decoded back by the server).
    """
    segment = quote(identifier, safe="")
    if segment in (".", ".."):
        segment = segment.replace(".", "%2E")
    return segment


def check_header_value(value: object, *, setting: str) -> str:
    """A setting sent in a header (a key, a namespace), stripped, or a `ConfigurationError`.

    Whitespace, control or non-ASCII characters are a copy-paste slip (a trailing newline, a
    smart quote) that would fail every request; refusing them at configuration says so once.
    The value itself is never shown: it may be a secret.
    """
    if not isinstance(value, str):
        raise ConfigurationError(f"{setting} must be a string, got {type(value).__name__}")
    value = value.strip()
    if not value:
        raise ConfigurationError(f"{setting} is empty")
    if not _HEADER_SAFE.match(value):
        raise ConfigurationError(
            f"{setting} contains whitespace, control or non-ASCII characters, which cannot be "
            "sent in an HTTP header; check it was copied whole and unquoted"
        )
    return value


def scrub(text: str, secret: str) -> str:
    """`text` with `secret` cut out: a server or an error message that echoes the key must not
    pass it on to logs, dead letters or exceptions."""
    return text.replace(secret, REDACTED) if secret else text


def scrub_all(text: str, secrets: Iterable[str]) -> str:
    """`text` with every one of `secrets` cut out (see `scrub`). Always before `truncate`: a cut
    through a secret would leave a part of it that no later scrub recognises."""
    for secret in secrets:
        text = scrub(text, secret)
    return text


def redact(result: DeliveryResult, secret: str) -> DeliveryResult:
    """`result` with `secret` cut out of its reason (see `scrub`)."""
    if not secret or secret not in result.reason:
        return result
    return dataclasses.replace(result, reason=scrub(result.reason, secret))


def permanent(reason: str) -> DeliveryResult:
    """A failure that no retry can fix: the signal is dead-lettered with `reason`."""
    return DeliveryResult(DeliveryStatus.PERMANENT, reason)


def encode_json(document: object) -> bytes:
    """A request body as compact JSON.

    ASCII escapes keep any string encodable, even one holding a lone surrogate.
    """
    return json.dumps(document, separators=(",", ":")).encode("ascii")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` value, or None when the backoff should decide.

    Accepts delta-seconds (decimals tolerated) and HTTP dates. A date in the past or a value we
    cannot read gives None rather than 0, so a confused server cannot make us hammer it; large
    values are returned as given, because the processor clamps them (and logs that it did).
    `now` (epoch seconds) exists for tests.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _DELTA_SECONDS.match(text):
        seconds = float(text)
        return seconds if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # "-0000" means UTC with no known local zone (RFC 5322)
        when = when.replace(tzinfo=timezone.utc)
    delta = when.timestamp() - (time.time() if now is None else now)
    return delta if delta >= 0 else None


def truncate(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """Collapse whitespace and cut to `limit` characters, marking the cut."""
    text = _WHITESPACE.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_detail(body: bytes, secrets: Iterable[str] = ()) -> str:
    """What an error answer says, for a reason: JSON:API `errors[].detail`, else the text;
    `secrets` scrubbed out first, then cut to `MAX_DETAIL_CHARS`.

    Proxies and load balancers answer with HTML or plain text, some APIs with
    `{"message": ...}`, and FastAPI ones with `{"detail": [{"loc": [...], "msg": ...}]}` (read
    as `loc: msg` per error); a reason should carry whatever explains the failure.
    """
    if not body:
        return ""
    return truncate(scrub_all(_full_detail(body.decode("utf-8", errors="replace")), secrets))


def _full_detail(text: str) -> str:
    try:
        document = json.loads(text)
    except ValueError:
        return text
    if isinstance(document, dict):
        errors = document.get("errors")
        if isinstance(errors, list):
            details = [
                str(error.get("detail") or error.get("title") or "")
                for error in errors
                if isinstance(error, dict)
            ]
            joined = "; ".join(detail for detail in details if detail)
            if joined:
                return joined
        validation = _validation_errors(document.get("detail"))
        if validation:
            return validation
        for key in ("detail", "message", "error"):
            if isinstance(document.get(key), str) and document[key]:
                return str(document[key])
    return text


def _validation_errors(detail: object) -> str:
    """FastAPI's 422 `detail` list as `body.rating: Input should be ...; ...`, else ""."""
    if not isinstance(detail, list):
        return ""
    parts = []
    for error in detail:
        if not isinstance(error, dict) or not error.get("msg"):
            continue
        loc = error.get("loc")
        where = ".".join(str(step) for step in loc) if isinstance(loc, list) else ""
        parts.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
    return "; ".join(parts)


def read_bounded(response: httpx.Response, limit: int = MAX_BODY_BYTES) -> bytes:
    """Read at most `limit` bytes of a streamed body; an unreadable body reads as empty.

    The status line already decided the outcome; the body only explains it, so a huge, broken
    or never-ending body must not turn a clear answer into a timeout.
    """
    return b"".join(_bounded_chunks(response.iter_bytes(), limit))[:limit]


def _bounded_chunks(chunks: Iterable[bytes], limit: int) -> Iterator[bytes]:
    """The chunks of a body until `limit` bytes have come, the request's deadline has passed
    (what arrived must do: a client of the caller's, without `_DeadlineBackend`, gets here at
    least between chunks), or the body cannot be read any further."""
    size = 0
    try:
        for chunk in chunks:
            yield chunk
            size += len(chunk)
            if size >= limit or _past_deadline():
                return
    except httpx.HTTPError:
        return


def classify_status(
    status: int,
    *,
    detail: str = "",
    retry_after: str | None = None,
    location: str | None = None,
    secrets: Iterable[str] = (),
) -> DeliveryResult:
    """Map an HTTP answer to what the processor should do (docs/delivery.md)."""
    if location:
        location = scrub_all(location, secrets)
    result = _classify_status(status, detail=detail, retry_after=retry_after, location=location)
    return dataclasses.replace(result, http_status=status)


def _classify_status(
    status: int, *, detail: str, retry_after: str | None, location: str | None
) -> DeliveryResult:
    reason = f"HTTP {status}: {detail}" if detail else f"HTTP {status}"
    if 200 <= status < 300:
        return DeliveryResult.delivered()
    if status in (429, 503):
        return DeliveryResult(
            DeliveryStatus.THROTTLED, reason, retry_after=parse_retry_after(retry_after)
        )
    if status in (401, 403):
        return DeliveryResult(DeliveryStatus.UNAUTHORIZED, reason)
    if status == 404:
        return DeliveryResult(DeliveryStatus.NOT_FOUND, reason)
    if status == 408:
        return DeliveryResult(
            DeliveryStatus.RETRY, reason, retry_after=parse_retry_after(retry_after)
        )
    if 400 <= status < 500:
        return DeliveryResult(DeliveryStatus.PERMANENT, reason)
    if 300 <= status < 400:
        # A redirect usually means a mistyped base URL or an http->https hop; retrying keeps
        # the signals while the configuration is fixed, and we never resend the key elsewhere.
        where = f" to {truncate(location)}" if location else ""
        return DeliveryResult(
            DeliveryStatus.RETRY, f"HTTP {status}: redirect{where} not followed; check the URL"
        )
    return DeliveryResult(DeliveryStatus.RETRY, reason, retry_after=parse_retry_after(retry_after))


def classify_response(
    response: httpx.Response,
    *,
    on_success: Callable[[bytes], DeliveryResult] | None = None,
    secrets: Iterable[str] = (),
) -> DeliveryResult:
    """Classify a streamed response, reading only as much of its body as explains an error.

    A success body is read too (bounded), so its connection goes back to the pool for reuse.
    `on_success` receives it, for destinations whose answer carries something to keep (the id
    a second step needs, a receipt); without it any 2xx is simply delivered. `secrets` are
    scrubbed out of what the answer says before it is cut to a reason's length.
    """
    body = read_bounded(response)
    if 200 <= response.status_code < 300:
        return DeliveryResult.delivered() if on_success is None else on_success(body)
    return classify_status(
        response.status_code,
        detail=error_detail(body, secrets),
        retry_after=response.headers.get("retry-after"),
        location=response.headers.get("location"),
        secrets=secrets,
    )


def classify_exception(exc: Exception, secrets: Iterable[str] = ()) -> DeliveryResult:
    """Any failure to get an answer is transient: the endpoint may be back in a moment."""
    message = truncate(scrub_all(str(exc), secrets))
    name = type(exc).__name__
    return DeliveryResult(DeliveryStatus.RETRY, f"{name}: {message}" if message else name)


def send_request(
    client: httpx.Client,
    request: httpx.Request,
    *,
    destination: str,
    on_success: Callable[[bytes], DeliveryResult] | None = None,
    secrets: Iterable[str] = (),
    total_seconds: float = MAX_REQUEST_SECONDS,
) -> DeliveryResult:
    """Send one request and classify the answer (see `classify_response`); never raises.

    For exporters that make several calls per signal: each call gets the same suppression of
    instrumentation, the same bounded body read, the same scrubbing of `secrets` and the same
    logging. Only the method, the path and the status are logged, at DEBUG: never a header or a
    body. The request takes at most `total_seconds`, connect to last byte (a timeout past it).
    """

    def send() -> tuple[int, DeliveryResult]:
        response = client.send(request, stream=True)
        try:
            return response.status_code, classify_response(
                response, on_success=on_success, secrets=secrets
            )
        finally:
            response.close()

    return _guarded(
        send,
        request.method,
        request.url.raw_path,
        destination=destination,
        secrets=secrets,
        total_seconds=total_seconds,
    )


def _guarded(
    send: Callable[[], tuple[int, DeliveryResult]],
    method: str,
    raw_path: bytes,
    *,
    destination: str,
    secrets: Iterable[str],
    total_seconds: float,
) -> DeliveryResult:
    """Run `send` (one request: its status and result) with instrumentation suppressed and
    within `total_seconds`; any failure is a retry, logged as `send_request` says."""
    started = time.perf_counter()
    try:
        with instrumentation_suppressed(), _request_deadline(total_seconds):
            status, result = send()
    except Exception as exc:
        elapsed_ms = (time.perf_counter() - started) * 1000
        if not isinstance(exc, httpx.HTTPError):
            log_rate_limited(
                logging.WARNING,
                f"exporter:{destination}:unexpected",
                "brixo_otel: unexpected %s while sending to %s; will retry",
                type(exc).__name__,
                destination,
            )
        logger.debug(
            "%s %s failed after %.1f ms: %s",
            method,
            raw_path.decode("ascii", errors="replace"),
            elapsed_ms,
            type(exc).__name__,
        )
        return classify_exception(exc, secrets)
    if logger.isEnabledFor(logging.DEBUG):
        elapsed_ms = (time.perf_counter() - started) * 1000
        path = raw_path.decode("ascii", errors="replace")
        logger.debug("%s %s -> %d in %.1f ms", method, path, status, elapsed_ms)
    return result


def _drain_bounded(stream: Iterable[bytes], limit: int = MAX_BODY_BYTES) -> None:
    """Read and drop a success body, as `read_bounded` reads one: read whole, its connection
    is reused."""
    for _ in _bounded_chunks(stream, limit):
        pass


#: Clients a forked child inherited from its parent: never used nor closed in the child, and held
#: here so that collecting them cannot touch the parent's pool either.
_inherited_clients: list[httpx.Client] = []


class HttpApi:
    """One destination's web API: the root its paths hang from, and the client that calls it.

    One pooled keep-alive client serves the processor's concurrent export threads. A client
    passed in stays the caller's: it is used as is and never closed here. `secrets` (the
    destination's keys) are scrubbed out of every reason before it is cut to length.

    Fork-safe: a child process gets a new client of its own at once. The parent's pool may have
    been locked by one of its threads at the fork, and that lock stays held in the child for
    ever, so the child never uses, nor closes, the parent's client (a caller's client cannot be
    replaced: it stays the caller's to handle).
    """

    def __init__(
        self,
        base_url: str,
        *,
        client: httpx.Client | None,
        timeout: httpx.Timeout | None,
        secrets: Iterable[str] = (),
    ) -> None:
        #: The API root as checked by `check_endpoint_url(..., api_root=True)`.
        self.base_url = base_url
        base = httpx.URL(base_url)
        self._root = base.copy_with(raw_path=b"/")
        #: The root's path, which every request's path follows.
        self.prefix = base.raw_path.rstrip(b"/")
        self._owns_client = client is None
        self._timeout = timeout
        #: Cut out of every reason; and how long one request may take in all.
        self.secrets = tuple(secret for secret in secrets if secret)
        self.total_seconds = request_seconds(
            timeout if timeout is not None or client is None else client.timeout
        )
        self.client = client if client is not None else new_client(timeout)
        # Our own client already carries the timeout; a caller's client gets it per request.
        self._request_timeout = (
            timeout if client is not None and timeout is not None else httpx.USE_CLIENT_DEFAULT
        )
        #: Where a `RequestTemplate` sends straight to, if anywhere (`_direct_pool`).
        self.pool = self._direct_pool()
        after_fork_in_child(self, HttpApi._new_client_in_child)

    def _new_client_in_child(self) -> None:
        if not self._owns_client:
            return
        # Kept, never closed nor collected here: closing takes the pool's lock, which a thread
        # of the parent may have held at the fork (for ever, in this process).
        _inherited_clients.append(self.client)
        self.client = new_client(self._timeout)
        self.pool = self._direct_pool()

    def _direct_pool(self) -> httpcore.ConnectionPool | None:
        """The connection pool under our own client, when a request may go to it straight.

        httpx's client layer around the pool (auth, redirects, cookies, event hooks, the
        request and response models) costs more per request than the request itself on a fast
        link; our own client uses none of it. None — send through the client — for a caller's
        client (it may have hooks, auth, a transport of its own), for a proxy (from the
        environment), or with an httpx whose transport is not laid out as `_DeadlineTransport`
        expects.
        """
        if not self._owns_client or _map_httpcore_exceptions is None:
            return None
        transport = self.client._transport_for_url(self._root)
        pool = getattr(transport, "_pool", None)
        if type(transport) is not _DeadlineTransport or not isinstance(
            pool, httpcore.ConnectionPool
        ):
            return None
        return pool

    def template(self, method: str, headers: Mapping[str, str]) -> RequestTemplate:
        """Requests of `method` with `headers` (and the client's own), whose path, body and a
        few more headers change per request: see `RequestTemplate`."""
        return RequestTemplate(self, method, headers)

    def url(self, path: str) -> httpx.URL:
        """`path` (already escaped, e.g. with `path_segment`) under the API root.

        Built from raw bytes, so httpx keeps the path's escaping as is.
        """
        return self._root.copy_with(raw_path=self.prefix + path.encode("ascii"))

    def request(
        self, method: str, url: httpx.URL, *, headers: dict[str, str], content: bytes | None = None
    ) -> httpx.Request:
        """A request to send with `call`, carrying the timeout a caller's client does not have."""
        return self.client.build_request(
            method, url, content=content, headers=headers, timeout=self._request_timeout
        )

    def call(
        self,
        build: Callable[[], httpx.Request],
        *,
        destination: str,
        on_success: Callable[[bytes], DeliveryResult] | None = None,
    ) -> DeliveryResult:
        """Build one request and send it (see `send_request`); never raises.

        `build` runs inside the guard, so a failure to make the request (a path or a body that
        will not encode) is a result too, not an exception.
        """
        try:
            request = build()
        except Exception as exc:
            return self.unbuildable(exc)
        return send_request(
            self.client,
            request,
            destination=destination,
            on_success=on_success,
            secrets=self.secrets,
            total_seconds=self.total_seconds,
        )

    def unbuildable(self, exc: Exception) -> DeliveryResult:
        """The result for a signal that cannot become a request (a path or a body that will not
        encode): retrying would only repeat the failure."""
        detail = truncate(scrub_all(str(exc), self.secrets))
        return permanent(f"cannot build the request: {type(exc).__name__}: {detail}")

    def close(self) -> None:
        """Close the client, unless it is the caller's."""
        if self._owns_client:
            self.client.close()


class RequestTemplate:
    """One kind of request to an `HttpApi`, prepared once: the method, the headers that never
    change (the key, the media types, the client's own defaults), the timeout.

    `call` sends one with its path, body and varying headers, as `HttpApi.call` would — the
    same headers on the wire, the same deadline, classification, logging and guard — but
    straight to our own client's connection pool when it can (`HttpApi._direct_pool`), where
    building an httpx request and answer per signal would cost more than the request itself.
    """

    def __init__(self, api: HttpApi, method: str, headers: Mapping[str, str]) -> None:
        self._api = api
        self.method = method
        self._headers = dict(headers)
        # The exact header block httpx would send (its defaults, then ours), from one request
        # built the ordinary way; only the body's length is added per request.
        sample = api.request(method, api.url("/"), headers=self._headers, content=b"")
        self._raw_headers = tuple(
            (name, value)
            for name, value in sample.headers.raw
            if name.lower() not in (b"content-length", b"transfer-encoding")
        )
        self._extensions = dict(sample.extensions)
        url = sample.url
        self._scheme, self._host, self._port = url.raw_scheme, url.raw_host, url.port
        self._method = method.encode("ascii")

    def call(
        self,
        build: Callable[[], tuple[str, bytes, Mapping[str, str]]],
        *,
        destination: str,
        on_success: Callable[[bytes], DeliveryResult] | None = None,
    ) -> DeliveryResult:
        """Build one request — `build` gives its path (already escaped, under the API root),
        body and varying headers — and send it; never raises (see `HttpApi.call`)."""
        api = self._api
        pool = api.pool
        if pool is None or api.client.is_closed:
            return api.call(
                lambda: self._httpx_request(*build()),
                destination=destination,
                on_success=on_success,
            )
        try:
            path, content, varying = build()
            target = api.prefix + path.encode("ascii")
            headers = [
                *self._raw_headers,
                *((name.encode("ascii"), value.encode("ascii")) for name, value in varying.items()),
                (b"Content-Length", b"%d" % len(content)),
            ]
            request = httpcore.Request(
                self._method,
                httpcore.URL(scheme=self._scheme, host=self._host, port=self._port, target=target),
                headers=headers,
                content=content,
                extensions=self._extensions,
            )
        except Exception as exc:
            return api.unbuildable(exc)

        def send() -> tuple[int, DeliveryResult]:
            assert _map_httpcore_exceptions is not None and _ResponseStream is not None
            with _map_httpcore_exceptions():
                response = pool.handle_request(request)
            try:
                status, stream = response.status, response.stream
                assert isinstance(stream, Iterable)  # a sync pool's answer
                if on_success is None and 200 <= status < 300:
                    _drain_bounded(_ResponseStream(stream))
                    return status, DeliveryResult.delivered()
                # Anything else as httpx would have answered it: decoded, classified as usual.
                answer = httpx.Response(
                    status,
                    headers=response.headers,
                    stream=_ResponseStream(stream),
                    extensions=response.extensions,
                )
                return status, classify_response(answer, on_success=on_success, secrets=api.secrets)
            finally:
                response.close()

        return _guarded(
            send,
            self.method,
            target,
            destination=destination,
            secrets=api.secrets,
            total_seconds=api.total_seconds,
        )

    def _httpx_request(
        self, path: str, content: bytes, varying: Mapping[str, str]
    ) -> httpx.Request:
        return self._api.request(
            self.method, self._api.url(path), headers={**self._headers, **varying}, content=content
        )


class HttpSignalExporter(SignalExporter):
    """An exporter that talks to one web API with one key, through one `HttpApi`.

    `__init__` checks the key and the API root the same way for every destination; `export`
    cuts the key out of whatever `_deliver` answers, so no destination can forget to.
    """

    _api: HttpApi
    _api_key: str

    def __init__(
        self,
        api_key: str,
        base_url: str,
        *,
        example: str,
        name: str,
        client: httpx.Client | None,
        timeout: httpx.Timeout | None,
        allow_insecure_http: bool,
        key_setting: str = "api_key",
        url_setting: str = "base_url",
    ) -> None:
        """Check the key and the API root (`*_setting` names them in errors), then connect.

        `example` is a right `base_url` for this destination, shown when the given one is not.
        """
        self._api_key = check_header_value(api_key, setting=key_setting)
        base_url = check_endpoint_url(
            base_url,
            allow_insecure_http=allow_insecure_http,
            setting=url_setting,
            example=example,
            api_root=True,
        )
        self.name = name
        self._api = HttpApi(base_url, client=client, timeout=timeout, secrets=(self._api_key,))

    @property
    def base_url(self) -> str:
        return self._api.base_url

    def export(self, signal: Signal) -> DeliveryResult:
        # Belt and braces: a server or an error message echoing the key never passes it on.
        return redact(self._deliver(signal), self._api_key)

    @abc.abstractmethod
    def _deliver(self, signal: Signal) -> DeliveryResult:
        """Deliver one signal and say how the destination answered (`export` redacts it)."""

    def _warn(self, topic: str, message: str, *args: object) -> None:
        """Log a warning about this destination, at most once a while per `topic`.

        `message`'s first `%s` is the destination's name; `args` fill the rest.
        """
        log_rate_limited(
            logging.WARNING, f"exporter:{self.name}:{topic}", message, self.name, *args
        )

    def shutdown(self) -> None:
        self._api.close()
