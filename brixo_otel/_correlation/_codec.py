"""How a span context and its kept attributes are written down outside this process.

The shared indexes (SQLite, Redis) and the link tokens all carry the same thing: the ids of a
message span and a handful of its attributes. Writing it the same way everywhere means one set of
rules for what survives the trip, and one place that decides what is trusted on the way back in:
whatever comes back was possibly written by another version of the library, or by someone else
entirely, so it is checked rather than assumed.

An entry is compact JSON, `[trace_id_hex, span_id_hex, flags, {attributes}]`: a list rather than
an object because the keys would be a quarter of a typical entry, repeated in every row.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Final

from opentelemetry.trace import INVALID_SPAN_ID, INVALID_TRACE_ID, SpanContext, TraceFlags
from opentelemetry.util.types import AttributeValue

from brixo_otel._correlation._index import IndexedSpan

_SCALARS: Final = (str, bool, int, float)
_MAX_TRACE_ID: Final = (1 << 128) - 1
_MAX_SPAN_ID: Final = (1 << 64) - 1
# int(x, 16) would also take "0x", "_" and spaces; stored ids are exactly lowercase hex
_TRACE_HEX: Final = re.compile(r"[0-9a-f]{32}")
_SPAN_HEX: Final = re.compile(r"[0-9a-f]{16}")


class CodecError(ValueError):
    """Stored or received text that does not describe a span; the caller treats it as absent."""


def _json_safe(value: object) -> AttributeValue | None:
    """The value as OpenTelemetry allows it on an attribute, or None if it cannot travel.

    Sequences become lists here and tuples on the way back, so a round trip gives an immutable
    value like the SDK's own. Mixed-type sequences are dropped, as the SDK drops them.
    """
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        items = list(value)
        if not items:
            return []
        kind = type(items[0])
        if kind not in _SCALARS:
            return None
        # exact types: bool is an int subclass, and [1, True] must not pass for a list of ints
        if all(type(item) is kind for item in items):
            return items
    return None


def attributes_to_json(attributes: Mapping[str, AttributeValue]) -> dict[str, AttributeValue]:
    """The attributes that can be written down; anything else is dropped, never an error.

    Dropping beats failing: the attributes only dimension feedback metrics, while the span ids
    next to them are what links the feedback at all.
    """
    kept: dict[str, AttributeValue] = {}
    # A snapshot first (one C-level step, atomic under the GIL): the writer's thread encodes a
    # dict that a message still running may be gathering into on the app's thread.
    for name, value in list(attributes.items()):
        if not isinstance(name, str):
            continue
        safe = _json_safe(value)
        if safe is not None:
            kept[name] = safe
    return kept


def attributes_from_json(raw: object) -> dict[str, AttributeValue]:
    """Attributes read back from outside; a value of the wrong shape refuses the whole lot."""
    if not isinstance(raw, dict):
        raise CodecError("attributes are not an object")
    attributes: dict[str, AttributeValue] = {}
    for name, value in raw.items():
        if isinstance(value, _SCALARS):
            attributes[name] = value
            continue
        if isinstance(value, list):
            safe = _json_safe(value)
            if isinstance(safe, list):
                attributes[name] = tuple(safe)
                continue
        raise CodecError(f"attribute {name[:64]!r} has an unsupported value")
    return attributes


def dumps(value: object, *, ascii_only: bool = False) -> str:
    """Compact JSON, the form every backend stores.

    NaN and infinities pass through (Python reads them back); they are legal float attributes.
    `ascii_only` escapes everything else, lone surrogates included, for stores that insist on
    valid UTF-8 (SQLite, Redis via redis-py); tokens take the shorter raw form.
    """
    return json.dumps(value, separators=(",", ":"), ensure_ascii=ascii_only, allow_nan=True)


def span_context_from(trace_id: int, span_id: int, flags: int) -> SpanContext:
    """A remote span context from stored ids, refusing ids OpenTelemetry would call invalid."""
    if not (INVALID_TRACE_ID < trace_id <= _MAX_TRACE_ID):
        raise CodecError("trace id is out of range")
    if not (INVALID_SPAN_ID < span_id <= _MAX_SPAN_ID):
        raise CodecError("span id is out of range")
    if not (0 <= flags <= 0xFF):
        raise CodecError("trace flags are out of range")
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))


def encode_entry(span_context: SpanContext, attributes: Mapping[str, AttributeValue]) -> str:
    """One index entry as text (ASCII: any string in an attribute value survives any store)."""
    return dumps(
        [
            f"{span_context.trace_id:032x}",
            f"{span_context.span_id:016x}",
            int(span_context.trace_flags),
            attributes_to_json(attributes),
        ],
        ascii_only=True,
    )


def decode_entry(text: str | bytes) -> IndexedSpan:
    """An index entry read back; raises `CodecError` for anything that is not one."""
    try:
        raw = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CodecError("entry is not JSON") from exc
    if not isinstance(raw, list) or len(raw) != 4:
        raise CodecError("entry is not a 4-item list")
    trace_hex, span_hex, flags, attributes = raw
    if not (
        isinstance(trace_hex, str)
        and _TRACE_HEX.fullmatch(trace_hex)
        and isinstance(span_hex, str)
        and _SPAN_HEX.fullmatch(span_hex)
        and type(flags) is int
    ):
        raise CodecError("entry ids have the wrong shape")
    span_context = span_context_from(int(trace_hex, 16), int(span_hex, 16), flags)
    return IndexedSpan(span_context, attributes_from_json(attributes))
