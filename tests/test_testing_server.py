"""The local Brixo server, driven over real sockets as the clients under test will drive it."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.util.types import AttributeValue

from brixo_otel.testing import BrixoTestServer, ReceivedSignal, ReceivedSpan, SpanCapture
from tests._services import wait_for

JSON_API = "application/vnd.api+json"
HEADERS = {"Authorization": "Bearer test-key", "Content-Type": JSON_API}


def signal_body(**attributes: Any) -> dict[str, Any]:
    return {
        "data": {
            "type": "signals",
            "attributes": {"name": "feedback", "value": "thumbs_up", **attributes},
        }
    }


def post_signal(
    client: httpx.Client,
    target_id: str = "msg_1",
    body: Any = None,
    *,
    collection: str = "messages",
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> httpx.Response:
    content = raw if raw is not None else json.dumps(signal_body() if body is None else body)
    return client.post(
        f"/v1/{collection}/{quote(target_id, safe='')}/signals",
        content=content,
        headers=headers,
    )


def connect(
    server: BrixoTestServer, headers: dict[str, str] = HEADERS, timeout: float = 5.0
) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=headers, timeout=timeout)


@pytest.fixture
def server(brixo_server: BrixoTestServer) -> BrixoTestServer:
    brixo_server.register_message("msg_1")
    brixo_server.register_conversation("conv_1")
    return brixo_server


@pytest.fixture
def client(server: BrixoTestServer) -> Iterator[httpx.Client]:
    with connect(server) as client:
        yield client


def assert_error(response: httpx.Response, status: int, detail: str = "") -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == JSON_API
    (error,) = response.json()["errors"]
    assert error["status"] == str(status)
    assert error["title"]
    assert detail in error["detail"]


# -- success ----------------------------------------------------------------------------------


def test_message_signal_is_stored_with_every_field(
    server: BrixoTestServer, client: httpx.Client
) -> None:
    before = time.time()
    body = signal_body(
        value="thumbs_down", occurred_at="2026-02-03T14:22:10Z", user_message="Love it"
    )
    response = post_signal(client, body=body, headers={"Idempotency-Key": "key-1"})

    assert response.status_code == 204
    assert response.content == b""
    (signal,) = server.signals()
    assert signal == ReceivedSignal(
        target="message",
        target_id="msg_1",
        name="feedback",
        value="thumbs_down",
        occurred_at="2026-02-03T14:22:10Z",
        user_message="Love it",
        idempotency_key="key-1",
        received_at=signal.received_at,
    )
    assert before <= signal.received_at <= time.time()


def test_conversation_signal_without_optional_fields(
    server: BrixoTestServer, client: httpx.Client
) -> None:
    response = post_signal(client, "conv_1", collection="conversations")

    assert response.status_code == 204
    (signal,) = server.signals()
    assert (signal.target, signal.target_id) == ("conversation", "conv_1")
    assert signal.occurred_at is None
    assert signal.user_message is None
    assert signal.idempotency_key is None


@pytest.mark.parametrize(
    "occurred_at",
    [
        "2026-02-03T14:22:10Z",
        "2026-02-03t14:22:10z",
        "2026-02-03T14:22:10.123456789+05:30",
        "2026-02-03T14:22:10-00:00",
        "2016-12-31T23:59:60Z",
    ],
)
def test_valid_rfc3339_timestamps_are_stored_as_sent(
    server: BrixoTestServer, client: httpx.Client, occurred_at: str
) -> None:
    assert post_signal(client, body=signal_body(occurred_at=occurred_at)).status_code == 204
    assert server.signals()[0].occurred_at == occurred_at


@pytest.mark.parametrize(
    "target_id",
    ["a/b/c", "with space", "ünïcødé 💬", "100%", "q?x=1#frag", "+plus+", "dots.in.id"],
)
def test_ids_round_trip_exactly(server: BrixoTestServer, target_id: str) -> None:
    server.register_message(target_id)
    with connect(server) as client:
        response = post_signal(client, target_id)

    assert response.status_code == 204
    assert server.signals()[0].target_id == target_id


def test_keep_alive_connection_serves_requests_after_errors(
    server: BrixoTestServer, client: httpx.Client
) -> None:
    statuses = [
        post_signal(client, headers={"Authorization": "Bearer nope"}).status_code,
        post_signal(client, raw=b"{").status_code,
        client.get("/v1/messages/msg_1/signals").status_code,
        post_signal(client).status_code,
    ]

    assert statuses == [401, 400, 405, 204]


# -- errors -----------------------------------------------------------------------------------

ATTRS = {"name": "feedback", "value": "thumbs_up"}


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (b"not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[]", "JSON object"),
        (b"{}", "`data` is required"),
        (json.dumps({"data": "x"}).encode(), "`data` must be an object"),
        (json.dumps({"data": {"attributes": ATTRS}}).encode(), "`data.type` is required"),
        (json.dumps({"data": {"type": "signal", "attributes": ATTRS}}).encode(), '"signals"'),
        (json.dumps({"data": {"type": "signals"}}).encode(), "`data.attributes` is required"),
        (json.dumps({"data": {"type": "signals", "attributes": []}}).encode(), "an object"),
        (
            json.dumps(
                {"data": {"type": "signals", "attributes": {"value": "thumbs_up"}}}
            ).encode(),
            "name` is required",
        ),
        (json.dumps(signal_body(name="rating")).encode(), '"feedback"'),
        (json.dumps(signal_body(name=["feedback"])).encode(), '"feedback"'),
        (
            json.dumps({"data": {"type": "signals", "attributes": {"name": "feedback"}}}).encode(),
            "value` is required",
        ),
        (json.dumps(signal_body(value="thumbs_sideways")).encode(), "thumbs_up"),
        (json.dumps(signal_body(value=1)).encode(), "thumbs_up"),
        (json.dumps(signal_body(occurred_at="2026-02-03T14:22:10")).encode(), "RFC 3339"),
        (json.dumps(signal_body(occurred_at="2026-02-03 14:22:10Z")).encode(), "RFC 3339"),
        (json.dumps(signal_body(occurred_at="2026-02-30T00:00:00Z")).encode(), "RFC 3339"),
        (json.dumps(signal_body(occurred_at="2026-02-03T24:00:00Z")).encode(), "RFC 3339"),
        (json.dumps(signal_body(occurred_at="2026-02-03T14:22:10+24:00")).encode(), "RFC 3339"),
        (json.dumps(signal_body(occurred_at="yesterday")).encode(), "RFC 3339"),
        (json.dumps(signal_body(occurred_at=1738592530)).encode(), "RFC 3339"),
        (json.dumps(signal_body(occurred_at=None)).encode(), "RFC 3339"),
        (json.dumps(signal_body(user_message=42)).encode(), "user_message` must be a string"),
        (json.dumps(signal_body(user_message=None)).encode(), "user_message` must be a string"),
    ],
)
def test_each_body_rule_answers_400_and_stores_nothing(
    server: BrixoTestServer, client: httpx.Client, raw: bytes, detail: str
) -> None:
    assert_error(post_signal(client, raw=raw), 400, detail)
    assert server.signals() == []


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", "Basic test-key", "Bearer", "test-key"]
)
def test_missing_or_wrong_api_key_answers_401(
    server: BrixoTestServer, authorization: str | None
) -> None:
    headers = {"Content-Type": JSON_API}
    if authorization is not None:
        headers["Authorization"] = authorization
    with connect(server, headers) as client:
        response = post_signal(client)

    assert_error(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"
    assert server.signals() == []


def test_bearer_scheme_is_case_insensitive(client: httpx.Client) -> None:
    assert post_signal(client, headers={"Authorization": "bearer test-key"}).status_code == 204


def test_no_api_key_means_no_auth() -> None:
    with BrixoTestServer(api_key=None, require_known_ids=False) as server:
        with connect(server, headers={"Content-Type": JSON_API}) as client:
            assert post_signal(client).status_code == 204
        assert server.api_key is None
        assert len(server.signals()) == 1


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", None])
def test_wrong_content_type_answers_415(server: BrixoTestServer, content_type: str | None) -> None:
    headers = {"Authorization": "Bearer test-key"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    with connect(server, headers) as client:
        assert_error(post_signal(client), 415, JSON_API)
    assert server.signals() == []


def test_content_type_parameters_are_accepted(client: httpx.Client) -> None:
    headers = {"Content-Type": f"{JSON_API}; charset=utf-8"}
    assert post_signal(client, headers=headers).status_code == 204


def test_body_over_the_limit_answers_413_without_reading_it() -> None:
    with BrixoTestServer(max_body_bytes=200, require_known_ids=False) as server:
        with connect(server) as client:
            too_big = post_signal(client, body=signal_body(user_message="x" * 500))
            just_fits = post_signal(client, body=signal_body(user_message="x" * 50))

        assert_error(too_big, 413, "200 bytes")
        assert too_big.headers["connection"] == "close"
        assert just_fits.status_code == 204
        assert [s.user_message for s in server.signals()] == ["x" * 50]


def test_chunked_bodies_are_refused_with_411(server: BrixoTestServer, client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield json.dumps(signal_body()).encode()

    response = client.post("/v1/messages/msg_1/signals", content=chunks())

    assert_error(response, 411, "Content-Length")
    assert response.headers["connection"] == "close"
    assert post_signal(client).status_code == 204


def test_unknown_ids_answer_404(server: BrixoTestServer, client: httpx.Client) -> None:
    assert_error(post_signal(client, "msg_unknown"), 404, "msg_unknown")
    assert_error(post_signal(client, "conv_unknown", collection="conversations"), 404)
    # A conversation id is not a message id.
    assert_error(post_signal(client, "conv_1"), 404)
    assert server.signals() == []


def test_require_known_ids_false_accepts_any_id() -> None:
    with BrixoTestServer(require_known_ids=False) as server:
        with connect(server) as client:
            assert post_signal(client, "never-seen").status_code == 204


@pytest.mark.parametrize(
    "path",
    [
        "/v1/messages/msg_1",
        "/v1/messages//signals",
        "/v1/messages/msg_1/signals/extra",
        "/v1/users/msg_1/signals",
        "/v2/messages/msg_1/signals",
        "/",
    ],
)
def test_other_paths_answer_404(client: httpx.Client, path: str) -> None:
    assert_error(client.post(path, content=json.dumps(signal_body())), 404)


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_other_methods_answer_405(client: httpx.Client, method: str) -> None:
    response = client.request(method, "/v1/messages/msg_1/signals")
    assert_error(response, 405)
    assert response.headers["allow"] == "POST"


def test_checks_run_auth_then_content_type_then_body_then_id(client: httpx.Client) -> None:
    bad = {"Authorization": "Bearer wrong", "Content-Type": "text/plain"}
    assert post_signal(client, "nope", raw=b"{", headers=bad).status_code == 401
    assert post_signal(client, "nope", raw=b"{", headers={"Content-Type": "x/y"}).status_code == 415
    assert post_signal(client, "nope", raw=b"{").status_code == 400
    assert post_signal(client, "nope").status_code == 404


# -- idempotency ------------------------------------------------------------------------------


def test_repeated_idempotency_key_is_acknowledged_but_stored_once(
    server: BrixoTestServer, client: httpx.Client
) -> None:
    statuses = [
        post_signal(client, headers={"Idempotency-Key": key}).status_code
        for key in ["k1", "k1", "k2", "k1"]
    ]

    assert statuses == [204, 204, 204, 204]
    assert [s.idempotency_key for s in server.signals()] == ["k1", "k2"]
    assert server.duplicate_count() == 2


def test_signals_without_idempotency_key_are_all_stored(
    server: BrixoTestServer, client: httpx.Client
) -> None:
    for _ in range(3):
        assert post_signal(client).status_code == 204
    assert len(server.signals()) == 3
    assert server.duplicate_count() == 0


# -- what the server records ------------------------------------------------------------------


def test_requests_are_recorded_with_lower_case_headers(
    server: BrixoTestServer, client: httpx.Client
) -> None:
    post_signal(client, "a/b", headers={"X-Trace": "t1"})
    post_signal(client)

    first, second = server.requests()
    assert (first.method, first.path, first.status) == ("POST", "/v1/messages/a%2Fb/signals", 404)
    assert first.headers["x-trace"] == "t1"
    assert first.headers["authorization"] == "Bearer test-key"
    assert all(name == name.lower() for name in first.headers)
    assert second.status == 204
    assert first.received_at <= second.received_at


def test_wait_for_signals_returns_what_it_has_at_timeout(
    server: BrixoTestServer, client: httpx.Client
) -> None:
    post_signal(client)
    started = time.monotonic()

    assert len(server.wait_for_signals(1)) == 1
    assert len(server.wait_for_signals(2, timeout=0.2)) == 1
    assert time.monotonic() - started < 2


def test_wait_for_signals_sees_signals_sent_from_another_thread(
    server: BrixoTestServer,
) -> None:
    def send() -> None:
        time.sleep(0.05)
        with connect(server) as client:
            for _ in range(3):
                post_signal(client)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        assert len(server.wait_for_signals(3, timeout=5)) == 3
    finally:
        sender.join(timeout=5)


def test_register_rejects_non_string_ids(server: BrixoTestServer) -> None:
    with pytest.raises(TypeError):
        server.register_message(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        server.register_conversation("")


def test_known_ids_include_registered_ones(server: BrixoTestServer) -> None:
    assert server.known_message_ids() == {"msg_1"}
    assert server.known_conversation_ids() == {"conv_1"}


# -- faults -----------------------------------------------------------------------------------


def test_fail_next_answers_the_status_with_retry_after_and_stores_nothing(
    server: BrixoTestServer, client: httpx.Client
) -> None:
    server.fail_next(2, 503, retry_after="7")
    server.fail_next(1, 429, body={"errors": [{"status": "429", "detail": "slow down"}]})

    first, second, third, fourth = (post_signal(client) for _ in range(4))

    assert_error(first, 503)
    assert first.headers["retry-after"] == "7"
    assert second.status_code == 503
    assert third.status_code == 429
    assert third.json() == {"errors": [{"status": "429", "detail": "slow down"}]}
    assert "retry-after" not in third.headers
    assert fourth.status_code == 204
    assert len(server.signals()) == 1


def test_drop_next_closes_without_answering(server: BrixoTestServer, client: httpx.Client) -> None:
    server.drop_next(1)

    with pytest.raises(httpx.TransportError):
        post_signal(client)
    assert post_signal(client).status_code == 204
    dropped, answered = server.requests()
    assert dropped.status is None
    assert answered.status == 204
    assert len(server.signals()) == 1


def test_hang_next_delays_then_answers_normally(
    server: BrixoTestServer, client: httpx.Client
) -> None:
    server.hang_next(1, 0.3)

    started = time.monotonic()
    hung = post_signal(client)
    hung_for = time.monotonic() - started
    started = time.monotonic()
    normal = post_signal(client)

    assert hung.status_code == normal.status_code == 204
    assert hung_for >= 0.3
    assert time.monotonic() - started < 0.3
    assert len(server.signals()) == 2


def test_latency_is_added_to_every_signal_answer(
    server: BrixoTestServer, client: httpx.Client
) -> None:
    server.set_latency(0.15)
    for expected in (204, 404):
        started = time.monotonic()
        response = post_signal(client, "msg_1" if expected == 204 else "nope")
        assert response.status_code == expected
        assert time.monotonic() - started >= 0.15
    server.set_latency(0)
    started = time.monotonic()
    post_signal(client)
    assert time.monotonic() - started < 0.15


def test_fail_randomly_fails_before_storing_and_repeats_with_a_seed(
    server: BrixoTestServer, client: httpx.Client
) -> None:
    def run() -> list[int]:
        server.fail_randomly(0.5, status=502, seed=7)
        return [post_signal(client).status_code for _ in range(30)]

    first = run()
    stored_after_first = len(server.signals())
    server.reset_faults()
    second = run()

    assert set(first) == {204, 502}
    assert first == second
    assert stored_after_first == first.count(204)
    assert len(server.signals()) == 2 * first.count(204)


def test_fail_randomly_at_full_rate_fails_every_request(
    server: BrixoTestServer, client: httpx.Client
) -> None:
    server.fail_randomly(1.0, status=429)
    assert {post_signal(client).status_code for _ in range(5)} == {429}
    assert server.signals() == []


@pytest.mark.parametrize(
    ("knob", "status"),
    [("fail_next", 503), ("fail_randomly", 503), ("hang_next", 401), ("drop_next", None)],
)
def test_faults_apply_before_auth_and_validation(
    server: BrixoTestServer, knob: str, status: int | None
) -> None:
    if knob == "fail_next":
        server.fail_next(1, 503)
    elif knob == "fail_randomly":
        server.fail_randomly(1.0)
    elif knob == "hang_next":
        server.hang_next(1, 0.01)
    else:
        server.drop_next(1)
    headers = {"Authorization": "Bearer wrong", "Content-Type": "text/plain"}
    with connect(server, headers) as client:
        if status is None:
            with pytest.raises(httpx.TransportError):
                post_signal(client, "nope", raw=b"{")
        else:
            assert post_signal(client, "nope", raw=b"{").status_code == status


def test_reset_faults_clears_every_knob(server: BrixoTestServer, client: httpx.Client) -> None:
    server.fail_next(3, 500)
    server.drop_next(3)
    server.hang_next(3, 5)
    server.set_latency(5)
    server.fail_randomly(1.0)
    server.reset_faults()

    started = time.monotonic()
    assert post_signal(client).status_code == 204
    assert time.monotonic() - started < 1


def test_faults_leave_the_otlp_receiver_alone(
    server: BrixoTestServer, client: httpx.Client
) -> None:
    server.fail_next(1, 503)
    server.set_latency(1)
    started = time.monotonic()
    response = client.post(
        "/v1/traces",
        content=b"{}",
        headers={"Content-Type": "application/json", "Brixo-Auth": "Bearer test-key"},
    )

    assert response.status_code == 200
    assert time.monotonic() - started < 1


@pytest.mark.parametrize(
    ("call", "args"),
    [
        ("fail_next", (-1, 503)),
        ("fail_next", (1, 42)),
        ("drop_next", (1.5,)),
        ("hang_next", (1, -1)),
        ("set_latency", (float("nan"),)),
        ("fail_randomly", (1.5,)),
    ],
)
def test_fault_knobs_reject_bad_arguments(
    server: BrixoTestServer, call: str, args: tuple[Any, ...]
) -> None:
    with pytest.raises(ValueError):
        getattr(server, call)(*args)


# -- OTLP receiver ----------------------------------------------------------------------------


SDK_ATTRIBUTES: dict[str, AttributeValue] = {
    "brixo.message_id": "msg-otel",
    "gen_ai.conversation.id": "conv-otel",
    "brixo.session_id": "session-otel",
    "gen_ai.usage.input_tokens": 12,
    "stream": True,
    "temperature": 0.5,
    "tags": ("a", "b"),
}


def export_with_sdk(
    server: BrixoTestServer, compression: Compression = Compression.NoCompression
) -> tuple[int, int, int]:
    """Export a parent and a child span through the SDK's own OTLP/HTTP exporter."""
    exporter = OTLPSpanExporter(
        endpoint=server.traces_endpoint,
        headers={"Brixo-Auth": "Bearer test-key"},
        compression=compression,
        timeout=5,
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "chat-app"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    try:
        with tracer.start_as_current_span("interaction") as parent:
            with tracer.start_as_current_span(
                "chat gpt-4o",
                attributes=SDK_ATTRIBUTES,
            ) as child:
                pass
    finally:
        provider.shutdown()
    return (
        parent.get_span_context().trace_id,
        parent.get_span_context().span_id,
        child.get_span_context().span_id,
    )


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_otlp_protobuf_spans_are_stored_and_teach_ids(
    server: BrixoTestServer, compression: Compression
) -> None:
    trace_id, parent_id, child_id = export_with_sdk(server, compression)

    child, parent = sorted(server.spans(), key=lambda span: span.name)
    assert child == ReceivedSpan(
        trace_id=format(trace_id, "032x"),
        span_id=format(child_id, "016x"),
        parent_span_id=format(parent_id, "016x"),
        name="chat gpt-4o",
        attributes={**SDK_ATTRIBUTES, "tags": ["a", "b"]},  # a sequence comes back a list
        resource_attributes=child.resource_attributes,
    )
    assert child.resource_attributes["service.name"] == "chat-app"
    assert parent.parent_span_id is None
    assert server.known_message_ids() == {"msg_1", "msg-otel"}
    assert server.known_conversation_ids() == {"conv_1", "conv-otel", "session-otel"}

    exports = [r for r in server.requests() if r.path == "/v1/traces"]
    assert len(exports) == 2  # SimpleSpanProcessor exports span by span
    for request in exports:
        assert request.status == 200
        assert request.headers["brixo-auth"] == "Bearer test-key"
        assert request.headers["content-type"] == "application/x-protobuf"


def test_ids_learned_from_otlp_make_signals_succeed(
    server: BrixoTestServer, client: httpx.Client
) -> None:
    assert post_signal(client, "msg-otel").status_code == 404
    export_with_sdk(server)

    assert post_signal(client, "msg-otel").status_code == 204
    assert post_signal(client, "conv-otel", collection="conversations").status_code == 204
    assert post_signal(client, "session-otel", collection="conversations").status_code == 204


OTLP_JSON = {
    "resourceSpans": [
        {
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "js"}}]},
            "scopeSpans": [
                {
                    "scope": {"name": "manual"},
                    "spans": [
                        {
                            "traceId": "5B8EFFF798038103D269B633813FC60C",
                            "spanId": "eee19b7ec3c1b174",
                            "parentSpanId": "",
                            "name": "chat",
                            "kind": 3,
                            "attributes": [
                                {"key": "brixo.message_id", "value": {"stringValue": "msg-js"}},
                                {"key": "n", "value": {"intValue": "42"}},
                                {"key": "m", "value": {"intValue": 7}},
                                {"key": "ok", "value": {"boolValue": True}},
                                {"key": "ratio", "value": {"doubleValue": 0.25}},
                                {"key": "inf", "value": {"doubleValue": "Infinity"}},
                                {"key": "raw", "value": {"bytesValue": "AAE="}},
                                {"key": "empty", "value": {}},
                                {
                                    "key": "tags",
                                    "value": {
                                        "arrayValue": {
                                            "values": [{"stringValue": "a"}, {"intValue": "1"}]
                                        }
                                    },
                                },
                                {
                                    "key": "meta",
                                    "value": {
                                        "kvlistValue": {
                                            "values": [{"key": "k", "value": {"stringValue": "v"}}]
                                        }
                                    },
                                },
                            ],
                        },
                        {
                            "trace_id": "5b8efff798038103d269b633813fc60c",
                            "span_id": "00f067aa0ba902b7",
                            "parent_span_id": "eee19b7ec3c1b174",
                            "name": "tool",
                        },
                    ],
                }
            ],
        }
    ]
}


@pytest.mark.parametrize("gzipped", [False, True])
def test_otlp_json_spans_are_stored(
    server: BrixoTestServer, client: httpx.Client, gzipped: bool
) -> None:
    content = json.dumps(OTLP_JSON).encode()
    headers = {"Content-Type": "application/json", "Brixo-Auth": "Bearer test-key"}
    if gzipped:
        content = gzip.compress(content)
        headers["Content-Encoding"] = "gzip"

    response = client.post("/v1/traces", content=content, headers=headers)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {}
    chat, tool = server.spans()
    assert chat == ReceivedSpan(
        trace_id="5b8efff798038103d269b633813fc60c",
        span_id="eee19b7ec3c1b174",
        parent_span_id=None,
        name="chat",
        attributes={
            "brixo.message_id": "msg-js",
            "n": 42,
            "m": 7,
            "ok": True,
            "ratio": 0.25,
            "inf": float("inf"),
            "raw": b"\x00\x01",
            "empty": None,
            "tags": ["a", 1],
            "meta": {"k": "v"},
        },
        resource_attributes={"service.name": "js"},
    )
    assert tool.parent_span_id == "eee19b7ec3c1b174"
    assert tool.attributes == {}
    assert "msg-js" in server.known_message_ids()


@pytest.mark.parametrize("brixo_auth", [None, "Bearer wrong", "test-key"])
def test_otlp_without_the_brixo_auth_header_answers_401(
    server: BrixoTestServer, client: httpx.Client, brixo_auth: str | None
) -> None:
    headers = {"Content-Type": "application/json"}
    if brixo_auth is not None:
        headers["Brixo-Auth"] = brixo_auth
    # The Signals API's header does not stand in for Brixo-Auth.
    response = client.post("/v1/traces", content=json.dumps(OTLP_JSON), headers=headers)

    assert response.status_code == 401
    assert server.spans() == []


def test_otlp_sdk_exporter_with_a_wrong_key_fails(
    server: BrixoTestServer, span_capture: SpanCapture
) -> None:
    with span_capture.provider.get_tracer("test").start_as_current_span(
        "chat", attributes={"brixo.message_id": "msg-denied"}
    ):
        pass
    exporter = OTLPSpanExporter(
        endpoint=server.traces_endpoint, headers={"Brixo-Auth": "Bearer wrong"}, timeout=5
    )
    try:
        result = exporter.export(span_capture.spans())
    finally:
        exporter.shutdown()

    assert result is SpanExportResult.FAILURE
    assert server.spans() == []
    assert "msg-denied" not in server.known_message_ids()
    (request,) = server.requests()
    assert request.status == 401
    assert request.headers["brixo-auth"] == "Bearer wrong"


@pytest.mark.parametrize(
    ("content_type", "encoding", "content", "status"),
    [
        ("application/x-protobuf", None, b"\xff\xff\xff", 400),
        ("application/json", None, b"{", 400),
        ("application/json", None, b'{"resourceSpans": 1}', 400),
        ("application/json", None, b'{"resourceSpans": [{"scopeSpans": [{"spans": [{}]}]}]}', 400),
        ("application/json", "gzip", b"not gzip", 400),
        ("application/json", "br", b"{}", 415),
        ("text/plain", None, b"{}", 415),
    ],
)
def test_unreadable_otlp_exports_are_rejected(
    server: BrixoTestServer,
    client: httpx.Client,
    content_type: str,
    encoding: str | None,
    content: bytes,
    status: int,
) -> None:
    headers = {"Content-Type": content_type, "Brixo-Auth": "Bearer test-key"}
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    assert client.post("/v1/traces", content=content, headers=headers).status_code == status
    assert server.spans() == []


def test_otlp_deflate_is_accepted(server: BrixoTestServer) -> None:
    export_with_sdk(server, Compression.Deflate)
    assert len(server.spans()) == 2


# -- lifecycle --------------------------------------------------------------------------------


def test_lifecycle_and_reads_outside_it() -> None:
    server = BrixoTestServer()
    with pytest.raises(RuntimeError):
        server.url  # noqa: B018
    with pytest.raises(RuntimeError):
        server.signals()

    with server:
        assert server.url.startswith("http://127.0.0.1:")
        assert server.traces_endpoint == server.url + "/v1/traces"
        assert "test-key" not in repr(server)
        with pytest.raises(RuntimeError):
            server.start()

    server.stop()  # a second stop is harmless
    with pytest.raises(RuntimeError):
        server.requests()


def test_db_path_keeps_history_across_restarts(tmp_path: Path) -> None:
    db_path = str(tmp_path / "brixo.sqlite3")
    with BrixoTestServer(db_path=db_path) as server:
        server.register_message("msg_1")
        with connect(server) as client:
            assert post_signal(client, headers={"Idempotency-Key": "k"}).status_code == 204

    with BrixoTestServer(db_path=db_path) as server:
        assert [s.target_id for s in server.signals()] == ["msg_1"]
        assert server.known_message_ids() == {"msg_1"}
        with connect(server) as client:
            assert post_signal(client, headers={"Idempotency-Key": "k"}).status_code == 204
        assert len(server.signals()) == 1


def test_stop_does_not_wait_for_a_hanging_request(server: BrixoTestServer) -> None:
    server.hang_next(1, 30)
    outcome: list[object] = []

    def send() -> None:
        with connect(server, timeout=10.0) as client:
            try:
                outcome.append(post_signal(client).status_code)
            except httpx.TransportError as exc:
                outcome.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    wait_for(lambda: server.requests() or None, 5, "the request to arrive", interval=0.01)

    started = time.monotonic()
    server.stop()
    sender.join(timeout=5)

    assert time.monotonic() - started < 3
    assert not sender.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], httpx.TransportError)


def test_stop_ends_idle_keep_alive_connections(server: BrixoTestServer) -> None:
    with connect(server) as client:
        assert post_signal(client).status_code == 204
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 3


def test_run_dev_server_serves_until_interrupted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from brixo_otel.testing import _server

    served: list[int] = []

    def interrupt(seconds: float) -> None:
        # By the time the dev server idles, it must be up and answering.
        url = capsys.readouterr().out.split("Brixo dev server on ", 1)[1].split()[0]
        served.append(httpx.post(url + "/v1/messages/m/signals", timeout=5).status_code)
        raise KeyboardInterrupt

    monkeypatch.setattr(_server, "time", SimpleNamespace(sleep=interrupt))
    _server.run_dev_server(port=0)

    assert served == [415]  # no API key: auth is skipped, the content type is checked next
