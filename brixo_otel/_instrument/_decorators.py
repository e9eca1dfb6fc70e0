"""`@message`, `@interaction` and `message_span`: one span per call, with ids in the Context.

A decorated callable keeps its name, docstring, signature (through `__wrapped__`) and method
binding. A plain function or coroutine function gets a closure (`functools.wraps`), whose call
costs a fraction of a wrapt proxy's; everything else (generator functions, which must still look
like ones to frameworks that ask `inspect`; classmethod and staticmethod objects; other
callables) gets a wrapt proxy, which forwards all of that. There is one wrapper per kind of
callable, chosen once at decoration time, because each kind
ends its span at a different moment: on return, when the coroutine finishes, or when the stream
is exhausted, closed or fails. A stream whose consumer goes away without closing it is ended by
the stream watcher (`_streams`) once it has been idle for its timeout; a message that stops
because its consumer did (closed early, cancelled, idle, collected) is marked cancelled.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import sys
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Mapping
from types import TracebackType
from typing import Any, Final, TypeVar, overload

import wrapt
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from brixo_otel import attributes as attrs
from brixo_otel._instrument import _current as _runtime
from brixo_otel._instrument import _streams
from brixo_otel._instrument._scope import (
    INTERACTION_KEY,
    MESSAGE_KEY,
    InteractionScope,
    MessageScope,
    current_conversation_id,
)
from brixo_otel._instrument._stepping import InContext, step
from brixo_otel._internal import guard, log_rate_limited, logger

F = TypeVar("F", bound=Callable[..., Any])

#: An id given to a decorator: a fixed string, or a function of the call's bound arguments.
IdSource = str | Callable[[Mapping[str, Any]], "str | None"] | None

_MISSING: Final = object()

#: How long a streamed message waits for its consumer to ask for the next item before it is
#: taken as abandoned and its span ended (`idle_timeout=` on the decorator; None: never).
DEFAULT_IDLE_TIMEOUT: Final = 60.0


class _IdResolver:
    """Turns one `IdSource` into the id of a given call; the plan is fixed at decoration time."""

    __slots__ = ("_compute", "_fixed", "_param_index", "_param_name", "_signature", "never")

    def __init__(self, argument: str, source: object, func: Callable[..., Any]) -> None:
        self._fixed: str | None = None
        self._compute: Callable[[Mapping[str, Any]], object] | None = None
        self._param_name: str | None = None
        self._param_index: int | None = None
        self._signature: inspect.Signature | None = None
        if isinstance(source, str):
            if not source:
                raise TypeError(f"{argument} must not be an empty string")
            self._fixed = source
        elif callable(source):
            self._compute = source
            self._signature = _signature(func)
        elif source is None:
            signature = _signature(func)
            parameter = signature.parameters.get(argument) if signature else None
            if parameter is not None:
                self._param_name = argument
                if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
                    self._param_index = list(signature.parameters).index(argument)  # type: ignore[union-attr]
        else:
            raise TypeError(
                f"{argument} must be a string (a fixed id), a callable that receives the call's "
                f"arguments by name and returns the id, or None (use the function's own "
                f"'{argument}' parameter, or set_message_id() inside); got "
                f"{type(source).__name__} {source!r}"
            )
        #: Nothing can supply this id at call time (only `set_message_id` later): skip resolving.
        self.never = self._fixed is None and self._compute is None and self._param_name is None

    def resolve(
        self, instance: object, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> str | None:
        index = self._param_index
        if index is not None and not kwargs:  # the common case: passed by position
            if instance is not None:
                index -= 1
            value: object = args[index] if 0 <= index < len(args) else None
            if value is None or isinstance(value, str):
                return value or None
            return str(value)
        if self._fixed is not None:
            return self._fixed
        value = None
        if self._compute is not None:
            with guard("computing an id from the call's arguments"):
                value = self._compute(self._bound_arguments(instance, args, kwargs))
        elif self._param_name is not None:
            value = kwargs.get(self._param_name, _MISSING)
            if value is _MISSING:
                value = None
                if self._param_index is not None:
                    index = self._param_index - (1 if instance is not None else 0)
                    if 0 <= index < len(args):
                        value = args[index]
        if value is None or isinstance(value, str):
            return value or None
        return str(value)

    def _bound_arguments(
        self, instance: object, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Mapping[str, Any]:
        if self._signature is None:
            return dict(kwargs)
        if instance is not None:  # wrapt hands us the arguments without self / cls
            args = (instance, *args)
        bound = self._signature.bind_partial(*args, **kwargs)
        bound.apply_defaults()
        return bound.arguments


def _signature(func: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(getattr(func, "__func__", func))
    except (TypeError, ValueError):
        return None


def _no_parameters() -> None:
    """Stands for 'no function': `message_span` ids are fixed or bound later."""


#: The ids of what takes none from its arguments (interactions).
_NO_ID: Final = _IdResolver("message_id", None, _no_parameters)


#: What the vendor SDK warns about when an interaction ends without it.
_ROOT_CONTEXT: Final = (
    attrs.ACCOUNT_PREFIX + "id",
    attrs.ACCOUNT_PREFIX + "name",
    attrs.USER_PREFIX + "id",
    attrs.USER_PREFIX + "name",
    attrs.SESSION_ID,
)
_ROOT_CONTENT: Final = (attrs.INPUT, attrs.OUTPUT)


def check_root_context(span: Span) -> None:
    """Warn, as the vendor SDK does, when an interaction ends without the context that makes it
    useful in Brixo (rate-limited per missing set; content only when content is captured)."""
    recorded = getattr(span, "attributes", None) or {}
    wanted = _ROOT_CONTEXT + (_ROOT_CONTENT if _runtime.capture_content else ())
    missing = [name for name in wanted if name not in recorded]
    if missing:
        log_rate_limited(
            logging.WARNING,
            "interaction:missing:" + ",".join(missing),
            "brixo_otel: interaction %r ended without %s; set them with Brixo.begin_context() "
            "or update_context()",
            getattr(span, "name", "?"),
            ", ".join(missing),
        )


def _record_failure(span: Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def _cancel_reason(exc: BaseException) -> str | None:
    """Why a message stopped, when `exc` (not an `Exception`) says its consumer stopped it:
    closed (`GeneratorExit`: `close()`, `aclose()`, `break`, dropped) or cancelled (the task's
    cancellation: asyncio's, anyio's, trio's). An interrupt or an exit is neither."""
    if isinstance(exc, GeneratorExit):
        return _streams.CLOSED
    if isinstance(exc, (Exception, KeyboardInterrupt, SystemExit)):
        return None
    return _streams.CANCELLED


def _mark_cancelled(span: Span, reason: str) -> None:
    """The message ended because its consumer went away: said by attributes, not by the status
    (a caller that stops is no failure of the message, as OpenTelemetry treats a cancelled
    call), so error rates stay what they are and `brixo.message.cancelled` finds them all."""
    span.set_attributes({attrs.MESSAGE_CANCELLED: True, attrs.MESSAGE_CANCEL_REASON: reason})


class _Rating:
    """Whether rating is expected of interactions (`Brixo.init(link_secret=...)`, or one of
    them already carried a message id), and which interactions were warned about: for the
    client in use (a new client starts afresh; the tracer tells which client is in use)."""

    __slots__ = ("expected", "tracer", "warned")

    def __init__(self, tracer: object) -> None:
        self.tracer = tracer
        self.expected = False
        #: Interaction names already warned about (once each; bounded).
        self.warned: set[str] = set()


_rating = _Rating(None)
_MAX_UNRATED_WARNED: Final = 1000


def _rating_state() -> _Rating:
    global _rating
    if _rating.tracer is not _runtime.tracer:
        _rating = _Rating(_runtime.tracer)
    return _rating


def expect_rated_interactions() -> None:
    """From now on (for this client), an interaction that ends without a message id is warned
    about."""
    _rating_state().expected = True


def check_rateable(span: Span) -> None:
    """An interaction that ends without a message id cannot be rated; when rating is expected,
    say so where a developer sees it, once per interaction name."""
    state = _rating_state()
    recorded = getattr(span, "attributes", None) or {}
    if attrs.MESSAGE_ID in recorded:
        state.expected = True
        return
    name = str(getattr(span, "name", "?"))
    if not state.expected or name in state.warned:
        return
    if len(state.warned) < _MAX_UNRATED_WARNED:
        state.warned.add(name)
    warn_visibly(
        "brixo_otel: interaction %r ended without a message id, so feedback cannot rate it "
        "(its feedback would find no message); pass Brixo.begin_context(message_id=...) or call "
        "brixo_otel.set_message_id(...) inside it",
        name,
    )


def warn_visibly(message: str, *args: object) -> None:
    """A warning that must reach the developer even when the app configured no logging.

    Through the `brixo_otel` logger when any handler would take it (the app's logging, pytest's
    caplog); otherwise on stderr, as Python's own `logging.lastResort` prints the warnings of a
    library that has no handler (ours has a `NullHandler`, which silences that fallback). Never
    through `warnings`: under `-W error` that would raise into the app.
    """
    if _has_handler(logger, logging.WARNING):
        logger.warning(message, *args)
        return
    record = logger.makeRecord(logger.name, logging.WARNING, "(brixo_otel)", 0, message, args, None)
    fallback = logging.lastResort
    try:
        if fallback is not None:
            fallback.handle(record)
        else:
            sys.stderr.write(record.getMessage() + "\n")
    except Exception:  # a closed stderr must not break the app
        pass


def _has_handler(start: logging.Logger, level: int) -> bool:
    """Whether a record at `level` from `start` would reach a handler other than a NullHandler
    (the walk `Logger.callHandlers` makes)."""
    if not start.isEnabledFor(level):
        return True  # the app turned it off on purpose: respect that
    current: logging.Logger | None = start
    while current is not None:
        for handler in current.handlers:
            if not isinstance(handler, logging.NullHandler) and level >= handler.level:
                return True
        if not current.propagate:
            return False
        current = current.parent
    return False


class _Traced:
    """What one decorated callable does on each call: open a scope and its span."""

    __slots__ = (
        "_conversation_id",
        "_end_abandoned",
        "_from_response",
        "_idle_timeout",
        "_is_interaction",
        "_message_id",
        "_name",
    )

    def __init__(
        self,
        name: str,
        *,
        message_id: _IdResolver | None = None,
        conversation_id: _IdResolver | None = None,
        is_interaction: bool = False,
        from_response: bool = False,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        self._name = name
        self._message_id = message_id or _NO_ID
        self._conversation_id = conversation_id or _NO_ID
        self._is_interaction = is_interaction
        self._from_response = from_response
        self._idle_timeout = idle_timeout
        # One bound method for the stream watcher to call, rather than one made per stream.
        self._end_abandoned = self._end_cancelled

    def open(
        self, instance: object, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Span, Context]:
        """Start the span in a context that carries the scope; return both.

        The span is created with its ids as attributes: one attribute set at creation costs a
        fraction of setting it afterwards, and this is the hot path of every decorated call.
        """
        parent = otel_context.get_current()
        extra = _runtime.root_span_attributes
        span_attributes: dict[str, AttributeValue] = dict(extra) if extra else {}
        if self._is_interaction:
            return self._open_interaction(parent, span_attributes)
        ids = self._message_id
        message_id = None if ids.never else ids.resolve(instance, args, kwargs)
        ids = self._conversation_id
        conversation_id = None if ids.never else ids.resolve(instance, args, kwargs)
        scope = MessageScope(message_id, conversation_id, self._from_response)
        if message_id is not None:
            span_attributes[attrs.MESSAGE_ID] = message_id
        if conversation_id is None and parent:  # an empty Context has none
            conversation_id = current_conversation_id(parent)
        if conversation_id is not None:
            span_attributes[attrs.SESSION_ID] = conversation_id
            span_attributes[attrs.GEN_AI_CONVERSATION_ID] = conversation_id
        ctx = otel_context.set_value(MESSAGE_KEY, scope, parent)
        span = _runtime.tracer.start_span(self._name, context=ctx, attributes=span_attributes)
        scope.span = span
        return span, trace.set_span_in_context(span, ctx)

    def _open_interaction(
        self, parent: Context, span_attributes: dict[str, AttributeValue]
    ) -> tuple[Span, Context]:
        """The interaction's root span, which is also the span of a message of its own: one
        that has no id until `set_message_id` or `Brixo.begin_context(message_id=...)` binds
        it, and is then indexed and rated like any message."""
        span_attributes[attrs.SPAN_KIND] = attrs.SPAN_KIND_ROOT
        conversation_id = current_conversation_id(parent)
        if conversation_id is not None:  # the span processor leaves a message span to us
            span_attributes[attrs.SESSION_ID] = conversation_id
            span_attributes[attrs.GEN_AI_CONVERSATION_ID] = conversation_id
        scope = MessageScope(None, None)
        ctx = otel_context.set_value(MESSAGE_KEY, scope, parent)
        span = _runtime.tracer.start_span(self._name, context=ctx, attributes=span_attributes)
        scope.span = span
        ctx = otel_context.set_value(INTERACTION_KEY, InteractionScope(span, scope), ctx)
        return span, trace.set_span_in_context(span, ctx)

    def close(self, span: Span) -> None:
        """End the span; an interaction first checks it got its context, as the vendor SDK,
        and that it can be rated when rating is expected."""
        if self._is_interaction:
            check_root_context(span)
            check_rateable(span)
        span.end()

    def _end_cancelled(self, span: Span, reason: str) -> None:
        """The stream watcher's way to end a stream whose consumer went away."""
        _mark_cancelled(span, reason)
        self.close(span)

    def _end(self, span: Span, ended_by: BaseException | None) -> None:
        """End a message that ran to its end (`ended_by` None), failed or was stopped."""
        if ended_by is not None:
            self._stopped(span, ended_by)
        self.close(span)

    def wrap(self, func: F) -> F:
        target = getattr(func, "__func__", func)
        if inspect.isasyncgenfunction(target):
            stream = self._call_stream(self._async_generator, is_async=True)
            return wrapt.decorator(stream)(func)  # type: ignore[return-value]
        if inspect.isgeneratorfunction(target):
            stream = self._call_stream(self._generator, is_async=False)
            return wrapt.decorator(stream)(func)  # type: ignore[return-value]
        if inspect.iscoroutinefunction(target):
            if inspect.isfunction(func):
                return self._coroutine_function(func)  # type: ignore[return-value]
            return wrapt.decorator(self._call_coroutine)(func)  # type: ignore[return-value]
        if inspect.isfunction(func):
            return self._function(func)  # type: ignore[return-value]
        return wrapt.decorator(self._call)(func)  # type: ignore[return-value]

    def _function(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """A closure over `_call`. Bound as a method, it gets `self` in `args` (no `instance`),
        which the id's parameter index counts already: it is an index into the signature."""
        call = self._call

        @functools.wraps(func)
        def traced(*args: Any, **kwargs: Any) -> Any:
            return call(func, None, args, kwargs)

        return traced

    def _coroutine_function(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """As `_function`, for a coroutine function (and one itself, for `inspect`)."""
        return functools.wraps(func)(self._traced_coroutine(func, None))

    def _traced_coroutine(
        self, func: Callable[..., Any], instance: object
    ) -> Callable[..., Awaitable[Any]]:
        """The coroutine function that runs `func` in its message: the one body of both
        coroutine wrappers. The body is the closure itself, not a coroutine it awaits: one
        coroutine per call instead of two, a tenth of what the decorator costs an async call."""
        open_span, close, stopped = self.open, self.close, self._stopped
        attach, detach = otel_context.attach, otel_context.detach

        async def traced(*args: Any, **kwargs: Any) -> Any:
            span, ctx = open_span(instance, args, kwargs)
            token = attach(ctx)
            try:
                return await func(*args, **kwargs)
            except BaseException as exc:
                stopped(span, exc)
                raise
            finally:
                detach(token)
                close(span)

        return traced

    def _call(
        self,
        wrapped: Callable[..., Any],
        instance: object,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        span, ctx = self.open(instance, args, kwargs)
        token = otel_context.attach(ctx)
        try:
            return wrapped(*args, **kwargs)
        except Exception as exc:
            _record_failure(span, exc)
            raise
        finally:
            otel_context.detach(token)
            self.close(span)

    def _call_coroutine(
        self,
        wrapped: Callable[..., Any],
        instance: object,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Awaitable[Any]:
        """wrapt's wrapper for coroutine callables that are not plain functions (bound per
        call, so `instance` is known)."""
        return self._traced_coroutine(wrapped, instance)(*args, **kwargs)

    @staticmethod
    def _stopped(span: Span, exc: BaseException) -> None:
        """Why a message did not run to its end: it failed, or it was stopped (cancelled,
        closed early: its consumer went away), which the span says too."""
        if isinstance(exc, Exception):
            _record_failure(span, exc)
            return
        reason = _cancel_reason(exc)
        if reason is not None:
            _mark_cancelled(span, reason)

    def _call_stream(
        self,
        body: Callable[..., Generator[Any, Any, Any] | AsyncGenerator[Any, Any]],
        *,
        is_async: bool,
    ) -> Callable[..., Any]:
        """wrapt's wrapper for a generator function, `body` being `_generator` (or, `is_async`,
        `_async_generator`): with an idle timeout, the stream is watched, by a weak reference to
        the generator the caller holds, so an abandoned one still ends its span."""

        def call(
            wrapped: Callable[..., Any],
            instance: object,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            timeout = self._idle_timeout
            if timeout is None:
                return body(wrapped, args, kwargs, instance, None)
            stream = _streams.StreamWatch(timeout, is_async=is_async)
            generator = body(wrapped, args, kwargs, instance, stream)
            stream.generator = weakref.ref(generator)
            return generator

        return call

    def _generator(
        self,
        wrapped: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        instance: object,
        stream: _streams.StreamWatch | None,
    ) -> Generator[Any, Any, Any]:
        span, ctx = self.open(instance, args, kwargs)
        step_ctx = contextvars.copy_context()
        step_ctx.run(otel_context.attach, ctx)
        ended_by: BaseException | None = None
        if stream is not None:
            _streams.watch(stream, span, self._end_abandoned)
        try:
            inner = step_ctx.run(wrapped, *args, **kwargs)
            return (yield from step(step_ctx, inner, stream))
        except BaseException as exc:  # failed, or closed early, dropped: the consumer stopped
            ended_by = exc
            raise
        finally:
            # The watcher may have ended the span already (the consumer went idle, then came
            # back); whoever releases the watch ends it.
            if stream is None or _streams.release(stream):
                self._end(span, ended_by)
            ended_by = None  # no cycle through the frame

    async def _async_generator(
        self,
        wrapped: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        instance: object,
        stream: _streams.StreamWatch | None,
    ) -> AsyncGenerator[Any, Any]:
        # The same delegation as `step`, spelled out: async generators have no `yield from`.
        span, ctx = self.open(instance, args, kwargs)
        step_ctx = contextvars.copy_context()
        step_ctx.run(otel_context.attach, ctx)
        ended_by: BaseException | None = None
        if stream is not None:
            _streams.watch(stream, span, self._end_abandoned)
        try:
            agen = step_ctx.run(wrapped, *args, **kwargs)
            to_send: Any = None
            to_throw: BaseException | None = None
            while True:
                try:
                    if to_throw is None:
                        item = await InContext(step_ctx, agen.asend(to_send))
                    else:
                        item = await InContext(step_ctx, agen.athrow(to_throw))
                except StopAsyncIteration:
                    return
                try:
                    to_send, to_throw = (yield item), None
                except GeneratorExit:
                    await InContext(step_ctx, agen.aclose())
                    raise
                except BaseException as exc:  # thrown in by the consumer: forward it
                    to_send, to_throw = None, exc
                if stream is not None:
                    stream.turns += 1
        except BaseException as exc:  # failed, or closed early, cancelled: the consumer stopped
            ended_by = exc
            raise
        finally:
            if stream is None or _streams.release(stream):
                self._end(span, ended_by)
            ended_by = None


def _qualified_name(func: Callable[..., Any]) -> str:
    target = getattr(func, "__func__", func)
    return str(getattr(target, "__qualname__", None) or getattr(target, "__name__", "message"))


def _check_name(name: object) -> str | None:
    if name is not None and not (isinstance(name, str) and name):
        raise TypeError(f"name must be a non-empty string or None, got {name!r}")
    return name


def _check_idle_timeout(idle_timeout: object) -> float | None:
    if idle_timeout is None:
        return None
    if isinstance(idle_timeout, bool) or not isinstance(idle_timeout, (int, float)):
        raise TypeError(f"idle_timeout must be seconds (a number) or None, got {idle_timeout!r}")
    if not idle_timeout > 0:
        raise TypeError(f"idle_timeout must be more than 0 seconds, got {idle_timeout!r}")
    return float(idle_timeout)


def _check_from_response(from_response: object, message_id: object) -> bool:
    if not isinstance(from_response, bool):
        raise TypeError(f"message_id_from_response must be True or False, got {from_response!r}")
    if from_response and isinstance(message_id, str):
        raise TypeError(
            "message_id_from_response=True binds the provider's response id as the message id; "
            f"it cannot be combined with the fixed message_id {message_id!r}"
        )
    return from_response


@overload
def message(func: F, /) -> F: ...
@overload
def message(
    *,
    message_id: IdSource = None,
    conversation_id: IdSource = None,
    name: str | None = None,
    message_id_from_response: bool = False,
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
) -> Callable[[F], F]: ...
def message(
    func: Callable[..., Any] | None = None,
    /,
    *,
    message_id: IdSource = None,
    conversation_id: IdSource = None,
    name: str | None = None,
    message_id_from_response: bool = False,
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
) -> Any:
    """Trace each call as the span of one assistant message, carrying the app's message id.

    `message_id` / `conversation_id`: a fixed string, or a callable that receives the call's
    arguments by name and returns the id; given neither, a parameter of the function with that
    name supplies it, and `set_message_id()` can bind it inside the call. Every span started
    during the call carries the ids, and the finished span is indexed so that feedback on the
    message joins its trace.

    `message_id_from_response=True`: a message that has no id of its own takes the first
    provider response id recorded by an LLM span inside it (`gen_ai.response.id`, or
    OpenInference's recorded response) when that span ends.

    `idle_timeout` (generator functions): seconds the stream may wait for its consumer to ask
    for the next item before it is taken as abandoned and its span ended, marked cancelled;
    None never does. Time the generator spends producing an item does not count.
    """
    if isinstance(func, str):
        raise TypeError(
            "message() takes its ids by keyword: @message(message_id=..., conversation_id=...)"
        )
    _check_name(name)
    from_response = _check_from_response(message_id_from_response, message_id)
    timeout = _check_idle_timeout(idle_timeout)

    def decorate(target: F) -> F:
        if not callable(target) and not isinstance(target, (classmethod, staticmethod)):
            raise TypeError(f"@message decorates a callable, got {type(target).__name__}")
        traced = _Traced(
            name or _qualified_name(target),
            message_id=_IdResolver("message_id", message_id, target),
            conversation_id=_IdResolver("conversation_id", conversation_id, target),
            from_response=from_response,
            idle_timeout=timeout,
        )
        return traced.wrap(target)

    return decorate if func is None else decorate(func)


@overload
def interaction(func: F, /) -> F: ...
@overload
def interaction(
    *, name: str | None = None, idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT
) -> Callable[[F], F]: ...
@overload
def interaction(
    name: str | None, /, *, idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT
) -> Callable[[F], F]: ...
def interaction(
    func: Callable[..., Any] | str | None = None,
    /,
    *,
    name: str | None = None,
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
) -> Any:
    """Trace each call as the root span of one user interaction (`brixo.span.kind = ROOT`).

    `Brixo.begin_context` / `update_context` / `end_context` write the account, user, session
    and content attributes onto this span. `@interaction("name")` is accepted as the vendor SDK
    spells it. The interaction is a message too, without an id until one is bound inside it
    (`set_message_id`, `Brixo.begin_context(message_id=...)`): then it can be rated.
    `idle_timeout` as for `message`.
    """
    if isinstance(func, str):
        name, func = func, None
    _check_name(name)
    timeout = _check_idle_timeout(idle_timeout)

    def decorate(target: F) -> F:
        traced = _Traced(name or _qualified_name(target), is_interaction=True, idle_timeout=timeout)
        return traced.wrap(target)

    return decorate if func is None else decorate(func)


class message_span:
    """The span of one assistant message, for code that is not a single function call.

    Usable as `with` and `async with`; inside, every span carries the ids, and `set_message_id`
    binds an id learned later (`message_id_from_response=True`: the provider's response id, as
    for `@message`).
    """

    __slots__ = ("_span", "_token", "_traced")

    def __init__(
        self,
        message_id: str | None = None,
        conversation_id: str | None = None,
        name: str | None = None,
        *,
        message_id_from_response: bool = False,
    ) -> None:
        for argument, value in (("message_id", message_id), ("conversation_id", conversation_id)):
            if value is not None and not (isinstance(value, str) and value):
                raise TypeError(f"{argument} must be a non-empty string or None, got {value!r}")
        self._traced = _Traced(
            _check_name(name) or "message",
            message_id=_IdResolver("message_id", message_id, _no_parameters),
            conversation_id=_IdResolver("conversation_id", conversation_id, _no_parameters),
            from_response=_check_from_response(message_id_from_response, message_id),
        )
        self._span: Span | None = None
        self._token: object = None

    def __enter__(self) -> Span:
        span, ctx = self._traced.open(None, (), {})
        self._span = span
        self._token = otel_context.attach(ctx)
        return span

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span, self._span = self._span, None
        if span is None:
            return
        if isinstance(exc, Exception):
            _record_failure(span, exc)
        elif exc is not None:  # cancelled, or closed inside a generator that was
            reason = _cancel_reason(exc)
            if reason is not None:
                _mark_cancelled(span, reason)
        otel_context.detach(self._token)  # type: ignore[arg-type]
        span.end()

    async def __aenter__(self) -> Span:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)
