"""Link tokens: signed span contexts that come back from an untrusted frontend.

Every way a token can be wrong must be refused with `InvalidSignal`, and a refusal must never
repeat the secret or the (possibly huge) token.
"""

from __future__ import annotations

import base64
import logging
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.trace import SpanContext, TraceFlags

from brixo_otel._correlation import _tokens
from brixo_otel._correlation._tokens import (
    CLOCK_SKEW_SECONDS,
    MAX_TOKEN_LENGTH,
    decode_link_token,
    encode_link_token,
)
from brixo_otel._errors import ConfigurationError, InvalidSignal

SECRET = b"0123456789abcdef-test-secret-xyz"
OTHER_SECRET = b"fedcba9876543210-other-secret-xy"
NOW = 1_750_000_000.0
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

#: What a typical message carries: the id an app gives it and three short dimensions.
TYPICAL_ID = "msg_01HZX3K9Q8"
TYPICAL_ATTRIBUTES = {
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.provider.name": "openai",
    "brixo.agent_version": "1.4.2",
}
#: Documented in docs/correlation.md; a change of layout must update both.
TYPICAL_LENGTH = 210

CONTEXT = SpanContext(
    0x0AF7651916CD43DD8448EB211C80319C,
    0xB7AD6B7169203331,
    is_remote=False,
    trace_flags=TraceFlags(1),
)


def typical_token(issued_at: float = NOW, secret: bytes = SECRET) -> str:
    return encode_link_token(secret, TYPICAL_ID, CONTEXT, TYPICAL_ATTRIBUTES, issued_at=issued_at)


def raw(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def refused(token: object, *, secret: bytes = SECRET, now: float = NOW, **kw: object) -> str:
    with pytest.raises(InvalidSignal) as raised:
        decode_link_token(secret, token, now=now, **kw)  # type: ignore[arg-type]
    message = str(raised.value)
    assert SECRET.decode() not in message
    assert len(message) < 200  # names the reason, never quotes the token
    return message


def test_round_trip() -> None:
    token = typical_token()
    contents = decode_link_token(SECRET, token, now=NOW + 60)
    assert contents.message_id == TYPICAL_ID
    assert contents.span_context.trace_id == CONTEXT.trace_id
    assert contents.span_context.span_id == CONTEXT.span_id
    assert contents.span_context.trace_flags == TraceFlags(1)
    assert contents.span_context.is_remote
    assert dict(contents.attributes) == TYPICAL_ATTRIBUTES
    assert contents.issued_at == NOW
    assert decode_link_token(SECRET, token, now=NOW, expected_message_id=TYPICAL_ID)


def test_token_is_short_and_url_safe() -> None:
    token = typical_token()
    assert len(token) == TYPICAL_LENGTH
    assert set(token) <= set(ALPHABET)
    bare = encode_link_token(SECRET, TYPICAL_ID, CONTEXT, {}, issued_at=NOW)
    assert len(bare) == 83


def test_issue_time_defaults_to_now() -> None:
    before = int(time.time())
    contents = decode_link_token(SECRET, encode_link_token(SECRET, "m", CONTEXT, {}))
    assert before <= contents.issued_at <= time.time()


def test_every_single_byte_tamper_is_refused() -> None:
    payload = raw(typical_token())
    for position in range(len(payload)):
        for flip in (0x01, 0x80, 0xFF):
            tampered = bytearray(payload)
            tampered[position] ^= flip
            message = refused(b64(bytes(tampered)))
            assert "signature" in message or "version" in message


def test_truncated_or_extended_tokens_are_refused() -> None:
    payload = raw(typical_token())
    for cut in (1, 2, 16, 17, len(payload) - 10):
        refused(b64(payload[:-cut]))
    refused(b64(payload + b"\x00"))
    refused(b64(b"\x00" + payload))


def test_foreign_secret_is_refused() -> None:
    assert "signature" in refused(typical_token(secret=OTHER_SECRET))


def test_expired_token_is_refused() -> None:
    token = typical_token()
    max_age = 30 * 86400
    assert decode_link_token(SECRET, token, now=NOW + max_age)  # the last accepted second
    assert "expired" in refused(token, now=NOW + max_age + 1)
    assert "expired" in refused(token, now=NOW + 3601, max_age_seconds=3600)


def test_future_dated_token_is_refused_beyond_the_clock_skew() -> None:
    assert decode_link_token(SECRET, typical_token(NOW + CLOCK_SKEW_SECONDS), now=NOW)
    assert "future" in refused(typical_token(NOW + CLOCK_SKEW_SECONDS + 1))


def test_token_for_another_message_is_refused() -> None:
    assert "another message" in refused(typical_token(), expected_message_id="msg_other")


def test_oversized_input_is_refused_before_decoding() -> None:
    huge = "A" * (10 * 1024 * 1024)
    started = time.perf_counter()
    message = refused(huge)
    assert time.perf_counter() - started < 0.1
    assert "too long" in message and str(MAX_TOKEN_LENGTH) in message
    assert "AAAA" not in message
    assert "too long" in refused("A" * (MAX_TOKEN_LENGTH + 1))


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "a",
        "abcde",  # a length no base64 has
        "!!!!",
        "has space",
        "padded==",
        "ab+/",  # standard, not URL-safe, alphabet
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",  # base64 of zeroes: wrong version
        "AQ",  # right version byte, far too short
    ],
)
def test_garbage_is_refused(garbage: str) -> None:
    refused(garbage)


@pytest.mark.parametrize("garbage", [None, b"bytes", 42, ["list"]])
def test_non_strings_are_refused(garbage: object) -> None:
    assert "string" in refused(garbage)


def test_non_canonical_base64_is_refused() -> None:
    odd = encode_link_token(SECRET, "m1", CONTEXT, {}, issued_at=NOW)
    assert len(odd) % 4 != 0
    last = ALPHABET.index(odd[-1])  # its low bits are spare, and zero in the canonical form
    twin = odd[:-1] + ALPHABET[last + 1]
    assert raw(twin) == raw(odd)  # the same bytes, another string
    assert "canonical" in refused(twin)
    assert decode_link_token(SECRET, odd, now=NOW)


def test_unusable_secrets_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="16 bytes"):
        encode_link_token(b"short", "m", CONTEXT, {})
    with pytest.raises(ConfigurationError, match="bytes"):
        decode_link_token("a string secret, long enough", typical_token())  # type: ignore[arg-type]


def test_encoding_refuses_what_no_token_can_carry() -> None:
    with pytest.raises(InvalidSignal, match="message id"):
        encode_link_token(SECRET, "", CONTEXT, {})
    with pytest.raises(InvalidSignal, match="span context"):
        encode_link_token(SECRET, "m", SpanContext(0, 0, False), {})
    with pytest.raises(InvalidSignal, match="too long"):
        encode_link_token(SECRET, "x" * 2000, CONTEXT, {})


def test_attributes_too_big_for_a_token_are_left_out_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="brixo_otel")
    token = encode_link_token(SECRET, "m", CONTEXT, {"blob": "x" * 3000}, issued_at=NOW)
    assert len(token) <= MAX_TOKEN_LENGTH
    contents = decode_link_token(SECRET, token, now=NOW)
    assert contents.message_id == "m" and dict(contents.attributes) == {}
    assert any("attributes" in r.getMessage() for r in caplog.records)


def test_later_versions_are_refused_by_name() -> None:
    payload = bytearray(raw(typical_token()))
    payload[0] = _tokens.TOKEN_VERSION + 1
    assert "version 2" in refused(b64(bytes(payload)))


scalars = st.one_of(
    st.text(max_size=20),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
)
attribute_values = st.one_of(
    scalars,
    st.lists(st.text(max_size=8), max_size=4),
    st.lists(st.integers(min_value=-(2**31), max_value=2**31), max_size=4),
    st.lists(st.floats(allow_nan=False), max_size=4),
    st.lists(st.booleans(), max_size=4),
)


@settings(max_examples=150, deadline=None)
@given(
    message_id=st.text(min_size=1, max_size=120),
    trace_id=st.integers(min_value=1, max_value=2**128 - 1),
    span_id=st.integers(min_value=1, max_value=2**64 - 1),
    flags=st.integers(min_value=0, max_value=255),
    attributes=st.dictionaries(st.text(max_size=30), attribute_values, max_size=5),
    issued_at=st.integers(min_value=0, max_value=2**33),
)
def test_round_trip_of_arbitrary_contents(
    message_id: str,
    trace_id: int,
    span_id: int,
    flags: int,
    attributes: dict[str, object],
    issued_at: int,
) -> None:
    context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(flags))
    token = encode_link_token(SECRET, message_id, context, attributes, issued_at=issued_at)  # type: ignore[arg-type]
    assert len(token) <= MAX_TOKEN_LENGTH
    contents = decode_link_token(SECRET, token, now=issued_at, expected_message_id=message_id)
    assert contents.message_id == message_id
    assert contents.span_context.trace_id == trace_id
    assert contents.span_context.span_id == span_id
    assert contents.span_context.trace_flags == flags
    assert contents.issued_at == issued_at
    expected = {k: tuple(v) if isinstance(v, list) else v for k, v in attributes.items()}
    assert dict(contents.attributes) == expected
