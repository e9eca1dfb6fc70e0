"""The public surface: exactly the documented names and signatures, the settings table (loud at
configure(), lenient with the environment), and secrets kept out of reprs and errors."""

from __future__ import annotations

import inspect
import logging
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import brixo_otel
from brixo_otel import _api, _settings
from brixo_otel._feedback import _metrics
from brixo_otel.exporters import InMemorySignalExporter
from brixo_otel.testing import SpanCapture

ROOT = Path(__file__).resolve().parent.parent

PUBLIC = {
    # DESIGN.md's API
    "link_token",
    "retract_feedback",
    "configure",
    "get_client",
    "message",
    "message_span",
    "conversation",
    "set_message_id",
    "interaction",
    "feedback",
    "afeedback",
    "flush",
    "shutdown",
    "Brixo",
    # the types those calls take and return
    "Client",
    "Signal",
    "UnknownMessage",
    "InvalidSignal",
    "ConfigurationError",
    "RetryPolicy",
    "OutboxLimits",
    "__version__",
}

#: The module functions that are `Client` methods bound to the default client.
CLIENT_METHODS = ("feedback", "afeedback", "retract_feedback", "link_token", "flush", "shutdown")

ConfigurationError = brixo_otel.ConfigurationError


def test_all_is_exactly_the_public_list_and_sorted() -> None:
    assert set(brixo_otel.__all__) == PUBLIC
    assert brixo_otel.__all__ == sorted(brixo_otel.__all__)
    for name in brixo_otel.__all__:
        assert getattr(brixo_otel, name) is not None
    assert issubclass(brixo_otel.InvalidSignal, ValueError)
    assert issubclass(ConfigurationError, ValueError)
    assert issubclass(brixo_otel.UnknownMessage, LookupError)


def test_package_ships_py_typed() -> None:
    assert (ROOT / "brixo_otel" / "py.typed").exists()


# -- one definition of each signature ------------------------------------------------------------


def test_configure_and_client_take_exactly_the_settings_table() -> None:
    client_parameters = list(inspect.signature(brixo_otel.Client).parameters.values())
    configure_parameters = list(inspect.signature(brixo_otel.configure).parameters.values())
    assert configure_parameters == client_parameters
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in client_parameters)
    assert all(p.default is None for p in client_parameters)  # None: "not given, ask the env"
    assert {p.name for p in client_parameters} == set(_settings.ARGUMENTS)
    assert inspect.signature(brixo_otel.configure).return_annotation == "Client"


@pytest.mark.parametrize("name", CLIENT_METHODS)
def test_module_functions_have_the_signatures_of_client_methods(name: str) -> None:
    method = inspect.signature(getattr(brixo_otel.Client, name))
    function = getattr(brixo_otel, name)
    parameters = list(method.parameters.values())
    assert parameters[0].name == "self"
    assert inspect.signature(function) == method.replace(parameters=parameters[1:])
    assert function.__doc__ == getattr(brixo_otel.Client, name).__doc__
    assert inspect.iscoroutinefunction(function) == inspect.iscoroutinefunction(
        getattr(brixo_otel.Client, name)
    )


def test_the_defaults_shown_in_the_table_are_the_ones_the_client_uses() -> None:
    assert _metrics.DEFAULT_DIMENSIONS is _settings.DEFAULT_METRIC_DIMENSIONS
    settings = _settings.resolve({})
    assert settings.indexed_attributes == _settings.DEFAULT_INDEXED_ATTRIBUTES
    assert settings.metric_dimensions == _settings.DEFAULT_METRIC_DIMENSIONS
    assert settings.link_window == 600
    assert settings.span_index == "memory"


# -- the docs are generated from the table --------------------------------------------------------


def test_configuration_docs_hold_the_generated_tables() -> None:
    docs = (ROOT / "docs" / "configuration.md").read_text()
    tables = _settings.markdown_tables()
    arguments, variables = tables.split("\n\n")  # the page puts prose between them
    assert arguments + "\n" in docs, "regenerate with: python -m brixo_otel._settings"
    assert variables in docs, "regenerate with: python -m brixo_otel._settings"
    for argument in _settings.ARGUMENTS:
        assert f"| `{argument}` |" in tables
    for variable in _settings.environment_variables():
        assert f"| `{variable}` |" in tables


def test_the_table_module_prints_the_tables() -> None:
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-m", "brixo_otel._settings"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=ROOT,
    )
    assert result.stdout == _settings.markdown_tables()


# -- explicit arguments: loud at configure() ------------------------------------------------------

#: A value of the wrong type for every argument, and what its error must say is accepted.
WRONG_TYPES: dict[str, tuple[object, str]] = {
    "api_key": (5, "must be a string"),
    "allow_insecure_http": ("yes", "must be True or False"),
    "base_url": (5, "must be a URL string"),
    "app_name": (5, "must be a string"),
    "environment": (["production"], "must be a string"),
    "agent_version": (1.4, "must be a string"),
    "traces_endpoint": (5, "must be a URL string or 'none'"),
    "traces_headers": (["Authorization: x"], "must be a mapping of header names to string values"),
    "outbox_path": (5, "must be a path or ':memory:'"),
    "span_index": (5, "must be a string or an index object ('memory'"),
    "link_secret": (5, "must be a str or bytes secret, or a list of them"),
    "link_window": ("600", "must be a number of seconds"),
    "capture_content": (1, "must be True or False"),
    "tracer_provider": (object(), "must be an opentelemetry.sdk.trace.TracerProvider"),
    "meter_provider": (1, "must be an opentelemetry.metrics.MeterProvider"),
    "logger_provider": (1, "must be an opentelemetry._logs.LoggerProvider"),
    "exporters": ([object()], "must hold SignalExporter instances (brixo_otel.exporters)"),
    "retry_policy": ("fast", "must be a brixo_otel.RetryPolicy(...)"),
    "outbox_limits": ({"max_rows": 1000}, "must be a brixo_otel.OutboxLimits(...)"),
    "on_error": (5, "must be a callable"),
    "on_delivered": ("print", "must be a callable"),
    "metric_dimensions": ("gen_ai.request.model", "must be a list of attribute names"),
    "indexed_attributes": ([1], "must hold non-empty attribute names"),
}

#: Values of the right type that can never work, and what the error must say.
WRONG_VALUES: list[tuple[str, object, str]] = [
    ("api_key", "sk live key", "contains whitespace"),
    ("base_url", "ftp://api.example.com", "must start with https://"),
    ("base_url", "http://api.example.com", "uses plain http to a host that is not loopback"),
    ("base_url", "https://api.example.com/?region=eu", "must not have a query"),
    ("traces_endpoint", "collector:4318/v1/traces", "must start with https://"),
    ("traces_endpoint", "https://", "has no host"),
    ("traces_headers", {"bad header": "x"}, "is not a valid HTTP header name"),
    ("outbox_path", "outbox\x00.db", "contains a NUL character"),
    ("span_index", "postgres://db.example/feedback", "accepted: 'memory'"),
    ("span_index", "sqlite:///", "accepted: 'memory'"),
    ("link_secret", "0123456789", "is 10 bytes; at least 16 are needed"),
    ("link_secret", ["a-long-enough-secret-1", "short"], "(item 1) is 5 bytes"),
    ("link_window", 0, "must be a positive, finite number of seconds"),
    ("link_window", -1.5, "must be a positive, finite number of seconds"),
    ("link_window", math.inf, "must be a positive, finite number of seconds"),
    ("link_window", math.nan, "must be a positive, finite number of seconds"),
    ("metric_dimensions", ["brixo.message_id"], "may not include ids"),
]


def test_every_argument_has_a_wrong_type_case() -> None:
    assert set(WRONG_TYPES) == set(_settings.ARGUMENTS)


@pytest.fixture
def before() -> Iterator[brixo_otel.Client | None]:
    """The default client before a refused configure(), which must leave it in place."""
    current = _api.current()
    yield current
    assert _api.current() is current


@pytest.mark.parametrize("argument", sorted(WRONG_TYPES))
def test_a_wrong_type_is_a_type_error_naming_the_argument(
    argument: str, before: brixo_otel.Client | None
) -> None:
    value, accepted = WRONG_TYPES[argument]
    with pytest.raises(TypeError) as raised:
        brixo_otel.configure(**{"outbox_path": ":memory:", argument: value})
    assert type(raised.value) is TypeError  # not a ConfigurationError, not an AttributeError
    assert str(raised.value).startswith(f"{argument} "), raised.value
    assert accepted in str(raised.value)


@pytest.mark.parametrize(
    ("argument", "value", "accepted"),
    WRONG_VALUES,
    ids=[f"{argument}={value!r}" for argument, value, _ in WRONG_VALUES],
)
def test_a_wrong_value_is_a_configuration_error_naming_the_argument(
    argument: str, value: object, accepted: str, before: brixo_otel.Client | None
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        brixo_otel.configure(**{"outbox_path": ":memory:", argument: value})
    assert str(raised.value).startswith(f"{argument} ") or str(raised.value).startswith(
        f"{argument}:"
    ), raised.value
    assert accepted in str(raised.value)


def test_an_unknown_argument_is_named_with_every_accepted_one(
    before: brixo_otel.Client | None,
) -> None:
    with pytest.raises(TypeError) as raised:
        brixo_otel.configure(link_secrets="x" * 32)  # type: ignore[call-arg]
    message = str(raised.value)
    assert message.startswith("unknown argument(s) link_secrets; accepted: ")
    assert all(name in message for name in _settings.ARGUMENTS)


def test_a_wrong_exporter_list_is_refused_before_anything_starts(capture: SpanCapture) -> None:
    with pytest.raises(TypeError, match="exporters must be a list of SignalExporter"):
        brixo_otel.configure(exporters=InMemorySignalExporter(), outbox_path=":memory:")  # type: ignore[arg-type]
    assert capture.spans() == []


def test_insecure_http_to_a_remote_host_needs_explicit_permission(capture: SpanCapture) -> None:
    client = brixo_otel.configure(
        tracer_provider=capture.provider,
        traces_endpoint="http://collector.internal:4318/v1/traces",
        allow_insecure_http=True,
        outbox_path=":memory:",
    )
    assert client.settings.traces_endpoint == "http://collector.internal:4318/v1/traces"


# -- the outbox: a path that cannot be opened is a ConfigurationError -----------------------------


def _refused_outbox(path: str | os.PathLike[str]) -> str:
    with pytest.raises(ConfigurationError) as raised:
        brixo_otel.configure(outbox_path=path, traces_endpoint="none")
    message = str(raised.value)
    assert message.startswith("outbox_path ")
    assert "':memory:'" in message and "BRIXO_OUTBOX_PATH" in message  # the fixes
    return message


@pytest.fixture
def read_only_directory(tmp_path: Path) -> Iterator[Path]:
    """A directory nobody can write to. Tests run as root, for whom a 0o555 mode means nothing,
    so root gets a read-only tmpfs mounted there; without the right to mount, /proc (read-only
    for root too)."""
    directory = tmp_path / "read-only"
    directory.mkdir()
    if os.geteuid() != 0:
        directory.chmod(0o555)
        yield directory
        directory.chmod(0o755)
        return
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(directory)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        yield Path("/proc")
        return
    try:
        yield directory
    finally:
        subprocess.run(["umount", str(directory)], check=True)


def test_an_outbox_in_a_read_only_directory(read_only_directory: Path) -> None:
    path = read_only_directory / "outbox.db"
    assert repr(str(path)) in _refused_outbox(path)


def test_an_outbox_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "plain-file").write_text("not a directory")
    path = tmp_path / "plain-file" / "outbox.db"
    assert repr(str(path)) in _refused_outbox(path)


def test_an_outbox_that_is_a_directory(tmp_path: Path) -> None:
    assert repr(str(tmp_path)) in _refused_outbox(tmp_path)


def test_an_outbox_that_is_not_a_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    text = "these are someone's notes, not an SQLite database\n" * 20
    path.write_text(text)
    message = _refused_outbox(path)
    assert repr(str(path)) in message and "not a database" in message
    assert path.read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # no -wal, no -shm


def test_an_outbox_whose_name_is_too_long(tmp_path: Path) -> None:
    path = tmp_path / ("o" * 300 + ".db")
    assert repr(str(path)) in _refused_outbox(path)


def test_an_outbox_path_with_a_nul_byte(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="outbox_path contains a NUL character"):
        brixo_otel.configure(outbox_path=f"{tmp_path}/out\x00box.db", traces_endpoint="none")


def test_feedback_configured_from_the_environment_never_raises_for_the_outbox(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`feedback()` before any configure() configures from the environment; an unusable state
    directory must not turn into a ConfigurationError from feedback()."""
    (tmp_path / "state").write_text("a file where the state directory should be")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("BRIXO_OTLP_TRACES_ENDPOINT", "none")
    signal = brixo_otel.feedback("thumbs_up", message_id="m")
    assert signal.message_id == "m"
    assert brixo_otel.get_client().settings.outbox_path == ":memory:"
    assert "kept in memory only" in caplog.text


# -- the environment: lenient, one warning naming the variable ------------------------------------

#: A malformed value for every variable that can be malformed, and the default it falls back to
#: (the others are free text: names, versions, paths).
MALFORMED_ENVIRONMENT: list[tuple[str, str, str, object]] = [
    ("BRIXO_API_KEY", "sk live key", "api_key", None),
    ("BRIXO_ALLOW_INSECURE_HTTP", "sometimes", "allow_insecure_http", False),
    ("BRIXO_BASE_URL", "ftp://api.example.com", "base_url", _settings.DEFAULT_BASE_URL),
    ("BRIXO_BASE_URL", "http://api.example.com", "base_url", _settings.DEFAULT_BASE_URL),
    ("BRIXO_OTLP_TRACES_ENDPOINT", "collector:4318", "traces_endpoint", None),
    ("BRIXO_OTLP_TRACES_ENDPOINT", "http://collector.example/v1", "traces_endpoint", None),
    ("BRIXO_OTLP_TRACES_HEADERS", "Authorization", "traces_headers", {}),
    ("BRIXO_OTLP_TRACES_HEADERS", "bad header=x", "traces_headers", {}),
    ("BRIXO_SPAN_INDEX", "postgres://db.example/x", "span_index", "memory"),
    ("BRIXO_SPAN_INDEX", "sqlite:///", "span_index", "memory"),
    ("BRIXO_LINK_SECRET", "short", "link_secrets", ()),
    ("BRIXO_LINK_WINDOW", "ten minutes", "link_window", 600.0),
    ("BRIXO_LINK_WINDOW", "-5", "link_window", 600.0),
    ("BRIXO_LINK_WINDOW", "inf", "link_window", 600.0),
    ("BRIXO_CAPTURE_CONTENT", "maybe", "capture_content", False),
]
FREE_TEXT = {"BRIXO_APP_NAME", "BRIXO_ENVIRONMENT", "BRIXO_AGENT_VERSION", "BRIXO_OUTBOX_PATH"}


def test_every_variable_that_can_be_malformed_is_tried() -> None:
    tried = {variable for variable, *_ in MALFORMED_ENVIRONMENT}
    assert tried | FREE_TEXT == set(_settings.environment_variables())


@pytest.mark.parametrize(
    ("variable", "text", "field", "default"),
    MALFORMED_ENVIRONMENT,
    ids=[f"{variable}={text}" for variable, text, *_ in MALFORMED_ENVIRONMENT],
)
def test_a_malformed_variable_warns_once_and_falls_back_to_the_default(
    variable: str,
    text: str,
    field: str,
    default: object,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capture: SpanCapture,
    signal_capture: InMemorySignalExporter,
) -> None:
    monkeypatch.setenv(variable, text)
    caplog.set_level(logging.WARNING, logger="brixo_otel")
    client = brixo_otel.configure(
        tracer_provider=capture.provider, outbox_path=":memory:", exporters=[signal_capture]
    )
    assert getattr(client.settings, field) == default
    about = [r.getMessage() for r in caplog.records if variable in r.getMessage()]
    assert len(about) == 1, about
    assert about[0].startswith(f"brixo_otel: ignoring {variable} (")
    assert about[0].endswith("; using the default")
    if variable == "BRIXO_API_KEY":
        assert text not in caplog.text


def test_arguments_win_over_environment(
    monkeypatch: pytest.MonkeyPatch, capture: SpanCapture, tmp_path: Path
) -> None:
    monkeypatch.setenv("BRIXO_APP_NAME", "from-env")
    monkeypatch.setenv("BRIXO_ENVIRONMENT", "env-environment")
    monkeypatch.setenv("BRIXO_LINK_WINDOW", "not even read")
    client = brixo_otel.configure(
        app_name="from-arg",
        link_window=30,
        tracer_provider=capture.provider,
        traces_endpoint="none",
        outbox_path=tmp_path / "o.db",
    )
    assert client.settings.app_name == "from-arg"
    assert client.settings.environment == "env-environment"
    assert client.settings.link_window == 30.0
    assert client.settings.outbox_path == str(tmp_path / "o.db")


def test_well_formed_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "BRIXO_ALLOW_INSECURE_HTTP": "yes",
        "BRIXO_CAPTURE_CONTENT": "ON",
        "BRIXO_LINK_WINDOW": "90",
        "BRIXO_LINK_SECRET": "new-secret-0123456789, old-secret-0123456789",
        "BRIXO_OTLP_TRACES_HEADERS": "Authorization=Bearer x, X-Scope = tenant",
        "BRIXO_OTLP_TRACES_ENDPOINT": "NONE",
        "BRIXO_SPAN_INDEX": "redis://cache.internal:6379/2",
    }
    for variable, text in values.items():
        monkeypatch.setenv(variable, text)
    settings = _settings.resolve({})
    assert settings.allow_insecure_http is True
    assert settings.capture_content is True
    assert settings.link_window == 90.0
    assert settings.link_secrets == (b"new-secret-0123456789", b"old-secret-0123456789")
    assert settings.traces_headers == {"Authorization": "Bearer x", "X-Scope": "tenant"}
    assert settings.traces_endpoint is None
    assert settings.span_index == "redis://cache.internal:6379/2"


# -- secrets: never in a repr, never echoed -------------------------------------------------------


def test_settings_repr_masks_every_secret() -> None:
    settings = _settings.resolve(
        {
            "api_key": "sk-live-secret-7f3a",
            "link_secret": ["link-secret-number-one", "link-secret-number-two"],
            "traces_headers": {"Authorization": "Bearer header-secret"},
            "traces_endpoint": "https://user:endpoint-pass@collector.example/v1/traces",
            "span_index": "rediss://default:redis-pass@cache.example:6380/0?password=query-pass",
            "outbox_path": ":memory:",
        }
    )
    shown = repr(settings)
    for secret in (
        "sk-live-secret-7f3a",
        "link-secret-number",
        "header-secret",
        "endpoint-pass",
        "user:",
        "redis-pass",
        "query-pass",
    ):
        assert secret not in shown
    assert "span_index='rediss://***@cache.example:6380/0?***'" in shown
    assert "traces_endpoint='https://***@collector.example/v1/traces'" in shown
    assert "api_key='***'" in shown and "link_secrets='***'" in shown
    assert "span_index='memory'" in repr(_settings.resolve({"outbox_path": ":memory:"}))


@pytest.mark.parametrize(
    ("argument", "url"),
    [
        ("base_url", "ftp://user:url-pass@api.example.com/v1?token=query-secret"),
        ("base_url", "http://user:url-pass@api.example.com/?token=query-secret"),
        ("traces_endpoint", "http://user:url-pass@collector.example/v1?sig=query-secret#frag"),
        ("traces_endpoint", "https://user:pa/ss?word@/v1/traces?sig=query-secret"),
        ("span_index", "postgres://user:url-pass@db.example/x?password=query-secret"),
    ],
)
def test_a_rejected_url_is_echoed_without_userinfo_or_query(
    argument: str, url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        brixo_otel.configure(**{"outbox_path": ":memory:", argument: url})
    for secret in ("url-pass", "'pa'", "pa/ss", "word", "query-secret", "frag", "user"):
        assert secret not in str(raised.value)
    assert "***@" in str(raised.value)
    # the same URL from the environment: the warning is as careful
    variable = _settings.FIELDS[argument].metadata["env"]
    monkeypatch.setenv(variable, url)
    _settings.resolve({"outbox_path": ":memory:"})
    assert variable in caplog.text
    for secret in ("url-pass", "pa/ss", "query-secret"):
        assert secret not in caplog.text


def test_a_wrongly_typed_secret_is_not_echoed() -> None:
    with pytest.raises(TypeError) as raised:
        brixo_otel.configure(api_key=b"sk-bytes-secret", outbox_path=":memory:")  # type: ignore[arg-type]
    assert "sk-bytes-secret" not in str(raised.value)
    with pytest.raises(TypeError) as raised:
        brixo_otel.configure(link_secret=12345678901234567890, outbox_path=":memory:")  # type: ignore[arg-type]
    assert "12345678901234567890" not in str(raised.value)


def test_api_key_never_appears_in_reprs_or_logs(
    capture: SpanCapture, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key = "sk-live-secret-7f3a"
    client = brixo_otel.configure(
        api_key=key,
        tracer_provider=capture.provider,
        traces_endpoint="none",
        outbox_path=":memory:",
    )
    assert key not in repr(client)
    assert key not in repr(client.settings)
    assert all(key not in repr(exporter) for exporter in client.exporters)
    brixo_otel.shutdown(timeout=0.5)
    assert key not in caplog.text


def test_configure_joins_the_global_sdk_provider_without_replacing_it() -> None:
    # Run in a fresh interpreter: the global provider can be set only once per process.
    code = """
import brixo_otel
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
app_provider = TracerProvider()
seen = InMemorySpanExporter()
app_provider.add_span_processor(SimpleSpanProcessor(seen))
trace.set_tracer_provider(app_provider)
client = brixo_otel.configure(traces_endpoint="none", outbox_path=":memory:")
assert client.tracer_provider is app_provider is trace.get_tracer_provider()
@brixo_otel.message(message_id="m")
def answer(): pass
answer()
assert [s.attributes["brixo.message_id"] for s in seen.get_finished_spans()] == ["m"]
fresh = brixo_otel.configure(traces_endpoint="none", outbox_path=":memory:")
assert fresh.tracer_provider is app_provider
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert result.stdout.strip() == "ok", result.stderr
