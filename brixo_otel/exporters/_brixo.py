"""The default destination: the Brixo Signals API (JSON:API over HTTPS, Bearer auth).

The wire format is the one `brixo_otel.testing.BrixoTestServer` implements (docs/testing.md).
The exporter only speaks the API and classifies its answers; retries, pauses and dead-lettering
live in the signal processor.
"""

from __future__ import annotations

import os
from typing import Final

import httpx

from brixo_otel._errors import ConfigurationError
from brixo_otel._exporter import DeliveryResult
from brixo_otel._signal import Signal, format_timestamp
from brixo_otel.exporters._http import (
    USER_AGENT,
    HttpSignalExporter,
    encode_json,
    path_segment,
)

DEFAULT_BASE_URL: Final = "https://api.brixo.com"
API_KEY_ENV: Final = "BRIXO_API_KEY"
BASE_URL_ENV: Final = "BRIXO_BASE_URL"

_CONTENT_TYPE: Final = "application/vnd.api+json"
_COLLECTIONS: Final = {"message": "messages", "conversation": "conversations"}


def _argument_or_env(value: str | None, argument: str, env: str) -> tuple[str | None, str]:
    """The setting's value and the name an error should show for it.

    An argument wins; without one the environment variable is read, and an empty one counts as
    unset.
    """
    if value is not None:
        return value, argument
    return os.environ.get(env) or None, env


class BrixoSignalExporter(HttpSignalExporter):
    """Delivers signals to the Brixo Signals API.

    One pooled keep-alive client serves the processor's concurrent export threads. A client
    passed in stays the caller's: it is used as is and never closed here.

    The Signals API answers 404 for a message whose trace it has not ingested: a first attempt
    waits (up to 30 s) while the rated span is still in brixo-otel's own trace export queue.
    """

    waits_for_trace_export = True

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
        api_key, key_setting = _argument_or_env(api_key, "api_key", API_KEY_ENV)
        if api_key is None:
            raise ConfigurationError(
                f"no Brixo API key: pass api_key=... or set the {API_KEY_ENV} environment variable"
            )
        base_url, url_setting = _argument_or_env(base_url, "base_url", BASE_URL_ENV)
        super().__init__(
            api_key,
            DEFAULT_BASE_URL if base_url is None else base_url,
            example=DEFAULT_BASE_URL,
            name=name,
            client=client,
            timeout=timeout,
            allow_insecure_http=allow_insecure_http,
            key_setting=key_setting,
            url_setting=url_setting,
        )
        self._headers = {
            "Authorization": f"Bearer {self._api_key}",
            "Content-Type": _CONTENT_TYPE,
            "Accept": _CONTENT_TYPE,
            "User-Agent": USER_AGENT,
        }
        self._post = self._api.template("POST", self._headers)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, name={self.name!r})"

    def url_for(self, signal: Signal) -> httpx.URL:
        """The signal's endpoint, built from raw bytes so httpx keeps the id's escaping as is."""
        return self._api.url(self.path_for(signal))

    @staticmethod
    def path_for(signal: Signal) -> str:
        """The endpoint's path under the API root, the id escaped as one segment."""
        return f"/v1/{_COLLECTIONS[signal.target]}/{path_segment(signal.target_id)}/signals"

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
        return encode_json({"data": {"type": "signals", "attributes": attributes}})

    def _parts(self, signal: Signal) -> tuple[str, bytes, dict[str, str]]:
        return self.path_for(signal), self.body_for(signal), {"Idempotency-Key": signal.id}

    def _deliver(self, signal: Signal) -> DeliveryResult:
        return self._post.call(lambda: self._parts(signal), destination=self.name)
