"""The one module of `brixo_otel.web` that touches brixo-otel's private internals.

Everything else in the web glue uses the public API only; what it needs beyond that (the message
scope of the running request, the guard that keeps telemetry from breaking the app) is reached
through here, so a move of a private module is fixed in one place.

How a response learns its message: the headers middleware puts a `RequestMessage` holder in a
context variable for the duration of the request. A span processor (`_MessageObserver`, added to
the client's TracerProvider once, as any OpenTelemetry extension is) looks at every span start:
when one starts inside a message scope and the current request has a holder that is still
empty, the scope goes into the holder. The middleware reads the holder when the response
starts. Keeping the scope object itself, not a copy of its id, means an id bound with
`set_message_id` before the response starts is seen too.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

import brixo_otel
from brixo_otel._instrument import _scope
from brixo_otel._internal import guard, log_rate_limited

__all__ = [
    "RequestMessage",
    "current_link",
    "current_message_id",
    "guard",
    "link_secret_configured",
    "log_rate_limited",
    "request_scope",
]

#: The named logger of the web glue (a child of "brixo_otel", which has a NullHandler).
logger: Final = logging.getLogger("brixo_otel.web")


class RequestMessage:
    """The message bound during one request, filled by the span processor below."""

    __slots__ = ("_scope",)

    def __init__(self) -> None:
        self._scope: _scope.MessageScope | None = None

    @property
    def message_id(self) -> str | None:
        scope = self._scope
        return None if scope is None else scope.message_id

    def link(self) -> str | None:
        """A link token for the message, or None when no link secret is configured (or the
        message has no id or span yet)."""
        scope = self._scope
        if scope is None:
            return None
        return _link_for(scope)


_request: contextvars.ContextVar[RequestMessage | None] = contextvars.ContextVar(
    "brixo_otel.web.request_message", default=None
)


class _MessageObserver(SpanProcessor):
    """Hands the first message scope started in a request to that request's holder.

    It runs on every span start of the provider: outside a request with a holder it costs one
    context-variable read.
    """

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        holder = _request.get()
        if holder is None or holder._scope is not None:
            return
        scope = _scope.current_message(parent_context)
        if scope is not None:
            holder._scope = scope

    def on_end(self, span: ReadableSpan) -> None:
        return None

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


_OBSERVER: Final = _MessageObserver()
_observed: weakref.WeakSet[TracerProvider] = weakref.WeakSet()
_observed_lock = threading.Lock()


def _observe_current_provider() -> None:
    """Add the observer to the default client's TracerProvider, once per provider.

    Done on first use rather than at import: the app may configure brixo-otel (and choose its
    provider) after building its middleware stack.
    """
    provider = brixo_otel.get_client().tracer_provider
    if provider in _observed:
        return
    with _observed_lock:
        if provider not in _observed:
            provider.add_span_processor(_OBSERVER)
            _observed.add(provider)


@contextmanager
def request_scope() -> Iterator[RequestMessage]:
    """Make a fresh holder current for the body of the `with` (one request)."""
    holder = RequestMessage()
    with guard("watching for the request's message"):
        _observe_current_provider()
    token = _request.set(holder)
    try:
        yield holder
    finally:
        _request.reset(token)


def current_message_id() -> str | None:
    """The id of the message being produced right here (inside `@message` / `message_span`)."""
    scope = _scope.current_message()
    return None if scope is None else scope.message_id


def current_link() -> str | None:
    """A link token for the message being produced right here, if a secret is configured."""
    scope = _scope.current_message()
    return None if scope is None else _link_for(scope)


def link_secret_configured() -> bool:
    """Whether the default client can sign and check link tokens. When the settings cannot be
    read (a client of another shape), True: `feedback()` then decides, per request."""
    settings = getattr(brixo_otel.get_client(), "settings", None)
    secret = getattr(settings, "link_secret", True)
    return secret is not None


def _link_for(scope: _scope.MessageScope) -> str | None:
    if scope.message_id is None or scope.span is None:
        return None
    # `link_token()` names the current message: make this scope current for the call. It is a
    # pure computation (an HMAC over the span context), no I/O.
    token = otel_context.attach(otel_context.set_value(_scope.MESSAGE_KEY, scope))
    try:
        return brixo_otel.link_token()
    except brixo_otel.ConfigurationError:
        return None  # no link secret configured: the message id alone goes out
    except (LookupError, ValueError) as exc:  # `UnknownMessage`: no id or span known for it
        log_rate_limited(
            logging.WARNING, "web:link", "brixo_otel.web: no link token for the message: %s", exc
        )
        return None
    finally:
        otel_context.detach(token)
