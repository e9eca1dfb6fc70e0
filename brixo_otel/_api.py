"""The module-level API: `configure()` and the calls that act on the default client.

Each call is `Client`'s own method bound to the default client, so every signature is written
once, on `Client`; `configure` takes exactly `Client`'s options.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

from brixo_otel._client import Client
from brixo_otel._errors import ConfigurationError
from brixo_otel._instrument import _current
from brixo_otel._internal import logger
from brixo_otel._settings import MEMORY_OUTBOX, check_names

P = ParamSpec("P")
R = TypeVar("R")

_default: Client | None = None
_default_lock = threading.Lock()
_configure_lock = threading.Lock()


def _options_of(
    init: Callable[Concatenate[Client, P], None],
) -> Callable[[Callable[..., Client]], Callable[P, Client]]:
    """Give `configure` the signature of `Client(...)`, for type checkers and `help()`."""

    def adopt(function: Callable[..., Client]) -> Callable[P, Client]:
        signature = inspect.signature(init)
        function.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=list(signature.parameters.values())[1:], return_annotation="Client"
        )
        return function

    return adopt


@_options_of(Client.__init__)
def configure(**options: Any) -> Client:
    """Set up brixo-otel for this process and make the new client the default.

    Takes the options of `Client(...)`; arguments win over `BRIXO_*` environment variables. A
    wrong argument raises `TypeError` or `ConfigurationError` here, and nothing is changed.
    Calling it again replaces the default client; the old one is shut down (its undelivered
    signals stay in the outbox for the new one).
    """
    global _default
    check_names(options)  # an unknown name is told what is accepted, not just refused
    with _configure_lock:
        client = Client(**options)
        with _default_lock:
            previous, _default = _default, client
        if previous is not None:
            previous.shutdown()
        _current.use_tracer(
            client.tracer, client.root_span_attributes, content=client.settings.capture_content
        )
    return client


def current() -> Client | None:
    """The default client, if one was configured."""
    return _default


def get_client() -> Client:
    """The default client; configured from the environment on first use if `configure()` was
    never called, so a library can call `feedback()` without owning the app's start-up."""
    client = _default
    if client is not None:
        return client
    with _configure_lock:
        client = _default
    if client is None:
        logger.info("brixo_otel: configuring from the environment on first use")
        try:
            client = configure()
        except ConfigurationError as exc:
            # The environment is lenient, so only the outbox can refuse here (e.g. a read-only
            # state directory); feedback() must not raise it: keep signals in memory, loudly.
            logger.error(
                "brixo_otel: %s; until configure() is called, signals are kept in memory only",
                exc,
            )
            client = configure(outbox_path=MEMORY_OUTBOX)
    return client


def _clear_default(client: Client) -> None:
    global _default
    with _default_lock:
        if _default is client:
            _default = None
            _current.use_tracer(None)


def _on_default_client(method: Callable[Concatenate[Client, P], R]) -> Callable[P, R]:
    """`method` called on the default client (configured from the environment if need be)."""

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        return method(_default or get_client(), *args, **kwargs)

    _drop_self(call, method)
    return call


def _drop_self(function: Callable[..., Any], method: Callable[..., Any]) -> None:
    signature = inspect.signature(method)
    function.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=list(signature.parameters.values())[1:]
    )


def _on_default_client_async(
    method: Callable[Concatenate[Client, P], Awaitable[R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """`_on_default_client` for a coroutine method: the result is a coroutine function too, so
    `inspect.iscoroutinefunction` (and frameworks that ask it) see what it is."""

    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        return await method(get_client(), *args, **kwargs)

    _drop_self(call, method)
    return call


feedback = _on_default_client(Client.feedback)
afeedback = _on_default_client_async(Client.afeedback)
retract_feedback = _on_default_client(Client.retract_feedback)
link_token = _on_default_client(Client.link_token)


def _on_current_client(
    method: Callable[Concatenate[Client, P], R],
    when_none: R,
    then: Callable[[Client], None] | None = None,
) -> Callable[P, R]:
    """`method` called on the default client if there is one: flushing or shutting down must
    not configure a client just to find it has nothing to do."""

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        client = _default
        if client is None:
            return when_none
        result = method(client, *args, **kwargs)
        if then is not None:
            then(client)
        return result

    _drop_self(call, method)
    return call


flush = _on_current_client(Client.flush, True)
shutdown = _on_current_client(Client.shutdown, None, then=_clear_default)
