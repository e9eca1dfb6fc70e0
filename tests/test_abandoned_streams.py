"""Streamed messages whose consumer goes away end within a bound, marked cancelled.

A real uvicorn serves FastAPI and Starlette streaming endpoints from a thread of the test
process, so the message spans are read back from the test's in-memory exporter; the client
disconnects mid-stream. Then the cases without a server: a stream kept referenced but never
read again, one collected without its clean-up, a producer slower than the idle timeout (which
is not idleness), a consumer that stops early, a cancelled task.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from opentelemetry.sdk.trace import ReadableSpan
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

import brixo_otel
from brixo_otel import attributes as attrs
from brixo_otel._instrument import _streams
from brixo_otel.testing import SpanCapture
from brixo_otel.web import BrixoHeadersMiddleware, aprimed, primed
from tests._services import free_port, wait_for
from tests.conftest import Local

pytestmark = pytest.mark.timeout(60)

#: Slack on top of a bound, for a loaded 2-core machine.
SLACK = 2.0


class Uvicorn:
    """A real uvicorn serving `app` from a thread of the test process."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
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


def ended(capture: SpanCapture, name: str, timeout: float) -> ReadableSpan:
    """The span `name` once it has ended (bounded wait)."""
    return wait_for(
        lambda: next(iter(capture.spans(name)), None), timeout, f"{name} to end", interval=0.02
    )


def cancel_reason(span: ReadableSpan) -> object:
    recorded = span.attributes or {}
    assert recorded.get(attrs.MESSAGE_CANCELLED) is True, dict(recorded)
    return recorded.get(attrs.MESSAGE_CANCEL_REASON)


def read_then_disconnect(url: str, lines: int) -> float:
    """Read `lines` lines of a streamed response, then drop the connection; when it dropped."""
    with httpx.Client(timeout=10) as client, client.stream("GET", url) as response:
        assert response.status_code == 200
        received = response.iter_lines()
        for _ in range(lines):
            next(received)
    return time.monotonic()


@pytest.fixture
def configured(local: Local) -> brixo_otel.Client:
    return local(exporters=None)


def test_a_client_that_disconnects_ends_an_async_stream_at_once(
    configured: brixo_otel.Client, capture: SpanCapture
) -> None:
    produced: list[int] = []

    @brixo_otel.message(name="answer", idle_timeout=30)  # far beyond the bound asserted
    async def answer(message_id: str) -> AsyncIterator[str]:
        for index in range(1000):
            await asyncio.sleep(0.02)  # the model, token by token
            produced.append(index)
            yield f"token {index}\n"

    app = FastAPI()
    app.add_middleware(BrixoHeadersMiddleware)

    @app.get("/chat/{message_id}")
    async def chat(message_id: str) -> StreamingResponse:
        return StreamingResponse(await aprimed(answer(message_id)), media_type="text/plain")

    with Uvicorn(app) as server:
        gone = read_then_disconnect(f"{server.url}/chat/m-async", lines=3)
        span = ended(capture, "answer", SLACK)
        assert time.monotonic() - gone < SLACK
    assert (span.attributes or {})[attrs.MESSAGE_ID] == "m-async"
    assert cancel_reason(span) in (_streams.CANCELLED, _streams.CLOSED)
    assert len(produced) < 100  # it stopped producing: the stream was not run to its end
    assert span.status.is_unset  # a consumer that went away is no failure of the message


def test_a_client_that_disconnects_ends_a_sync_stream_within_its_idle_timeout(
    configured: brixo_otel.Client, capture: SpanCapture
) -> None:
    # Starlette reads a sync iterator in a worker thread; when the client goes away it stops
    # asking, but never closes the iterator: only the idle timeout can tell.
    idle = 1.0
    produced: list[int] = []

    @brixo_otel.message(name="answer", idle_timeout=idle)
    def answer(message_id: str) -> Iterator[str]:
        for index in range(1000):
            time.sleep(0.02)
            produced.append(index)
            yield f"token {index}\n"

    def chat(request: Request) -> StreamingResponse:
        stream = primed(answer(request.path_params["message_id"]))
        return StreamingResponse(stream, media_type="text/plain")

    app = Starlette(routes=[Route("/chat/{message_id}", chat)])
    with Uvicorn(app) as server:
        gone = read_then_disconnect(f"{server.url}/chat/m-sync", lines=3)
        span = ended(capture, "answer", idle * 1.25 + SLACK)
        assert time.monotonic() - gone < idle * 1.25 + SLACK
    assert (span.attributes or {})[attrs.MESSAGE_ID] == "m-sync"
    assert cancel_reason(span) == _streams.IDLE
    assert len(produced) < 200


def test_a_stream_kept_but_never_read_again_ends_after_its_idle_timeout(
    configured: brixo_otel.Client, capture: SpanCapture
) -> None:
    @brixo_otel.message(name="kept", idle_timeout=0.3)
    def kept(message_id: str) -> Iterator[int]:
        yield from range(10)

    stream = kept("m-kept")
    assert next(stream) == 0
    started = time.monotonic()
    span = ended(capture, "kept", 0.3 * 1.25 + SLACK)
    assert time.monotonic() - started >= 0.3
    assert cancel_reason(span) == _streams.IDLE
    # The consumer comes back after all: the stream goes on; the span ended once, for good.
    assert list(stream) == list(range(1, 10))
    stream.close()
    assert len(capture.spans("kept")) == 1


async def test_an_async_stream_kept_but_never_read_again_ends_after_its_idle_timeout(
    configured: brixo_otel.Client, capture: SpanCapture
) -> None:
    @brixo_otel.message(name="akept", idle_timeout=0.3)
    async def akept(message_id: str) -> AsyncIterator[int]:
        for index in range(10):
            yield index

    stream = akept("m-akept")
    assert await anext(stream) == 0
    for _ in range(int((0.3 * 1.25 + SLACK) / 0.02)):
        if capture.spans("akept"):
            break
        await asyncio.sleep(0.02)
    assert cancel_reason(capture.one("akept")) == _streams.IDLE
    await stream.aclose()
    assert len(capture.spans("akept")) == 1


def test_an_async_stream_collected_after_its_loop_closed_ends_as_abandoned(
    configured: brixo_otel.Client, capture: SpanCapture
) -> None:
    # Its event loop is gone, so nothing can run its aclose() (asyncio's finalizer gives up on a
    # closed loop) and its clean-up never runs: the watcher ends the span.
    @brixo_otel.message(name="orphan", idle_timeout=30)
    async def orphan(message_id: str) -> AsyncIterator[int]:
        for index in range(10):
            yield index

    async def first(stream: AsyncIterator[int]) -> int:
        return await anext(stream)  # inside the loop: the stream is the loop's to finalize

    loop = asyncio.new_event_loop()
    stream = orphan("m-orphan")
    assert loop.run_until_complete(first(stream)) == 0
    loop.close()  # without shutdown_asyncgens()
    del stream
    gc.collect()
    span = ended(capture, "orphan", 1.0 + SLACK)
    assert cancel_reason(span) == _streams.ABANDONED


def test_a_producer_slower_than_the_idle_timeout_is_not_idle(
    configured: brixo_otel.Client, capture: SpanCapture
) -> None:
    @brixo_otel.message(name="slow", idle_timeout=0.2)
    def slow(message_id: str) -> Iterator[int]:
        for index in range(3):
            time.sleep(0.5)  # waiting for the model is the producer's time, not idleness
            yield index

    assert list(slow("m-slow")) == [0, 1, 2]
    span = capture.one("slow")
    assert attrs.MESSAGE_CANCELLED not in (span.attributes or {})


async def test_a_slow_async_producer_is_not_idle(
    configured: brixo_otel.Client, capture: SpanCapture
) -> None:
    @brixo_otel.message(name="aslow", idle_timeout=0.2)
    async def aslow(message_id: str) -> AsyncIterator[int]:
        for index in range(3):
            await asyncio.sleep(0.5)
            yield index

    assert [index async for index in aslow("m-aslow")] == [0, 1, 2]
    assert attrs.MESSAGE_CANCELLED not in (capture.one("aslow").attributes or {})


def test_a_consumer_that_stops_early_marks_the_message_closed(
    configured: brixo_otel.Client, capture: SpanCapture
) -> None:
    @brixo_otel.message(name="stream")
    def stream(message_id: str) -> Iterator[int]:
        yield from range(10)

    for index in stream("m-break"):
        if index == 2:
            break  # the generator is dropped: closed at once
    assert cancel_reason(capture.one("stream")) == _streams.CLOSED
    capture.clear()
    assert list(stream("m-all")) == list(range(10))  # run to its end: not cancelled
    assert attrs.MESSAGE_CANCELLED not in (capture.one("stream").attributes or {})


async def test_aclose_marks_the_message_closed(
    configured: brixo_otel.Client, capture: SpanCapture
) -> None:
    @brixo_otel.message(name="astream")
    async def astream(message_id: str) -> AsyncIterator[int]:
        for index in range(10):
            yield index

    agen = astream("m-aclose")
    assert await anext(agen) == 0
    await agen.aclose()
    assert cancel_reason(capture.one("astream")) == _streams.CLOSED


async def test_a_cancelled_task_marks_its_message_cancelled(
    configured: brixo_otel.Client, capture: SpanCapture
) -> None:
    started = asyncio.Event()

    @brixo_otel.message(name="reply")
    async def reply(message_id: str) -> str:
        started.set()
        await asyncio.sleep(30)
        return "never"

    @brixo_otel.message(name="areply")
    async def areply(message_id: str) -> AsyncIterator[str]:
        started.set()
        await asyncio.sleep(30)
        yield "never"

    async def consume() -> None:
        async for _ in areply("m-areply"):
            pass

    for run in (reply("m-reply"), consume()):
        started.clear()
        task = asyncio.ensure_future(run)
        await asyncio.wait_for(started.wait(), 5)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert cancel_reason(capture.one("reply")) == _streams.CANCELLED
    assert cancel_reason(capture.one("areply")) == _streams.CANCELLED
    with contextlib.suppress(asyncio.CancelledError), brixo_otel.message_span(name="block"):
        raise asyncio.CancelledError
    assert cancel_reason(capture.one("block")) == _streams.CANCELLED


def test_streams_are_released_and_ended_once(
    configured: brixo_otel.Client, capture: SpanCapture, caplog: pytest.LogCaptureFixture
) -> None:
    before = _streams.watched()

    @brixo_otel.message(name="s", idle_timeout=5)
    def s(message_id: str) -> Iterator[int]:
        yield from range(3)

    for _ in range(50):
        assert list(s("m")) == [0, 1, 2]
    unstarted = s("m-never")  # never started: no span, nothing watched
    del unstarted
    assert _streams.watched() == before
    assert len(capture.spans("s")) == 50
    with caplog.at_level(logging.WARNING, logger="opentelemetry"):
        stream = s("m-twice")
        next(stream)
        _streams._sweep(time.monotonic())  # a first look...
        _streams._sweep(time.monotonic() + 10)  # ...and one past the timeout: ended
        assert list(stream) == [1, 2]  # the stream's own end must not end it again
    assert not [r for r in caplog.records if "ended span" in r.getMessage().lower()]
    assert len(capture.spans("s")) == 51


def test_idle_timeout_is_checked_when_decorating() -> None:
    for wrong in (0, -1, "5", True):
        with pytest.raises(TypeError, match="idle_timeout"):
            brixo_otel.message(idle_timeout=wrong)  # type: ignore[arg-type]

    @brixo_otel.message(message_id="m", idle_timeout=None)  # never ended for idleness
    def forever() -> Iterator[int]:
        yield 1

    assert list(forever()) == [1]
