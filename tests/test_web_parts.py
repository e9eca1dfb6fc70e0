"""The pieces of `brixo_otel.web` that need no server: arguments checked at construction, the
rate limiter's arithmetic, primed streams, the SSE event outside a message."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import pytest

import brixo_otel
import brixo_otel.web
from brixo_otel.web import (
    RateLimit,
    aprimed,
    asgi_feedback_app,
    message_headers,
    primed,
    sse_message_event,
    wsgi_feedback_app,
)
from brixo_otel.web._endpoint import field_of
from brixo_otel.web._ratelimit import RateLimiter
from tests.conftest import Local

pytestmark = pytest.mark.timeout(10)


def test_public_names_are_sorted_and_importable() -> None:
    names = brixo_otel.web.__all__
    assert names == sorted(names, key=lambda n: (not n.isupper(), not n[0].isupper(), n))
    assert all(hasattr(brixo_otel.web, name) for name in names)


@pytest.mark.parametrize("factory", [asgi_feedback_app, wsgi_feedback_app])
def test_wrong_arguments_fail_at_construction(factory: object) -> None:
    make = factory  # the same checks for both servers
    with pytest.raises(TypeError, match="require_link"):
        make(require_link="yes")  # type: ignore[operator]
    with pytest.raises(TypeError, match="max_body_bytes"):
        make(max_body_bytes="16k")  # type: ignore[operator]
    with pytest.raises(ValueError, match="at least 256"):
        make(max_body_bytes=16)  # type: ignore[operator]
    with pytest.raises(ValueError, match="not an origin"):
        make(allow_origins=["app.example.com"])  # type: ignore[operator]
    with pytest.raises(ValueError, match="not an origin"):
        make(allow_origins=["https://app.example.com/path"])  # type: ignore[operator]
    with pytest.raises(TypeError, match="rate_limit"):
        make(rate_limit=10)  # type: ignore[operator]
    make(allow_origins="*")  # type: ignore[operator]  # a single origin as a string is fine


def test_rate_limit_arguments() -> None:
    with pytest.raises(ValueError):
        RateLimit(per_second=0)
    with pytest.raises(TypeError):
        RateLimit(burst=1.5)  # type: ignore[arg-type]


def test_token_bucket_per_client() -> None:
    now = [100.0]
    limiter = RateLimiter(RateLimit(per_second=2.0, burst=3), clock=lambda: now[0])
    assert [limiter.acquire("a") for _ in range(3)] == [None, None, None]
    assert limiter.acquire("a") == pytest.approx(0.5)  # a token every half second
    assert limiter.acquire("b") is None  # another client has its own bucket
    now[0] += 0.5
    assert limiter.acquire("a") is None
    now[0] += 60
    assert [limiter.acquire("a") for _ in range(4)][-1] is not None  # refilled up to the burst


def test_the_field_comes_from_invalid_signal() -> None:
    assert field_of(brixo_otel.InvalidSignal("x", field="score", reason="out_of_range")) == "score"
    assert field_of(brixo_otel.InvalidSignal("neither id given", field=None)) is None


class _OlderInvalidSignal(brixo_otel.InvalidSignal):
    """An `InvalidSignal` as code older than `.field` raised it."""

    def __init__(self, message: str) -> None:
        ValueError.__init__(self, message)


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ("value 'meh' is not a feedback value; accepted: thumbs_up", "value"),
        ("csat needs score= an integer from 1 to 5, got 9", "score"),
        ("reason 'x y' is not a short tag", "reasons"),
        ("link token signature does not match", "link"),
        ("user_message is 5000 characters long", "user_message"),
        ("no configured destination (memory) accepts nps on a message", None),
    ],
)
def test_without_the_attribute_the_field_is_read_off_the_message(
    message: str, field: str | None
) -> None:
    assert field_of(_OlderInvalidSignal(message)) == field


def test_primed_takes_the_first_item_now_and_closes_the_stream() -> None:
    steps: list[str] = []

    def stream() -> Iterator[int]:
        steps.append("started")
        try:
            yield 1
            yield 2
            yield 3
        finally:
            steps.append("closed")

    body = primed(stream())
    assert steps == ["started"]
    assert next(body) == 1
    assert next(body) == 2
    body.close()  # type: ignore[attr-defined]  # the client went away
    assert steps == ["started", "closed"]
    assert list(primed(iter(()))) == []


async def test_aprimed_takes_the_first_item_now_and_closes_the_stream() -> None:
    steps: list[str] = []

    async def stream() -> AsyncIterator[int]:
        steps.append("started")
        try:
            yield 1
            yield 2
        finally:
            steps.append("closed")

    body = await aprimed(stream())
    assert steps == ["started"]
    assert [item async for item in body] == [1, 2]
    assert steps == ["started", "closed"]

    body = await aprimed(stream())
    await body.aclose()  # type: ignore[attr-defined]
    assert steps[-1] == "closed"

    async def empty() -> AsyncIterator[int]:
        return
        yield

    assert [item async for item in await aprimed(empty())] == []


def test_sse_event_and_headers_outside_a_message(
    local: Local, caplog: pytest.LogCaptureFixture
) -> None:
    local(link_secret="parts-test-secret-0123456789abcdef")
    with caplog.at_level(logging.WARNING, logger="brixo_otel"):
        assert sse_message_event() == ""
    assert "found no message id" in caplog.text
    assert message_headers() == {}
    # With an explicit id and no span known for it: the id alone.
    assert sse_message_event("m-unknown") == 'event: brixo\ndata: {"message_id":"m-unknown"}\n\n'
    with pytest.raises(TypeError):
        sse_message_event(event="two\nlines")


def test_sse_event_inside_a_message(local: Local) -> None:
    local(link_secret="parts-test-secret-0123456789abcdef")
    with brixo_otel.message_span(message_id="m-1"):
        event = sse_message_event(event="meta")
        headers = message_headers()
        link = brixo_otel.link_token()
    assert event == f'event: meta\ndata: {{"message_id":"m-1","link":"{link}"}}\n\n'
    assert headers == {"Brixo-Message-Id": "m-1", "Brixo-Link": link}
