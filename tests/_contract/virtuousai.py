"""The VirtuousAI feedback API, written from specs/virtuousai-feedback-api.txt.

It answers as a FastAPI service does, as far as a client can tell: every error is
`{"detail": ...}`, validation errors are 422 with `{"detail": [{"loc": [...], "msg": ...,
"type": ...}]}` (pydantic 1 wording), and the success shapes carry every field the spec's examples
show (`id`, `tenantId`, `userId`, `createdAt`, `updatedAt`, ...). Where the spec is silent the
choice is the usual FastAPI one and is marked "assumed"; docs/destinations/virtuousai.md lists
them.

Besides the shared knobs (`fail_next`, `hang_next`, ...), `drop_after_create` makes the next
creates store the item and then hang up without an answer: the crash window between "the server
acted" and "the client heard".
"""

from __future__ import annotations

import http
import json
import uuid
from datetime import datetime, timezone
from typing import Any, Final

from tests._contract import ContractServer, Reply

PREFIX: Final = "/api/v1/feedback"
KINDS: Final = ("message_reaction",)  # assumed: the only kind the spec shows
REACTIONS: Final = ("thumbs_up", "thumbs_down")
#: Which methods each endpoint takes; any other method is answered 405.
_METHODS: Final = {"create": ("POST",), "item": ("GET", "PATCH", "DELETE"), "thread": ("GET",)}

Errors = list[dict[str, Any]]


class _HangUp(Exception):
    """Raised by a handler that has acted and must not answer: the server closes the
    connection (socketserver's handle_error path), so the client sees it drop."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _error(loc: list[Any], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": kind}


def _canonical_uuid(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _check_uuid(body: dict[str, Any], name: str, errors: Errors, *, required: bool) -> None:
    if name not in body or (body[name] is None and not required):
        if required:
            errors.append(_error(["body", name], "field required", "value_error.missing"))
        return
    if _canonical_uuid(body[name]) is None:
        errors.append(_error(["body", name], "value is not a valid uuid", "type_error.uuid"))


def _check_kind(body: dict[str, Any], errors: Errors) -> None:
    if "kind" not in body:
        errors.append(_error(["body", "kind"], "field required", "value_error.missing"))
    elif body["kind"] not in KINDS:
        permitted = ", ".join(repr(kind) for kind in KINDS)
        message = f"unexpected value; permitted: {permitted}"
        errors.append(_error(["body", "kind"], message, "value_error.const"))


def _check_reaction(body: dict[str, Any], errors: Errors, *, required: bool) -> None:
    if "reaction" not in body or (body["reaction"] is None and not required):
        if required:
            errors.append(_error(["body", "reaction"], "field required", "value_error.missing"))
        return
    if body["reaction"] not in REACTIONS:
        message = "value is not a valid enumeration member; permitted: 'thumbs_up', 'thumbs_down'"
        errors.append(_error(["body", "reaction"], message, "type_error.enum"))


def _check_text(body: dict[str, Any], name: str, errors: Errors) -> None:
    if body.get(name) is not None and not isinstance(body[name], str):
        errors.append(_error(["body", name], "str type expected", "type_error.str"))


def _check_reasons(body: dict[str, Any], errors: Errors) -> None:
    reasons = body.get("reasons")
    if reasons is None:
        return
    if not isinstance(reasons, list):
        errors.append(_error(["body", "reasons"], "value is not a valid list", "type_error.list"))
        return
    for index, reason in enumerate(reasons):
        if not isinstance(reason, str):
            errors.append(_error(["body", "reasons", index], "str type expected", "type_error.str"))


def _json_object(body: bytes) -> tuple[dict[str, Any] | None, Reply | None]:
    try:
        document = json.loads(body)
    except ValueError as exc:
        message = f"JSON decode error: {exc}"
        return None, Reply(
            422, {"detail": [_error(["body", 0], message, "value_error.jsondecode")]}
        )
    if not isinstance(document, dict):
        message = "value is not a valid dict"
        return None, Reply(422, {"detail": [_error(["body"], message, "type_error.dict")]})
    return document, None


def _invalid_path(name: str) -> Reply:
    return Reply(
        422, {"detail": [_error(["path", name], "value is not a valid uuid", "type_error.uuid")]}
    )


def _missing() -> Reply:
    return Reply(404, {"detail": "Feedback item not found"})


class VirtuousAIContractServer(ContractServer):
    """The VirtuousAI feedback API on 127.0.0.1; one tenant, one user, items in memory."""

    def __init__(self, api_key: str = "test-key") -> None:
        self.tenant_id = str(uuid.uuid4())
        self.user_id = str(uuid.uuid4())
        self._items: dict[str, dict[str, Any]] = {}
        self._by_client_id: dict[str, str] = {}
        self._drops = 0
        super().__init__(api_key)

    # -- knobs and views ------------------------------------------------------------------------

    def drop_after_create(self, count: int = 1) -> None:
        """The next `count` valid creates store (or find) their item, then hang up unanswered."""
        with self.lock:
            self._drops = count

    def items(self) -> list[dict[str, Any]]:
        """Every stored item, oldest first."""
        with self.lock:
            return [dict(item) for item in self._items.values()]

    def remove_item(self, item_id: str) -> None:
        """Delete an item behind the client's back, as another client of the API could."""
        with self.lock:
            item = self._items.pop(item_id)
            self._by_client_id.pop(item["clientFeedbackId"], None)

    # -- the contract ---------------------------------------------------------------------------

    def route(self, method: str, path: str) -> str | None:
        path = path.split("?", 1)[0]
        if path == PREFIX:
            endpoint = "create"
        elif path.startswith(PREFIX + "/"):
            rest = path[len(PREFIX) + 1 :].split("/")
            if len(rest) == 1:
                endpoint = "item"
            elif len(rest) == 3 and rest[0] == "threads" and rest[2] == "reactions":
                endpoint = "thread"
            else:
                return None
        else:
            return None
        return f"{method} {endpoint}" if method in _METHODS[endpoint] else "not_allowed"

    def authorized(self, headers: dict[str, str]) -> bool:
        """Any of the three headers the spec offers; `authorization` as a Bearer token."""
        scheme, _, token = headers.get("authorization", "").partition(" ")
        offered = (
            headers.get("x-api-key"),
            headers.get("vai_token"),
            token if scheme.lower() == "bearer" else None,
        )
        return self.api_key in offered

    def error(self, status: int, message: str) -> Any:
        return {"detail": message}

    def handle(self, route: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        if route == "not_allowed":
            return Reply(405, {"detail": http.HTTPStatus.METHOD_NOT_ALLOWED.phrase})
        segments = path.split("?", 1)[0][len(PREFIX) + 1 :].split("/")
        if route == "POST create":
            return self._create(body)
        if route == "GET thread":
            thread = _canonical_uuid(segments[1])
            if thread is None:
                return _invalid_path("thread_id")
            with self.lock:
                found = [dict(i) for i in self._items.values() if i["threadId"] == thread]
            return Reply(200, found)
        item_id = _canonical_uuid(segments[0])
        if item_id is None:
            return _invalid_path("feedback_item_id")
        if route == "PATCH item":
            return self._patch(item_id, body)
        with self.lock:
            if route == "DELETE item":
                item = self._items.pop(item_id, None)
                if item is None:
                    return _missing()
                # assumed: a deleted item frees its clientFeedbackId
                self._by_client_id.pop(item["clientFeedbackId"], None)
                return Reply(204)
            item = self._items.get(item_id)
            return Reply(200, dict(item)) if item is not None else _missing()

    def _create(self, raw: bytes) -> Reply:
        body, refused = _json_object(raw)
        if body is None:
            assert refused is not None
            return refused
        errors: Errors = []
        _check_uuid(body, "clientFeedbackId", errors, required=True)
        _check_text(body, "comment", errors)
        _check_kind(body, errors)
        _check_uuid(body, "messageId", errors, required=True)
        _check_reaction(body, errors, required=True)
        _check_reasons(body, errors)
        _check_text(body, "sourceSurface", errors)
        _check_uuid(body, "threadId", errors, required=True)
        _check_uuid(body, "turnId", errors, required=False)  # assumed: a UUID, as the example
        if errors:
            return Reply(422, {"detail": errors})
        client_id = str(uuid.UUID(body["clientFeedbackId"]))
        with self.lock:
            existing = self._by_client_id.get(client_id)
            if existing is not None:
                reply = Reply(200, dict(self._items[existing]))  # assumed: 200 for a repeat
            else:
                now = _now()
                item = {
                    "clientFeedbackId": client_id,
                    "comment": body.get("comment"),
                    "createdAt": now,
                    "id": str(uuid.uuid4()),
                    "kind": body["kind"],
                    "messageId": str(uuid.UUID(body["messageId"])),
                    "reaction": body["reaction"],
                    "reasons": body.get("reasons"),
                    "sourceSurface": body.get("sourceSurface") or "chat_message",
                    "tenantId": self.tenant_id,
                    "threadId": str(uuid.UUID(body["threadId"])),
                    "turnId": _canonical_uuid(body.get("turnId")),
                    "updatedAt": now,
                    "userId": self.user_id,
                }
                self._items[item["id"]] = item
                self._by_client_id[client_id] = item["id"]
                reply = Reply(201, dict(item))  # assumed: 201 Created
            if self._drops > 0:
                self._drops -= 1
                raise _HangUp
        return reply

    def _patch(self, item_id: str, raw: bytes) -> Reply:
        body, refused = _json_object(raw)
        if body is None:
            assert refused is not None
            return refused
        errors: Errors = []
        _check_text(body, "comment", errors)
        _check_kind(body, errors)
        _check_reaction(body, errors, required=False)
        _check_reasons(body, errors)
        if errors:
            return Reply(422, {"detail": errors})
        with self.lock:
            item = self._items.get(item_id)
            if item is None:
                return _missing()
            # assumed: fields present are set (null clears), absent ones kept; a null reaction
            # keeps the reaction, since an item always has one
            if body.get("reaction") is not None:
                item["reaction"] = body["reaction"]
            for name in ("comment", "reasons"):
                if name in body:
                    item[name] = body[name]
            item["updatedAt"] = _now()
            return Reply(200, dict(item))
