"""`feedback()` input: refused at the call with a message that names the field and what is
accepted, before anything is queued."""

from __future__ import annotations

import dataclasses
import os
import random
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

import brixo_otel
from brixo_otel import InvalidSignal
from brixo_otel._signal import (
    _ENCODER,
    MAX_ID_LENGTH,
    MAX_USER_MESSAGE_LENGTH,
    Signal,
    SpanRef,
    format_timestamp,
    new_signal_id,
    validate,
)
from brixo_otel.exporters import InMemorySignalExporter
from brixo_otel.testing import SpanCapture
from tests.conftest import Local


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"value": "thumbs_sideways", "message_id": "m"}, "accepted: thumbs_up, thumbs_down"),
        ({"value": None, "message_id": "m"}, "is not a feedback value"),
        ({"value": "thumbs_up"}, "needs message_id"),
        ({"value": "thumbs_up", "message_id": ""}, "message_id must not be empty"),
        ({"value": "thumbs_up", "message_id": "   "}, "must not be empty or blank"),
        ({"value": "thumbs_up", "conversation_id": 42}, "conversation_id must be a string"),
        (
            {"value": "thumbs_up", "message_id": "m" * (MAX_ID_LENGTH + 1)},
            f"at most {MAX_ID_LENGTH}",
        ),
        (
            {"value": "thumbs_up", "message_id": "m", "occurred_at": datetime(2026, 1, 1)},
            "naive datetime",
        ),
        (
            {"value": "thumbs_up", "message_id": "m", "occurred_at": "2026-02-03T14:22:10"},
            "RFC 3339 timestamp with a zone",
        ),
        (
            {"value": "thumbs_up", "message_id": "m", "occurred_at": "yesterday"},
            "RFC 3339",
        ),
        (
            {"value": "thumbs_up", "message_id": "m", "occurred_at": "2026-02-30T10:00:00Z"},
            "not a valid date",
        ),
        ({"value": "thumbs_up", "message_id": "m", "occurred_at": 1700000000}, "got int"),
        (
            {
                "value": "thumbs_up",
                "message_id": "m",
                "user_message": "x" * (MAX_USER_MESSAGE_LENGTH + 1),
            },
            f"at most {MAX_USER_MESSAGE_LENGTH}",
        ),
        ({"value": "thumbs_up", "message_id": "m", "user_message": 5}, "user_message must be"),
    ],
)
def test_invalid_input_is_refused_before_anything_is_queued(
    kwargs: dict[str, object], fragment: str, capture: SpanCapture, local: Local
) -> None:
    memory = InMemorySignalExporter()
    local(exporters=[memory])
    value = kwargs.pop("value")
    with pytest.raises(brixo_otel.InvalidSignal, match=fragment) as raised:
        brixo_otel.feedback(value, **kwargs)  # type: ignore[arg-type]
    assert isinstance(raised.value, ValueError)
    assert brixo_otel.flush(timeout=5)
    assert memory.signals() == []
    assert capture.spans() == []


def test_occurred_at_defaults_to_the_call_and_aware_times_become_utc() -> None:
    before = datetime.now(timezone.utc)
    signal = validate("thumbs_up", message_id="m")
    assert before <= signal.occurred_at <= datetime.now(timezone.utc)

    paris = timezone(timedelta(hours=1))
    converted = validate(
        "thumbs_down", message_id="m", occurred_at=datetime(2026, 2, 3, 15, 22, 10, tzinfo=paris)
    )
    assert converted.occurred_at == datetime(2026, 2, 3, 14, 22, 10, tzinfo=timezone.utc)
    from_text = validate(
        "thumbs_up", message_id="m", occurred_at="2026-02-03T15:22:10.123456789+01:00"
    )
    assert from_text.occurred_at == datetime(2026, 2, 3, 14, 22, 10, 123456, tzinfo=timezone.utc)


def test_target_follows_the_ids_given() -> None:
    assert validate("thumbs_up", message_id="m", conversation_id="c").target == "message"
    assert validate("thumbs_up", message_id="m", conversation_id="c").target_id == "m"
    conversation = validate("thumbs_up", conversation_id="c")
    assert (conversation.target, conversation.target_id) == ("conversation", "c")


def test_signal_ids_are_unique_uuid7_and_sortable() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_signal_id() for _ in range(2000)]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    parsed = [uuid.UUID(i) for i in ids]
    assert {(u.version, u.variant) for u in parsed} == {(7, uuid.RFC_4122)}
    assert [str(u) for u in parsed] == ids  # canonical form: lower-case hex, dashes in place
    stamps = [u.int >> 80 for u in parsed]  # the first 48 bits: Unix milliseconds
    assert stamps == sorted(stamps) and before <= stamps[0] and stamps[-1] <= after


def test_a_forked_child_draws_other_ids_than_its_parent() -> None:
    """The ids' random bits come from a generator of the library's own: a child that inherited
    its state would repeat the parent's ids within the same millisecond."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        try:
            os.write(write, " ".join(new_signal_id() for _ in range(50)).encode())
        finally:
            os._exit(0)
    os.close(write)
    mine = [new_signal_id() for _ in range(50)]
    with os.fdopen(read) as pipe:
        theirs = pipe.read().split()
    os.waitpid(pid, 0)
    assert len(theirs) == 50
    assert not {i[15:] for i in mine} & {i[15:] for i in theirs}  # the random part


def test_an_app_seeding_python_random_does_not_repeat_ids() -> None:
    random.seed(7)
    first = new_signal_id()
    random.seed(7)
    assert new_signal_id()[15:] != first[15:]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"message_id": "m"},
        {"conversation_id": "c", "user_message": "well put"},
        {"message_id": "m", "score": 4, "reasons": ["too_long", "too_long", "incorrect"]},
        {"message_id": "m", "occurred_at": "2026-02-03T14:22:10.5+02:00"},
    ],
)
def test_validate_builds_exactly_what_the_dataclass_would(kwargs: dict[str, object]) -> None:
    """`validate` sets the fields straight into the new object (faster than a frozen
    dataclass's own `__init__`): the result must be the same signal, every field set, no other
    attribute."""
    value = "csat" if "score" in kwargs else "thumbs_up"
    caller = SpanRef(trace_id=0xABC, span_id=0xDEF)
    signal = validate(value, caller=caller, **kwargs)  # type: ignore[arg-type]
    fields = {f.name: getattr(signal, f.name) for f in dataclasses.fields(Signal)}
    assert set(vars(signal)) == set(fields)
    rebuilt = Signal(**fields)
    assert rebuilt == signal and hash(rebuilt) == hash(signal) and repr(rebuilt) == repr(signal)
    assert dataclasses.replace(signal, link_status="linked").link_status == "linked"
    with pytest.raises(dataclasses.FrozenInstanceError):
        signal.value = "thumbs_down"  # type: ignore[misc]


@given(
    st.lists(
        st.datetimes(
            min_value=datetime(1971, 1, 1),
            max_value=datetime(8999, 12, 31),
            timezones=st.sampled_from(
                [
                    timezone.utc,
                    timezone(timedelta(hours=5, minutes=30)),
                    timezone(-timedelta(hours=8)),
                ]
            ),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_outbox_timestamps_are_isoformat_in_utc_whatever_came_before(
    moments: list[datetime],
) -> None:
    """The outbox's microsecond timestamps keep the date and time of the last second they wrote:
    any sequence of moments (the same second in another month, another zone) must still come
    out as `isoformat` would write each."""
    for moment in moments + [m.astimezone(timezone.utc) for m in moments]:
        expected = moment.astimezone(timezone.utc).isoformat(timespec="microseconds")
        assert format_timestamp(moment, "microseconds") == expected.replace("+00:00", "Z")


#: Text the model accepts: no lone surrogates (not UTF-8) and no NUL (refused, see below).
_TEXT = st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00")


@given(
    value=st.sampled_from(["thumbs_up", "thumbs_down"]),
    message_id=st.text(_TEXT, min_size=1, max_size=60).filter(str.strip),
    user_message=st.none() | st.text(_TEXT, max_size=200),
    occurred_at=st.datetimes(
        min_value=datetime(1971, 1, 1),
        max_value=datetime(8999, 12, 31),
        timezones=st.just(timezone.utc),
    ),
)
def test_signal_survives_the_outbox_encoding(
    value: str, message_id: str, user_message: str | None, occurred_at: datetime
) -> None:
    signal = validate(
        value, message_id=message_id, user_message=user_message, occurred_at=occurred_at
    )
    restored = Signal.from_json(signal.to_json())
    assert restored.id == signal.id
    assert (restored.value, restored.message_id, restored.user_message) == (
        value,
        message_id,
        user_message,
    )
    # the wire carries milliseconds
    assert abs(restored.occurred_at - signal.occurred_at) < timedelta(milliseconds=1)


@given(
    message_id=st.none() | st.text(_TEXT, min_size=1, max_size=40).filter(str.strip),
    conversation_id=st.none() | st.text(_TEXT, min_size=1, max_size=40).filter(str.strip),
    user_message=st.none() | st.text(_TEXT, max_size=80),
    reasons=st.lists(st.from_regex(r"[a-z0-9][a-z0-9_.:-]{0,10}", fullmatch=True), max_size=3),
    score=st.none() | st.integers(min_value=1, max_value=5),
    caller=st.none() | st.tuples(st.integers(1, 2**128 - 1), st.integers(1, 2**64 - 1)),
)
def test_the_outbox_text_is_what_the_json_encoder_writes(
    message_id: str | None,
    conversation_id: str | None,
    user_message: str | None,
    reasons: list[str],
    score: int | None,
    caller: tuple[int, int] | None,
) -> None:
    """`to_json` writes the text out field by field (it runs in every `feedback()`): it must be
    exactly what the encoder makes of the same object, quotes, escapes and all."""
    if message_id is None and conversation_id is None:
        message_id = "m"
    signal = validate(
        "csat" if score is not None else "thumbs_down",
        message_id=message_id,
        conversation_id=conversation_id,
        user_message=user_message,
        reasons=reasons,
        score=score,
        caller=None if caller is None else SpanRef(*caller),
    )
    assert signal.to_json() == _ENCODER.encode(signal._json_data())


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("message_id", "half \ud800 pair"),
        ("user_message", "lone \udfff"),
        ("message_id", "nul\x00inside"),
    ],
)
def test_text_that_cannot_be_delivered_is_refused_at_the_call(field: str, bad: str) -> None:
    """Lone surrogates cannot be encoded as UTF-8: accepted, they would fail in the outbox,
    silently for the caller. NUL is refused too (path segments and many servers reject it)."""
    arguments: dict[str, object] = {"message_id": "m", field: bad}
    with pytest.raises(InvalidSignal) as refused:
        validate("thumbs_up", **arguments)
    assert refused.value.field == field
    assert refused.value.reason == "malformed"


@pytest.mark.parametrize(
    "moment",
    [
        datetime(1, 1, 1, tzinfo=timezone.utc),
        datetime(9999, 12, 31, 23, 59, tzinfo=timezone.utc),
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))),  # overflows on conversion
        "0001-01-01T00:00:00+05:00",
        "9999-12-31T23:59:59-05:00",
    ],
)
def test_moments_at_the_ends_of_the_range_are_refused_not_raised(moment: object) -> None:
    with pytest.raises(InvalidSignal) as refused:
        validate("thumbs_up", message_id="m", occurred_at=moment)
    assert refused.value.field == "occurred_at"
    assert refused.value.reason in ("out_of_range", "malformed")


def test_a_reason_tag_ending_in_a_newline_is_refused() -> None:
    with pytest.raises(InvalidSignal) as refused:
        validate("thumbs_up", message_id="m", reasons=["too_long\n"])
    assert refused.value.field == "reasons"
