"""HTTP plumbing shared by every exporter that talks to a web API.

Each destination speaks its own request format, but they all answer in HTTP, and the reliability
rules (RELIABILITY.md, sections 5 and 6) are the same for all of them. Keeping the classification,
the `Retry-After` parsing and the endpoint safety check here means a new destination cannot get
them subtly different.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Final
from urllib.parse import quote

import httpx
from opentelemetry import context as otel_context

from brixo_otel._errors import ConfigurationError
from brixo_otel._exporter import DeliveryResult, DeliveryStatus, SignalExporter
from brixo_otel._internal import log_rate_limited
from brixo_otel._signal import Signal
from brixo_otel._urls import check_endpoint_url
from brixo_otel._version import __version__

logger = logging.getLogger(__name__)

#: Sent with every request so destinations can tell our traffic (and its version) apart.
USER_AGENT: Final = f"brixo-otel/{__version__} python-httpx/{httpx.__version__}"

#: Connect fast (a down endpoint should not hold a worker thread long), read patiently.
DEFAULT_TIMEOUT: Final = httpx.Timeout(10.0, connect=3.0)

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
    """One pooled client per exporter, shared by the processor's threads (it is thread-safe)."""
    return httpx.Client(
        timeout=timeout if timeout is not None else DEFAULT_TIMEOUT,
        limits=DEFAULT_LIMITS,
        follow_redirects=False,
    )


@contextmanager
def instrumentation_suppressed() -> Iterator[None]:
    """Keep an app's httpx instrumentation from tracing our deliveries.

    Otherwise every signal would produce a client span, and a span exporter that is itself
    traced could feed on its own output.
    """
    token = otel_context.attach(
        otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True)
    )
    try:
        yield
    finally:
        otel_context.detach(token)


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


def error_detail(body: bytes) -> str:
    """What an error answer says, for a reason: JSON:API `errors[].detail`, else the text.

    Proxies and load balancers answer with HTML or plain text, some APIs with
    `{"message": ...}`, and FastAPI ones with `{"detail": [{"loc": [...], "msg": ...}]}` (read
    as `loc: msg` per error); a reason should carry whatever explains the failure.
    """
    if not body:
        return ""
    text = body.decode("utf-8", errors="replace")
    try:
        document = json.loads(text)
    except ValueError:
        return truncate(text)
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
                return truncate(joined)
        validation = _validation_errors(document.get("detail"))
        if validation:
            return truncate(validation)
        for key in ("detail", "message", "error"):
            if isinstance(document.get(key), str) and document[key]:
                return truncate(document[key])
    return truncate(text)


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
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
    except httpx.HTTPError:
        pass
    return b"".join(chunks)[:limit]


def classify_status(
    status: int, *, detail: str = "", retry_after: str | None = None, location: str | None = None
) -> DeliveryResult:
    """Map an HTTP answer to what the processor should do (RELIABILITY.md, section 5)."""
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
    response: httpx.Response, *, on_success: Callable[[bytes], DeliveryResult] | None = None
) -> DeliveryResult:
    """Classify a streamed response, reading only as much of its body as explains an error.

    A success body is read too (bounded), so its connection goes back to the pool for reuse.
    `on_success` receives it, for destinations whose answer carries something to keep (the id
    a second step needs, a receipt); without it any 2xx is simply delivered.
    """
    body = read_bounded(response)
    if 200 <= response.status_code < 300:
        return DeliveryResult.delivered() if on_success is None else on_success(body)
    return classify_status(
        response.status_code,
        detail=error_detail(body),
        retry_after=response.headers.get("retry-after"),
        location=response.headers.get("location"),
    )


def classify_exception(exc: Exception) -> DeliveryResult:
    """Any failure to get an answer is transient: the endpoint may be back in a moment."""
    message = truncate(str(exc))
    name = type(exc).__name__
    return DeliveryResult(DeliveryStatus.RETRY, f"{name}: {message}" if message else name)


def send_request(
    client: httpx.Client,
    request: httpx.Request,
    *,
    destination: str,
    on_success: Callable[[bytes], DeliveryResult] | None = None,
) -> DeliveryResult:
    """Send one request and classify the answer (see `classify_response`); never raises.

    For exporters that make several calls per signal: each call gets the same suppression of
    instrumentation, the same bounded body read and the same logging. Only the method, the path
    and the status are logged, at DEBUG: never a header or a body.
    """
    path = request.url.raw_path.decode("ascii", errors="replace")
    started = time.perf_counter()
    try:
        with instrumentation_suppressed():
            response = client.send(request, stream=True)
            try:
                result = classify_response(response, on_success=on_success)
            finally:
                response.close()
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
            request.method,
            path,
            elapsed_ms,
            type(exc).__name__,
        )
        return classify_exception(exc)
    elapsed_ms = (time.perf_counter() - started) * 1000
    logger.debug("%s %s -> %d in %.1f ms", request.method, path, response.status_code, elapsed_ms)
    return result


class HttpApi:
    """One destination's web API: the root its paths hang from, and the client that calls it.

    One pooled keep-alive client serves the processor's concurrent export threads. A client
    passed in stays the caller's: it is used as is and never closed here.
    """

    def __init__(
        self, base_url: str, *, client: httpx.Client | None, timeout: httpx.Timeout | None
    ) -> None:
        #: The API root as checked by `check_endpoint_url(..., api_root=True)`.
        self.base_url = base_url
        base = httpx.URL(base_url)
        self._root = base.copy_with(raw_path=b"/")
        self._prefix = base.raw_path.rstrip(b"/")
        self._owns_client = client is None
        self.client = client if client is not None else new_client(timeout)
        # Our own client already carries the timeout; a caller's client gets it per request.
        self._request_timeout = (
            timeout if client is not None and timeout is not None else httpx.USE_CLIENT_DEFAULT
        )

    def url(self, path: str) -> httpx.URL:
        """`path` (already escaped, e.g. with `path_segment`) under the API root.

        Built from raw bytes, so httpx keeps the path's escaping as is.
        """
        return self._root.copy_with(raw_path=self._prefix + path.encode("ascii"))

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
            # This signal can never become a request; retrying would only repeat the failure.
            return permanent(
                f"cannot build the request: {type(exc).__name__}: {truncate(str(exc))}"
            )
        return send_request(self.client, request, destination=destination, on_success=on_success)

    def close(self) -> None:
        """Close the client, unless it is the caller's."""
        if self._owns_client:
            self.client.close()


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
        self._api = HttpApi(base_url, client=client, timeout=timeout)

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
