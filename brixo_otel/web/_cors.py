"""Cross-origin access to the endpoint, for a frontend served from another origin.

Only the listed origins get CORS headers; `"*"` lets any origin post (the endpoint takes no
cookies or credentials of its own, so a wildcard exposes nothing but the endpoint itself). A
POST with a JSON body is not a "simple" request, so a browser always asks first (preflight): a
page from an origin not listed never gets to send feedback, and form posts from other sites
are refused anyway, with 415, for not being JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final
from urllib.parse import urlsplit

#: How long a browser may cache a preflight answer, in seconds.
PREFLIGHT_MAX_AGE: Final = 600

#: Headers the frontend may read on cross-origin responses.
_EXPOSED: Final = "Retry-After"


def check_origins(allow_origins: object) -> tuple[str, ...]:
    """The configured origins, normalised; raises at construction for anything unusable."""
    if isinstance(allow_origins, str):
        allow_origins = (allow_origins,)
    if not isinstance(allow_origins, Sequence):
        raise TypeError(
            f"allow_origins must be a list of origins such as 'https://app.example.com', "
            f"or ['*'], got {allow_origins!r}"
        )
    origins: list[str] = []
    for origin in allow_origins:
        if origin == "*":
            origins.append(origin)
            continue
        parts = urlsplit(origin) if isinstance(origin, str) else None
        if (
            parts is None
            or parts.scheme not in ("http", "https")
            or not parts.netloc
            or parts.path not in ("", "/")
            or parts.query
            or parts.fragment
        ):
            raise ValueError(
                f"allow_origins entry {origin!r} is not an origin: use scheme://host[:port], "
                "e.g. 'https://app.example.com', or '*'"
            )
        origins.append(f"{parts.scheme}://{parts.netloc}".lower())
    return tuple(dict.fromkeys(origins))


class CorsPolicy:
    __slots__ = ("_any", "_origins")

    def __init__(self, origins: tuple[str, ...]) -> None:
        self._any = "*" in origins
        self._origins = frozenset(origins)

    def allows(self, origin: str | None) -> bool:
        return origin is not None and (self._any or origin.lower() in self._origins)

    def headers(self, origin: str | None) -> list[tuple[str, str]]:
        """CORS headers for an actual request (not a preflight) from `origin`."""
        if not self._origins:
            return []
        vary = [("Vary", "Origin")]  # caches must not serve one origin's answer to another
        if origin is None or not self.allows(origin):
            return vary
        return [
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Expose-Headers", _EXPOSED),
            *vary,
        ]

    def preflight_headers(self, origin: str, methods: str) -> list[tuple[str, str]]:
        return [
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Allow-Methods", methods),
            ("Access-Control-Allow-Headers", "Content-Type"),
            ("Access-Control-Max-Age", str(PREFLIGHT_MAX_AGE)),
            ("Vary", "Origin"),
        ]
