"""Langfuse's scores API and OTLP traces endpoint, from specs/langfuse-scores.md.

- `POST /api/public/scores`: `name` and `value` required; `dataType` BOOLEAN (value 0 or 1),
  NUMERIC (a number) or CATEGORICAL (a string), inferred from the value when absent; a target:
  `traceId` (with an optional `observationId`) or `sessionId`; `id`, `comment`, `metadata`,
  `environment` optional. `id` is the upsert key: the same id again replaces the score. Answers
  `200 {"id": ...}`. The trace need not exist yet.
- `DELETE /api/public/scores/{scoreId}`: 200, or 404 when unknown.
- `POST /api/public/otel/v1/traces`: OTLP/HTTP, protobuf or JSON, gzip allowed. Trace id = the
  OTel trace id as 32 lowercase hex, observation id = the span id as 16; parent span →
  `parentObservationId`; session from `langfuse.session.id`, `session.id` or
  `gen_ai.conversation.id`; observation type from `openinference.span.kind` first (`EVALUATOR`,
  `LLM` → GENERATION), then any model attribute → GENERATION, else SPAN.

Auth is `Authorization: Basic base64(public_key:secret_key)` on every endpoint (401 otherwise).

Assumptions where the spec is silent:
- Errors are `{"message": ...}`, validation errors `400 {"message": "Invalid request data",
  "error": [{"path": [...], "message": ...}]}`; an OTLP body that cannot be read is 400 too.
- A DELETE answers `{"message": "Score deleted"}`; an OTLP export answers `{}`.
"""

from __future__ import annotations

import base64
import http
import json
import math
import re
import uuid
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote

from brixo_otel.testing._otlp import (
    CONTENT_ENCODINGS,
    OtlpDecodeError,
    OtlpTooLargeError,
    decode_json,
    decode_protobuf,
    inflate,
)
from tests._contract import ContractServer, Reply

SCORES: Final = "/api/public/scores"
OTLP_TRACES: Final = "/api/public/otel/v1/traces"
DATA_TYPES: Final = ("BOOLEAN", "NUMERIC", "CATEGORICAL")
#: Largest OTLP body accepted once decompressed.
MAX_OTLP_BYTES: Final = 8 * 1024 * 1024
_SCORE_ITEM: Final = re.compile(r"^/api/public/scores/([^/?#]+)$")
_SESSION_KEYS: Final = ("langfuse.session.id", "session.id", "gen_ai.conversation.id")
_MODEL_KEYS: Final = ("gen_ai.request.model", "gen_ai.response.model", "llm.model_name", "model")
_KINDS: Final = {"EVALUATOR": "EVALUATOR", "LLM": "GENERATION"}
_OPTIONAL_STRINGS: Final = ("id", "traceId", "observationId", "sessionId", "comment", "environment")

Errors = list[dict[str, Any]]


@dataclass(frozen=True)
class Observation:
    """A span as Langfuse's OTLP ingestion stores it."""

    id: str
    trace_id: str
    parent_observation_id: str | None
    name: str
    type: str
    session_id: str | None
    attributes: dict[str, Any]
    resource_attributes: dict[str, Any]


def observation_type(attributes: dict[str, Any]) -> str:
    kind = attributes.get("openinference.span.kind")
    if isinstance(kind, str) and kind.upper() in _KINDS:
        return _KINDS[kind.upper()]
    if any(key in attributes for key in _MODEL_KEYS):
        return "GENERATION"
    return "SPAN"


def _invalid(errors: Errors) -> Reply:
    return Reply(400, {"message": "Invalid request data", "error": errors})


def _problem(path: str, message: str) -> dict[str, Any]:
    return {"path": [path], "message": message}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_value(score: dict[str, Any], errors: Errors) -> None:
    value, data_type = score.get("value"), score.get("dataType")
    if "value" not in score:
        errors.append(_problem("value", "Required"))
        return
    if data_type is None:
        data_type = "CATEGORICAL" if isinstance(value, str) else "NUMERIC"
    if data_type not in DATA_TYPES:
        errors.append(_problem("dataType", f"Invalid enum value; expected {', '.join(DATA_TYPES)}"))
    elif data_type == "BOOLEAN" and (not _is_number(value) or value not in (0, 1)):
        errors.append(_problem("value", "Boolean score value must be 0 or 1"))
    elif data_type == "NUMERIC" and not _is_number(value):
        errors.append(_problem("value", "Numeric score value must be a number"))
    elif data_type == "CATEGORICAL" and not isinstance(value, str):
        errors.append(_problem("value", "Categorical score value must be a string"))


def validate_score(score: dict[str, Any]) -> Errors:
    """What is wrong with a score body, as the API would say it; empty when it is valid."""
    errors: Errors = []
    if not isinstance(score.get("name"), str) or not score["name"]:
        errors.append(_problem("name", "Required"))
    _check_value(score, errors)
    for name in _OPTIONAL_STRINGS:
        if score.get(name) is not None and not isinstance(score[name], str):
            errors.append(_problem(name, "Expected string"))
    if not score.get("traceId") and not score.get("sessionId"):
        errors.append(_problem("traceId", "A score needs a traceId or a sessionId"))
    if score.get("observationId") and not score.get("traceId"):
        errors.append(_problem("observationId", "An observation score needs its traceId"))
    return errors


class LangfuseContractServer(ContractServer):
    """Langfuse's public API on 127.0.0.1, for one project; scores and observations in memory."""

    def __init__(self, public_key: str = "pk-lf-test", secret_key: str = "sk-lf-test") -> None:
        self.public_key = public_key
        self.secret_key = secret_key
        self._scores: dict[str, dict[str, Any]] = {}
        self._observations: dict[str, Observation] = {}
        super().__init__(secret_key)

    # -- views ----------------------------------------------------------------------------------

    def scores(self) -> list[dict[str, Any]]:
        """Every stored score, oldest first."""
        with self.lock:
            return [dict(score) for score in self._scores.values()]

    def observations(self) -> list[Observation]:
        with self.lock:
            return list(self._observations.values())

    def observation(self, observation_id: str) -> Observation | None:
        with self.lock:
            return self._observations.get(observation_id)

    # -- the contract ---------------------------------------------------------------------------

    def route(self, method: str, path: str) -> str | None:
        path = path.split("?", 1)[0]
        if path == SCORES:
            return "POST scores" if method == "POST" else "not_allowed"
        if _SCORE_ITEM.match(path):
            return "DELETE score" if method == "DELETE" else "not_allowed"
        if path == OTLP_TRACES:
            return "POST traces" if method == "POST" else "not_allowed"
        return None

    def authorized(self, headers: dict[str, str]) -> bool:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(token, validate=True).decode("utf-8")
        except ValueError:
            return False
        return decoded == f"{self.public_key}:{self.secret_key}"

    def error(self, status: int, message: str) -> Any:
        return {"message": message}

    def handle(self, route: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        if route == "not_allowed":
            return Reply(405, {"message": http.HTTPStatus.METHOD_NOT_ALLOWED.phrase})
        if route == "POST scores":
            return self._create(body)
        if route == "DELETE score":
            match = _SCORE_ITEM.match(path.split("?", 1)[0])
            assert match is not None
            return self._delete(match.group(1))
        return self._traces(headers, body)

    def _create(self, body: bytes) -> Reply:
        try:
            score = json.loads(body)
        except ValueError as exc:
            return _invalid([_problem("body", f"Invalid JSON: {exc}")])
        if not isinstance(score, dict):
            return _invalid([_problem("body", "Expected object")])
        errors = validate_score(score)
        if errors:
            return _invalid(errors)
        score_id = score.get("id") or str(uuid.uuid4())
        stored = {**score, "id": score_id}
        with self.lock:
            self._scores.pop(score_id, None)  # an upsert replaces; the replacement is newest
            self._scores[score_id] = stored
        return Reply(200, {"id": score_id})

    def _delete(self, score_id: str) -> Reply:
        with self.lock:
            removed = self._scores.pop(unquote(score_id), None)
        if removed is None:
            return Reply(404, {"message": "Score not found"})
        return Reply(200, {"message": "Score deleted"})

    def _traces(self, headers: dict[str, str], body: bytes) -> Reply:
        encoding = headers.get("content-encoding", "").strip().lower()
        media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        try:
            if encoding:
                if encoding not in CONTENT_ENCODINGS:
                    return Reply(415, {"message": f"Unsupported Content-Encoding {encoding}"})
                body = inflate(body, encoding, MAX_OTLP_BYTES)
            if media == "application/x-protobuf":
                spans = decode_protobuf(body)
            elif media == "application/json":
                spans = decode_json(body)
            else:
                return Reply(415, {"message": f"Unsupported Content-Type {media or '(none)'}"})
        except OtlpTooLargeError as exc:
            return Reply(413, {"message": str(exc)})
        except OtlpDecodeError as exc:
            return Reply(400, {"message": str(exc)})
        ingested = []
        for span in spans:
            session = next(
                (str(span.attributes[key]) for key in _SESSION_KEYS if key in span.attributes),
                None,
            )
            ingested.append(
                Observation(
                    id=span.span_id,
                    trace_id=span.trace_id,
                    parent_observation_id=span.parent_span_id,
                    name=span.name,
                    type=observation_type(span.attributes),
                    session_id=session,
                    attributes=dict(span.attributes),
                    resource_attributes=dict(span.resource_attributes),
                )
            )
        with self.lock:
            self._observations.update((observation.id, observation) for observation in ingested)
        return Reply(200, {})
