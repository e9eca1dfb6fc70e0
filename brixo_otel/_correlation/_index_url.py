"""From the `span_index=` setting to an index object.

A string names a backend so that the choice can come from configuration files and environment
variables; an object is taken as it is, so an app can bring its own store (its `put` then runs
on the app's thread, at the start and end of every message span, and must not wait).

"memory" is the plain in-process index. The shared stores come wrapped in a `TieredSpanIndex`:
a memory tier answers this process at once, and a background writer takes their I/O off the
app's thread.
"""

from __future__ import annotations

import os
import re
from typing import Final

from brixo_otel._correlation._index import IndexStore, InMemorySpanIndex, SpanIndex
from brixo_otel._correlation._tiered import TieredSpanIndex
from brixo_otel._errors import ConfigurationError

ACCEPTED_FORMS: Final = (
    "'memory' (this process only), 'sqlite:///relative/path.db' or 'sqlite:////absolute/path.db' "
    "(the processes of one host), 'redis://host:port/db' or 'rediss://...' (any host; needs "
    "brixo-otel[redis]), or an object with put(message_id, span_context, attributes) and "
    "get(message_id)"
)

_SQLITE_PREFIX: Final = "sqlite:///"
_USERINFO: Final = re.compile(r"(?<=://)[^/@]*@")


def _shown(choice: str) -> str:
    """The setting as it may appear in an error: a mistyped Redis URL may carry a password."""
    shown = _USERINFO.sub("***@", choice)
    return repr(shown if len(shown) <= 200 else shown[:200] + "...")


def sqlite_path(url: str) -> str:
    """The file of a `sqlite:///` URL, read as SQLAlchemy reads it.

    Three slashes then a relative path, four for an absolute one: the convention Python users
    already know from SQLAlchemy and Django settings. The path is made absolute now, so a later
    chdir in the app cannot move the index.
    """
    path = url[len(_SQLITE_PREFIX) :]
    if not path or path == ":memory:" or "?" in path:
        raise ConfigurationError(
            f"span_index {_shown(url)} does not name a file; accepted: {ACCEPTED_FORMS}"
        )
    return os.path.abspath(path)


def span_index_from(choice: str | SpanIndex, *, ttl_seconds: float, max_entries: int) -> SpanIndex:
    """The index a `span_index=` setting names; `ConfigurationError` saying what is accepted.

    `max_entries` bounds the memory index, the memory tier of a shared one, and the SQLite file;
    a Redis index is bounded by Redis's own `maxmemory` policy instead, as keys expire there by
    themselves.
    """
    if not ttl_seconds > 0:
        raise ConfigurationError(f"span index ttl_seconds must be positive, got {ttl_seconds}")
    if max_entries < 1:
        raise ConfigurationError(f"span index max_entries must be at least 1, got {max_entries}")
    if isinstance(choice, str):
        text = choice.strip()
        if text == "memory":
            return InMemorySpanIndex(max_entries=max_entries, ttl_seconds=ttl_seconds)
        if text.lower().startswith(_SQLITE_PREFIX):
            from brixo_otel._correlation._sqlite_index import SqliteSpanIndex

            store: IndexStore = SqliteSpanIndex(
                sqlite_path(text), ttl_seconds=ttl_seconds, max_entries=max_entries
            )
            return TieredSpanIndex(store, max_entries=max_entries, ttl_seconds=ttl_seconds)
        if text.lower().startswith(("redis://", "rediss://")):
            from brixo_otel._correlation._redis_index import RedisSpanIndex

            store = RedisSpanIndex(text, ttl_seconds=ttl_seconds)
            return TieredSpanIndex(store, max_entries=max_entries, ttl_seconds=ttl_seconds)
        raise ConfigurationError(
            f"span_index {_shown(text)} is not recognised; accepted: {ACCEPTED_FORMS}"
        )
    if callable(getattr(choice, "put", None)) and callable(getattr(choice, "get", None)):
        return choice
    raise ConfigurationError(
        f"span_index must be a string or an index object, got {type(choice).__name__}; "
        f"accepted: {ACCEPTED_FORMS}"
    )
