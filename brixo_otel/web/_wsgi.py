"""The feedback endpoint and the headers middleware as plain WSGI (PEP 3333) apps.

For Flask, mount the endpoint with werkzeug's dispatcher and wrap the app with the middleware::

    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    app.wsgi_app = DispatcherMiddleware(
        BrixoHeadersWSGIMiddleware(app.wsgi_app), {"/brixo": wsgi_feedback_app()}
    )

Django and any other WSGI server take them the same way: they are callables over `environ`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import IO, TYPE_CHECKING

import brixo_otel
from brixo_otel.web import _core
from brixo_otel.web._endpoint import DEFAULT_MAX_BODY_BYTES, Endpoint, Request, content_length
from brixo_otel.web._headers import MESSAGE_ID_HEADER, header_values
from brixo_otel.web._ratelimit import RateLimit
from brixo_otel.web._reply import Reply

if TYPE_CHECKING:  # typeshed's WSGI types, which Flask, Django and werkzeug use too
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

Headers = list[tuple[str, str]]

#: Bytes read from `wsgi.input` per call.
_CHUNK = 64 * 1024


def wsgi_feedback_app(
    *,
    require_link: bool = False,
    allow_origins: Sequence[str] = (),
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    rate_limit: RateLimit | None = None,
) -> WSGIApplication:
    """The WSGI twin of `asgi_feedback_app`, with the same behaviour (it calls
    `brixo_otel.feedback(...)`). A body without `Content-Length` is read only where the server
    says the input ends by itself (`wsgi.input_terminated`); elsewhere it is a 411."""
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

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = _request(environ)
        try:
            reply = self._handle(request, environ)
        except Exception as exc:
            reply = self._endpoint.failed(request, exc)
        start_response(reply.status_line, list(reply.headers))
        return [b""] if request.method == "HEAD" else [reply.body]

    def _handle(self, request: Request, environ: WSGIEnvironment) -> Reply:
        endpoint = self._endpoint
        early = endpoint.before_body(request)
        if early is not None:
            return early
        stream: IO[bytes] = environ["wsgi.input"]
        if request.content_length is None:
            if not environ.get("wsgi.input_terminated"):
                return endpoint.length_required(request)
            body = _read(stream, None, endpoint.max_body_bytes)
        else:
            body = _read(stream, request.content_length, endpoint.max_body_bytes)
        if body is None:
            return endpoint.too_large(request)
        parsed = endpoint.parse(request, body)
        if isinstance(parsed, Reply):
            return parsed
        try:
            signal = brixo_otel.feedback(**parsed)
        except brixo_otel.InvalidSignal as exc:
            return endpoint.refused(request, exc)
        return endpoint.accepted(request, signal)


def _read(stream: IO[bytes], length: int | None, limit: int) -> bytes | None:
    """`length` bytes (or up to the end of a self-terminating input), or None as soon as more
    than `limit` arrived."""
    chunks: list[bytes] = []
    size = 0
    remaining = length
    while remaining is None or remaining > 0:
        want = _CHUNK if remaining is None else min(_CHUNK, remaining)
        chunk = stream.read(min(want, limit + 1 - size))
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if remaining is not None:
            remaining -= len(chunk)
    return b"".join(chunks)


def _request(environ: WSGIEnvironment) -> Request:
    remote = environ.get("REMOTE_ADDR")
    return Request(
        method=str(environ.get("REQUEST_METHOD", "GET")),
        path=str(environ.get("PATH_INFO", "")),
        content_type=environ.get("CONTENT_TYPE") or None,
        content_length=content_length(environ.get("CONTENT_LENGTH")),
        origin=environ.get("HTTP_ORIGIN"),
        client=str(remote) if remote else None,
        if_none_match=environ.get("HTTP_IF_NONE_MATCH"),
        preflight_method=environ.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD"),
    )


class BrixoHeadersWSGIMiddleware:
    """WSGI middleware: `Brixo-Message-Id` (and `Brixo-Link`, when a link secret is configured)
    on the response of a request in which a message was started, as `BrixoHeadersMiddleware`
    does for ASGI. The values are read when the app calls `start_response`; for a streamed
    body, start the message in the view (`brixo_otel.web.primed(answer(...))`)."""

    __slots__ = ("app",)

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        with _core.request_scope() as holder:

            def start(
                status: str, headers: Headers, exc_info: OptExcInfo | None = None, /
            ) -> Callable[[bytes], object]:
                headers = _with_message_headers(headers, holder)
                if exc_info is None:
                    return start_response(status, headers)
                return start_response(status, headers, exc_info)

            return self.app(environ, start)


def _with_message_headers(headers: Headers, holder: _core.RequestMessage) -> Headers:
    with _core.guard("adding the message headers to a response"):
        message_id = holder.message_id
        if message_id is None:
            return headers
        name = MESSAGE_ID_HEADER.lower()
        if any(existing.lower() == name for existing, _ in headers):
            return headers
        return [*headers, *header_values(message_id, holder.link())]
    return headers
