"""The WSGI feedback endpoint and headers middleware in a Flask app, under werkzeug's real WSGI
server on loopback: what a browser or `curl` would get, over real sockets."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

import httpx
import pytest
from flask import Flask, Response
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.serving import BaseWSGIServer, make_server

import brixo_otel
from brixo_otel.exporters import InMemorySignalExporter
from brixo_otel.web import (
    BrixoHeadersWSGIMiddleware,
    primed,
    wsgi_feedback_app,
)
from tests._services import wait_for
from tests.conftest import Local

SECRET = "wsgi-test-secret-0123456789abcdef"
ORIGIN = "https://app.example"
LIMIT = 8192

pytestmark = pytest.mark.timeout(30)


def flask_app() -> Flask:
    app = Flask(__name__)

    @brixo_otel.message(name="answer")
    def answer(message_id: str) -> str:
        return f"answer to {message_id}"

    @brixo_otel.message(name="answer")
    def answer_stream(message_id: str) -> Iterator[str]:
        yield "first "
        yield "second"

    @app.get("/chat/<message_id>")
    def chat(message_id: str) -> str:
        return answer(message_id)

    @app.get("/stream/<message_id>")
    def stream(message_id: str) -> Response:
        return Response(primed(answer_stream(message_id)), mimetype="text/plain")

    @app.get("/plain")
    def plain() -> str:
        return "no message here"

    app.wsgi_app = DispatcherMiddleware(  # type: ignore[method-assign]
        BrixoHeadersWSGIMiddleware(app.wsgi_app),
        {
            "/brixo": wsgi_feedback_app(allow_origins=[ORIGIN], max_body_bytes=LIMIT),
            "/strict": wsgi_feedback_app(require_link=True),
        },
    )
    return app


@pytest.fixture
def server(local: Local) -> Iterator[str]:
    local(link_secret=SECRET)
    httpd: BaseWSGIServer = make_server("127.0.0.1", 0, flask_app(), threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def http(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=5.0) as client:
        yield client


def post(http: httpx.Client, document: Any, path: str = "/brixo/", **kwargs: Any) -> httpx.Response:
    return http.post(path, json=document, **kwargs)


def delivered(exporter: InMemorySignalExporter, count: int) -> list[brixo_otel.Signal]:
    """The signals once `count` reached the destination (delivery runs in the background)."""
    brixo_otel.flush(timeout=5.0)
    return wait_for(
        lambda: exporter.signals() if len(exporter.signals()) >= count else None,
        10,
        f"{count} signals delivered",
        interval=0.02,
    )


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    document: dict[str, Any] = response.json()
    assert document["status"] == status
    return document


def test_feedback_is_accepted_with_its_id(
    http: httpx.Client, signal_capture: InMemorySignalExporter
) -> None:
    with brixo_otel.message_span(message_id="m-1", conversation_id="c-1"):
        pass  # the message rated, known to this process's span index
    response = post(
        http,
        {
            "value": "thumbs_down",
            "message_id": "m-1",
            "conversation_id": "c-1",
            "user_message": "too long",
            "reasons": ["too_long"],
        },
    )
    assert response.status_code == 202, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    [signal] = delivered(signal_capture, 1)
    assert response.json() == {"id": signal.id}
    assert (signal.value, signal.message_id, signal.conversation_id) == (
        "thumbs_down",
        "m-1",
        "c-1",
    )
    assert (signal.user_message, signal.reasons) == ("too long", ("too_long",))


def test_json_type_errors_are_reported_for_every_field_at_once(http: httpx.Client) -> None:
    response = post(http, {"value": 1, "message_id": 5, "score": "9", "messageId": "m"})
    errors = {e["field"]: e["reason"] for e in problem(response, 422)["errors"]}
    assert errors == {
        "value": "wrong_type",
        "message_id": "wrong_type",
        "score": "wrong_type",
        "messageId": "not_accepted",
    }


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"value": "meh", "message_id": "m"}, "value"),
        ({"value": "thumbs_up"}, None),  # neither a message nor a conversation id
        ({"value": "thumbs_up", "message_id": " "}, "message_id"),
        ({"value": "thumbs_up", "conversation_id": "x" * 600}, "conversation_id"),
        ({"value": "csat", "message_id": "m", "score": 9}, "score"),
        ({"value": "thumbs_up", "message_id": "m", "score": 3}, "score"),
        ({"value": "thumbs_up", "message_id": "m", "reasons": ["not a tag!"]}, "reasons"),
        ({"value": "thumbs_up", "message_id": "m", "user_message": "x" * 5000}, "user_message"),
        ({"value": "thumbs_up", "link": "not-a-token"}, "link"),
    ],
)
def test_values_the_signal_model_refuses_are_422_naming_the_field(
    http: httpx.Client, document: dict[str, Any], field: str | None
) -> None:
    [error] = problem(post(http, document), 422)["errors"]
    assert error["field"] == field
    assert error["detail"]
    assert error["reason"]  # InvalidSignal.reason, a short code for programs


def test_a_body_that_is_not_json_is_400(http: httpx.Client) -> None:
    response = http.post("/brixo/", content=b"{nope", headers={"Content-Type": "application/json"})
    assert "not valid UTF-8 JSON" in problem(response, 400)["detail"]
    response = http.post("/brixo/", json=["thumbs_up"])
    assert problem(response, 422)["errors"][0]["field"] is None


def test_413_is_answered_without_reading_the_body(server: str) -> None:
    # Declare 10 MB and send 10 bytes: an endpoint that read the body would wait for the rest.
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"POST /brixo/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 10000000\r\n\r\n{"value":'
        )
        answer = _read_head(sock)
    assert answer.startswith(b"HTTP/1.1 413"), answer


def test_a_streamed_body_over_the_limit_is_413(http: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        yield b'{"value": "thumbs_up", "user_message": "'
        for _ in range(100):
            yield b"x" * 100
        yield b'"}'

    response = http.post("/brixo/", content=chunks(), headers={"Content-Type": "application/json"})
    problem(response, 413)


def test_not_json_is_415(http: httpx.Client) -> None:
    problem(http.post("/brixo/", content=b"value=thumbs_up"), 415)
    response = http.post(
        "/brixo/", content=b'{"value":"thumbs_up"}', headers={"Content-Type": "text/plain"}
    )
    assert problem(response, 415)["detail"].startswith("send the feedback as JSON")


def test_other_methods_are_405_with_allow(http: httpx.Client) -> None:
    for method in ("GET", "PUT", "DELETE"):
        response = http.request(method, "/brixo/")
        problem(response, 405)
        assert response.headers["allow"] == "POST, OPTIONS"
    response = http.post("/brixo/feedback.js")
    problem(response, 405)
    assert response.headers["allow"] == "GET, HEAD, OPTIONS"
    problem(http.get("/brixo/elsewhere"), 404)


def test_cors_preflight_and_headers(http: httpx.Client) -> None:
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    response = http.options("/brixo/", headers=preflight)
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in response.headers["access-control-allow-methods"]
    assert response.headers["access-control-allow-headers"] == "Content-Type"
    assert int(response.headers["access-control-max-age"]) > 0

    response = http.options("/brixo/", headers={**preflight, "Origin": "https://evil.example"})
    assert response.status_code == 403
    assert "access-control-allow-origin" not in response.headers

    response = post(
        http, {"value": "thumbs_up", "message_id": "m-cors"}, headers={"Origin": ORIGIN}
    )
    assert response.status_code == 202
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "Origin" in response.headers["vary"]
    # Refusals carry the CORS headers too, or the page could not read why it was refused.
    response = post(http, {"value": "meh", "message_id": "m"}, headers={"Origin": ORIGIN})
    assert response.status_code == 422
    assert response.headers["access-control-allow-origin"] == ORIGIN


def test_message_headers_on_a_flask_response_and_the_link_rates_it(
    http: httpx.Client, signal_capture: InMemorySignalExporter
) -> None:
    response = http.get("/chat/m-headers")
    assert response.text == "answer to m-headers"
    assert response.headers["brixo-message-id"] == "m-headers"
    link = response.headers["brixo-link"]
    assert "brixo-message-id" not in http.get("/plain").headers

    rated = post(http, {"value": "thumbs_up", "link": link}, path="/strict/")
    assert rated.status_code == 202, rated.text
    [signal] = delivered(signal_capture, 1)
    assert signal.message_id == "m-headers"  # from the token alone


def test_message_headers_on_a_streamed_flask_response(http: httpx.Client) -> None:
    with http.stream("GET", "/stream/m-stream") as response:
        assert response.headers["brixo-message-id"] == "m-stream"
        assert response.headers["brixo-link"]
        assert response.read() == b"first second"


def test_message_ids_that_a_header_cannot_hold_are_percent_encoded(http: httpx.Client) -> None:
    response = http.get("/chat/r%C3%A9ponse 1")
    assert response.headers["brixo-message-id"] == "r%C3%A9ponse%201"


def test_require_link_refuses_forged_tampered_and_missing_tokens(http: httpx.Client) -> None:
    link = http.get("/chat/m-strict").headers["brixo-link"]

    forged = "AQ" + "A" * (len(link) - 2)
    detail = problem(post(http, {"value": "thumbs_up", "link": forged}, "/strict/"), 403)
    assert "link token" in detail["detail"]

    middle = len(link) // 2
    tampered = link[:middle] + ("B" if link[middle] != "B" else "C") + link[middle + 1 :]
    detail = problem(post(http, {"value": "thumbs_up", "link": tampered}, "/strict/"), 403)
    assert "link token" in detail["detail"]

    problem(post(http, {"value": "thumbs_up", "message_id": "m-strict"}, "/strict/"), 403)
    other = {"value": "thumbs_up", "message_id": "m-other", "link": link}
    problem(post(http, other, "/strict/"), 403)  # a token rates only its own message

    accepted = post(
        http, {"value": "thumbs_up", "message_id": "m-strict", "link": link}, "/strict/"
    )
    assert accepted.status_code == 202, accepted.text


def test_the_widget_is_served_with_caching(http: httpx.Client) -> None:
    response = http.get("/brixo/feedback.js")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "window.BrixoFeedback" in response.text
    etag = response.headers["etag"]
    assert http.get("/brixo/feedback.js", headers={"If-None-Match": etag}).status_code == 304
    head = http.head("/brixo/feedback.js")
    assert head.status_code == 200
    assert head.content == b""


def _read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_json_problem_bodies_are_rfc_9457(http: httpx.Client) -> None:
    document = problem(post(http, {"value": "meh", "message_id": "m"}), 422)
    assert set(document) == {"type", "title", "status", "detail", "errors"}
    assert document["title"] == HTTPStatus(422).phrase
    assert document["type"] == "about:blank"


def test_a_failure_inside_feedback_is_a_500_and_never_reaches_the_server(
    http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> brixo_otel.Signal:
        raise RuntimeError("the disk is on fire")

    monkeypatch.setattr(brixo_otel, "feedback", broken)
    response = post(http, {"value": "thumbs_up", "message_id": "m"})
    assert problem(response, 500)["detail"] == "the feedback could not be recorded"
    assert "fire" not in response.text
