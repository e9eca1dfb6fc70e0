"""The two values a browser needs to rate a message, as HTTP headers.

`Brixo-Message-Id` carries the message id percent-encoded (UTF-8), because an app's ids may hold
characters a header cannot (HTTP header values are Latin-1 at best); ids made of letters, digits
and the usual punctuation pass unchanged. The widget decodes it with `decodeURIComponent`.
`Brixo-Link` is a link token, base64url already.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import quote

from brixo_otel.web import _core

MESSAGE_ID_HEADER: Final = "Brixo-Message-Id"
LINK_HEADER: Final = "Brixo-Link"

#: Characters left as they are in `Brixo-Message-Id`: RFC 3986 unreserved and sub-delims, ":"
#: and "@" ("%" is not among them, so decoding is always exact).
_SAFE: Final = "-._~!$&'()*+,;=:@/"


def encode_message_id(message_id: str) -> str:
    return quote(message_id, safe=_SAFE)


def header_values(message_id: str | None, link: str | None) -> list[tuple[str, str]]:
    """The headers for a message; none without a message id."""
    if message_id is None:
        return []
    headers = [(MESSAGE_ID_HEADER, encode_message_id(message_id))]
    if link is not None:
        headers.append((LINK_HEADER, link))
    return headers


def message_headers() -> dict[str, str]:
    """`Brixo-Message-Id` (and `Brixo-Link` when a link secret is configured) for the message
    being produced right here, inside `@brixo_otel.message` or `message_span`.

    For apps that set response headers themselves rather than through the middleware. Outside a
    message, or before its id is bound, it returns an empty dict: telemetry never breaks a
    response.
    """
    with _core.guard("building the message headers"):
        return dict(header_values(_core.current_message_id(), _core.current_link()))
    return {}
