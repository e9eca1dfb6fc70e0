"""The ASGI feedback endpoint and headers middleware under a real uvicorn on loopback: on its
own, and mounted in a FastAPI app whose messages stream."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

import brixo_otel
from brixo_otel import attributes as attrs
from brixo_otel.exporters import InMemorySignalExporter
from brixo_otel.testing import SpanCapture
from brixo_otel.web import (
    BrixoHeadersMiddleware,
    RateLimit,
    aprimed,
    asgi_feedback_app,
    message_headers,
    primed,
    sse_message_event,
)
from tests._services import free_port, wait_for
from tests.conftest import Local

SECRET = "asgi-test-secret-0123456789abcdef"
ORIGIN = "https://app.example"
LIMIT = 8192

pytestmark = pytest.mark.timeout(30)


class Uvicorn:
    """A real uvicorn serving `app` from a thread of the test process."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Uvicorn:
        self._thread.start()
        wait_for(lambda: self._server.started or None, 10, "uvicorn to start", interval=0.02)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def chat_app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(BrixoHeadersMiddleware)
    app.mount("/brixo", asgi_feedback_app(allow_origins=[ORIGIN], max_body_bytes=LIMIT))
    app.mount("/strict", asgi_feedback_app(require_link=True))
    app.mount("/limited", asgi_feedback_app(rate_limit=RateLimit(per_second=0.2, burst=2)))

    @brixo_otel.message(name="answer")
    async def answer(message_id: str) -> str:
        return f"answer to {message_id}"

    @brixo_otel.message(name="answer")
    async def answer_stream(message_id: str) -> AsyncIterator[str]:
        yield sse_message_event()
        for word in ("one", "two", "three"):
            yield f"event: delta\ndata: {json.dumps(word)}\n\n"

    @brixo_otel.message(name="answer")
    def answer_sync_stream(message_id: str) -> Iterator[bytes]:
        yield b"sync "
        yield b"stream"

    @brixo_otel.message(name="answer")
    async def answer_late() -> dict[str, str]:
        brixo_otel.set_message_id("m-late")  # e.g. the provider's response id
        return message_headers()

    @app.get("/chat/{message_id}")
    async def chat(message_id: str) -> str:
        return await answer(message_id)

    @app.get("/stream/{message_id}")
    async def stream(message_id: str) -> StreamingResponse:
        body = await aprimed(answer_stream(message_id))
        return StreamingResponse(body, media_type="text/event-stream")

    @app.get("/sync-stream/{message_id}")
    def sync_stream(message_id: str) -> StreamingResponse:
        return StreamingResponse(primed(answer_sync_stream(message_id)), media_type="text/plain")

    @app.get("/late")
    async def late() -> dict[str, str]:
        return await answer_late()

    @app.get("/plain")
    async def plain() -> str:
        return "no message"

    return app


@pytest.fixture
def configured_with_secret(local: Local) -> brixo_otel.Client:
    return local(link_secret=SECRET)


@pytest.fixture
def http(configured_with_secret: brixo_otel.Client) -> Iterator[httpx.Client]:
    with Uvicorn(chat_app()) as server, httpx.Client(base_url=server.url, timeout=5) as client:
        yield client


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
    return document


def test_the_endpoint_on_its_own_under_uvicorn(
    configured_with_secret: brixo_otel.Client, signal_capture: InMemorySignalExporter
) -> None:
    with brixo_otel.message_span(message_id="m-alone"):
        pass  # the message rated, known to this process's span index
    with Uvicorn(asgi_feedback_app()) as server, httpx.Client(base_url=server.url) as client:
        response = client.post("/", json={"value": "thumbs_up", "message_id": "m-alone"})
        assert response.status_code == 202, response.text
        assert client.get("/feedback.js").status_code == 200
        problem(client.get("/"), 405)
    [signal] = delivered(signal_capture, 1)
    assert response.json() == {"id": signal.id}
    assert (signal.value, signal.message_id) == ("thumbs_up", "m-alone")


def test_mounted_refusals(http: httpx.Client) -> None:
    errors = problem(http.post("/brixo/", json={"value": "meh", "message_id": "m"}), 422)
    assert [e["field"] for e in errors["errors"]] == ["value"]
    errors = problem(http.post("/brixo/", json={"value": "thumbs_up", "score": True}), 422)
    assert [e["field"] for e in errors["errors"]] == ["score"]
    problem(http.post("/brixo/", content=b"x", headers={"Content-Type": "text/plain"}), 415)
    response = http.delete("/brixo/")
    problem(response, 405)
    assert response.headers["allow"] == "POST, OPTIONS"
    problem(http.post("/brixo/", content=b"[1,", headers={"Content-Type": "application/json"}), 400)


def test_413_without_reading_the_body(http: httpx.Client) -> None:
    port = http.base_url.port
    assert port is not None
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"POST /brixo/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 10000000\r\n\r\n{"value":'
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    assert head.startswith(b"HTTP/1.1 413"), head

    def chunks() -> Iterator[bytes]:  # chunked: the limit is enforced as the body streams in
        yield b'{"value": "thumbs_up", "user_message": "'
        for _ in range(100):
            yield b"x" * 100
        yield b'"}'

    streamed = http.post("/brixo/", content=chunks(), headers={"Content-Type": "application/json"})
    problem(streamed, 413)


def test_cors(http: httpx.Client) -> None:
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    response = http.options("/brixo/", headers=preflight)
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == ORIGIN
    refused = http.options("/brixo/", headers={**preflight, "Origin": "https://evil.example"})
    assert refused.status_code == 403
    assert "access-control-allow-origin" not in refused.headers
    posted = http.post(
        "/brixo/", json={"value": "thumbs_up", "message_id": "m"}, headers={"Origin": ORIGIN}
    )
    assert posted.status_code == 202
    assert posted.headers["access-control-allow-origin"] == ORIGIN


def test_rate_limit_is_per_client_with_retry_after(http: httpx.Client) -> None:
    document = {"value": "thumbs_up", "message_id": "m-rate"}
    assert [http.post("/limited/", json=document).status_code for _ in range(2)] == [202, 202]
    response = http.post("/limited/", json=document)
    problem(response, 429)
    assert 1 <= int(response.headers["retry-after"]) <= 5


def test_headers_on_a_plain_response(http: httpx.Client) -> None:
    response = http.get("/chat/m-1")
    assert response.headers["brixo-message-id"] == "m-1"
    assert response.headers["brixo-link"]
    assert "brixo-message-id" not in http.get("/plain").headers


def test_headers_and_first_event_of_a_stream_carry_the_same_values(
    http: httpx.Client, capture: SpanCapture, signal_capture: InMemorySignalExporter
) -> None:
    with http.stream("GET", "/stream/m-stream") as response:
        # The headers left before any of the body: the message span existed by then.
        assert response.headers["brixo-message-id"] == "m-stream"
        link = response.headers["brixo-link"]
        events = response.read().decode().split("\n\n")
    assert events[0] == (
        "event: brixo\ndata: "
        + json.dumps({"message_id": "m-stream", "link": link}, separators=(",", ":"))
    )
    assert events[1:4] == [f"event: delta\ndata: {json.dumps(w)}" for w in ("one", "two", "three")]

    rated = http.post("/strict/", json={"value": "thumbs_up", "link": link})
    assert rated.status_code == 202, rated.text
    [signal] = delivered(signal_capture, 1)
    assert signal.message_id == "m-stream"
    message = capture.one("answer")
    [feedback] = wait_for(
        lambda: capture.spans(attrs.FEEDBACK_SPAN_NAME) or None, 10, "the feedback span"
    )
    assert feedback.parent is not None
    assert feedback.parent.span_id == message.context.span_id
    assert feedback.context.trace_id == message.context.trace_id


def test_headers_on_a_sync_stream_iterated_in_the_threadpool(http: httpx.Client) -> None:
    with http.stream("GET", "/sync-stream/m-sync") as response:
        assert response.headers["brixo-message-id"] == "m-sync"
        assert response.read() == b"sync stream"


def test_an_id_bound_late_is_on_the_response(http: httpx.Client) -> None:
    response = http.get("/late")
    assert response.headers["brixo-message-id"] == "m-late"
    assert response.json() == {
        "Brixo-Message-Id": "m-late",
        "Brixo-Link": response.headers["brixo-link"],
    }


def test_forged_and_tampered_tokens_are_403(http: httpx.Client) -> None:
    link = http.get("/chat/m-token").headers["brixo-link"]
    middle = len(link) // 2
    tampered = link[:middle] + ("B" if link[middle] != "B" else "C") + link[middle + 1 :]
    for token in ("AQ" + "A" * 80, tampered):
        response = http.post("/strict/", json={"value": "thumbs_up", "link": token})
        assert "link token" in problem(response, 403)["detail"]
    assert http.post("/strict/", json={"value": "thumbs_up", "link": link}).status_code == 202


def test_without_a_link_secret_the_message_id_goes_alone(local: Local) -> None:
    local()
    with Uvicorn(chat_app()) as server, httpx.Client(base_url=server.url) as client:
        response = client.get("/chat/m-no-secret")
        assert response.headers["brixo-message-id"] == "m-no-secret"
        assert "brixo-link" not in response.headers
        with client.stream("GET", "/stream/m-no-secret-2") as streamed:
            first = streamed.read().decode().split("\n\n")[0]
        assert first == 'event: brixo\ndata: {"message_id":"m-no-secret-2"}'
        # An endpoint that requires link tokens cannot check them without the secret.
        refused = client.post("/strict/", json={"value": "thumbs_up", "link": "AQ" + "A" * 80})
        assert "not configured" in problem(refused, 500)["detail"]


def test_a_failure_inside_feedback_is_a_500_and_never_reaches_the_server(
    http: httpx.Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: object, **kwargs: object) -> brixo_otel.Signal:
        raise RuntimeError("the disk is on fire")

    monkeypatch.setattr(brixo_otel, "afeedback", broken)
    with caplog.at_level(logging.ERROR, logger="brixo_otel"):
        response = http.post("/brixo/", json={"value": "thumbs_up", "message_id": "m"})
    assert problem(response, 500)["detail"] == "the feedback could not be recorded"
    assert "fire" not in response.text  # internals stay in the server's log
    assert "the feedback endpoint failed" in caplog.text
    assert http.get("/chat/m-after").status_code == 200  # and the server carries on
