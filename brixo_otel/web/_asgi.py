"""The feedback endpoint and the headers middleware as raw ASGI 3 apps: no framework needed.

Mount the endpoint in FastAPI or Starlette (`app.mount("/brixo", asgi_feedback_app())`), or run
it on its own under any ASGI server; add the middleware with `app.add_middleware(...)` or by
wrapping the app (`BrixoHeadersMiddleware(app)`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, Final

import brixo_otel
from brixo_otel.web import _core
from brixo_otel.web._endpoint import DEFAULT_MAX_BODY_BYTES, Endpoint, Request, content_length
from brixo_otel.web._headers import MESSAGE_ID_HEADER, header_values
from brixo_otel.web._ratelimit import RateLimit
from brixo_otel.web._reply import Reply

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: What `_read_body` returns for a body over the limit, and for a client that went away.
_TOO_LARGE: Final = object()
_GONE: Final = object()


def asgi_feedback_app(
    *,
    require_link: bool = False,
    allow_origins: Sequence[str] = (),
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    rate_limit: RateLimit | None = None,
) -> ASGIApp:
    """An ASGI app that records the feedback POSTed to it and serves the thumbs widget.

    `POST` a JSON object with `feedback()`'s field names (`value`, `message_id`,
    `conversation_id`, `user_message`, `link`, `score`, `reasons`): `202 {"id": ...}` once the
    signal is committed (through `await brixo_otel.afeedback(...)`, off the event loop). Refusals
    are `application/problem+json`: 422 with per-field `errors`, 400 for a body that is not
    JSON, 413 over `max_body_bytes` (decided from `Content-Length`, or as soon as a streamed
    body passes the limit, never by reading it all), 415 for another content type, 405 for
    another method, 429 with `Retry-After` past `rate_limit`. `allow_origins` lists the
    origins that may post cross-origin (CORS, preflight included). With `require_link=True`
    only feedback carrying a valid link token is taken (a user can rate only what they were
    served): a missing, forged, tampered or expired token is a 403.

    `GET <mount>/feedback.js` serves the widget. The app never raises into the server.
    """
    endpoint = Endpoint(
        require_link=require_link,
        allow_origins=allow_origins,
        max_body_bytes=max_body_bytes,
        rate_limit=rate_limit,
    )
    return _FeedbackApp(endpoint)


class _FeedbackApp:
    __slots__ = ("_endpoint",)

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "lifespan":  # run on its own, the server asks it to start and stop
            await _lifespan(receive, send)
            return
        if kind != "http":
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        request = _request(scope)
        started = False

        async def answer(reply: Reply) -> None:
            nonlocal started
            started = True
            await _send_reply(send, reply, head=request.method == "HEAD")

        try:
            await self._handle(request, receive, answer)
        except Exception as exc:
            try:
                if not started:
                    await answer(self._endpoint.failed(request, exc))
            except Exception:  # the client is gone; nobody is left to tell
                _core.logger.debug("brixo_otel.web: could not answer a failed request")

    async def _handle(
        self, request: Request, receive: Receive, answer: Callable[[Reply], Awaitable[None]]
    ) -> None:
        endpoint = self._endpoint
        early = endpoint.before_body(request)
        if early is not None:
            await answer(early)
            return
        body = await _read_body(receive, endpoint.max_body_bytes)
        if body is _GONE:
            return
        if body is _TOO_LARGE or not isinstance(body, bytes):
            await answer(endpoint.too_large(request))
            return
        parsed = endpoint.parse(request, body)
        if isinstance(parsed, Reply):
            await answer(parsed)
            return
        try:
            signal = await brixo_otel.afeedback(**parsed)
        except brixo_otel.InvalidSignal as exc:
            await answer(endpoint.refused(request, exc))
        except Exception as exc:
            await answer(endpoint.failed(request, exc))
        else:
            await answer(endpoint.accepted(request, signal))


def _request(scope: Scope) -> Request:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers") or ():
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    path: str = scope.get("path") or ""
    # ASGI: `path` includes `root_path` (Starlette's Mount extends `root_path` and keeps the
    # full path); older Starlette stripped it instead, which the check below also accepts.
    root_path: str = scope.get("root_path") or ""
    if root_path and path.startswith(root_path):
        path = path[len(root_path) :]
    client = scope.get("client")
    return Request(
        method=str(scope.get("method", "GET")),
        path=path,
        content_type=headers.get("content-type"),
        content_length=content_length(headers.get("content-length")),
        origin=headers.get("origin"),
        client=str(client[0]) if client else None,
        if_none_match=headers.get("if-none-match"),
        preflight_method=headers.get("access-control-request-method"),
    )


async def _read_body(receive: Receive, limit: int) -> bytes | object:
    """The whole body, or `_TOO_LARGE` as soon as more than `limit` bytes arrived (the rest is
    never read), or `_GONE` if the client disconnected."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            return _GONE
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return _TOO_LARGE
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send_reply(send: Send, reply: Reply, *, head: bool = False) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": reply.status,
            "headers": _encode(reply.headers),
        }
    )
    await send({"type": "http.response.body", "body": b"" if head else reply.body})


def _encode(headers: Sequence[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message.get("type") == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message.get("type") == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class BrixoHeadersMiddleware:
    """ASGI middleware: `Brixo-Message-Id` (and `Brixo-Link`, when a link secret is configured)
    on the response of a request in which a message was started.

    The values are read when the response starts, so they are there for streaming responses as
    well, provided the message has started by then: a `@brixo_otel.message` generator opens its
    span on its first step, so hand the response `await brixo_otel.web.aprimed(answer(...))`
    (or `primed(...)`), not the bare generator. The first message of the request counts; a
    response that already carries `Brixo-Message-Id` is left as it is. Cross-origin frontends
    also need `Access-Control-Expose-Headers: Brixo-Message-Id, Brixo-Link` from the app's
    CORS set-up to read them.
    """

    __slots__ = ("app",)

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        with _core.request_scope() as holder:

            async def send_with_headers(message: Message) -> None:
                if message.get("type") == "http.response.start":
                    message = _with_message_headers(message, holder)
                await send(message)

            await self.app(scope, receive, send_with_headers)


_MESSAGE_ID_NAME: Final = MESSAGE_ID_HEADER.lower().encode("latin-1")


def _with_message_headers(message: Message, holder: _core.RequestMessage) -> Message:
    with _core.guard("adding the message headers to a response"):
        message_id = holder.message_id
        if message_id is None:
            return message
        headers = list(message.get("headers") or ())
        if any(name.lower() == _MESSAGE_ID_NAME for name, _ in headers):
            return message
        headers.extend(_encode(header_values(message_id, holder.link())))
        return {**message, "headers": headers}
    return message
