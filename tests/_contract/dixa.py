"""Dixa's conversation ratings and internal notes (beta API), as Dixa's API reference documents
them ("Create conversation rating offer", "... result", "Add internal note").

- `POST /beta/conversations/{conversationId}/ratings/offer`: `userId`, `agentId`, `ratingType`
  (Csat, Nps, ThumbsUpOrDown) required, `offeredAt` optional; answers `{"data": {"id", ...}}`.
- `POST /beta/conversations/{conversationId}/ratings/{ratingId}/submit`: `ratingResult`
  (`{"_type", "value"}`) required, `comment`, `submittedAt`, deprecated `userId` optional.
- `POST /beta/conversations/{conversationId}/notes`: `message` required, `agentId` (uuid) and
  `createdAt` optional; answers `{"data": {"id", "authorId", "createdAt", "csid", "message"}}`.

Auth is the raw key in `Authorization` (no scheme). `conversationId` is an int64.

Assumptions where the spec is silent, mirrored by the exporter's documentation:
- Errors are `{"message": "..."}`, as Dixa's other endpoints document: 400 for an invalid path
  parameter or body ("Invalid value for: body (...)"), 401 for a refused key, 404 "An entity in
  this request could not be found" for an unknown conversation or rating offer.
- Offers and results answer 200, notes 201 (the spec names no code; any 2xx would do).
- The result's `_type` must match the offer's `ratingType`; values are 1-5 (Csat), 0-10 (Nps)
  and 0 or 1 (ThumbsUpOrDown: 1 up, 0 down).
- Submitting a result for an offer twice replaces the first (kept here as a count, so tests can
  prove it never happens).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from tests._contract import DATE_TIME, UUID, ContractServer, Reply

RATING_TYPES = ("Csat", "Nps", "ThumbsUpOrDown")
VALUE_RANGES = {"Csat": (1, 5), "Nps": (0, 10), "ThumbsUpOrDown": (0, 1)}
INT64 = (-(2**63), 2**63 - 1)
#: The id of the API user the key belongs to: the author of the notes it writes.
API_USER_ID = "5e8a300e-787e-47cd-af53-fc1ccc37933d"
NOT_FOUND = "An entity in this request could not be found"

_ROUTES = (
    ("offer", re.compile(r"^/beta/conversations/([^/?#]+)/ratings/offer$")),
    ("submit", re.compile(r"^/beta/conversations/([^/?#]+)/ratings/([^/?#]+)/submit$")),
    ("note", re.compile(r"^/beta/conversations/([^/?#]+)/notes$")),
)


@dataclass
class Offer:
    id: str
    conversation: int
    user_id: str
    agent_id: str
    rating_type: str
    offered_at: str | None
    #: Every result submitted for this offer, in order (a second one replaces the first).
    results: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Note:
    id: str
    conversation: int
    message: str
    agent_id: str | None


class _Invalid(Exception):
    """A request Dixa refuses with 400 and this message."""


def _int64(text: str) -> int:
    if not re.fullmatch(r"-?[0-9]+", text) or not INT64[0] <= int(text) <= INT64[1]:
        raise _Invalid("Invalid value for: path parameter conversationId")
    return int(text)


def _object(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except ValueError:
        raise _Invalid("Invalid value for: body (malformed JSON)") from None
    if not isinstance(document, dict):
        raise _Invalid("Invalid value for: body (expected a JSON object)")
    return document


def _required_string(document: dict[str, Any], name: str, *, uuid_format: bool = False) -> str:
    value = document.get(name)
    if value is None:
        raise _Invalid(f"Invalid value for: body (missing required field {name})")
    return _string(value, name, uuid_format=uuid_format)


def _string(value: Any, name: str, *, uuid_format: bool = False) -> str:
    if not isinstance(value, str) or not value:
        raise _Invalid(f"Invalid value for: body ({name} must be a non-empty string)")
    if uuid_format and not UUID.match(value):
        raise _Invalid(f"Invalid value for: body ({name} must be a UUID, got {value!r})")
    return value


def _optional_date_time(document: dict[str, Any], name: str) -> str | None:
    value = document.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not DATE_TIME.match(value):
        raise _Invalid(f"Invalid date format: {name} {value!r}")
    return value


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class DixaContractServer(ContractServer):
    def __init__(
        self, api_key: str = "dixa-test-key", *, conversations: set[int] | None = None
    ) -> None:
        #: Conversations that exist; None: every int64 does.
        self.conversations = conversations
        #: False: offers are answered but not kept, as if each expired at once (its id unknown
        #: to the submit that follows).
        self.keep_offers = True
        self._offers: dict[str, Offer] = {}
        self._notes: list[Note] = []
        super().__init__(api_key)

    # -- what tests read ------------------------------------------------------------------------

    def offers(self, conversation: int | None = None) -> list[Offer]:
        with self.lock:
            return [o for o in self._offers.values() if conversation in (None, o.conversation)]

    def offer_count(self, conversation: int) -> int:
        return len(self.offers(conversation))

    def results(self, conversation: int | None = None) -> list[dict[str, Any]]:
        """Every submitted result, duplicates included."""
        return [result for offer in self.offers(conversation) for result in offer.results]

    def notes(self, conversation: int | None = None) -> list[Note]:
        with self.lock:
            return [n for n in self._notes if conversation in (None, n.conversation)]

    # -- the contract ---------------------------------------------------------------------------

    def route(self, method: str, path: str) -> str | None:
        if method != "POST":
            return None
        for name, pattern in _ROUTES:
            if pattern.match(path):
                return name
        return None

    def authorized(self, headers: dict[str, str]) -> bool:
        return headers.get("authorization") == self.api_key

    def error(self, status: int, message: str) -> Any:
        if status == 404 and message == "Not Found":
            message = NOT_FOUND
        return {"message": message}

    def handle(self, route: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        pattern = dict(_ROUTES)[route]
        match = pattern.match(path)
        assert match is not None
        try:
            conversation = _int64(match.group(1))
            if self.conversations is not None and conversation not in self.conversations:
                return Reply(404, {"message": NOT_FOUND})
            if route == "offer":
                return self._offer(conversation, _object(body))
            if route == "submit":
                return self._submit(conversation, match.group(2), _object(body))
            return self._note(conversation, _object(body))
        except _Invalid as exc:
            return Reply(400, {"message": str(exc)})

    def _offer(self, conversation: int, document: dict[str, Any]) -> Reply:
        user_id = _required_string(document, "userId")
        agent_id = _required_string(document, "agentId")
        rating_type = document.get("ratingType")
        if rating_type not in RATING_TYPES:
            raise _Invalid(
                f"Invalid value for: body (ratingType must be one of {', '.join(RATING_TYPES)}, "
                f"got {rating_type!r})"
            )
        offered_at = _optional_date_time(document, "offeredAt")
        offer = Offer(str(uuid.uuid4()), conversation, user_id, agent_id, rating_type, offered_at)
        with self.lock:
            if self.keep_offers:
                self._offers[offer.id] = offer
        data = {
            "id": offer.id,
            "userId": user_id,
            "agentId": agent_id,
            "ratingType": rating_type,
        }
        if offered_at is not None:
            data["offeredAt"] = offered_at
        return Reply(200, {"data": data})

    def _submit(self, conversation: int, rating_id: str, document: dict[str, Any]) -> Reply:
        with self.lock:
            offer = self._offers.get(rating_id)
        if offer is None or offer.conversation != conversation:
            return Reply(404, {"message": NOT_FOUND})
        result = document.get("ratingResult")
        if not isinstance(result, dict):
            raise _Invalid("Invalid value for: body (missing required field ratingResult)")
        kind, value = result.get("_type"), result.get("value")
        if kind not in RATING_TYPES:
            raise _Invalid(
                f"Invalid value for: body (ratingResult._type must be one of "
                f"{', '.join(RATING_TYPES)}, got {kind!r})"
            )
        if kind != offer.rating_type:
            raise _Invalid(
                f"Invalid value for: body (ratingResult._type {kind} does not match the offer's "
                f"ratingType {offer.rating_type})"
            )
        low, high = VALUE_RANGES[kind]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _Invalid(
                f"Invalid value for: body (ratingResult.value for {kind} must be an integer "
                f"from {low} to {high}, got {value!r})"
            )
        comment = document.get("comment")
        if comment is not None and not isinstance(comment, str):
            raise _Invalid("Invalid value for: body (comment must be a string)")
        submitted_at = _optional_date_time(document, "submittedAt")
        user_id = document.get("userId")
        if user_id is not None:
            _string(user_id, "userId")
        stored: dict[str, Any] = {
            "ratingId": rating_id,
            "ratingResult": {"_type": kind, "value": value},
        }
        if comment is not None:
            stored["comment"] = comment
        if submitted_at is not None:
            stored["submittedAt"] = submitted_at
        with self.lock:
            offer.results.append(stored)
        return Reply(200, {"data": stored})

    def _note(self, conversation: int, document: dict[str, Any]) -> Reply:
        message = _required_string(document, "message")
        agent_id = document.get("agentId")
        if agent_id is not None:
            agent_id = _string(agent_id, "agentId", uuid_format=True)
        created_at = _optional_date_time(document, "createdAt") or _now()
        note = Note(str(uuid.uuid4()), conversation, message, agent_id)
        with self.lock:
            self._notes.append(note)
        return Reply(
            201,
            {
                "data": {
                    "id": note.id,
                    "authorId": agent_id or API_USER_ID,
                    "createdAt": created_at,
                    "csid": conversation,
                    "message": message,
                }
            },
        )
