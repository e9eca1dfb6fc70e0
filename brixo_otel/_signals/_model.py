"""The feedback signal: validated once, at the call, then immutable.

Everything a destination needs is fixed when `feedback()` is called: the signal id (reused as the
idempotency key on every attempt and after every restart) and `occurred_at` (the moment of the
click, not of delivery), so retries never change what is sent.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Final, Literal

FEEDBACK: Final = "feedback"
THUMBS_UP: Final = "thumbs_up"
THUMBS_DOWN: Final = "thumbs_down"
THUMBS: Final = (THUMBS_UP, THUMBS_DOWN)
#: Customer satisfaction, `score` 1 to 5.
CSAT: Final = "csat"
#: Net promoter score, `score` 0 to 10.
NPS: Final = "nps"
#: What `retract_feedback()` sends: the user took their rating back.
RETRACTED: Final = "retracted"
VALUES: Final = (THUMBS_UP, THUMBS_DOWN, CSAT, NPS)
SCORE_RANGES: Final = {CSAT: (1, 5), NPS: (0, 10)}

#: At most this many reason tags per signal, each a short token such as `too_long`.
MAX_REASONS: Final = 10
_REASON: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")

#: Built once: `json.dumps` with options builds a new encoder on every call.
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)

#: Longest message or conversation id accepted, in characters.
MAX_ID_LENGTH: Final = 512
#: Longest `user_message` accepted, in characters. Comments longer than this are almost always
#: pasted content rather than feedback, and they risk the API's request size limit (413).
MAX_USER_MESSAGE_LENGTH: Final = 4000

Target = Literal["message", "conversation"]

_RFC3339: Final = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)


class InvalidSignal(ValueError):
    """Raised by `feedback()` for input that can never be delivered.

    It is raised before anything is queued, so the caller can fix the input; delivery problems
    are never raised, they are retried and, in the end, dead-lettered.
    """


def new_signal_id() -> str:
    """A UUIDv7: unique, and sortable by creation time, which keeps outbox scans in order."""
    unix_ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (unix_ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a
    value |= 0b10 << 62  # variant
    value |= rand & ((1 << 62) - 1)  # rand_b
    digits = f"{value:032x}"  # the canonical form, without building a uuid.UUID
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with millisecond precision and a `Z`, as the Signals API examples show."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Signal:
    """One feedback signal, as the app gave it and as every destination will receive it."""

    value: str
    target: Target
    message_id: str | None
    conversation_id: str | None
    occurred_at: datetime
    user_message: str | None = None
    #: For `csat` and `nps`: the score given.
    score: int | None = None
    #: Short tags saying why (`incorrect`, `too_long`), for destinations that take them.
    reasons: tuple[str, ...] = ()
    name: str = FEEDBACK
    id: str = field(default_factory=new_signal_id)

    @property
    def is_thumbs(self) -> bool:
        return self.value in THUMBS

    @property
    def is_retraction(self) -> bool:
        return self.value == RETRACTED

    @property
    def target_id(self) -> str:
        """The `:id` in the destination path: the message id, or the conversation id."""
        target_id = self.message_id if self.target == "message" else self.conversation_id
        assert target_id is not None  # guaranteed by validate()
        return target_id

    def to_json(self) -> str:
        return _ENCODER.encode(
            {
                "id": self.id,
                "name": self.name,
                "value": self.value,
                "target": self.target,
                "message_id": self.message_id,
                "conversation_id": self.conversation_id,
                "occurred_at": format_timestamp(self.occurred_at),
                "user_message": self.user_message,
                "score": self.score,
                "reasons": list(self.reasons),
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Signal:
        data: dict[str, Any] = json.loads(text)
        return cls(
            id=data["id"],
            name=data["name"],
            value=data["value"],
            target=data["target"],
            message_id=data["message_id"],
            conversation_id=data["conversation_id"],
            occurred_at=datetime.fromisoformat(data["occurred_at"].replace("Z", "+00:00")),
            user_message=data["user_message"],
            score=data.get("score"),
            reasons=tuple(data.get("reasons") or ()),
        )


def _check_id(field_name: str, given: object) -> str | None:
    if given is None:
        return None
    if not isinstance(given, str):
        raise InvalidSignal(
            f"{field_name} must be a string, got {type(given).__name__} {given!r}; "
            "pass the id your app uses for it, e.g. str(...)"
        )
    if not given.strip():
        raise InvalidSignal(f"{field_name} must not be empty or blank, got {given!r}")
    if len(given) > MAX_ID_LENGTH:
        raise InvalidSignal(
            f"{field_name} is {len(given)} characters long; at most {MAX_ID_LENGTH} are accepted"
        )
    return given


def parse_occurred_at(given: object) -> datetime:
    """Accept an aware `datetime` or an RFC 3339 string with a zone; return it in UTC."""
    if isinstance(given, datetime):
        if given.tzinfo is None or given.utcoffset() is None:
            raise InvalidSignal(
                f"occurred_at {given!r} is a naive datetime; pass an aware one, "
                "e.g. datetime.now(timezone.utc), so the moment is not ambiguous"
            )
        return given.astimezone(timezone.utc)
    if isinstance(given, str):
        if not _RFC3339.match(given):
            raise InvalidSignal(
                f"occurred_at {given!r} is not an RFC 3339 timestamp with a zone; "
                "accepted: e.g. '2026-02-03T14:22:10Z' or '2026-02-03T15:22:10+01:00'"
            )
        try:
            text = given.replace("z", "Z").replace("Z", "+00:00")
            if "." in text:  # fromisoformat takes at most 6 fractional digits
                head, _, rest = text.partition(".")
                digits = re.match(r"\d+", rest)
                assert digits is not None
                text = f"{head}.{digits.group()[:6].ljust(6, '0')}{rest[digits.end() :]}"
            return datetime.fromisoformat(text).astimezone(timezone.utc)
        except ValueError as exc:
            raise InvalidSignal(
                f"occurred_at {given!r} is not a valid date and time: {exc}"
            ) from None
    raise InvalidSignal(
        f"occurred_at must be an aware datetime or an RFC 3339 string, got {type(given).__name__}"
    )


def _check_reasons(reasons: object) -> tuple[str, ...]:
    if reasons is None:
        return ()
    if isinstance(reasons, str) or not isinstance(reasons, (list, tuple, set, frozenset)):
        raise InvalidSignal(
            f"reasons must be a list of short tags, e.g. ['incorrect', 'too_long'], got {reasons!r}"
        )
    tags = tuple(reasons)
    if len(tags) > MAX_REASONS:
        raise InvalidSignal(f"{len(tags)} reasons given; at most {MAX_REASONS} are accepted")
    for tag in tags:
        if not isinstance(tag, str) or not _REASON.match(tag):
            raise InvalidSignal(
                f"reason {tag!r} is not a short tag; accepted: 1 to 64 letters, digits and "
                "_ . : - (starting with a letter or digit), e.g. 'too_long'"
            )
    return tuple(dict.fromkeys(tags))


def _check_score(value: str, score: object) -> int | None:
    if value not in SCORE_RANGES:
        if score is not None:
            raise InvalidSignal(f"score is only for {', '.join(SCORE_RANGES)}; {value} takes none")
        return None
    low, high = SCORE_RANGES[value]
    if isinstance(score, bool) or not isinstance(score, int) or not low <= score <= high:
        raise InvalidSignal(f"{value} needs score= an integer from {low} to {high}, got {score!r}")
    return score


def validate(
    value: object,
    *,
    message_id: object = None,
    conversation_id: object = None,
    user_message: object = None,
    occurred_at: object = None,
    score: object = None,
    reasons: object = None,
    accepted_values: tuple[str, ...] = VALUES,
) -> Signal:
    """Build a `Signal` from what the app passed, or raise `InvalidSignal` naming the problem."""
    if not isinstance(value, str) or value not in accepted_values:
        raise InvalidSignal(
            f"value {value!r} is not a feedback value; accepted: {', '.join(accepted_values)}"
        )
    checked_score = _check_score(value, score)
    checked_message_id = _check_id("message_id", message_id)
    checked_conversation_id = _check_id("conversation_id", conversation_id)
    if checked_message_id is None and checked_conversation_id is None:
        raise InvalidSignal(
            "feedback needs message_id (to rate one assistant message) "
            "or conversation_id (to rate the whole conversation); neither was given"
        )
    if user_message is not None:
        if not isinstance(user_message, str):
            raise InvalidSignal(f"user_message must be a string, got {type(user_message).__name__}")
        if len(user_message) > MAX_USER_MESSAGE_LENGTH:
            raise InvalidSignal(
                f"user_message is {len(user_message)} characters long; "
                f"at most {MAX_USER_MESSAGE_LENGTH} are accepted"
            )
    moment = datetime.now(timezone.utc) if occurred_at is None else parse_occurred_at(occurred_at)
    return Signal(
        value=value,
        target="message" if checked_message_id is not None else "conversation",
        message_id=checked_message_id,
        conversation_id=checked_conversation_id,
        occurred_at=moment,
        user_message=user_message,
        score=checked_score,
        reasons=_check_reasons(reasons),
    )


def retraction(*, message_id: object = None, conversation_id: object = None) -> Signal:
    """The signal that takes back a user's earlier rating of a message or conversation."""
    return validate(
        RETRACTED,
        message_id=message_id,
        conversation_id=conversation_id,
        accepted_values=(RETRACTED,),
    )
