"""The Signals API's request body rules, each failure worded as the 400 detail a client sees."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

SIGNAL_NAMES = frozenset({"feedback"})
SIGNAL_VALUES = frozenset({"thumbs_up", "thumbs_down"})

# RFC 3339 section 5.6 date-time; a zone is part of the grammar, so a bare local time is invalid.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?(?:[Zz]|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)


class BadSignalError(ValueError):
    """The body breaks one of the rules; the message is the error detail."""


@dataclass(frozen=True)
class SignalBody:
    name: str
    value: str
    occurred_at: str | None
    user_message: str | None


def is_rfc3339(text: str) -> bool:
    match = _RFC3339.fullmatch(text)
    if match is None:
        return False
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    offset_hours, offset_minutes = match.group(9), match.group(10)
    if offset_hours is not None and (int(offset_hours) > 23 or int(offset_minutes) > 59):
        return False
    # RFC 3339 allows a leap second (:60), which datetime cannot hold.
    try:
        datetime(year, month, day, hour, minute, 59 if second == 60 else second)
    except ValueError:
        return False
    return True


def parse_signal_body(raw: bytes) -> SignalBody:
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BadSignalError("The request body is not valid JSON.") from None
    if not isinstance(document, dict):
        raise BadSignalError("The request body must be a JSON object.")
    data = _object(document, "data")
    if "type" not in data:
        raise BadSignalError("`data.type` is required.")
    if data["type"] != "signals":
        raise BadSignalError('`data.type` must be "signals".')
    attributes = _object(data, "data.attributes")
    return SignalBody(
        name=_choice(attributes, "name", SIGNAL_NAMES, '"feedback"'),
        value=_choice(attributes, "value", SIGNAL_VALUES, '"thumbs_up" or "thumbs_down"'),
        occurred_at=_optional_string(
            attributes, "occurred_at", is_rfc3339, "an RFC 3339 timestamp"
        ),
        user_message=_optional_string(attributes, "user_message", lambda _: True, "a string"),
    )


def _required(obj: dict[str, Any], where: str) -> Any:
    """The member `where` (a dotted path) names in `obj`, its parent; null counts as missing."""
    value = obj.get(where.rpartition(".")[2])
    if value is None:
        raise BadSignalError(f"`{where}` is required.")
    return value


def _object(obj: dict[str, Any], where: str) -> dict[str, Any]:
    value = _required(obj, where)
    if not isinstance(value, dict):
        raise BadSignalError(f"`{where}` must be an object.")
    return value


def _choice(attributes: dict[str, Any], key: str, allowed: frozenset[str], wanted: str) -> str:
    value = _required(attributes, f"data.attributes.{key}")
    if not isinstance(value, str) or value not in allowed:
        raise BadSignalError(f"`data.attributes.{key}` must be {wanted}.")
    return value


def _optional_string(
    attributes: dict[str, Any], key: str, valid: Callable[[str], bool], wanted: str
) -> str | None:
    """None when `key` is left out; present, even as null, it must be a valid string."""
    if key not in attributes:
        return None
    value = attributes[key]
    if not isinstance(value, str) or not valid(value):
        raise BadSignalError(f"`data.attributes.{key}` must be {wanted}.")
    return value
