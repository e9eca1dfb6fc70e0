"""The Signals API's request body rules, each failure worded as the 400 detail a client sees."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime

SIGNAL_NAMES = frozenset({"feedback"})
SIGNAL_VALUES = frozenset({"thumbs_up", "thumbs_down"})

# RFC 3339 section 5.6 date-time; a zone is part of the grammar, so a bare local time is invalid.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?(?:[Zz]|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)


_ABSENT = object()


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
    data = document.get("data")
    if data is None:
        raise BadSignalError("`data` is required.")
    if not isinstance(data, dict):
        raise BadSignalError("`data` must be an object.")
    if "type" not in data:
        raise BadSignalError("`data.type` is required.")
    if data["type"] != "signals":
        raise BadSignalError('`data.type` must be "signals".')
    attributes = data.get("attributes")
    if attributes is None:
        raise BadSignalError("`data.attributes` is required.")
    if not isinstance(attributes, dict):
        raise BadSignalError("`data.attributes` must be an object.")

    name = attributes.get("name")
    if name is None:
        raise BadSignalError("`data.attributes.name` is required.")
    if not isinstance(name, str) or name not in SIGNAL_NAMES:
        raise BadSignalError('`data.attributes.name` must be "feedback".')
    value = attributes.get("value")
    if value is None:
        raise BadSignalError("`data.attributes.value` is required.")
    if not isinstance(value, str) or value not in SIGNAL_VALUES:
        raise BadSignalError('`data.attributes.value` must be "thumbs_up" or "thumbs_down".')

    occurred_at = attributes.get("occurred_at", _ABSENT)
    if occurred_at is _ABSENT:
        occurred_at = None
    elif not isinstance(occurred_at, str) or not is_rfc3339(occurred_at):
        raise BadSignalError("`data.attributes.occurred_at` must be an RFC 3339 timestamp.")
    user_message = attributes.get("user_message", _ABSENT)
    if user_message is _ABSENT:
        user_message = None
    elif not isinstance(user_message, str):
        raise BadSignalError("`data.attributes.user_message` must be a string.")
    return SignalBody(name=name, value=value, occurred_at=occurred_at, user_message=user_message)
