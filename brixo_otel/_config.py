"""Settings, resolved once from arguments and the environment into a frozen dataclass.

Loud at configuration, quiet at run time: a wrong explicit argument raises at once; a malformed
environment value is logged and ignored, because the environment is not the app's code.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from brixo_otel import _env
from brixo_otel._internal import logger

DEFAULT_BASE_URL = "https://api.brixo.com"
DEFAULT_TRACES_ENDPOINT = "https://otel.brixo.com:4318/v1/traces"
TRACES_OFF = "none"
MEMORY_OUTBOX = ":memory:"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


@dataclass(frozen=True)
class Settings:
    api_key: str | None = field(repr=False)
    base_url: str
    app_name: str | None
    environment: str | None
    agent_version: str | None
    #: None when trace export is off.
    traces_endpoint: str | None
    outbox_path: str
    capture_content: bool
    allow_insecure_http: bool
    span_index: str
    #: Signing secret first, then older ones still accepted while their tokens live (rotation).
    link_secrets: tuple[bytes, ...] = field(default=(), repr=False)

    @property
    def link_secret(self) -> bytes | None:
        """The secret new link tokens are signed with."""
        return self.link_secrets[0] if self.link_secrets else None

    @property
    def has_api_key(self) -> bool:
        return bool(self.api_key)


def default_outbox_path() -> str:
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(state_home) / "brixo-otel" / "outbox.db")


def _text(argument: str, value: object, variable: str) -> str | None:
    if value is not None:
        if not isinstance(value, str):
            raise TypeError(f"{argument} must be a string, got {type(value).__name__}")
        return value or None
    return os.environ.get(variable) or None


def _flag(argument: str, value: object, variable: str) -> bool:
    if value is not None:
        if not isinstance(value, bool):
            raise TypeError(f"{argument} must be True or False, got {value!r}")
        return value
    raw = os.environ.get(variable, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw not in _FALSE:
        logger.warning(
            "brixo_otel: ignoring %s=%r; accepted values are true/false (or 1/0, yes/no, on/off)",
            variable,
            raw,
        )
    return False


def resolve(
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    app_name: str | None = None,
    environment: str | None = None,
    agent_version: str | None = None,
    traces_endpoint: str | None = None,
    outbox_path: str | os.PathLike[str] | None = None,
    capture_content: bool | None = None,
    allow_insecure_http: bool | None = None,
    span_index: str | None = None,
    link_secret: str | bytes | Sequence[str | bytes] | None = None,
) -> Settings:
    """Merge arguments over environment variables over defaults, validating what was passed."""
    from brixo_otel.exporters._http import check_endpoint_url

    key = _text("api_key", api_key, _env.BRIXO_API_KEY)
    insecure = _flag("allow_insecure_http", allow_insecure_http, _env.BRIXO_ALLOW_INSECURE_HTTP)
    base = _text("base_url", base_url, _env.BRIXO_BASE_URL) or DEFAULT_BASE_URL

    endpoint = _text("traces_endpoint", traces_endpoint, _env.BRIXO_OTLP_TRACES_ENDPOINT)
    if endpoint is None and key:
        endpoint = DEFAULT_TRACES_ENDPOINT
    if endpoint is not None and endpoint.strip().lower() == TRACES_OFF:
        endpoint = None
    if endpoint is not None:
        endpoint = check_endpoint_url(
            endpoint, allow_insecure_http=insecure, setting="traces_endpoint"
        )

    if outbox_path is not None and not isinstance(outbox_path, (str, os.PathLike)):
        raise TypeError(f"outbox_path must be a path or ':memory:', got {outbox_path!r}")
    outbox = os.fspath(outbox_path) if outbox_path is not None else None
    outbox = outbox or os.environ.get(_env.BRIXO_OUTBOX_PATH) or default_outbox_path()

    secrets = _link_secrets(link_secret)

    return Settings(
        api_key=key,
        base_url=base,
        app_name=_text("app_name", app_name, _env.BRIXO_APP_NAME),
        environment=_text("environment", environment, _env.BRIXO_ENVIRONMENT),
        agent_version=_text("agent_version", agent_version, _env.BRIXO_AGENT_VERSION),
        traces_endpoint=endpoint,
        outbox_path=outbox,
        capture_content=_flag("capture_content", capture_content, _env.BRIXO_CAPTURE_CONTENT),
        allow_insecure_http=insecure,
        span_index=_text("span_index", span_index, _env.BRIXO_SPAN_INDEX) or "memory",
        link_secrets=secrets,
    )


def _link_secrets(given: object) -> tuple[bytes, ...]:
    """One secret, or several for rotation (the first signs, all verify); the variable takes
    them comma-separated."""
    if given is None:
        raw = os.environ.get(_env.BRIXO_LINK_SECRET, "")
        return tuple(part.strip().encode() for part in raw.split(",") if part.strip())
    items = [given] if isinstance(given, (str, bytes)) else given
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, (str, bytes)) for i in items):
        raise TypeError(
            "link_secret must be a str or bytes secret, or a list of them (the first signs, "
            f"all verify), got {type(given).__name__}"
        )
    return tuple(i.encode() if isinstance(i, str) else i for i in items if i)
