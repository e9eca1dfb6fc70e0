"""What the endpoint answers, independent of ASGI or WSGI: a status, headers and a body.

Errors are RFC 9457 problem details (`application/problem+json`), so a frontend can show the
`detail` and a developer can act on the per-field `errors` without reading server logs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final

PROBLEM_JSON: Final = "application/problem+json"
JSON: Final = "application/json"

#: Sent with every answer of the endpoint: its answers are per request, never to be cached or
#: sniffed into another type.
_ALWAYS: Final = (("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"))


@dataclass(frozen=True)
class Reply:
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def with_headers(self, extra: Sequence[tuple[str, str]]) -> Reply:
        return Reply(self.status, (*self.headers, *extra), self.body) if extra else self

    @property
    def status_line(self) -> str:
        """`202 Accepted`, as WSGI's `start_response` wants it."""
        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:
            phrase = ""
        return f"{self.status} {phrase}".rstrip()


@dataclass(frozen=True)
class FieldError:
    """One problem with one field of the request body."""

    field: str | None
    reason: str
    detail: str

    def as_json(self) -> dict[str, Any]:
        return {"field": self.field, "reason": self.reason, "detail": self.detail}


def json_reply(status: int, document: Mapping[str, Any], content_type: str = JSON) -> Reply:
    body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return Reply(status, (("Content-Type", content_type), *_ALWAYS), body)


def problem(
    status: int,
    detail: str,
    *,
    errors: Sequence[FieldError] = (),
    headers: Sequence[tuple[str, str]] = (),
) -> Reply:
    document: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if errors:
        document["errors"] = [error.as_json() for error in errors]
    return json_reply(status, document, PROBLEM_JSON).with_headers(headers)


def empty(status: int, headers: Sequence[tuple[str, str]] = ()) -> Reply:
    return Reply(status, (*_ALWAYS, *headers))
