"""Endpoint URLs: the one check that keeps a key off plain http, and URLs safe to print.

A leaf: settings and every HTTP exporter use it, so it depends on nothing of ours but errors.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final
from urllib.parse import urlsplit

from brixo_otel._errors import ConfigurationError

_USERINFO: Final = re.compile(r"//[^/?#]*@")


def redacted_url(url: str) -> str:
    """The URL as safe to print: credentials in it are replaced, never echoed.

    Done on the text, so it works on URLs too broken to parse (those are what error messages
    show).
    """
    return _USERINFO.sub("//***@", url)


def shown_url(url: str) -> str:
    """The URL as an error may echo it: no userinfo, and no query or fragment (a signed URL or
    a `?token=` carries its secret there).

    Everything up to the last `@` after `//` counts as userinfo, so a password holding `/`, `?`
    or `#` is never echoed in part; that may hide more than the userinfo, never less.
    """
    head, slashes, rest = url.partition("//")
    if slashes and "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return re.split(r"[?#]", head + slashes + rest, maxsplit=1)[0]


def is_loopback_host(host: str) -> bool:
    """Whether `host` never leaves this machine, so plain http cannot be sniffed on a network."""
    host = host.lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def check_endpoint_url(
    url: str,
    *,
    allow_insecure_http: bool,
    setting: str,
    example: str = "https://api.brixo.com",
    api_root: bool = False,
) -> str:
    """Refuse, at configuration time, an endpoint that would leak the key or can never work.

    Plain http is refused to any host but loopback, because the API key travels in a header;
    `allow_insecure_http=True` is the explicit opt-out (e.g. a TLS-terminating sidecar on a
    private network). `setting` names the argument or environment variable in the error, so the
    user knows what to fix, and `example` shows a right value for that destination.
    `api_root=True` is for a base URL that request paths are appended to: it also refuses
    credentials (httpx would turn them into Basic auth over the destination's own header), a
    query and a fragment, and drops a trailing slash. Returns the URL without surrounding
    whitespace.
    """
    if not isinstance(url, str):
        raise ConfigurationError(f"{setting} must be a string URL, got {type(url).__name__}")
    url = url.strip()
    shown = shown_url(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port validates it
    except ValueError:  # its text may quote a piece of a password: not echoed
        raise ConfigurationError(
            f"{setting} {shown!r} is not a valid URL (its host or port cannot be read); "
            f"e.g. {example!r}"
        ) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ConfigurationError(
            f"{setting} {shown!r} must start with https:// (or http:// for a local server); "
            f"e.g. {example!r}"
        )
    if not parts.hostname:
        raise ConfigurationError(f"{setting} {shown!r} has no host; e.g. {example!r}")
    if scheme == "http" and not allow_insecure_http and not is_loopback_host(parts.hostname):
        raise ConfigurationError(
            f"{setting} {shown!r} uses plain http to a host that is not loopback, which would "
            "send the API key unencrypted; use https://, or pass allow_insecure_http=True if "
            "the network path is trusted"
        )
    if api_root:
        if "@" in parts.netloc:
            raise ConfigurationError(
                f"{setting} must not contain credentials (user:password@); pass the key as api_key"
            )
        if parts.query or parts.fragment:
            raise ConfigurationError(
                f"{setting} {shown!r} must not have a query or fragment; give the API root, "
                f"e.g. {example!r}"
            )
        return url.rstrip("/")
    return url
