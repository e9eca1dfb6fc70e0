"""Run each step of a generator inside a Context of its own.

A generator's body runs in whatever context its consumer has at each `next()`. To make the
message span current inside the body, and only there, every step runs via
`contextvars.Context.run` in a context prepared once; the consumer's context is never touched, so
nothing leaks between steps and the consumer, even when the stream is abandoned half-way.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Generator
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from brixo_otel._instrument._streams import StreamWatch

T = TypeVar("T")


def step(
    ctx: contextvars.Context, gen: Generator[Any, Any, Any], stream: StreamWatch | None = None
) -> Generator[Any, Any, Any]:
    """Delegate to `gen` like `yield from`, each resumption running in `ctx`; with a `stream`,
    also count each time the consumer asks for the next item, so that the stream watcher can
    tell a consumer that went away."""
    run, send = ctx.run, gen.send  # bound once: this loop runs once per streamed item
    to_send: Any = None
    to_throw: BaseException | None = None
    while True:
        try:
            item = run(send, to_send) if to_throw is None else run(gen.throw, to_throw)
        except StopIteration as stop:
            return stop.value
        try:
            to_send, to_throw = (yield item), None
        except GeneratorExit:
            ctx.run(gen.close)
            raise
        except BaseException as exc:  # thrown in by the consumer: forward it
            to_send, to_throw = None, exc
        if stream is not None:
            stream.turns += 1


class InContext(Awaitable[T]):
    """An awaitable whose every step runs in `ctx`."""

    __slots__ = ("_awaitable", "_ctx")

    def __init__(self, ctx: contextvars.Context, awaitable: Awaitable[T]) -> None:
        self._ctx = ctx
        self._awaitable = awaitable

    def __await__(self) -> Generator[Any, Any, T]:
        inner = self._awaitable.__await__()
        result: T = yield from step(self._ctx, inner)
        return result
