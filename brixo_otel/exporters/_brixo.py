"""The default destination: the Brixo Signals API (JSON:API over HTTPS, Bearer auth).

See specs/brixo-signals-api.md for the wire format. The exporter only speaks the API and
classifies its answers; retries, pauses and dead-lettering live in the signal processor.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from typing import Final
from urllib.parse import quote, urlsplit

import httpx

from brixo_otel._errors import ConfigurationError
from brixo_otel._internal import log_rate_limited
from brixo_otel._signals._model import Signal, format_timestamp
from brixo_otel.exporters._base import DeliveryResult, DeliveryStatus, SignalExporter
from brixo_otel.exporters._http import (
    USER_AGENT,
    check_endpoint_url,
    classify_exception,
    classify_response,
    instrumentation_suppressed,
    new_client,
    truncate,
)

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL: Final = "https://api.brixo.com"
API_KEY_ENV: Final = "BRIXO_API_KEY"
BASE_URL_ENV: Final = "BRIXO_BASE_URL"

_CONTENT_TYPE: Final = "application/vnd.api+json"
_COLLECTIONS: Final = {"message": "messages", "conversation": "conversations"}
#: A bearer token must fit in a header: visible ASCII only. Anything else is a copy-paste slip
#: (a trailing newline, a smart quote) that would otherwise fail on every request.
_HEADER_SAFE: Final = re.compile(r"^[\x21-\x7e]+$")
_REDACTED: Final = "[redacted]"


def _resolve_api_key(api_key: str | None) -> str:
    setting = "api_key"
    if api_key is None:
        api_key = os.environ.get(API_KEY_ENV) or None
        setting = API_KEY_ENV
    if api_key is None:
        raise ConfigurationError(
            f"no Brixo API key: pass api_key=... or set the {API_KEY_ENV} environment variable"
        )
    if not isinstance(api_key, str):
        raise ConfigurationError(f"{setting} must be a string, got {type(api_key).__name__}")
    api_key = api_key.strip()
    if not api_key:
        raise ConfigurationError(f"{setting} is empty; set it to your Brixo API key")
    if not _HEADER_SAFE.match(api_key):
        raise ConfigurationError(
            f"{setting} contains whitespace, control or non-ASCII characters, which cannot be "
            "sent in an HTTP header; check it was copied whole and unquoted"
        )
    return api_key


def _resolve_base_url(base_url: str | None, allow_insecure_http: bool) -> str:
    setting = "base_url"
    if base_url is None:
        base_url = os.environ.get(BASE_URL_ENV) or None
        setting = BASE_URL_ENV
    if base_url is None:
        return DEFAULT_BASE_URL
    checked = check_endpoint_url(base_url, allow_insecure_http=allow_insecure_http, setting=setting)
    parts = urlsplit(checked)
    if "@" in parts.netloc:
        # httpx would turn URL credentials into Basic auth and overwrite our Bearer header.
        raise ConfigurationError(
            f"{setting} must not contain credentials (user:password@); pass the key as api_key"
        )
    if parts.query or parts.fragment:
        raise ConfigurationError(
            f"{setting} {checked!r} must not have a query or fragment; "
            "give the API root, e.g. 'https://api.brixo.com'"
        )
    return checked.rstrip("/")


def _path_segment(identifier: str) -> str:
    """The id as exactly one path segment, whatever characters it holds.

    `quote(safe="")` escapes `/`, `?`, `#`, `%` and non-ASCII; a bare `.` or `..` survives
    quoting but would be collapsed as a dot segment by httpx and by servers, so its dots are
    escaped too (equivalent under RFC 3986, and decoded back by the server).
    """
    segment = quote(identifier, safe="")
    if segment in (".", ".."):
        segment = segment.replace(".", "%2E")
    return segment


class BrixoSignalExporter(SignalExporter):
    """Delivers signals to the Brixo Signals API.

    One pooled keep-alive client serves the processor's concurrent export threads. A client
    passed in stays the caller's: it is used as is and never closed here.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        client: httpx.Client | None = None,
        allow_insecure_http: bool = False,
        timeout: httpx.Timeout | None = None,
        name: str = "brixo",
    ) -> None:
        self._api_key = _resolve_api_key(api_key)
        self._base_url = _resolve_base_url(base_url, allow_insecure_http)
        self.name = name
        base = httpx.URL(self._base_url)
        self._base = base.copy_with(raw_path=b"/")
        self._prefix = base.raw_path.rstrip(b"/")
        self._owns_client = client is None
        self._client = client if client is not None else new_client(timeout)
        # Our own client already carries the timeout; a caller's client gets it per request.
        self._request_timeout = timeout if client is not None else None
        self._headers = {
            "Authorization": f"Bearer {self._api_key}",
            "Content-Type": _CONTENT_TYPE,
            "Accept": _CONTENT_TYPE,
            "User-Agent": USER_AGENT,
        }

    @property
    def base_url(self) -> str:
        return self._base_url

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self._base_url!r}, name={self.name!r})"

    def url_for(self, signal: Signal) -> httpx.URL:
        """The signal's endpoint, built from raw bytes so httpx keeps the id's escaping as is."""
        collection = _COLLECTIONS[signal.target]
        path = f"/v1/{collection}/{_path_segment(signal.target_id)}/signals"
        return self._base.copy_with(raw_path=self._prefix + path.encode("ascii"))

    @staticmethod
    def body_for(signal: Signal) -> bytes:
        """The JSON:API document; `occurred_at` is always sent so retries never move it."""
        attributes: dict[str, str] = {
            "name": signal.name,
            "value": signal.value,
            "occurred_at": format_timestamp(signal.occurred_at),
        }
        if signal.user_message is not None:
            attributes["user_message"] = signal.user_message
        document = {"data": {"type": "signals", "attributes": attributes}}
        # ASCII escapes keep any string encodable, even one holding a lone surrogate.
        return json.dumps(document, separators=(",", ":")).encode("ascii")

    def _build(self, signal: Signal) -> httpx.Request:
        url = self.url_for(signal)
        body = self.body_for(signal)
        headers = {**self._headers, "Idempotency-Key": signal.id}
        if self._request_timeout is None:
            return self._client.build_request("POST", url, content=body, headers=headers)
        return self._client.build_request(
            "POST", url, content=body, headers=headers, timeout=self._request_timeout
        )

    def _scrub(self, result: DeliveryResult) -> DeliveryResult:
        """Belt and braces: a server or an error message echoing the key never passes it on."""
        if self._api_key not in result.reason:
            return result
        return DeliveryResult(
            result.status, result.reason.replace(self._api_key, _REDACTED), result.retry_after
        )

    def export(self, signal: Signal) -> DeliveryResult:
        try:
            request = self._build(signal)
        except Exception as exc:
            # This signal can never become a request; retrying would only repeat the failure.
            return self._scrub(
                DeliveryResult(
                    DeliveryStatus.PERMANENT,
                    f"cannot build the request: {type(exc).__name__}: {truncate(str(exc))}",
                )
            )
        path = request.url.raw_path.decode("ascii")
        started = time.perf_counter()
        try:
            with instrumentation_suppressed():
                response = self._client.send(request, stream=True)
                try:
                    result = classify_response(response)
                finally:
                    response.close()
        except Exception as exc:
            elapsed_ms = (time.perf_counter() - started) * 1000
            if not isinstance(exc, httpx.HTTPError):
                log_rate_limited(
                    logging.WARNING,
                    f"exporter:{self.name}:unexpected",
                    "brixo_otel: unexpected %s while sending to %s; will retry",
                    type(exc).__name__,
                    self.name,
                )
            logger.debug("POST %s failed after %.1f ms: %s", path, elapsed_ms, type(exc).__name__)
            return self._scrub(classify_exception(exc))
        elapsed_ms = (time.perf_counter() - started) * 1000
        logger.debug("POST %s -> %d in %.1f ms", path, response.status_code, elapsed_ms)
        return self._scrub(result)

    def shutdown(self) -> None:
        if self._owns_client:
            self._client.close()
