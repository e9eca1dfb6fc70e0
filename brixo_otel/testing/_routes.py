"""Which endpoint a raw request target names.

The path is split on "/" while still percent-encoded and only then is the id decoded, so an id
containing "/" (sent as %2F) stays one id instead of turning into extra path segments.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from brixo_otel.testing._records import SignalTarget

_COLLECTIONS: dict[str, SignalTarget] = {"messages": "message", "conversations": "conversation"}


@dataclass(frozen=True)
class SignalsRoute:
    target: SignalTarget
    target_id: str


@dataclass(frozen=True)
class TracesRoute:
    pass


Route = SignalsRoute | TracesRoute


def route(raw_target: str) -> Route | None:
    """The endpoint for `raw_target` (as on the request line), or None when there is none."""
    path = raw_target.split("?", 1)[0].split("#", 1)[0]
    if path == "/v1/traces":
        return TracesRoute()
    segments = path.split("/")
    if len(segments) != 5 or segments[0] or segments[1] != "v1" or segments[4] != "signals":
        return None
    target = _COLLECTIONS.get(segments[2])
    if target is None or not segments[3]:
        return None
    try:
        target_id = unquote(segments[3], errors="strict")
    except UnicodeDecodeError:
        return None
    return SignalsRoute(target, target_id)
