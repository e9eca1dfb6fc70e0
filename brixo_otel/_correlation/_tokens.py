"""Link tokens: the span context of a message, signed, carried by the frontend.

The stateless alternative to a shared index. The backend hands the frontend a token along with
the answer; the thumbs click sends it back; whichever process or host receives the click can
link the feedback to the trace without having seen the message, and without any shared store.

The frontend is untrusted: a token is refused unless it is short, well-formed, of a known
version, signed with our secret, recent and not from the future. It is signed, not encrypted:
the user can read the message id, trace id and attributes in it (so keep secrets out of the
indexed attributes), but cannot change them.

Layout of version 1, before base64url (no padding)::

    version        1 byte    0x01
    issued at      5 bytes   unsigned seconds since the epoch, big-endian (wraps in year 36812)
    trace id      16 bytes
    span id        8 bytes
    trace flags    1 byte
    message id     LEB128 length, then UTF-8
    attributes     compact JSON object, UTF-8, up to the tag (empty when there are none)
    tag           16 bytes   HMAC-SHA256 over all of the above, truncated to 128 bits

A 128-bit tag is what the HMAC truncation guidance (RFC 2104 §5, NIST SP 800-107) considers
ample against forgery, and it saves 22 characters in every token compared with the full 256 bits.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Mapping
from typing import Final, NamedTuple

from opentelemetry.trace import SpanContext
from opentelemetry.util.types import AttributeValue

from brixo_otel._correlation._codec import (
    CodecError,
    attributes_from_json,
    attributes_to_json,
    dumps,
    span_context_from,
)
from brixo_otel._errors import ConfigurationError, InvalidSignal
from brixo_otel._internal import log_rate_limited

#: The layout version written by `encode_link_token`, the first byte of every token.
TOKEN_VERSION: Final = 1

#: Longest token accepted, in characters. Checked before anything is decoded, so an oversized
#: input costs nothing; a typical token is a tenth of this.
MAX_TOKEN_LENGTH: Final = 2048

#: How far in the future a token's issue time may be, to allow for clocks of different hosts.
CLOCK_SKEW_SECONDS: Final = 60.0

#: Shortest secret accepted, in bytes.
MIN_SECRET_BYTES: Final = 16

DEFAULT_MAX_AGE_SECONDS: Final = 30 * 86400.0

_TAG_BYTES: Final = 16
_ISSUED_AT_BYTES: Final = 5
_HEADER_BYTES: Final = 1 + _ISSUED_AT_BYTES + 16 + 8 + 1
# Keeps a token signed for another purpose with the same secret from ever passing as ours.
_MAC_CONTEXT: Final = b"brixo-otel link token\x00"
_BASE64URL: Final = re.compile(r"[A-Za-z0-9_-]+")


class LinkTokenContents(NamedTuple):
    """What a valid token says: the rated message and the span that produced it."""

    message_id: str
    span_context: SpanContext
    attributes: Mapping[str, AttributeValue]
    #: When the token was issued, in seconds since the epoch (whole seconds).
    issued_at: float


def _check_secret(secret: bytes) -> None:
    if not isinstance(secret, (bytes, bytearray)):
        raise ConfigurationError("the link secret must be bytes")
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigurationError(
            f"the link secret must be at least {MIN_SECRET_BYTES} bytes; "
            "generate one with `python -c 'import secrets; print(secrets.token_hex(32))'`"
        )


def _tag(secret: bytes, body: bytes) -> bytes:
    return hmac.new(secret, _MAC_CONTEXT + body, hashlib.sha256).digest()[:_TAG_BYTES]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
    """The value and the offset after it; at most 3 bytes, as ids are far shorter than 2 MiB."""
    value = 0
    for shift in (0, 7, 14):
        if offset >= len(data):
            break
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
    raise _refused("link token is malformed: bad message id length")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _body(
    issued: int, message_id: bytes, span_context: SpanContext, attributes_json: bytes
) -> bytes:
    return b"".join(
        (
            bytes((TOKEN_VERSION,)),
            issued.to_bytes(_ISSUED_AT_BYTES, "big"),
            span_context.trace_id.to_bytes(16, "big"),
            span_context.span_id.to_bytes(8, "big"),
            bytes((int(span_context.trace_flags) & 0xFF,)),
            _varint(len(message_id)),
            message_id,
            attributes_json,
        )
    )


def encode_link_token(
    secret: bytes,
    message_id: str,
    span_context: SpanContext,
    attributes: Mapping[str, AttributeValue],
    *,
    issued_at: float | None = None,
) -> str:
    """A token for `message_id`, to be handed to the frontend with the answer.

    Attributes that would push the token past `MAX_TOKEN_LENGTH` are left out (with a warning):
    they only dimension metrics, and a token the decoder refuses would lose the link itself.
    Raises `InvalidSignal` for an id or span context no token can carry, and
    `ConfigurationError` for an unusable secret.
    """
    _check_secret(secret)
    if not isinstance(message_id, str) or not message_id:
        raise _refused("a link token needs a non-empty message id")
    if not span_context.is_valid:
        raise _refused("a link token needs a valid span context")
    issued = int(time.time() if issued_at is None else issued_at)
    if not 0 <= issued < 1 << (8 * _ISSUED_AT_BYTES):
        raise _refused("a link token's issue time must be a time after 1970")
    encoded_id = message_id.encode("utf-8", "surrogatepass")
    kept = attributes_to_json(attributes)
    attributes_json = dumps(kept).encode("utf-8", "surrogatepass") if kept else b""
    body = _body(issued, encoded_id, span_context, attributes_json)
    token = _b64(body + _tag(bytes(secret), body))
    if len(token) > MAX_TOKEN_LENGTH and attributes_json:
        log_rate_limited(
            logging.WARNING,
            "token:attributes-dropped",
            "brixo_otel: a link token left out its attributes to stay within %d characters",
            MAX_TOKEN_LENGTH,
        )
        body = _body(issued, encoded_id, span_context, b"")
        token = _b64(body + _tag(bytes(secret), body))
    if len(token) > MAX_TOKEN_LENGTH:
        raise _refused(
            f"message id is too long for a link token ({len(encoded_id)} bytes in UTF-8)"
        )
    return token


def _refused(message: str, reason: str = "malformed") -> InvalidSignal:
    """A token refusal, attributed to the `link` field so an endpoint can answer per field."""
    return InvalidSignal(message, field="link", reason=reason)


def decode_link_token(
    secret: bytes,
    token: str,
    *,
    max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
    now: float | None = None,
    expected_message_id: str | None = None,
) -> LinkTokenContents:
    """The contents of a token from the frontend, or `InvalidSignal` saying why it is refused.

    Error messages name the reason only: never the secret, never the token (it may be huge, and
    it is the user's input).
    """
    _check_secret(secret)
    if not isinstance(token, str):
        raise _refused(f"link token must be a string, got {type(token).__name__}")
    if len(token) > MAX_TOKEN_LENGTH:
        raise _refused(
            f"link token is too long ({len(token)} characters; at most {MAX_TOKEN_LENGTH})"
        )
    if not _BASE64URL.fullmatch(token) or len(token) % 4 == 1:
        raise _refused("link token is malformed: not unpadded base64url")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as exc:
        raise _refused("link token is malformed: not unpadded base64url") from exc
    # Unused low bits of the last character would let many strings decode alike.
    if _b64(raw) != token:
        raise _refused("link token is malformed: not canonical base64url")
    if len(raw) < _HEADER_BYTES + 2 + _TAG_BYTES:
        raise _refused("link token is malformed: too short")
    if raw[0] != TOKEN_VERSION:
        raise _refused(
            f"link token version {raw[0]} is not supported (this library reads {TOKEN_VERSION})"
        )
    body, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
    if not hmac.compare_digest(tag, _tag(bytes(secret), body)):
        raise _refused(
            "link token signature does not match: it was altered, or signed with another secret",
            "forged",
        )
    # From here on the bytes are ours, as signed; a failure to parse is a bug, still refused.
    offset = 1 + _ISSUED_AT_BYTES
    issued = int.from_bytes(body[1:offset], "big")
    trace_id = int.from_bytes(body[offset : offset + 16], "big")
    span_id = int.from_bytes(body[offset + 16 : offset + 24], "big")
    flags = body[offset + 24]
    length, offset = _read_varint(body, _HEADER_BYTES)
    if length == 0 or offset + length > len(body):
        raise _refused("link token is malformed: bad message id length")
    try:
        message_id = body[offset : offset + length].decode("utf-8", "surrogatepass")
        attributes_json = body[offset + length :].decode("utf-8", "surrogatepass")
        attributes = attributes_from_json(json.loads(attributes_json)) if attributes_json else {}
        span_context = span_context_from(trace_id, span_id, flags)
    except (UnicodeDecodeError, ValueError) as exc:  # CodecError and JSON errors are ValueErrors
        reason = exc if isinstance(exc, CodecError) else "unreadable contents"
        raise _refused(f"link token is malformed: {reason}") from None

    current = time.time() if now is None else now
    age = current - issued
    if age > max_age_seconds:
        raise _refused(
            f"link token expired: issued {age:.0f} s ago, accepted for {max_age_seconds:.0f} s",
            "expired",
        )
    if -age > CLOCK_SKEW_SECONDS:
        raise _refused(f"link token is issued {-age:.0f} s in the future")
    if expected_message_id is not None and message_id != expected_message_id:
        raise _refused("link token was issued for another message than the one rated", "mismatch")
    return LinkTokenContents(message_id, span_context, attributes, float(issued))
