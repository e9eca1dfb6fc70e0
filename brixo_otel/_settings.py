"""Every setting of brixo-otel, declared once: argument, environment variable, type, default, doc.

`Settings` is the table. Each field's metadata says which environment variable fills it in, how
an explicit argument is checked and how a variable's text is read; resolution, the checks and the
tables of docs/configuration.md (`python -m brixo_otel._settings`, kept in step by a test) all
come from it.

Loud at configuration, quiet at run time: a wrong explicit argument raises at once (`TypeError`
for a wrong type, `ConfigurationError` for a wrong value, naming the argument and what is
accepted); a malformed environment variable logs one warning naming the variable and falls back
to the default, because the environment is not the app's code.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from brixo_otel import attributes as attrs
from brixo_otel._errors import ConfigurationError
from brixo_otel._exporter import SignalExporter
from brixo_otel._internal import logger
from brixo_otel._policies import OutboxLimits, RetryPolicy
from brixo_otel._urls import check_endpoint_url, shown_url

DEFAULT_BASE_URL: Final = "https://api.brixo.com"
DEFAULT_TRACES_ENDPOINT: Final = "https://otel.brixo.com:4318/v1/traces"
TRACES_OFF: Final = "none"
MEMORY_OUTBOX: Final = ":memory:"
#: Shortest link secret accepted: HMAC-SHA256 with fewer bytes is guessable offline.
MIN_LINK_SECRET_BYTES: Final = 16

FLAG_FORM: Final = "`true` or `false` (also `1`/`0`, `yes`/`no`, `on`/`off`)"
#: What dimensions the feedback counters by default: what produced the rated message. Both the
#: GenAI semantic conventions' names and OpenInference's are indexed, since either kind of LLM
#: instrumentation may have made the span inside the message.
DEFAULT_METRIC_DIMENSIONS: Final = (
    attrs.GEN_AI_REQUEST_MODEL,
    attrs.GEN_AI_PROVIDER_NAME,
    attrs.GEN_AI_SYSTEM,
    attrs.AGENT_VERSION,
    attrs.ENVIRONMENT,
)
DEFAULT_INDEXED_ATTRIBUTES: Final = (
    attrs.GEN_AI_REQUEST_MODEL,
    attrs.GEN_AI_RESPONSE_MODEL,
    attrs.GEN_AI_PROVIDER_NAME,
    attrs.GEN_AI_SYSTEM,
    attrs.LLM_MODEL_NAME,
    attrs.LLM_PROVIDER,
    attrs.AGENT_VERSION,
    attrs.ENVIRONMENT,
    attrs.SESSION_ID,
)

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})

SPAN_INDEX_FORMS: Final = (
    "'memory' (this process only), 'sqlite:///relative/path.db' or 'sqlite:////absolute/path.db' "
    "(the processes of one host), 'redis://host:port/db' or 'rediss://...' (any host; needs "
    "brixo-otel[redis]), or an object with put(message_id, span_context, attributes) and "
    "get(message_id)"
)

#: A check gets the argument's name, the given value and the settings resolved before it (a URL
#: check needs `allow_insecure_http`); it returns the value as stored, or raises.
Check = Callable[[str, Any, Mapping[str, Any]], Any]


class _Unset:
    """Marks an argument that was not passed (None is a value for some settings)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()


def setting(
    doc: str,
    *,
    default: Any = None,
    env: str | None = None,
    check: Check,
    parse: Callable[[str], Any] | None = None,
    shown_default: str | None = None,
    secret: bool = False,
    env_form: str = "text",
) -> Any:
    """One row of the table. `parse` reads the variable's text (default: the text itself, then
    `check`) and `env_form` says, in the docs, what that text may be; `shown_default` is the
    default as the docs put it, when it is not a plain value; `secret` keeps the value out of
    `repr` (and errors never echo it)."""
    factory_default: dict[str, Any] = (
        {"default_factory": lambda: default}
        if isinstance(default, (list, dict))
        else {"default": default}
    )
    return field(
        repr=not secret,
        metadata={
            "doc": doc,
            "env": env,
            "check": check,
            "parse": parse,
            "shown_default": shown_default,
            "secret": secret,
            "env_form": env_form,
        },
        **factory_default,
    )


# -- checks: (argument, value, resolved so far) -> stored value ----------------------------------


def _type_error(name: str, accepted: str, value: object) -> TypeError:
    return TypeError(f"{name} must be {accepted}, got {type(value).__name__} {_shown(value)}")


def _shown(value: object) -> str:
    """A value as an error may echo it: URLs without userinfo or query, everything short."""
    text = repr(shown_url(value) if isinstance(value, str) and "://" in value else value)
    return text if len(text) <= 120 else text[:117] + "..."


def _masked(value: str) -> str:
    """A URL as `repr(Settings)` shows it: userinfo masked, a query replaced by `?***` (a Redis
    URL may carry `?password=`)."""
    shown = shown_url(value)
    after_userinfo = value.partition("//")[2].rsplit("@", 1)[-1]
    return shown + "?***" if "?" in after_userinfo.split("#", 1)[0] else shown


def _optional_text(name: str, value: object, _: Mapping[str, Any]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _type_error(name, "a string", value)
    return value.strip() or None


def _secret_text(name: str, value: object, _: Mapping[str, Any]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):  # never echo a secret, not even a wrongly typed one
        raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    value = value.strip()
    if value and not re.fullmatch(r"[\x21-\x7e]+", value):
        raise ConfigurationError(
            f"{name} contains whitespace, control or non-ASCII characters, which cannot be sent "
            "in an HTTP header; check it was copied whole and unquoted"
        )
    return value or None


def _flag(name: str, value: object, _: Mapping[str, Any]) -> bool:
    if not isinstance(value, bool):
        raise _type_error(name, "True or False", value)
    return value


def _parse_flag(text: str) -> bool:
    raw = text.strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError("accepted values are true/false (or 1/0, yes/no, on/off)")


def _positive_seconds(name: str, value: object, _: Mapping[str, Any]) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _type_error(name, "a number of seconds", value)
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError(
            f"{name} must be a positive, finite number of seconds, got {value}"
        )
    return float(value)


def _base_url(name: str, value: object, resolved: Mapping[str, Any]) -> str:
    if value is None:
        return DEFAULT_BASE_URL
    if not isinstance(value, str):
        raise _type_error(name, "a URL string", value)
    return check_endpoint_url(
        value,
        allow_insecure_http=resolved["allow_insecure_http"],
        setting=name,
        api_root=True,
    )


def _traces_endpoint(name: str, value: object, resolved: Mapping[str, Any]) -> str | None:
    if value is None:
        return DEFAULT_TRACES_ENDPOINT if resolved["api_key"] else None
    if not isinstance(value, str):
        raise _type_error(name, f"a URL string or {TRACES_OFF!r}", value)
    if value.strip().lower() == TRACES_OFF:
        return None
    return check_endpoint_url(
        value, allow_insecure_http=resolved["allow_insecure_http"], setting=name
    )


def _headers(name: str, value: object, _: Mapping[str, Any]) -> Mapping[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise TypeError(f"{name} must be a mapping of header names to string values")
    for key in value:
        if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", key):
            raise ConfigurationError(f"{name}: {key!r} is not a valid HTTP header name")
    return dict(value)


def _parse_headers(text: str) -> Mapping[str, str]:
    """`name=value,name2=value2`, as OTEL_EXPORTER_OTLP_HEADERS takes them."""
    headers: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, val = part.partition("=")
        if not sep or not key.strip():
            raise ValueError("accepted: name=value pairs separated by commas")
        headers[key.strip()] = val.strip()
    return headers


def _outbox_path(name: str, value: object, _: Mapping[str, Any]) -> str:
    if value is None:
        return default_outbox_path()
    if not isinstance(value, (str, os.PathLike)):
        raise _type_error(name, f"a path or {MEMORY_OUTBOX!r}", value)
    path = os.fspath(value)
    if not isinstance(path, str):
        raise _type_error(name, f"a str path or {MEMORY_OUTBOX!r}", value)
    if "\x00" in path:
        raise ConfigurationError(f"{name} contains a NUL character; give a file path")
    return path or default_outbox_path()


def _span_index(name: str, value: object, _: Mapping[str, Any]) -> object:
    if value is None:
        return "memory"
    if isinstance(value, str):
        text = value.strip()
        lowered = text.lower()
        if text == "memory" or lowered.startswith(("redis://", "rediss://")):
            return text
        if lowered.startswith("sqlite:///"):
            path = text[len("sqlite:///") :]
            if path and path != ":memory:" and "?" not in path and "\x00" not in path:
                return text
        raise ConfigurationError(
            f"{name} {shown_url(text)[:200]!r} is not recognised; accepted: {SPAN_INDEX_FORMS}"
        )
    if callable(getattr(value, "put", None)) and callable(getattr(value, "get", None)):
        return value
    raise _type_error(name, f"a string or an index object ({SPAN_INDEX_FORMS})", value)


def _link_secrets(name: str, value: object, _: Mapping[str, Any]) -> tuple[bytes, ...]:
    """One secret, or several for rotation (the first signs, all verify)."""
    if value is None:
        return ()
    items = [value] if isinstance(value, (str, bytes)) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, (str, bytes)) for i in items):
        raise TypeError(
            f"{name} must be a str or bytes secret, or a list of them (the first signs, all "
            f"verify), got {type(value).__name__}"
        )
    secrets = tuple(i.encode() if isinstance(i, str) else bytes(i) for i in items if i)
    for position, secret in enumerate(secrets):
        if len(secret) < MIN_LINK_SECRET_BYTES:
            which = "" if len(secrets) == 1 else f" (item {position})"
            raise ConfigurationError(
                f"{name}{which} is {len(secret)} bytes; at least {MIN_LINK_SECRET_BYTES} are "
                "needed, e.g. secrets.token_urlsafe(32)"
            )
    return secrets


def _parse_secrets(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _instance_of(accepted: type | tuple[type, ...], description: str) -> Check:
    def check(name: str, value: object, _: Mapping[str, Any]) -> Any:
        if value is not None and not isinstance(value, accepted):
            raise _type_error(name, description, value)
        return value

    return check


def _sdk_tracer_provider(name: str, value: object, resolved: Mapping[str, Any]) -> Any:
    from opentelemetry.sdk.trace import TracerProvider

    return _instance_of(TracerProvider, "an opentelemetry.sdk.trace.TracerProvider")(
        name, value, resolved
    )


def _meter_provider(name: str, value: object, resolved: Mapping[str, Any]) -> Any:
    from opentelemetry.metrics import MeterProvider

    return _instance_of(MeterProvider, "an opentelemetry.metrics.MeterProvider")(
        name, value, resolved
    )


def _logger_provider(name: str, value: object, resolved: Mapping[str, Any]) -> Any:
    from opentelemetry._logs import LoggerProvider

    return _instance_of(LoggerProvider, "an opentelemetry._logs.LoggerProvider")(
        name, value, resolved
    )


def _exporters(name: str, value: object, _: Mapping[str, Any]) -> tuple[SignalExporter, ...] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise _type_error(name, "a list of SignalExporter", value)
    for item in value:
        if not isinstance(item, SignalExporter):
            raise TypeError(
                f"{name} must hold SignalExporter instances (brixo_otel.exporters), got "
                f"{type(item).__name__}"
            )
    return tuple(value)


def _callback(name: str, value: object, _: Mapping[str, Any]) -> Any:
    if value is not None and not callable(value):
        raise _type_error(name, "a callable or None", value)
    return value


def _names(name: str, value: object, _: Mapping[str, Any]) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise _type_error(name, "a list of attribute names", value)
    if not all(isinstance(n, str) and n for n in value):
        raise TypeError(f"{name} must hold non-empty attribute names (strings), got {value!r}")
    return tuple(value)


def _policy(kind: type) -> Check:
    def check(name: str, value: object, _: Mapping[str, Any]) -> Any:
        if value is None:
            return kind()
        if not isinstance(value, kind):
            raise TypeError(
                f"{name} must be a brixo_otel.{kind.__name__}(...), got {type(value).__name__} "
                f"{_shown(value)}"
            )
        return value

    return check


@dataclass(frozen=True)
class Settings:
    """The resolved settings of one client; every `configure()` argument is a field here."""

    api_key: str | None = setting(
        "The Brixo API key. Enables OTLP trace export to Brixo and signal delivery to the Signals "
        "API; sent only to Brixo's own hosts (and loopback).",
        env="BRIXO_API_KEY",
        check=_secret_text,
        secret=True,
    )
    allow_insecure_http: bool = setting(
        "Allow plain `http://` endpoints on hosts other than loopback.",
        default=False,
        env="BRIXO_ALLOW_INSECURE_HTTP",
        check=_flag,
        parse=_parse_flag,
        env_form=FLAG_FORM,
    )
    base_url: str = setting(
        "Base URL of the Signals API.",
        default=DEFAULT_BASE_URL,
        env="BRIXO_BASE_URL",
        check=_base_url,
        env_form="an `https://` URL (`http://` for loopback)",
    )
    app_name: str | None = setting(
        "Resource attribute `brixo.app_name` (and `service.name` of a provider made here).",
        env="BRIXO_APP_NAME",
        check=_optional_text,
    )
    environment: str | None = setting(
        "Resource attribute `brixo.environment` (e.g. `production`).",
        env="BRIXO_ENVIRONMENT",
        check=_optional_text,
    )
    agent_version: str | None = setting(
        "Resource attribute `brixo.agent_version`: the version of your agent or prompt set.",
        env="BRIXO_AGENT_VERSION",
        check=_optional_text,
    )
    traces_endpoint: str | None = setting(
        "Where traces go by OTLP/HTTP; `none` turns trace export off.",
        env="BRIXO_OTLP_TRACES_ENDPOINT",
        check=_traces_endpoint,
        env_form="an `https://` URL (`http://` for loopback), or `none`",
        shown_default=f"`{DEFAULT_TRACES_ENDPOINT}` with an API key, else off",
    )
    traces_headers: Mapping[str, str] = setting(
        "Extra headers on the trace export (`name=value,...` in the variable), e.g. a collector's "
        "or Langfuse's `Authorization`; the only way to send the Brixo key to a host that is not "
        "Brixo's.",
        default={},
        env="BRIXO_OTLP_TRACES_HEADERS",
        check=_headers,
        parse=_parse_headers,
        env_form="`name=value` pairs separated by commas",
        shown_default="none",
        secret=True,
    )
    outbox_path: str = setting(
        "SQLite file that holds signals until delivered; `:memory:` opts out of durability.",
        env="BRIXO_OUTBOX_PATH",
        check=_outbox_path,
        env_form="a file path, or `:memory:`",
        shown_default="`$XDG_STATE_HOME/brixo-otel/outbox.db` (`~/.local/state/...`)",
    )
    span_index: Any = setting(
        "Where message span contexts are kept for linking feedback: `memory`, "
        "`sqlite:///path.db` (the processes of one host), `redis://host:6379/0` (any host), or "
        "an index object.",
        default="memory",
        env="BRIXO_SPAN_INDEX",
        check=_span_index,
        env_form="`memory`, a `sqlite:///` URL or a `redis://` / `rediss://` URL",
    )  # a Redis URL may carry a password: repr masks every URL (see __repr__)
    link_secrets: tuple[bytes, ...] = setting(
        "Secret (at least 16 bytes) that signs link tokens, shared by every process that accepts "
        "them; a list (comma-separated in the variable) rotates it: the first signs, all verify.",
        default=(),
        env="BRIXO_LINK_SECRET",
        check=_link_secrets,
        parse=_parse_secrets,
        env_form="a secret, or several separated by commas (the first signs)",
        shown_default="none",
        secret=True,
    )
    link_window: float = setting(
        "Seconds during which feedback whose rated span is not known yet is retried for linking; "
        "after it, the feedback span is emitted unlinked.",
        default=600.0,
        env="BRIXO_LINK_WINDOW",
        check=_positive_seconds,
        parse=float,
        env_form="a positive number of seconds",
    )
    capture_content: bool = setting(
        "Record message content and user comments on spans.",
        default=False,
        env="BRIXO_CAPTURE_CONTENT",
        check=_flag,
        parse=_parse_flag,
        env_form=FLAG_FORM,
    )
    tracer_provider: Any = setting(
        "The app's SDK TracerProvider; processors are added to it, it is never replaced.",
        check=_sdk_tracer_provider,
        shown_default="the global SDK provider, else a new one made global",
    )
    meter_provider: Any = setting(
        "Where the `brixo.feedback` and `brixo.messages` counters go.",
        check=_meter_provider,
        shown_default="the global one",
    )
    logger_provider: Any = setting(
        "Where the `gen_ai.evaluation.result` log events go.",
        check=_logger_provider,
        shown_default="the global one",
    )
    exporters: tuple[SignalExporter, ...] | None = setting(
        "Signal destinations; each has its own delivery state.",
        check=_exporters,
        shown_default="`[BrixoSignalExporter()]` with an API key, else none",
    )
    retry_policy: RetryPolicy = setting(
        "Backoff, `Retry-After` clamp, not-found window and maximum age of deliveries.",
        default=RetryPolicy(),
        check=_policy(RetryPolicy),
        shown_default="`RetryPolicy()`",
    )
    outbox_limits: OutboxLimits = setting(
        "Caps of the outbox (rows, bytes, dead letters) and the claim lease.",
        default=OutboxLimits(),
        check=_policy(OutboxLimits),
        shown_default="`OutboxLimits()`",
    )
    on_error: Any = setting(
        "`on_error(signal, destination, reason)`: called when a signal is dead-lettered or "
        "refused (not for a corrupt outbox row, which has no signal to pass: that is logged and "
        "counted).",
        check=_callback,
    )
    on_delivered: Any = setting(
        "`on_delivered(signal, destination)`: called after each delivery.",
        check=_callback,
    )
    metric_dimensions: tuple[str, ...] = setting(
        "Attributes of the rated message that dimension the counters (ids are refused).",
        default=DEFAULT_METRIC_DIMENSIONS,
        check=_names,
        shown_default=", ".join(f"`{name}`" for name in DEFAULT_METRIC_DIMENSIONS),
    )
    indexed_attributes: tuple[str, ...] = setting(
        "Attributes of a message (from its span and the spans inside it) kept with its span "
        "context, for the feedback span and metrics; the metric dimensions are always kept too. "
        "When several spans set one, the span that ends last wins, so the message span has the "
        "final word.",
        default=DEFAULT_INDEXED_ATTRIBUTES,
        check=_names,
        shown_default=", ".join(f"`{name}`" for name in DEFAULT_INDEXED_ATTRIBUTES),
    )

    @property
    def link_secret(self) -> bytes | None:
        """The secret new link tokens are signed with."""
        return self.link_secrets[0] if self.link_secrets else None

    @property
    def has_api_key(self) -> bool:
        return bool(self.api_key)

    def __repr__(self) -> str:
        shown = []
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, str) and "://" in value:  # a URL: may carry a password
                shown.append(f"{item.name}={_masked(value)!r}")
            elif item.metadata["secret"]:
                shown.append(f"{item.name}={'***' if value else value!r}")
            else:
                shown.append(f"{item.name}={value!r}")
        return f"Settings({', '.join(shown)})"


FIELDS: Final = {item.name: item for item in dataclasses.fields(Settings)}
#: The argument names of `configure()` / `Client()`: `link_secret` reads better than the field.
ARGUMENTS: Final = {("link_secret" if name == "link_secrets" else name): name for name in FIELDS}


def default_outbox_path() -> str:
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(state_home) / "brixo-otel" / "outbox.db")


def check_names(options: Mapping[str, Any]) -> None:
    """`TypeError` naming an unknown argument and every accepted one."""
    unknown = sorted(set(options) - set(ARGUMENTS))
    if unknown:
        raise TypeError(
            f"unknown argument(s) {', '.join(unknown)}; accepted: {', '.join(sorted(ARGUMENTS))}"
        )


def resolve(options: Mapping[str, Any]) -> Settings:
    """Arguments over environment variables over defaults; explicit arguments are checked and
    raise, variables are checked and fall back with a warning."""
    check_names(options)
    given = {ARGUMENTS[name]: value for name, value in options.items() if value is not None}
    resolved: dict[str, Any] = {}
    for name, item in FIELDS.items():  # in declaration order: a check may read earlier values
        check: Check = item.metadata["check"]
        argument = "link_secret" if name == "link_secrets" else name
        if name in given:
            resolved[name] = check(argument, given[name], resolved)
            continue
        resolved[name] = _from_environment(item, check, resolved)
    return Settings(**resolved)


def _from_environment(
    item: dataclasses.Field[Any], check: Check, resolved: Mapping[str, Any]
) -> Any:
    variable = item.metadata["env"]
    raw = os.environ.get(variable) if variable else None
    if raw is not None and raw.strip():
        parse = item.metadata["parse"]
        try:
            return check(variable, parse(raw) if parse else raw, resolved)
        except (TypeError, ValueError) as exc:  # ConfigurationError is a ValueError
            logger.warning("brixo_otel: ignoring %s (%s); using the default", variable, exc)
    if item.default is not dataclasses.MISSING and item.default is not None:
        return item.default
    return check(item.name, None, resolved)  # a default that depends on other settings


def environment_variables() -> list[str]:
    return [item.metadata["env"] for item in FIELDS.values() if item.metadata["env"]]


def markdown_tables() -> str:
    """The two tables of docs/configuration.md: arguments, then environment variables."""
    rows = ["| argument | environment variable | default | meaning |", "| --- | --- | --- | --- |"]
    variables = ["| environment variable | argument | accepted text |", "| --- | --- | --- |"]
    for argument, name in ARGUMENTS.items():
        item = FIELDS[name]
        env = item.metadata["env"]
        default = item.metadata["shown_default"]
        if default is None:
            default = "none" if item.default in (None, dataclasses.MISSING) else f"`{item.default}`"
        rows.append(
            f"| `{argument}` | {f'`{env}`' if env else '—'} | {default} | {item.metadata['doc']} |"
        )
        if env:
            variables.append(f"| `{env}` | `{argument}` | {item.metadata['env_form']} |")
    return "\n".join(rows) + "\n\n" + "\n".join(variables) + "\n"


if __name__ == "__main__":
    print(markdown_tables(), end="")
