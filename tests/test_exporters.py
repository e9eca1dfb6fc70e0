"""Signal exporters: the Brixo exporter over real loopback sockets, and the dev/test exporters."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import logging
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry import context as otel_context

from brixo_otel._errors import ConfigurationError
from brixo_otel._signal import THUMBS_DOWN, THUMBS_UP, Signal, validate
from brixo_otel._version import __version__
from brixo_otel.exporters import (
    BrixoSignalExporter,
    ConsoleSignalExporter,
    DeliveryResult,
    DeliveryStatus,
    InMemorySignalExporter,
)
from brixo_otel.exporters._http import check_endpoint_url, error_detail, parse_retry_after
from brixo_otel.testing import BrixoTestServer, ReceivedSignal

KEY = "sk-live-0123456789abcdef"
OCCURRED = datetime(2026, 2, 3, 14, 22, 10, 123000, tzinfo=timezone.utc)


def message_signal(message_id: str = "msg_1042", **kwargs: Any) -> Signal:
    return validate(THUMBS_UP, message_id=message_id, occurred_at=OCCURRED, **kwargs)


# --- a scripted loopback server: answers each request with the next scripted reply ------------


@dataclass
class Reply:
    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    #: Seconds to wait before answering (released early when the server closes).
    hang: float = 0.0
    #: Close the connection without answering.
    drop: bool = False


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client_port: int


class _ScriptedHTTPServer(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ScriptedHandler)
        self.replies: list[Reply] = []
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.connections: set[socket.socket] = set()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up (timeouts, early close) are part of the tests, not errors."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _ScriptedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ScriptedHTTPServer

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with self.server.lock:
            self.server.received.append(
                Received(
                    self.command,
                    self.path,
                    {name.lower(): value for name, value in self.headers.items()},
                    body,
                    self.client_address[1],
                )
            )
            reply = self.server.replies.pop(0) if self.server.replies else Reply()
        if reply.hang:
            self.server.stopping.wait(reply.hang)
        if reply.drop or self.server.stopping.is_set():
            self.close_connection = True
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the tests assert on log records and must see only the library's."""


class ScriptedServer:
    def __init__(self) -> None:
        self._server = _ScriptedHTTPServer()
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def reply(self, *replies: Reply) -> None:
        with self._server.lock:
            self._server.replies.extend(replies)

    @property
    def received(self) -> list[Received]:
        with self._server.lock:
            return list(self._server.received)

    def close(self) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        with self._server.lock:
            open_connections = list(self._server.connections)
        for connection in open_connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._server.server_close()  # joins the handler threads
        self._thread.join()


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    yield scripted
    scripted.close()


@pytest.fixture
def exporter(server: ScriptedServer) -> Iterator[BrixoSignalExporter]:
    brixo = BrixoSignalExporter(KEY, server.url)
    yield brixo
    brixo.shutdown()


# --- Retry-After ------------------------------------------------------------------------------

NOW = datetime(2026, 2, 3, 14, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("1000000", 1_000_000.0),
        (format_datetime(NOW + timedelta(seconds=90), usegmt=True), 90.0),
        ("Tue, 03 Feb 2026 14:00:30 -0000", 30.0),
        (format_datetime(NOW - timedelta(seconds=5), usegmt=True), None),
        ("soon", None),
        ("-5", None),
        ("1e3", None),
        ("12 seconds", None),
        ("Tue, 99 Foo 2026 25:61:00 GMT", None),
        ("9" * 400, None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW.timestamp()) == expected


def test_parse_retry_after_uses_the_clock_by_default() -> None:
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    seconds = parse_retry_after(format_datetime(later, usegmt=True))
    assert seconds is not None and 3590 < seconds <= 3600


# --- endpoint safety --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://api.brixo.com",
        "https://api.brixo.com/",
        "HTTPS://api.brixo.com:8443/prefix",
        "http://127.0.0.1:8080",
        "http://127.42.0.9",
        "http://localhost:4318/v1/traces",
        "http://LOCALHOST",
        "http://[::1]:9000",
        "http://[::ffff:127.0.0.1]:9000",
    ],
)
def test_check_endpoint_url_accepts_https_and_loopback_http(url: str) -> None:
    assert check_endpoint_url(f" {url} ", allow_insecure_http=False, setting="base_url") == url


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        ("http://api.brixo.com", "plain http"),
        ("http://10.0.0.5:8080", "plain http"),
        ("http://localhost.example.com", "plain http"),
        ("http://[::2]", "plain http"),
        ("ftp://api.brixo.com", "https://"),
        ("api.brixo.com", "https://"),
        ("localhost:8080", "https://"),
        ("https://", "no host"),
        ("https:///v1", "no host"),
        ("https://api.brixo.com:99999", "not a valid URL"),
        ("https://[::1", "not a valid URL"),
    ],
)
def test_check_endpoint_url_refuses_unsafe_or_unusable_urls(url: str, hint: str) -> None:
    with pytest.raises(ConfigurationError, match="TRACES_ENDPOINT") as caught:
        check_endpoint_url(url, allow_insecure_http=False, setting="TRACES_ENDPOINT")
    assert hint in str(caught.value)


def test_check_endpoint_url_allows_plain_http_when_told() -> None:
    url = "http://collector.internal:4318"
    assert check_endpoint_url(url, allow_insecure_http=True, setting="x") == url
    with pytest.raises(ConfigurationError):
        check_endpoint_url("ftp://collector.internal", allow_insecure_http=True, setting="x")


def test_check_endpoint_url_never_echoes_credentials() -> None:
    with pytest.raises(ConfigurationError) as caught:
        check_endpoint_url(
            "http://user:hunter2@api.brixo.com", allow_insecure_http=False, setting="x"
        )
    assert "hunter2" not in str(caught.value)
    assert "***@api.brixo.com" in str(caught.value)


# --- Brixo exporter: configuration and hygiene ------------------------------------------------


def test_missing_key_names_the_environment_variable() -> None:
    with pytest.raises(ConfigurationError, match="BRIXO_API_KEY"):
        BrixoSignalExporter()


def test_key_and_base_url_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIXO_API_KEY", KEY)
    monkeypatch.setenv("BRIXO_BASE_URL", "https://eu.brixo.example/")
    brixo = BrixoSignalExporter()
    try:
        assert brixo.base_url == "https://eu.brixo.example"
        assert brixo.name == "brixo"
    finally:
        brixo.shutdown()


def test_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIXO_BASE_URL", "http://insecure.example")
    brixo = BrixoSignalExporter(KEY, "https://api.brixo.com///", name="primary")
    try:
        assert repr(brixo) == (
            "BrixoSignalExporter(base_url='https://api.brixo.com', name='primary')"
        )
    finally:
        brixo.shutdown()


def test_default_base_url_and_repr_without_the_key() -> None:
    brixo = BrixoSignalExporter(KEY)
    try:
        assert repr(brixo) == "BrixoSignalExporter(base_url='https://api.brixo.com', name='brixo')"
        assert KEY not in repr(brixo) and KEY not in str(brixo)
    finally:
        brixo.shutdown()


def test_insecure_base_url_from_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIXO_BASE_URL", "http://api.brixo.com")
    with pytest.raises(ConfigurationError, match="BRIXO_BASE_URL") as caught:
        BrixoSignalExporter(KEY)
    assert KEY not in str(caught.value)


def test_insecure_base_url_is_allowed_when_told() -> None:
    brixo = BrixoSignalExporter(KEY, "http://brixo.internal", allow_insecure_http=True)
    try:
        assert brixo.base_url == "http://brixo.internal"
    finally:
        brixo.shutdown()


@pytest.mark.parametrize(
    "base_url",
    [
        "https://user:s3cr3tpw@api.brixo.com",
        "https://api.brixo.com/?x=1",
        "https://api.brixo.com/#f",
    ],
)
def test_base_url_with_credentials_query_or_fragment_is_refused(base_url: str) -> None:
    with pytest.raises(ConfigurationError, match="base_url") as caught:
        BrixoSignalExporter(KEY, base_url)
    assert "s3cr3tpw" not in str(caught.value)


@pytest.mark.parametrize(
    "bad_key", ["", "   ", "sk live", "sk-live\nX-Evil: 1", "sk-ünï", "sk\x00"]
)
def test_unusable_keys_are_refused_without_echoing_them(bad_key: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        BrixoSignalExporter(bad_key)
    if bad_key.strip():
        assert bad_key.strip() not in str(caught.value)


def test_key_surrounding_whitespace_is_trimmed(server: ScriptedServer) -> None:
    brixo = BrixoSignalExporter(f"  {KEY}\n", server.url)
    try:
        assert brixo.export(message_signal()).status is DeliveryStatus.DELIVERED
    finally:
        brixo.shutdown()
    assert server.received[0].headers["authorization"] == f"Bearer {KEY}"


# --- Brixo exporter: the request on the wire --------------------------------------------------


def test_request_carries_the_exact_body_and_headers(
    server: ScriptedServer, exporter: BrixoSignalExporter
) -> None:
    signal = message_signal(user_message="Love this product! ✨")
    assert exporter.export(signal).status is DeliveryStatus.DELIVERED
    (request,) = server.received
    assert request.method == "POST"
    assert request.path == "/v1/messages/msg_1042/signals"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"] == "application/vnd.api+json"
    assert request.headers["accept"] == "application/vnd.api+json"
    user_agent = f"brixo-otel/{__version__} python-httpx/{httpx.__version__}"
    assert request.headers["user-agent"] == user_agent
    assert request.headers["idempotency-key"] == signal.id
    assert json.loads(request.body) == {
        "data": {
            "type": "signals",
            "attributes": {
                "name": "feedback",
                "value": "thumbs_up",
                "occurred_at": "2026-02-03T14:22:10.123Z",
                "user_message": "Love this product! ✨",
            },
        }
    }


def test_conversation_signal_without_user_message(
    server: ScriptedServer, exporter: BrixoSignalExporter
) -> None:
    signal = validate(THUMBS_DOWN, conversation_id="conv_abc123")
    assert exporter.export(signal).status is DeliveryStatus.DELIVERED
    (request,) = server.received
    assert request.path == "/v1/conversations/conv_abc123/signals"
    attributes = json.loads(request.body)["data"]["attributes"]
    assert set(attributes) == {"name", "value", "occurred_at"}
    assert attributes["value"] == "thumbs_down"
    assert attributes["occurred_at"].endswith("Z")


def test_message_id_wins_when_both_ids_are_given(
    server: ScriptedServer, exporter: BrixoSignalExporter
) -> None:
    exporter.export(validate(THUMBS_UP, message_id="m1", conversation_id="c1"))
    assert server.received[0].path == "/v1/messages/m1/signals"


@pytest.mark.parametrize(
    ("identifier", "segment"),
    [
        ("conv/42 ünï🙂", "conv%2F42%20%C3%BCn%C3%AF%F0%9F%99%82"),
        ("a?b#c", "a%3Fb%23c"),
        ("100%", "100%25"),
        ("%2F", "%252F"),
        ("..", "%2E%2E"),
        (".", "%2E"),
        ("v1.2~x", "v1.2~x"),
    ],
)
def test_ids_travel_as_one_intact_path_segment(
    server: ScriptedServer, exporter: BrixoSignalExporter, identifier: str, segment: str
) -> None:
    assert exporter.export(message_signal(identifier)).status is DeliveryStatus.DELIVERED
    assert server.received[0].path == f"/v1/messages/{segment}/signals"


def test_base_url_path_prefix_is_kept(server: ScriptedServer) -> None:
    brixo = BrixoSignalExporter(KEY, f"{server.url}/proxy/brixo/")
    try:
        brixo.export(message_signal("a/b"))
    finally:
        brixo.shutdown()
    assert server.received[0].path == "/proxy/brixo/v1/messages/a%2Fb/signals"


def test_one_kept_alive_connection_serves_consecutive_exports(
    server: ScriptedServer, exporter: BrixoSignalExporter
) -> None:
    for _ in range(3):
        assert exporter.export(message_signal()).status is DeliveryStatus.DELIVERED
    assert len({request.client_port for request in server.received}) == 1


def test_concurrent_exports_from_several_threads(
    server: ScriptedServer, exporter: BrixoSignalExporter
) -> None:
    signals = [message_signal(f"m{index}") for index in range(40)]
    results: list[DeliveryStatus] = []
    results_lock = threading.Lock()

    def work(chunk: list[Signal]) -> None:
        for signal in chunk:
            status = exporter.export(signal).status
            with results_lock:
                results.append(status)

    threads = [threading.Thread(target=work, args=(signals[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [DeliveryStatus.DELIVERED] * 40
    assert sorted(r.headers["idempotency-key"] for r in server.received) == sorted(
        s.id for s in signals
    )


def test_deliveries_run_with_instrumentation_suppressed(server: ScriptedServer) -> None:
    seen: list[object] = []

    def hook(request: httpx.Request) -> None:
        seen.append(otel_context.get_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY))

    with httpx.Client(event_hooks={"request": [hook]}) as client:
        brixo = BrixoSignalExporter(KEY, server.url, client=client)
        brixo.export(message_signal())
    assert seen == [True]
    assert otel_context.get_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY) is None


# --- Brixo exporter: classifying answers ------------------------------------------------------

JSONAPI = {"Content-Type": "application/vnd.api+json"}


def jsonapi_errors(*details: str) -> bytes:
    return json.dumps(
        {"errors": [{"status": "400", "title": "Bad Request", "detail": d} for d in details]}
    ).encode()


@pytest.mark.parametrize(
    ("reply", "status", "reason", "retry_after"),
    [
        (Reply(204), DeliveryStatus.DELIVERED, "", None),
        (Reply(200, JSONAPI, b'{"data":null}'), DeliveryStatus.DELIVERED, "", None),
        (Reply(202), DeliveryStatus.DELIVERED, "", None),
        (
            Reply(400, JSONAPI, jsonapi_errors("value is not thumbs_up", "name is missing")),
            DeliveryStatus.PERMANENT,
            "HTTP 400: value is not thumbs_up; name is missing",
            None,
        ),
        (
            Reply(400, body=b"<html>bad</html>"),
            DeliveryStatus.PERMANENT,
            "HTTP 400: <html>bad</html>",
            None,
        ),
        (Reply(413), DeliveryStatus.PERMANENT, "HTTP 413", None),
        (
            Reply(415, JSONAPI, jsonapi_errors("wrong type")),
            DeliveryStatus.PERMANENT,
            "HTTP 415: wrong type",
            None,
        ),
        (Reply(422), DeliveryStatus.PERMANENT, "HTTP 422", None),
        (
            Reply(401, JSONAPI, jsonapi_errors("Invalid API key")),
            DeliveryStatus.UNAUTHORIZED,
            "HTTP 401: Invalid API key",
            None,
        ),
        (Reply(403), DeliveryStatus.UNAUTHORIZED, "HTTP 403", None),
        (
            Reply(404, JSONAPI, jsonapi_errors("Message not found")),
            DeliveryStatus.NOT_FOUND,
            "HTTP 404: Message not found",
            None,
        ),
        (Reply(408), DeliveryStatus.RETRY, "HTTP 408", None),
        (Reply(429, {"Retry-After": "7"}), DeliveryStatus.THROTTLED, "HTTP 429", 7.0),
        (Reply(429, {"Retry-After": "garbage"}), DeliveryStatus.THROTTLED, "HTTP 429", None),
        (Reply(503), DeliveryStatus.THROTTLED, "HTTP 503", None),
        (Reply(503, {"Retry-After": "1000000"}), DeliveryStatus.THROTTLED, "HTTP 503", 1e6),
        (Reply(500, body=b"oops"), DeliveryStatus.RETRY, "HTTP 500: oops", None),
        (Reply(502, {"Retry-After": "3"}), DeliveryStatus.RETRY, "HTTP 502", 3.0),
        (Reply(504), DeliveryStatus.RETRY, "HTTP 504", None),
        (
            Reply(301, {"Location": "https://elsewhere/"}),
            DeliveryStatus.RETRY,
            "HTTP 301: redirect to https://elsewhere/ not followed; check the URL",
            None,
        ),
    ],
    ids=lambda value: f"{value.status}" if isinstance(value, Reply) else None,
)
def test_answers_are_classified(
    server: ScriptedServer,
    exporter: BrixoSignalExporter,
    reply: Reply,
    status: DeliveryStatus,
    reason: str,
    retry_after: float | None,
) -> None:
    server.reply(reply)
    result = exporter.export(message_signal())
    assert (result.status, result.reason, result.retry_after) == (status, reason, retry_after)


def test_retry_after_as_an_http_date(server: ScriptedServer, exporter: BrixoSignalExporter) -> None:
    later = datetime.now(timezone.utc) + timedelta(seconds=120)
    server.reply(Reply(429, {"Retry-After": format_datetime(later, usegmt=True)}))
    result = exporter.export(message_signal())
    assert result.status is DeliveryStatus.THROTTLED
    assert result.retry_after is not None and 110 < result.retry_after <= 120


def test_long_error_bodies_are_truncated(
    server: ScriptedServer, exporter: BrixoSignalExporter
) -> None:
    server.reply(Reply(400, JSONAPI, jsonapi_errors("x" * 5000)), Reply(400, body=b"y" * 200_000))
    for _ in range(2):
        result = exporter.export(message_signal())
        assert result.status is DeliveryStatus.PERMANENT
        assert result.reason.startswith("HTTP 400: ") and result.reason.endswith("…")
        assert len(result.reason) <= len("HTTP 400: ") + 300


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"", ""),
        (b'{"errors": [{"title": "Bad Request"}]}', "Bad Request"),
        (b'{"errors": "nope"}', '{"errors": "nope"}'),
        (b'{"message": "quota exceeded"}', "quota exceeded"),
        (b"[1, 2]", "[1, 2]"),
        (b"\xff\xfe broken \n\n utf-8", "\ufffd\ufffd broken utf-8"),
    ],
)
def test_error_detail_tolerates_any_body(body: bytes, detail: str) -> None:
    assert error_detail(body) == detail


def test_a_key_echoed_by_the_server_never_reaches_the_reason(
    server: ScriptedServer, exporter: BrixoSignalExporter
) -> None:
    server.reply(
        Reply(401, JSONAPI, jsonapi_errors(f"key {KEY} is revoked")),
        Reply(400, body=f"Authorization: Bearer {KEY}".encode()),
    )
    unauthorized = exporter.export(message_signal())
    permanent = exporter.export(message_signal())
    assert unauthorized.status is DeliveryStatus.UNAUTHORIZED
    assert permanent.status is DeliveryStatus.PERMANENT
    for result in (unauthorized, permanent):
        assert KEY not in result.reason and "[redacted]" in result.reason


def test_connection_refused_is_retried() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    brixo = BrixoSignalExporter(KEY, f"http://127.0.0.1:{port}")
    try:
        result = brixo.export(message_signal())
    finally:
        brixo.shutdown()
    assert result.status is DeliveryStatus.RETRY
    assert result.reason.startswith("ConnectError")
    assert KEY not in result.reason


def test_connection_closed_without_an_answer_is_retried(
    server: ScriptedServer, exporter: BrixoSignalExporter
) -> None:
    server.reply(Reply(drop=True))
    result = exporter.export(message_signal())
    assert result.status is DeliveryStatus.RETRY
    assert result.reason.startswith("RemoteProtocolError")
    # The pool recovers: the next export opens a fresh connection.
    assert exporter.export(message_signal()).status is DeliveryStatus.DELIVERED


def test_read_timeout_is_retried(server: ScriptedServer) -> None:
    server.reply(Reply(hang=5.0))
    brixo = BrixoSignalExporter(KEY, server.url, timeout=httpx.Timeout(0.3, connect=1.0))
    try:
        result = brixo.export(message_signal())
    finally:
        brixo.shutdown()
    assert result.status is DeliveryStatus.RETRY
    assert result.reason.startswith("ReadTimeout")


def test_timeout_applies_to_a_callers_client(server: ScriptedServer) -> None:
    server.reply(Reply(hang=5.0))
    with httpx.Client() as client:
        brixo = BrixoSignalExporter(KEY, server.url, client=client, timeout=httpx.Timeout(0.3))
        result = brixo.export(message_signal())
    assert result.status is DeliveryStatus.RETRY
    assert result.reason.startswith("ReadTimeout")


def test_export_after_shutdown_does_not_raise(server: ScriptedServer) -> None:
    brixo = BrixoSignalExporter(KEY, server.url)
    brixo.shutdown()
    result = brixo.export(message_signal())
    assert result.status is DeliveryStatus.RETRY
    assert "closed" in result.reason


def test_a_callers_client_is_used_and_left_open(server: ScriptedServer) -> None:
    with httpx.Client() as client:
        brixo = BrixoSignalExporter(KEY, server.url, client=client)
        assert brixo.export(message_signal()).status is DeliveryStatus.DELIVERED
        brixo.shutdown()
        assert not client.is_closed
        assert brixo.export(message_signal()).status is DeliveryStatus.DELIVERED
    assert len(server.received) == 2


def test_our_own_client_sends_straight_to_its_pool_the_same_request(
    server: ScriptedServer, exporter: BrixoSignalExporter
) -> None:
    # Our own client's requests skip httpx's client layer; a caller's client never does. What
    # reaches the server is the same either way, header for header.
    assert exporter._api.pool is not None
    with httpx.Client() as client:
        through_client = BrixoSignalExporter(KEY, server.url, client=client)
        assert through_client._api.pool is None
        signal = message_signal("a/b ü", user_message="ok")
        assert exporter.export(signal).status is DeliveryStatus.DELIVERED
        assert through_client.export(signal).status is DeliveryStatus.DELIVERED
    direct, ordinary = server.received
    assert (direct.method, direct.path, direct.body) == (
        ordinary.method,
        ordinary.path,
        ordinary.body,
    )
    assert direct.headers == ordinary.headers
    assert direct.headers["idempotency-key"] == signal.id


def test_a_compressed_error_answer_is_read_decoded(
    server: ScriptedServer, exporter: BrixoSignalExporter
) -> None:
    body = gzip.compress(json.dumps({"errors": [{"detail": "value is not allowed"}]}).encode())
    server.reply(Reply(422, {"Content-Encoding": "gzip", **JSONAPI}, body))
    result = exporter.export(message_signal())
    assert (result.status, result.reason) == (
        DeliveryStatus.PERMANENT,
        "HTTP 422: value is not allowed",
    )


def test_a_success_body_is_read_so_the_connection_is_kept(
    server: ScriptedServer, exporter: BrixoSignalExporter
) -> None:
    server.reply(Reply(202, JSONAPI, b'{"data": {"id": "s1"}}' * 100), Reply(201, body=b"x"))
    for _ in range(3):
        assert exporter.export(message_signal()).status is DeliveryStatus.DELIVERED
    assert len({request.client_port for request in server.received}) == 1


def test_debug_logs_show_path_and_status_but_no_key_or_user_text(
    server: ScriptedServer, exporter: BrixoSignalExporter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.reply(Reply(401, JSONAPI, jsonapi_errors(f"bad key {KEY}")), Reply(drop=True))
    for _ in range(3):
        exporter.export(message_signal(user_message="secret opinion"))
    messages = [record.getMessage() for record in caplog.records]
    assert any("POST /v1/messages/msg_1042/signals -> 401" in m for m in messages)
    assert any("failed after" in m and "RemoteProtocolError" in m for m in messages)
    assert any("-> 204" in m for m in messages)
    for record in caplog.records:
        texts = [record.getMessage(), str(record.msg), *map(str, record.args or ())]
        assert not any(KEY in text or "secret opinion" in text for text in texts), record


# --- console and in-memory exporters ----------------------------------------------------------


def test_console_writes_one_json_line_per_signal() -> None:
    stream = io.StringIO()
    console = ConsoleSignalExporter(stream)
    first = message_signal(user_message="nice")
    second = validate(THUMBS_DOWN, conversation_id="c9", occurred_at=OCCURRED)
    assert console.export(first).status is DeliveryStatus.DELIVERED
    assert console.export(second).status is DeliveryStatus.DELIVERED
    lines = stream.getvalue().splitlines()
    assert [Signal.from_json(line) for line in lines] == [first, second]
    assert console.name == "console"


def test_console_defaults_to_the_current_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    console = ConsoleSignalExporter(name="dev")
    signal = message_signal()
    console.export(signal)
    assert json.loads(capsys.readouterr().out)["id"] == signal.id
    assert sys.stdout is not None and console.name == "dev"


def test_console_on_a_closed_stream_keeps_the_signal() -> None:
    stream = io.StringIO()
    stream.close()
    result = ConsoleSignalExporter(stream).export(message_signal())
    assert result.status is DeliveryStatus.RETRY


def test_in_memory_records_from_many_threads() -> None:
    memory = InMemorySignalExporter()
    signals = [message_signal(f"m{index}") for index in range(800)]

    def work(chunk: list[Signal]) -> None:
        for signal in chunk:
            assert memory.export(signal).status is DeliveryStatus.DELIVERED

    threads = [threading.Thread(target=work, args=(signals[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(s.id for s in memory.signals()) == sorted(s.id for s in signals)
    assert memory.name == "memory"


def test_in_memory_returns_copies_and_clears() -> None:
    memory = InMemorySignalExporter(name="spy")
    signal = message_signal()
    memory.export(signal)
    snapshot = memory.signals()
    snapshot.clear()
    assert memory.signals() == [signal]
    memory.clear()
    assert memory.signals() == []
    assert repr(memory) == "InMemorySignalExporter(name='spy')"


# --- against the Brixo-compatible test server -------------------------------------------------


@pytest.fixture
def brixo() -> Iterator[BrixoTestServer]:
    with BrixoTestServer() as running:
        yield running


@pytest.fixture
def brixo_exporter(brixo: BrixoTestServer) -> Iterator[BrixoSignalExporter]:
    exporter = BrixoSignalExporter(brixo.api_key, brixo.url)
    yield exporter
    exporter.shutdown()


def received_as_sent(signal: Signal, brixo: BrixoTestServer) -> ReceivedSignal:
    (received,) = brixo.signals()
    return ReceivedSignal(
        target=signal.target,
        target_id=signal.target_id,
        name="feedback",
        value=signal.value,
        occurred_at="2026-02-03T14:22:10.123Z",
        user_message=signal.user_message,
        idempotency_key=signal.id,
        received_at=received.received_at,
    )


def test_brixo_server_stores_the_signal_with_its_headers(
    brixo: BrixoTestServer, brixo_exporter: BrixoSignalExporter
) -> None:
    brixo.register_message("msg_1042")
    signal = message_signal(user_message="Love this product!")
    assert brixo_exporter.export(signal) == DeliveryResult.delivered()
    assert brixo.signals() == [received_as_sent(signal, brixo)]
    (request,) = brixo.requests()
    assert (request.method, request.path, request.status) == (
        "POST",
        "/v1/messages/msg_1042/signals",
        204,
    )
    assert request.headers["authorization"] == "Bearer test-key"
    assert request.headers["content-type"] == "application/vnd.api+json"
    assert request.headers["accept"] == "application/vnd.api+json"
    assert request.headers["user-agent"] == (
        f"brixo-otel/{__version__} python-httpx/{httpx.__version__}"
    )
    assert request.headers["idempotency-key"] == signal.id


@pytest.mark.parametrize("identifier", ["conv/42 ünï🙂", "a?b#c%2F..", ".."])
def test_brixo_server_receives_awkward_ids_intact(
    brixo: BrixoTestServer, brixo_exporter: BrixoSignalExporter, identifier: str
) -> None:
    brixo.register_message(identifier)
    signal = message_signal(identifier)
    assert brixo_exporter.export(signal).status is DeliveryStatus.DELIVERED
    assert brixo.signals() == [received_as_sent(signal, brixo)]


def test_brixo_server_conversation_signal(
    brixo: BrixoTestServer, brixo_exporter: BrixoSignalExporter
) -> None:
    brixo.register_conversation("conv/abc 123")
    signal = validate(THUMBS_DOWN, conversation_id="conv/abc 123", occurred_at=OCCURRED)
    assert brixo_exporter.export(signal).status is DeliveryStatus.DELIVERED
    assert brixo.signals() == [received_as_sent(signal, brixo)]
    assert brixo.requests()[0].path == "/v1/conversations/conv%2Fabc%20123/signals"


def test_brixo_server_deduplicates_a_resent_signal(
    brixo: BrixoTestServer, brixo_exporter: BrixoSignalExporter
) -> None:
    brixo.register_message("msg_1042")
    signal = message_signal()
    for _ in range(2):
        assert brixo_exporter.export(signal).status is DeliveryStatus.DELIVERED
    assert len(brixo.signals()) == 1 and brixo.duplicate_count() == 1


def test_brixo_server_wrong_key_is_unauthorized_and_never_logged(
    brixo: BrixoTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    brixo.register_message("msg_1042")
    exporter = BrixoSignalExporter(KEY, brixo.url)
    try:
        result = exporter.export(message_signal(user_message="private words"))
    finally:
        exporter.shutdown()
    assert result.status is DeliveryStatus.UNAUTHORIZED
    assert result.reason.startswith("HTTP 401") and KEY not in result.reason
    assert brixo.signals() == []
    assert caplog.records, "expected the debug log of the request"
    for record in caplog.records:
        texts = [record.getMessage(), str(record.msg), *map(str, record.args or ())]
        assert not any(KEY in text or "private words" in text for text in texts), record


def test_brixo_server_unknown_id_is_not_found(
    brixo: BrixoTestServer, brixo_exporter: BrixoSignalExporter
) -> None:
    result = brixo_exporter.export(message_signal("never-traced"))
    assert result.status is DeliveryStatus.NOT_FOUND
    assert result.reason.startswith("HTTP 404")


@pytest.mark.parametrize(
    ("status", "retry_after", "expected", "expected_retry_after"),
    [
        (400, None, DeliveryStatus.PERMANENT, None),
        (413, None, DeliveryStatus.PERMANENT, None),
        (401, None, DeliveryStatus.UNAUTHORIZED, None),
        (403, None, DeliveryStatus.UNAUTHORIZED, None),
        (404, None, DeliveryStatus.NOT_FOUND, None),
        (408, None, DeliveryStatus.RETRY, None),
        (429, "5", DeliveryStatus.THROTTLED, 5.0),
        (429, "garbage", DeliveryStatus.THROTTLED, None),
        (503, "1000000", DeliveryStatus.THROTTLED, 1e6),
        (503, None, DeliveryStatus.THROTTLED, None),
        (500, None, DeliveryStatus.RETRY, None),
        (502, "2", DeliveryStatus.RETRY, 2.0),
        (504, None, DeliveryStatus.RETRY, None),
    ],
)
def test_brixo_server_faults_are_classified(
    brixo: BrixoTestServer,
    brixo_exporter: BrixoSignalExporter,
    status: int,
    retry_after: str | None,
    expected: DeliveryStatus,
    expected_retry_after: float | None,
) -> None:
    brixo.register_message("msg_1042")
    brixo.fail_next(1, status, retry_after=retry_after)
    result = brixo_exporter.export(message_signal())
    assert (result.status, result.retry_after) == (expected, expected_retry_after)
    assert result.reason.startswith(f"HTTP {status}")
    # The fault was one-shot: the same signal goes through next time.
    assert brixo_exporter.export(message_signal()).status is DeliveryStatus.DELIVERED


def test_brixo_server_error_detail_reaches_the_reason(
    brixo: BrixoTestServer, brixo_exporter: BrixoSignalExporter
) -> None:
    brixo.register_message("msg_1042")
    brixo.fail_next(1, 400, body={"errors": [{"status": "400", "detail": "value is not allowed"}]})
    result = brixo_exporter.export(message_signal())
    assert result == DeliveryResult(
        DeliveryStatus.PERMANENT, "HTTP 400: value is not allowed", http_status=400
    )


def test_brixo_server_dropped_connection_is_retried(
    brixo: BrixoTestServer, brixo_exporter: BrixoSignalExporter
) -> None:
    brixo.register_message("msg_1042")
    brixo.drop_next(1)
    result = brixo_exporter.export(message_signal())
    assert result.status is DeliveryStatus.RETRY
    assert result.reason.startswith("RemoteProtocolError")
    assert brixo_exporter.export(message_signal()).status is DeliveryStatus.DELIVERED


def test_brixo_server_hang_past_the_read_timeout_is_retried(brixo: BrixoTestServer) -> None:
    brixo.register_message("msg_1042")
    brixo.hang_next(1, 2.0)
    exporter = BrixoSignalExporter(
        brixo.api_key, brixo.url, timeout=httpx.Timeout(0.3, connect=1.0)
    )
    try:
        result = exporter.export(message_signal())
    finally:
        exporter.shutdown()
    assert result.status is DeliveryStatus.RETRY
    assert result.reason.startswith("ReadTimeout")
