"""Mixpeek's session feedback endpoint, as Mixpeek's API reference ("Submit Feedback") has it.

`POST /v1/agents/sessions/{session_id}/feedback` with `Authorization: Bearer <key>` and a
required `X-Namespace` header; body `message_id` (required string), `rating` (required,
'positive' or 'negative'), `feedback_text` (optional string or null). Success: 200 with
`session_id`, `message_id`, `rating`, `stored`, `recorded_at`.

Mixpeek is a FastAPI service, so validation errors are answered as FastAPI does: 422 with
`{"detail": [{"loc": [...], "msg": ..., "type": ...}]}`, and other errors as `{"detail": "..."}`.
The spec shows neither; both are the framework's defaults.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote

from tests._contract import ContractServer, Reply

RATINGS = ("positive", "negative")
_PATH = re.compile(r"^/v1/agents/sessions/([^/?#]+)/feedback$")


@dataclass(frozen=True)
class StoredFeedback:
    session_id: str
    message_id: str
    rating: str
    feedback_text: str | None
    namespace: str


def _missing(where: str, field: str) -> dict[str, Any]:
    return {"loc": [where, field], "msg": "Field required", "type": "missing", "input": None}


class MixpeekContractServer(ContractServer):
    def __init__(self, api_key: str = "sk_test_mixpeek") -> None:
        self._feedback: list[StoredFeedback] = []
        super().__init__(api_key)

    def route(self, method: str, path: str) -> str | None:
        return "feedback" if method == "POST" and _PATH.match(path) else None

    def authorized(self, headers: dict[str, str]) -> bool:
        return headers.get("authorization") == f"Bearer {self.api_key}"

    def error(self, status: int, message: str) -> Any:
        return {"detail": message}

    def feedback(self) -> list[StoredFeedback]:
        with self.lock:
            return list(self._feedback)

    def handle(self, route: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        match = _PATH.match(path)
        assert match is not None
        session_id = unquote(match.group(1))
        errors: list[dict[str, Any]] = []
        namespace = headers.get("x-namespace")
        if not namespace:
            errors.append(_missing("header", "x-namespace"))
        try:
            document = json.loads(body)
        except ValueError as exc:
            errors.append(
                {"loc": ["body", 0], "msg": f"JSON decode error: {exc}", "type": "json_invalid"}
            )
            return Reply(422, {"detail": errors})
        if not isinstance(document, dict):
            errors.append(
                {
                    "loc": ["body"],
                    "msg": "Input should be a valid dictionary or object",
                    "type": "model_attributes_type",
                }
            )
            return Reply(422, {"detail": errors})
        message_id = document.get("message_id")
        if "message_id" not in document:
            errors.append(_missing("body", "message_id"))
        elif not isinstance(message_id, str):
            errors.append(
                {
                    "loc": ["body", "message_id"],
                    "msg": "Input should be a valid string",
                    "type": "string_type",
                }
            )
        rating = document.get("rating")
        if "rating" not in document:
            errors.append(_missing("body", "rating"))
        elif rating not in RATINGS:
            errors.append(
                {
                    "loc": ["body", "rating"],
                    "msg": "Input should be 'positive' or 'negative'",
                    "type": "literal_error",
                    "input": rating,
                }
            )
        text = document.get("feedback_text")
        if text is not None and not isinstance(text, str):
            errors.append(
                {
                    "loc": ["body", "feedback_text"],
                    "msg": "Input should be a valid string",
                    "type": "string_type",
                }
            )
        if errors:
            return Reply(422, {"detail": errors})
        assert isinstance(message_id, str) and isinstance(rating, str) and namespace
        with self.lock:
            self._feedback.append(StoredFeedback(session_id, message_id, rating, text, namespace))
        recorded = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
        return Reply(
            200,
            {
                "session_id": session_id,
                "message_id": message_id,
                "rating": rating,
                "stored": True,
                "recorded_at": recorded,
            },
        )
