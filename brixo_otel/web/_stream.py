"""Start a streamed message before its response does.

Calling a generator function runs none of its body, and a `@brixo_otel.message` generator opens
its span on the first `next()`. A streaming response sends its headers before it asks for the
first item, so without help the span (and the message id) would not exist yet when the headers
leave. `primed()` / `aprimed()` take the first item in the request handler, where the headers
middleware is watching, and hand back a stream that yields that item and then the rest.
Closing the primed stream closes the underlying one, so a client that goes away still ends the
message's span.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_NOTHING: Any = object()


class _Primed(Iterator[T], Generic[T]):
    __slots__ = ("_first", "_rest")

    def __init__(self, first: T, rest: Iterator[T]) -> None:
        self._first = first
        self._rest = rest

    def __next__(self) -> T:
        first = self._first
        if first is not _NOTHING:
            self._first = _NOTHING
            return first
        return next(self._rest)

    def close(self) -> None:
        self._first = _NOTHING
        close = getattr(self._rest, "close", None)
        if callable(close):
            close()


class _APrimed(AsyncIterator[T], Generic[T]):
    __slots__ = ("_first", "_rest")

    def __init__(self, first: T, rest: AsyncIterator[T]) -> None:
        self._first = first
        self._rest = rest

    async def __anext__(self) -> T:
        first = self._first
        if first is not _NOTHING:
            self._first = _NOTHING
            return first
        return await self._rest.__anext__()

    async def aclose(self) -> None:
        self._first = _NOTHING
        aclose = getattr(self._rest, "aclose", None)
        if callable(aclose):
            await aclose()


def primed(stream: Iterable[T]) -> Iterator[T]:
    """Take the first item of `stream` now (starting a `@message` generator's span) and return
    an iterator over all of its items; pass that to the streaming response.

    Exceptions of the first step propagate here, in the handler, where the app can still answer
    with an error status instead of a broken stream.
    """
    rest = iter(stream)
    try:
        first = next(rest)
    except StopIteration:
        return iter(())
    return _Primed(first, rest)


async def aprimed(stream: AsyncIterable[T]) -> AsyncIterator[T]:
    """`primed` for async generators: `await aprimed(answer(...))`."""
    rest = aiter(stream)
    try:
        first = await anext(rest)
    except StopAsyncIteration:
        return _Empty()
    return _APrimed(first, rest)


class _Empty(AsyncIterator[Any]):
    async def __anext__(self) -> Any:
        raise StopAsyncIteration
