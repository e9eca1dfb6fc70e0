"""The feedback endpoint's decisions, shared by the ASGI and the WSGI app.

Everything here is pure: it looks at a request's method, path and headers, then at its body, and
says what to answer or which `feedback()` call to make. The two server adapters only move bytes
(and, for ASGI, await `afeedback`), so both behave exactly alike and this logic is tested once.

A request goes through three steps:

1. `before_body` answers whatever can be answered from the head alone (routing, 405, CORS
   preflight, the widget script, 429, 415, a declared length over the limit: 413), so a
   refused body is never read;
2. `parse` turns the body into keyword arguments for `feedback()`, or a 400 / 403 / 422;
3. `accepted` / `refused` / `failed` answer the outcome of the call.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Final

import brixo_otel
from brixo_otel.web import _core
from brixo_otel.web._cors import CorsPolicy, check_origins
from brixo_otel.web._ratelimit import RateLimit, RateLimiter
from brixo_otel.web._reply import FieldError, Reply, empty, json_reply, problem

#: The body fields, named as `feedback()`'s parameters. `occurred_at` is left out on purpose:
#: the browser's clock is not to be trusted, and the server's time of receipt is close enough.
FIELDS: Final = (
    "value",
    "message_id",
    "conversation_id",
    "user_message",
    "link",
    "score",
    "reasons",
)
_TEXT_FIELDS: Final = ("message_id", "conversation_id", "user_message", "link")

SCRIPT_NAME: Final = "feedback.js"
_POST_METHODS: Final = "POST, OPTIONS"
_SCRIPT_METHODS: Final = "GET, HEAD, OPTIONS"
DEFAULT_MAX_BODY_BYTES: Final = 16 * 1024

#: `application/json`, or any `application/<something>+json`, parameters allowed.
_JSON_TYPE: Final = re.compile(r"^application/(?:[\w.-]+\+)?json$", re.IGNORECASE)


@dataclass(frozen=True)
class Request:
    """What the endpoint needs of a request, as either server adapter reads it."""

    method: str
    #: The path below where the endpoint is mounted ("" or "/" for the endpoint itself).
    path: str
    content_type: str | None = None
    #: The declared `Content-Length`; None when absent, -1 when unreadable.
    content_length: int | None = None
    origin: str | None = None
    client: str | None = None
    if_none_match: str | None = None
    #: `Access-Control-Request-Method` of a CORS preflight.
    preflight_method: str | None = None


def content_length(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    raw = raw.strip()
    return int(raw) if raw.isdigit() else -1


@cache
def _script() -> tuple[bytes, str]:
    body = resources.files("brixo_otel.web").joinpath("static", SCRIPT_NAME).read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:20] + '"'


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


class Endpoint:
    """The behaviour `asgi_feedback_app` and `wsgi_feedback_app` share; see there."""

    __slots__ = ("_cors", "_limiter", "max_body_bytes", "require_link")

    def __init__(
        self,
        *,
        require_link: bool,
        allow_origins: object,
        max_body_bytes: int,
        rate_limit: RateLimit | None,
    ) -> None:
        if not isinstance(require_link, bool):
            raise TypeError(f"require_link must be True or False, got {require_link!r}")
        if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int):
            raise TypeError(f"max_body_bytes must be an int, got {max_body_bytes!r}")
        if max_body_bytes < 256:
            # A feedback body with a link token and a comment is a few KiB; a tiny limit can
            # only be a mistake (a unit mix-up), and would refuse every click.
            raise ValueError(f"max_body_bytes must be at least 256, got {max_body_bytes!r}")
        if rate_limit is not None and not isinstance(rate_limit, RateLimit):
            raise TypeError(
                f"rate_limit must be a brixo_otel.web.RateLimit or None, got {rate_limit!r}"
            )
        self.require_link = require_link
        self.max_body_bytes = max_body_bytes
        self._cors = CorsPolicy(check_origins(allow_origins))
        self._limiter = RateLimiter(rate_limit) if rate_limit is not None else None

    # -- step 1: the head ---------------------------------------------------------------------

    def before_body(self, request: Request) -> Reply | None:
        """The answer when the head decides it; None when the body is to be read."""
        path = request.path.strip("/")
        method = request.method.upper()
        if path == SCRIPT_NAME:
            allowed = _SCRIPT_METHODS
        elif path == "":
            allowed = _POST_METHODS
        else:
            return self._answer(request, problem(404, "no such resource of the feedback endpoint"))
        if method == "OPTIONS":
            return self._options(request, allowed)
        if method not in allowed.split(", "):
            return self._answer(
                request,
                problem(
                    405,
                    f"{method} is not supported here; use {allowed}",
                    headers=[("Allow", allowed)],
                ),
            )
        if path == SCRIPT_NAME:
            return self._answer(request, self._script_reply(request, head=method == "HEAD"))
        if self._limiter is not None:
            wait = self._limiter.acquire(request.client or "unknown")
            if wait is not None:
                retry_after = str(max(1, math.ceil(wait)))
                return self._answer(
                    request,
                    problem(
                        429,
                        "too much feedback from this client; try again later",
                        headers=[("Retry-After", retry_after)],
                    ),
                )
        media_type = (request.content_type or "").split(";", 1)[0].strip()
        if not _JSON_TYPE.match(media_type):
            return self._answer(
                request,
                problem(
                    415,
                    "send the feedback as JSON, with Content-Type: application/json",
                    headers=[("Accept-Post", "application/json")],
                ),
            )
        if request.content_length == -1:
            return self._answer(request, problem(400, "Content-Length is not a number"))
        if request.content_length is not None and request.content_length > self.max_body_bytes:
            return self.too_large(request)
        return None

    def _options(self, request: Request, allowed: str) -> Reply:
        if request.origin is None or request.preflight_method is None:
            return self._answer(request, empty(204, [("Allow", allowed)]))
        method = request.preflight_method.upper()
        if not self._cors.allows(request.origin) or method not in allowed.split(", "):
            # No CORS headers: the browser refuses the request it asked about.
            return problem(
                403, "this origin may not send feedback here", headers=[("Vary", "Origin")]
            )
        return empty(204, self._cors.preflight_headers(request.origin, allowed))

    def _script_reply(self, request: Request, *, head: bool) -> Reply:
        body, etag = _script()
        headers = (
            ("Content-Type", "text/javascript; charset=utf-8"),
            ("Cache-Control", "public, max-age=3600"),
            ("ETag", etag),
            ("X-Content-Type-Options", "nosniff"),
        )
        if request.if_none_match is not None and etag in request.if_none_match:
            return Reply(304, headers)
        return Reply(200, (*headers, ("Content-Length", str(len(body)))), b"" if head else body)

    def too_large(self, request: Request) -> Reply:
        return self._answer(
            request,
            problem(413, f"the body is over the limit of {self.max_body_bytes} bytes"),
        )

    def length_required(self, request: Request) -> Reply:
        return self._answer(request, problem(411, "send a Content-Length with the body"))

    # -- step 2: the body ---------------------------------------------------------------------

    def parse(self, request: Request, body: bytes) -> Reply | dict[str, Any]:
        """Keyword arguments for `feedback()`, or the answer refusing the body."""
        try:
            document = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError) as exc:
            detail = f"the body is not valid UTF-8 JSON: {exc}"
            return self._answer(request, problem(400, detail))
        if not isinstance(document, dict):
            error = FieldError(
                None, "wrong_type", "the body must be a JSON object of feedback fields"
            )
            return self._invalid(request, [error])
        errors = [*_unknown_fields(document), *_type_errors(document)]
        if errors:
            return self._invalid(request, errors)
        if self.require_link and not _core.link_secret_configured():
            _core.log_rate_limited(
                logging.ERROR,
                "web:endpoint:no-secret",
                "brixo_otel.web: a feedback endpoint requires link tokens (require_link=True) "
                "but no link secret is configured: configure(link_secret=...) or "
                "BRIXO_LINK_SECRET; all feedback is refused",
            )
            return self._answer(
                request, problem(500, "the feedback endpoint is not configured to take feedback")
            )
        if self.require_link and not document.get("link"):
            return self._answer(
                request,
                problem(403, "a link token is required: rate a message with the link it came with"),
            )
        return {name: value for name, value in document.items() if value is not None}

    # -- step 3: the outcome ------------------------------------------------------------------

    def accepted(self, request: Request, signal: brixo_otel.Signal) -> Reply:
        return self._answer(request, json_reply(202, {"id": signal.id}))

    def refused(self, request: Request, exc: brixo_otel.InvalidSignal) -> Reply:
        """`feedback()` refused the input: 422 naming the field, or 403 for a link token the
        endpoint requires and that does not verify (forged, tampered, expired, for another
        message)."""
        field = field_of(exc)
        if self.require_link and field == "link":
            return self._answer(request, problem(403, f"the link token was refused: {exc}"))
        reason = getattr(exc, "reason", None)
        error = FieldError(field, reason if isinstance(reason, str) else "malformed", str(exc))
        return self._invalid(request, [error])

    def failed(self, request: Request, exc: Exception) -> Reply:
        """Anything else `feedback()` raised: a server-side problem, logged, never raised."""
        if isinstance(exc, brixo_otel.ConfigurationError):
            # Its message names the setting to fix, never a secret's value.
            _core.log_rate_limited(
                logging.ERROR,
                "web:endpoint:config",
                "brixo_otel.web: the feedback endpoint cannot record feedback: %s",
                exc,
            )
            detail = "the feedback endpoint is not configured to take this request"
        else:
            _core.log_rate_limited(
                logging.ERROR,
                "web:endpoint:error",
                "brixo_otel.web: the feedback endpoint failed",
                exc_info=(type(exc), exc, exc.__traceback__),
            )
            detail = "the feedback could not be recorded"
        return self._answer(request, problem(500, detail))

    # -- helpers ------------------------------------------------------------------------------

    def _invalid(self, request: Request, errors: list[FieldError]) -> Reply:
        detail = "; ".join(
            f"{error.field}: {error.detail}" if error.field else error.detail for error in errors
        )
        return self._answer(request, problem(422, detail, errors=errors))

    def _answer(self, request: Request, reply: Reply) -> Reply:
        return reply.with_headers(self._cors.headers(request.origin))


def _unknown_fields(document: Mapping[str, Any]) -> list[FieldError]:
    # Strict on purpose: a misspelt field ("messageId") would otherwise be dropped silently and
    # the signal refused for a reason that hides the typo.
    accepted = ", ".join(FIELDS)
    return [
        FieldError(name, "not_accepted", f"not a feedback field; accepted: {accepted}")
        for name in document
        if name not in FIELDS
    ]


def _type_errors(document: Mapping[str, Any]) -> list[FieldError]:
    """JSON type checks of every field at once, so one answer lists every mistake; the values
    themselves are then checked by `feedback()` (one rule set, the library's)."""
    errors: list[FieldError] = []
    value = document.get("value")
    if not isinstance(value, str):
        detail = (
            "required: thumbs_up, thumbs_down, csat or nps" if value is None else "must be a string"
        )
        errors.append(FieldError("value", "required" if value is None else "wrong_type", detail))
    for name in _TEXT_FIELDS:
        given = document.get(name)
        if given is not None and not isinstance(given, str):
            errors.append(FieldError(name, "wrong_type", "must be a string or null"))
    score = document.get("score")
    if score is not None and (isinstance(score, bool) or not isinstance(score, int)):
        errors.append(FieldError("score", "wrong_type", "must be an integer or null"))
    reasons = document.get("reasons")
    if reasons is not None and (
        not isinstance(reasons, list) or not all(isinstance(tag, str) for tag in reasons)
    ):
        errors.append(FieldError("reasons", "wrong_type", "must be a list of strings or null"))
    return errors


#: For an `InvalidSignal` without a `field` attribute (raised by code older than it), the field
#: is read off the message, which always starts by naming what it is about.
_FIELD_IN_MESSAGE: Final = re.compile(
    r"\b(link token|message_id|conversation_id|user_message|occurred_at|reasons?|score|value"
    r"|link)\b"
)


def field_of(exc: brixo_otel.InvalidSignal) -> str | None:
    """The field at fault; None when it is the combination (no message or conversation id)."""
    if hasattr(exc, "field"):
        field = exc.field
        return field if isinstance(field, str) and field else None
    text = str(exc)
    if " needs score=" in text:
        return "score"
    found = _FIELD_IN_MESSAGE.search(text)
    if found is None:
        return None
    name = found.group(1)
    return {"link token": "link", "reason": "reasons"}.get(name, name)
