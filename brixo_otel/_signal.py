"""The feedback signal: validated once, at the call, then immutable.

Everything a destination needs is fixed when `feedback()` is called: the signal id (reused as the
idempotency key on every attempt and after every restart) and `occurred_at` (the moment of the
click, not of delivery), so retries never change what is sent.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Final, Literal

from brixo_otel._errors import InvalidSignal

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
#: Matched with `fullmatch`: `$` would also accept a tag ending in a newline.
_REASON: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")

#: Built once: `json.dumps` with options builds a new encoder on every call.
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
#: One string as JSON text, exactly as `_ENCODER` writes it (non-ASCII kept as is).
_quote: Final = json.encoder.encode_basestring

#: Longest message or conversation id accepted, in characters.
MAX_ID_LENGTH: Final = 512
#: Longest `user_message` accepted, in characters. Comments longer than this are almost always
#: pasted content rather than feedback, and they risk the API's request size limit (413).
MAX_USER_MESSAGE_LENGTH: Final = 4000

Target = Literal["message", "conversation"]

_RFC3339: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)

#: Moments a destination can store: the Signals API and the others parse RFC 3339 years 1 to
#: 9999, and a moment at the very ends of Python's range overflows on conversion to UTC.
EARLIEST: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST: Final = datetime(9000, 1, 1, tzinfo=timezone.utc)

#: Where a resolved link stands: the rated span is known (`linked`), not known yet (`pending`),
#: or still unknown when the link window closed (`unresolved`); a conversation rating rates no
#: span (`not_applicable`).
LinkStatus = Literal["pending", "linked", "unresolved", "not_applicable"]


def new_signal_id() -> str:
    """A UUIDv7: unique, and sortable by creation time, which keeps outbox scans in order.

    48 bits of Unix milliseconds, the version (7), 12 random bits, the variant (`10`), 62
    random bits. The random bits come from a generator of this module's own, seeded from the
    system's randomness in each process (again in a forked child), as OpenTelemetry's own span
    and trace ids do: an id only has to be unique, and this runs at every `feedback()`; an app
    that seeds Python's shared generator for repeatable runs does not touch this one."""
    bits = _id_bits(74)
    number = (
        ((time.time_ns() // 1_000_000) & _MS_MASK) << 80
        | 0x7 << 76
        | (bits >> 62) << 64
        | 0b10 << 62
        | (bits & _LOW_62)
    )
    digits = f"{number:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


_MS_MASK: Final = (1 << 48) - 1
_LOW_62: Final = (1 << 62) - 1
_id_random = random.Random()
_id_bits = _id_random.getrandbits
if hasattr(os, "register_at_fork"):  # a child must not draw its parent's next ids
    os.register_at_fork(after_in_child=_id_random.seed)


def format_timestamp(moment: datetime, timespec: str = "milliseconds") -> str:
    """RFC 3339 in UTC with a `Z` (millisecond precision by default, as the Signals API examples
    show; the outbox keeps microseconds so a span's start time survives a round trip)."""
    if moment.tzinfo is not timezone.utc:
        moment = moment.astimezone(timezone.utc)
    elif timespec == "microseconds":
        return _utc_microseconds(moment)
    return moment.isoformat(timespec=timespec).replace("+00:00", "Z")


def _utc_microseconds(moment: datetime) -> str:
    """`format_timestamp(moment, "microseconds")` of a UTC moment, the date and time to the
    second kept from the last call: `isoformat` of an aware datetime costs a quarter of the
    rest of `to_json`, and successive signals share their second."""
    global _last_second
    second = (moment.second, moment.minute, moment.hour, moment.day, moment.month, moment.year)
    last = _last_second
    if last[0] != second:
        last = _last_second = (second, moment.isoformat()[:19])
    return f"{last[1]}.{moment.microsecond:06d}Z"


#: The last second `_utc_microseconds` wrote, as its fields and as text; one tuple, replaced
#: whole, so threads never see one without the other.
_last_second: tuple[tuple[int, ...], str] = ((), "")


@dataclass(frozen=True)
class SpanRef:
    """A span by its ids, as far as a signal needs one: to parent, link or address it."""

    trace_id: int
    span_id: int

    @property
    def trace_id_hex(self) -> str:
        return f"{self.trace_id:032x}"

    @property
    def span_id_hex(self) -> str:
        return f"{self.span_id:016x}"


@dataclass(frozen=True)
class RatedSpan(SpanRef):
    """The span of the rated message, once the pipeline resolved it, with the message's
    dimensions (model, provider, agent version, ...): span-addressed destinations place the
    rating on it, the feedback span is parented to it, counters are dimensioned by it."""

    attributes: Mapping[str, str | bool | int | float] = field(default_factory=dict)


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
    #: The span that was current where `feedback()` was called (the request that carried the
    #: click), so the feedback span can link back to it.
    caller: SpanRef | None = None
    #: The rated span: from a link token at the call, else resolved by the pipeline.
    rated: RatedSpan | None = None
    link_status: LinkStatus = "pending"

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
        """The signal as the outbox stores it. Written out field by field, as `_ENCODER` writes
        the same object (`_json_data`), in a third of the time: every `feedback()` builds one
        on the app's thread. A field of a shape `validate` never makes goes through the
        encoder instead."""
        score = self.score
        if score is not None and type(score) is not int:
            return _ENCODER.encode(self._json_data())
        quote = _quote
        message_id, conversation_id, comment = (
            self.message_id,
            self.conversation_id,
            self.user_message,
        )
        try:
            text = (
                f'{{"id":{quote(self.id)},"name":{quote(self.name)},'
                f'"value":{quote(self.value)},"target":{quote(self.target)},'
                f'"message_id":{"null" if message_id is None else quote(message_id)},'
                f'"conversation_id":'
                f"{'null' if conversation_id is None else quote(conversation_id)},"
                f'"occurred_at":"{format_timestamp(self.occurred_at, "microseconds")}",'
                f'"user_message":{"null" if comment is None else quote(comment)},'
                f'"score":{"null" if score is None else int.__repr__(score)},'
                f'"reasons":[{",".join(map(quote, self.reasons)) if self.reasons else ""}],'
                f'"link_status":{quote(self.link_status)}'
            )
        except TypeError:  # not a string where one belongs
            return _ENCODER.encode(self._json_data())
        caller, rated = self.caller, self.rated
        if caller is not None:
            text += f',"caller":["{caller.trace_id_hex}","{caller.span_id_hex}"]'
        if rated is not None:
            attributes = _ENCODER.encode(dict(rated.attributes))
            text += f',"rated":["{rated.trace_id_hex}","{rated.span_id_hex}",{attributes}]'
        return text + "}"

    def _json_data(self) -> dict[str, Any]:
        """What `to_json` writes, as the object the JSON encoder takes."""
        data: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "value": self.value,
            "target": self.target,
            "message_id": self.message_id,
            "conversation_id": self.conversation_id,
            "occurred_at": format_timestamp(self.occurred_at, "microseconds"),
            "user_message": self.user_message,
            "score": self.score,
            "reasons": list(self.reasons),
            "link_status": self.link_status,
        }
        if self.caller is not None:
            data["caller"] = [self.caller.trace_id_hex, self.caller.span_id_hex]
        if self.rated is not None:
            data["rated"] = [
                self.rated.trace_id_hex,
                self.rated.span_id_hex,
                dict(self.rated.attributes),
            ]
        return data

    @classmethod
    def from_json(cls, text: str | bytes) -> Signal:
        data: dict[str, Any] = json.loads(text)
        caller = data.get("caller")
        rated = data.get("rated")
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
            caller=None if caller is None else SpanRef(int(caller[0], 16), int(caller[1], 16)),
            rated=None
            if rated is None
            else RatedSpan(int(rated[0], 16), int(rated[1], 16), dict(rated[2])),
            link_status=data.get("link_status", "linked" if rated else "pending"),
        )


def _check_text(field_name: str, given: str) -> None:
    """Refuse what no destination can store: lone surrogates cannot be encoded as UTF-8 (the
    outbox and every API would fail on them later, silently for the caller)."""
    try:
        if not given.isascii():  # ASCII text holds no surrogates: skip building the bytes
            given.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidSignal(
            f"{field_name} contains a lone surrogate (an unpaired UTF-16 half), which cannot be "
            "encoded as UTF-8; pass well-formed text",
            field=field_name,
            reason="malformed",
        ) from None
    if "\x00" in given:
        raise InvalidSignal(
            f"{field_name} contains a NUL character; pass text without it",
            field=field_name,
            reason="malformed",
        )


def _check_id(field_name: str, given: object) -> str | None:
    if given is None:
        return None
    if not isinstance(given, str):
        raise InvalidSignal(
            f"{field_name} must be a string, got {type(given).__name__} {given!r}; "
            "pass the id your app uses for it, e.g. str(...)",
            field=field_name,
            reason="wrong_type",
        )
    if not given or given.isspace():
        raise InvalidSignal(
            f"{field_name} must not be empty or blank, got {given!r}",
            field=field_name,
            reason="required",
        )
    if len(given) > MAX_ID_LENGTH:
        raise InvalidSignal(
            f"{field_name} is {len(given)} characters long; at most {MAX_ID_LENGTH} are accepted",
            field=field_name,
            reason="too_long",
        )
    _check_text(field_name, given)
    return given


def _bad_moment(message: str, reason: str = "malformed") -> InvalidSignal:
    return InvalidSignal(message, field="occurred_at", reason=reason)


def parse_occurred_at(given: object) -> datetime:
    """Accept an aware `datetime` or an RFC 3339 string with a zone; return it in UTC."""
    if isinstance(given, datetime):
        if given.tzinfo is None or given.utcoffset() is None:
            raise _bad_moment(
                f"occurred_at {given!r} is a naive datetime; pass an aware one, "
                "e.g. datetime.now(timezone.utc), so the moment is not ambiguous"
            )
        moment = given
    elif isinstance(given, str):
        if not _RFC3339.fullmatch(given):
            raise _bad_moment(
                f"occurred_at {given!r} is not an RFC 3339 timestamp with a zone; "
                "accepted: e.g. '2026-02-03T14:22:10Z' or '2026-02-03T15:22:10+01:00'"
            )
        text = given.replace("z", "Z").replace("Z", "+00:00")
        if "." in text:  # fromisoformat takes at most 6 fractional digits
            head, _, rest = text.partition(".")
            digits = re.match(r"\d+", rest)
            assert digits is not None
            text = f"{head}.{digits.group()[:6].ljust(6, '0')}{rest[digits.end() :]}"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError as exc:
            raise _bad_moment(
                f"occurred_at {given!r} is not a valid date and time: {exc}"
            ) from None
    else:
        raise _bad_moment(
            "occurred_at must be an aware datetime or an RFC 3339 string, "
            f"got {type(given).__name__}",
            reason="wrong_type",
        )
    try:
        utc = moment.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        utc = None
    if utc is None or not EARLIEST <= utc < LATEST:
        raise _bad_moment(
            f"occurred_at {given!r} is out of range; accepted: from "
            f"{format_timestamp(EARLIEST)} to before {format_timestamp(LATEST)}",
            reason="out_of_range",
        )
    return utc


def _check_reasons(reasons: object) -> tuple[str, ...]:
    if reasons is None:
        return ()
    if isinstance(reasons, str) or not isinstance(reasons, (list, tuple, set, frozenset)):
        raise InvalidSignal(
            f"reasons must be a list of short tags, e.g. ['incorrect', 'too_long'], got "
            f"{reasons!r}",
            field="reasons",
            reason="wrong_type",
        )
    tags = tuple(reasons)
    if len(tags) > MAX_REASONS:
        raise InvalidSignal(
            f"{len(tags)} reasons given; at most {MAX_REASONS} are accepted",
            field="reasons",
            reason="too_long",
        )
    for tag in tags:
        if not isinstance(tag, str) or not _REASON.fullmatch(tag):
            raise InvalidSignal(
                f"reason {tag!r} is not a short tag; accepted: 1 to 64 letters, digits and "
                "_ . : - (starting with a letter or digit), e.g. 'too_long'",
                field="reasons",
                reason="malformed",
            )
    return tuple(dict.fromkeys(tags))


def _check_score(value: str, score: object) -> int | None:
    if value not in SCORE_RANGES:
        if score is not None:
            raise InvalidSignal(
                f"score is only for {', '.join(SCORE_RANGES)}; {value} takes none",
                field="score",
                reason="not_accepted",
            )
        return None
    low, high = SCORE_RANGES[value]
    if isinstance(score, bool) or not isinstance(score, int) or not low <= score <= high:
        raise InvalidSignal(
            f"{value} needs score= an integer from {low} to {high}, got {score!r}",
            field="score",
            reason="required" if score is None else "out_of_range",
        )
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
    caller: SpanRef | None = None,
) -> Signal:
    """Build a `Signal` from what the app passed, or raise `InvalidSignal` naming the problem.

    What is accepted depends on the input alone, never on the configured destinations: a
    destination that cannot take a valid signal skips it, visibly, in the pipeline. `caller`
    (the span current at the call) is the client's, not the app's, and is taken as given: built
    in here rather than replaced afterwards, which would build the signal twice.
    """
    if not isinstance(value, str) or value not in accepted_values:
        raise InvalidSignal(
            f"value {value!r} is not a feedback value; accepted: {', '.join(accepted_values)}",
            field="value",
            reason="not_accepted",
        )
    # The calls are skipped for what the usual call leaves out (this runs in every feedback()).
    checked_score = (
        None if score is None and value not in SCORE_RANGES else _check_score(value, score)
    )
    checked_message_id = None if message_id is None else _check_id("message_id", message_id)
    checked_conversation_id = (
        None if conversation_id is None else _check_id("conversation_id", conversation_id)
    )
    if checked_message_id is None and checked_conversation_id is None:
        raise InvalidSignal(
            "feedback needs message_id (to rate one assistant message) "
            "or conversation_id (to rate the whole conversation); neither was given",
            field=None,
            reason="required",
        )
    if user_message is not None:
        if not isinstance(user_message, str):
            raise InvalidSignal(
                f"user_message must be a string, got {type(user_message).__name__}",
                field="user_message",
                reason="wrong_type",
            )
        if len(user_message) > MAX_USER_MESSAGE_LENGTH:
            raise InvalidSignal(
                f"user_message is {len(user_message)} characters long; "
                f"at most {MAX_USER_MESSAGE_LENGTH} are accepted",
                field="user_message",
                reason="too_long",
            )
        _check_text("user_message", user_message)
    moment = datetime.now(timezone.utc) if occurred_at is None else parse_occurred_at(occurred_at)
    # What `Signal(...)` would build, with the defaults it would fill in, set straight into the
    # new object: a frozen dataclass's own `__init__` sets each field through
    # `object.__setattr__`, a third of this function's time (a test keeps the two the same).
    signal = _new_object(Signal)
    signal.__dict__.update(
        value=value,
        target="message" if checked_message_id is not None else "conversation",
        message_id=checked_message_id,
        conversation_id=checked_conversation_id,
        occurred_at=moment,
        user_message=user_message,
        score=checked_score,
        reasons=() if reasons is None else _check_reasons(reasons),
        name=FEEDBACK,
        id=new_signal_id(),
        caller=caller,
        rated=None,
        link_status="pending",
    )
    return signal


_new_object: Final = object.__new__


def retraction(
    *, message_id: object = None, conversation_id: object = None, caller: SpanRef | None = None
) -> Signal:
    """The signal that takes back a user's earlier rating of a message or conversation."""
    return validate(
        RETRACTED,
        message_id=message_id,
        conversation_id=conversation_id,
        accepted_values=(RETRACTED,),
        caller=caller,
    )
