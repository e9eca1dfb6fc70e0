"""VirtuousAI: thumbs on a message as one feedback item that follows the user's mind.

The API (docs/destinations/virtuousai.md) stores a *message reaction* as an item: `POST
/api/v1/feedback` creates it, `PATCH /api/v1/feedback/{id}` changes it, `DELETE` removes it. A user
who clicks 👍 and then 👎 on the same answer should leave one item saying 👎, not two items that
contradict each other, and a retraction should remove it. So this exporter remembers, per message,
the item it created (in the exporter's durable state, shared by every process on one outbox) and
the moment of the reaction that item reflects:

* no item yet: create one; the request carries a `clientFeedbackId` derived from the signal id,
  so a create retried after its answer was lost (a crash, a dropped connection) finds the item
  the first attempt made instead of adding a second;
* an item: patch it to the newer reaction; a signal older than the one already applied (retries
  reorder) is skipped as superseded;
* a retraction: delete the item, and keep a tombstone with the retraction's moment, so an older
  reaction retried later cannot bring the item back.

The create's intent is written to the state *before* the request (a write-ahead), so a process
that crashes after VirtuousAI acted but before we heard back leaves the `clientFeedbackId` behind:
the retry and any later reaction to the same message reuse it and land on the same item.

Several processes share one outbox, and so this state: two of them taking the first two
reactions to one message at the same moment would each find no item and each create one. So a
process first takes the message's *mark* in the state with a compare-and-set (only one can move
it from free to theirs), works on the message, and frees it; a process that finds the mark held
by another live one retries later. A mark left by a process that died (on this host), or held
past `MARK_SECONDS`, is taken over. Within a process, threads take a per-message lock first.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import httpx

from brixo_otel._errors import ConfigurationError
from brixo_otel._exporter import DeliveryResult, DeliveryStatus
from brixo_otel._internal import instrumentation_suppressed, raise_internal_errors
from brixo_otel._signal import Signal, format_timestamp
from brixo_otel.exporters._http import (
    JSON_MEDIA_TYPE,
    USER_AGENT,
    HttpSignalExporter,
    encode_json,
    error_detail,
    permanent,
    scrub,
    truncate,
)

logger = logging.getLogger(__name__)

#: The only item kind the spec shows; the API needs it on create and on patch.
KIND: Final = "message_reaction"
#: `sourceSurface` when the app does not say where the reaction was given (the API's default).
DEFAULT_SOURCE_SURFACE: Final = "chat_message"
#: Namespace of `clientFeedbackId = uuid5(namespace, signal id)`. Never change it: a create
#: retried by a newer version of this library must still carry the id the first attempt sent.
CLIENT_FEEDBACK_NAMESPACE: Final = uuid.UUID("6f1d3f5e-7f43-5c4b-9a63-0e2b1c0a7d11")

_COLLECTION: Final = "/api/v1/feedback"
#: What a `base_url` looks like, for the error about one that is not right.
_EXAMPLE_BASE_URL: Final = "https://api.virtuousai.example"
#: The spec offers `authorization`, `X-API-Key` and `vai_token`; an API key goes in the header
#: named for it (see docs/destinations/virtuousai.md for why not the other two).
_API_KEY_HEADER: Final = "X-API-Key"
#: State key prefix, followed by the message's canonical UUID.
_STATE_KEY: Final = "reaction:"
#: Longest piece of a rejected id quoted in a reason: enough to recognise it, never a paste.
_SHOWN_ID_CHARS: Final = 40
#: The moment of an item whose content we could not confirm: older than any real reaction, so the
#: next reaction to its message (even a retry of an old one) patches it.
_UNKNOWN: Final = ""
#: State key prefix of a message's mark (see the module), followed by its canonical UUID.
_MARK_KEY: Final = "mark:"
#: The value of a mark nobody holds.
_FREE: Final = ""
#: Longest a mark is honoured. A delivery holds it for two requests at most, each bounded in
#: total time, so only a hung or dead holder keeps it this long.
MARK_SECONDS: Final = 120.0


class VirtuousAIError(Exception):
    """A read call (`get_feedback`, `list_thread_reactions`) got no usable answer.

    `status` is the HTTP status, or None when no answer arrived (connection refused, timeout);
    `detail` says why, as the API put it. Neither ever holds the API key.
    """

    def __init__(self, status: int | None, detail: str) -> None:
        self.status = status
        self.detail = detail
        if status is None:
            message = f"VirtuousAI could not be reached: {detail}"
        else:
            message = f"VirtuousAI answered HTTP {status}" + (f": {detail}" if detail else "")
        super().__init__(message)


def client_feedback_id(signal_id: str) -> str:
    """The `clientFeedbackId` of the item a signal creates: the same on every attempt and after
    every restart, so VirtuousAI can tell a retried create from a new one."""
    return str(uuid.uuid5(CLIENT_FEEDBACK_NAMESPACE, signal_id))


def _as_uuid(value: object) -> str | None:
    """The canonical (lower-case, hyphenated) form of a UUID, or None if `value` is not one."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _not_a_uuid(ours: str, theirs: str, value: str) -> str:
    """Why an id cannot be sent, quoting only its start: the value may be huge or private."""
    shown = value if len(value) <= _SHOWN_ID_CHARS else value[:_SHOWN_ID_CHARS] + "…"
    size = "" if len(value) <= _SHOWN_ID_CHARS else f" ({len(value)} characters)"
    return (
        f"{ours} {shown!r}{size} is not a UUID, and VirtuousAI requires {theirs} to be one; "
        "use UUIDs for the ids your app gives feedback() for this destination"
    )


def _noted(note: str) -> DeliveryResult:
    """Delivered, with a note for the log: nothing was sent because nothing needed sending."""
    return DeliveryResult(DeliveryStatus.DELIVERED, note)


@dataclass(frozen=True)
class _Entry:
    """What the state remembers about one message: one of three shapes.

    * `item` set: VirtuousAI holds that item, reflecting signal `signal` given at `at`;
    * `pending` set: a create with that `clientFeedbackId` was sent (or is about to be) and its
      answer is not recorded yet; whoever comes next for this message reuses the id;
    * neither: a tombstone; the item was retracted (or never made) at that moment.
    """

    at: str
    signal: str
    item: str | None = None
    pending: str | None = None

    def supersedes(self, signal: Signal) -> bool:
        """Whether what this entry reflects is newer than `signal`, which must then be skipped.

        `at` is a fixed-width UTC RFC 3339 string (millisecond precision, as the outbox keeps
        it), so it compares as text. Only a strictly older signal is skipped: two clicks in the
        same millisecond cannot be ordered (a UUIDv7 is random within its millisecond), and the
        one that arrives later is the better guess.
        """
        return _moment(signal) < self.at

    def reflects(self, signal: Signal) -> bool:
        """Whether this entry records `signal` itself as done (a retry whose mark was lost)."""
        return self.signal == signal.id and self.pending is None

    def dumps(self) -> str:
        fields = {"at": self.at, "signal": self.signal}
        if self.item is not None:
            fields["item"] = self.item
        if self.pending is not None:
            fields["pending"] = self.pending
        return json.dumps(fields, separators=(",", ":"))

    @classmethod
    def loads(cls, text: str) -> _Entry:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        at, signal = data.get("at"), data.get("signal")
        item, pending = data.get("item"), data.get("pending")
        if not isinstance(at, str) or not isinstance(signal, str):
            raise ValueError("at and signal must be strings")
        if item is not None and _as_uuid(item) is None:
            raise ValueError("item is not a UUID")
        if pending is not None and _as_uuid(pending) is None:
            raise ValueError("pending is not a UUID")
        return cls(at=at, signal=signal, item=item, pending=pending)


def _moment(signal: Signal) -> str:
    return format_timestamp(signal.occurred_at)


class _MessageLocks:
    """One lock per message id, held only while someone exports for that message.

    The processor runs several exports at once; two reactions to one message racing through
    "no item yet, create one" would make two items. Locks are dropped when unused, so the map
    stays as small as the number of messages in flight, and rebuilt after a fork (a lock held
    by a parent's thread would stay held forever in the child).
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        if self._pid != os.getpid():
            self._reset()
        guard = self._guard
        with guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with guard:
                lock, users = self._locks[key]
                if users <= 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)


class VirtuousAIExporter(HttpSignalExporter):
    """Delivers thumbs on messages to VirtuousAI as one reaction item per message.

    Accepts `thumbs_up`/`thumbs_down` on a message whose conversation id is known (it becomes the
    required `threadId`), and retractions of a message's rating. The message and conversation
    ids must be UUIDs, as VirtuousAI requires; other ids are dead-lettered with the reason,
    without a request. A client passed in stays the caller's: it is used as is, never closed.
    """

    def __init__(
        self,
        api_key: str,
        base_url: str,
        source_surface: str = DEFAULT_SOURCE_SURFACE,
        *,
        client: httpx.Client | None = None,
        allow_insecure_http: bool = False,
        timeout: httpx.Timeout | None = None,
        name: str = "virtuousai",
    ) -> None:
        super().__init__(
            api_key,
            base_url,
            example=_EXAMPLE_BASE_URL,
            name=name,
            client=client,
            timeout=timeout,
            allow_insecure_http=allow_insecure_http,
        )
        if not isinstance(source_surface, str) or not source_surface.strip():
            raise ConfigurationError(
                f"source_surface must be a non-empty string, got {source_surface!r}"
            )
        self.source_surface = source_surface
        self._headers = {
            _API_KEY_HEADER: self._api_key,
            "Accept": JSON_MEDIA_TYPE,
            "User-Agent": USER_AGENT,
        }
        self._locks = _MessageLocks()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base_url={self.base_url!r}, "
            f"source_surface={self.source_surface!r}, name={self.name!r})"
        )

    def accepts(self, signal: Signal) -> bool:
        """Thumbs on a message with a known conversation, and retractions on a message.

        A retraction needs no `threadId` (it deletes the item recorded for the message), so it is
        taken even when the conversation id is unknown in the retracting process.
        """
        if signal.target != "message" or signal.message_id is None:
            return False
        if signal.is_retraction:
            return True
        return signal.is_thumbs and signal.conversation_id is not None

    # -- request bodies -------------------------------------------------------------------------

    def body_for(self, signal: Signal, feedback_id: str) -> dict[str, Any]:
        """The create request's JSON body; the caller has checked both ids are UUIDs."""
        assert signal.message_id is not None and signal.conversation_id is not None
        body: dict[str, Any] = {
            "clientFeedbackId": feedback_id,
            "kind": KIND,
            "messageId": str(uuid.UUID(signal.message_id)),
            "reaction": signal.value,
            "threadId": str(uuid.UUID(signal.conversation_id)),
            "sourceSurface": self.source_surface,
        }
        if signal.user_message is not None:
            body["comment"] = signal.user_message
        if signal.reasons:
            body["reasons"] = list(signal.reasons)
        return body

    @staticmethod
    def patch_body_for(signal: Signal) -> dict[str, Any]:
        """The patch body: the item now says what this reaction says, and nothing of the last.

        `comment` and `reasons` are sent even when empty, because the previous reaction's comment
        explained that reaction, not this one.
        """
        return {
            "kind": KIND,
            "reaction": signal.value,
            "comment": signal.user_message,
            "reasons": list(signal.reasons),
        }

    # -- delivery -------------------------------------------------------------------------------

    def _deliver(self, signal: Signal) -> DeliveryResult:
        try:
            result = self._route(signal)
        except Exception as exc:
            if raise_internal_errors():
                raise
            self._warn(
                "internal",
                "brixo_otel: %s exporter failed with %s; the signal will be retried",
                type(exc).__name__,
            )
            return DeliveryResult(DeliveryStatus.RETRY, f"exporter error {type(exc).__name__}")
        if result.status is DeliveryStatus.DELIVERED and result.reason:
            logger.debug("signal %s to %s: %s", signal.id, self.name, result.reason)
        return result

    def _route(self, signal: Signal) -> DeliveryResult:
        message_id = signal.message_id
        if signal.target != "message" or message_id is None:
            return permanent("VirtuousAI takes reactions to a message; this signal rates none")
        message = _as_uuid(message_id)
        if signal.is_retraction:
            if message is None:
                return _noted("retraction: the message id is not a UUID, so no item was ever made")
            with self._locks.hold(message):
                return self._marked(message, lambda: self._retract(signal, _STATE_KEY + message))
        if not signal.is_thumbs:
            return permanent(f"VirtuousAI takes thumbs_up and thumbs_down, not {signal.value}")
        if message is None:
            return permanent(_not_a_uuid("message_id", "messageId", message_id))
        if signal.conversation_id is None:
            return permanent(
                "VirtuousAI requires threadId: pass conversation_id to feedback(), or give the "
                "message's span a conversation id"
            )
        if _as_uuid(signal.conversation_id) is None:
            return permanent(_not_a_uuid("conversation_id", "threadId", signal.conversation_id))
        with self._locks.hold(message):
            return self._marked(message, lambda: self._react(signal, _STATE_KEY + message))

    # -- the message's mark, across processes ---------------------------------------------------

    def _marked(self, message: str, work: Callable[[], DeliveryResult]) -> DeliveryResult:
        """Run `work` holding the message's mark, or retry later if another process holds it."""
        mark = self._take_mark(message)
        if mark is None:
            return DeliveryResult(
                DeliveryStatus.RETRY,
                "another process is delivering a reaction to this message; retrying after it",
            )
        try:
            return work()
        finally:
            if mark:
                self.state.compare_and_set(_MARK_KEY + message, mark, _FREE)

    def _take_mark(self, message: str) -> str | None:
        """Our mark on `message` once taken; None if another live process holds it; "" for a
        state without compare-and-set (then only this process's lock serialises)."""
        if getattr(self.state, "compare_and_set", None) is None:
            return ""
        key = _MARK_KEY + message
        mine = f"{_HOST}:{os.getpid()}:{time.time() + MARK_SECONDS:.3f}:{uuid.uuid4().hex[:12]}"
        for _ in range(3):  # a holder may free or change it between our read and our write
            current = self.state.get(key)
            if current and not _mark_abandoned(current):
                return None
            if self.state.compare_and_set(key, current, mine):
                return mine
        return None

    def _react(self, signal: Signal, key: str) -> DeliveryResult:
        entry = self._load(key)
        if entry is not None:
            if entry.reflects(signal):
                return _noted("already applied")
            if entry.supersedes(signal):
                return _superseded(entry)
            if entry.item is not None:
                result = self._send("PATCH", entry.item, self.patch_body_for(signal))
                if result.status is DeliveryStatus.DELIVERED:
                    self._save(key, _Entry(_moment(signal), signal.id, item=entry.item))
                    return result
                if result.status is not DeliveryStatus.NOT_FOUND:
                    return result
                # The item was deleted on VirtuousAI's side: the user's reaction gets a new one.
                return self._create(signal, key, entry, client_feedback_id(signal.id))
        pending = entry.pending if entry is not None else None
        return self._create(signal, key, entry, pending or client_feedback_id(signal.id))

    def _create(
        self, signal: Signal, key: str, previous: _Entry | None, feedback_id: str
    ) -> DeliveryResult:
        # The write-ahead (see the module): a crash from here on leaves the id for the retry.
        self._save(key, _Entry(_moment(signal), signal.id, pending=feedback_id))
        body = self.body_for(signal, feedback_id)
        answered: list[object] = []

        def keep(raw: bytes) -> DeliveryResult:
            try:
                answered.append(json.loads(raw))
            except ValueError:
                answered.append(None)
            return DeliveryResult.delivered()

        result = self._send("POST", None, body, on_success=keep)
        if result.status is DeliveryStatus.PERMANENT:
            # Refused outright: no item was made for this attempt, so undo the write-ahead.
            if previous is None:
                self.state.delete(key)
            else:
                self._save(key, previous)
            return result
        if result.status is not DeliveryStatus.DELIVERED:
            return result  # the write-ahead stays: the retry reuses its clientFeedbackId
        item = answered[0] if answered else None
        item_id = _as_uuid(item.get("id")) if isinstance(item, dict) else None
        if not isinstance(item, dict) or item_id is None:
            return DeliveryResult(
                DeliveryStatus.RETRY,
                "VirtuousAI answered the create without an item id; retrying, which the "
                "clientFeedbackId makes safe",
            )
        if not _reflects(item, body):
            # The clientFeedbackId was an earlier reaction's (its create's answer was lost), and
            # VirtuousAI returned that item as it was: bring it up to this reaction.
            patched = self._send("PATCH", item_id, self.patch_body_for(signal))
            if patched.status is not DeliveryStatus.DELIVERED:
                # Known item, unknown content: whatever comes next patches it, this retry too.
                self._save(key, _Entry(_UNKNOWN, "", item=item_id))
                return patched
        self._save(key, _Entry(_moment(signal), signal.id, item=item_id))
        return DeliveryResult.delivered()

    def _retract(self, signal: Signal, key: str) -> DeliveryResult:
        entry = self._load(key)
        tombstone = _Entry(_moment(signal), signal.id)
        if entry is None:
            # Remember the retraction anyway: an older reaction still in a retry loop must not
            # create the item afterwards.
            self._save(key, tombstone)
            return _noted("retraction: no item is recorded for this message; nothing to delete")
        if entry.reflects(signal):
            return _noted("retraction: already applied")
        if entry.supersedes(signal):
            return _superseded(entry)
        if entry.pending is not None:
            return DeliveryResult(
                DeliveryStatus.RETRY,
                "retraction waits: the create of this message's reaction is not confirmed yet",
            )
        if entry.item is None:
            self._save(key, tombstone)
            return _noted("retraction: the item was already deleted")
        result = self._send("DELETE", entry.item, None)
        if result.status in (DeliveryStatus.DELIVERED, DeliveryStatus.NOT_FOUND):
            self._save(key, tombstone)  # a 404 means it is gone already, which is the goal
            return DeliveryResult.delivered()
        return result

    # -- state ----------------------------------------------------------------------------------

    def _load(self, key: str) -> _Entry | None:
        raw = self.state.get(key)
        if raw is None:
            return None
        try:
            return _Entry.loads(raw)
        except (ValueError, TypeError):
            self._warn(
                "state", "brixo_otel: unreadable %s state for a message; treating it as unknown"
            )
            return None

    def _save(self, key: str, entry: _Entry) -> None:
        self.state.set(key, entry.dumps())

    # -- HTTP -----------------------------------------------------------------------------------

    def _url(self, *segments: str) -> httpx.URL:
        # Every segment is a canonical UUID or a fixed word: nothing to escape.
        return self._api.url("/".join((_COLLECTION, *segments)))

    def _request(self, method: str, url: httpx.URL, body: dict[str, Any] | None) -> httpx.Request:
        headers = dict(self._headers)
        content = None
        if body is not None:
            headers["Content-Type"] = JSON_MEDIA_TYPE
            content = encode_json(body)
        return self._api.request(method, url, headers=headers, content=content)

    def _send(
        self,
        method: str,
        item_id: str | None,
        body: dict[str, Any] | None,
        *,
        on_success: Callable[[bytes], DeliveryResult] | None = None,
    ) -> DeliveryResult:
        url = self._url(item_id) if item_id is not None else self._url()
        return self._api.call(
            lambda: self._request(method, url, body), destination=self.name, on_success=on_success
        )

    # -- reads, for apps ------------------------------------------------------------------------

    def get_feedback(self, item_id: str) -> dict[str, Any]:
        """The feedback item `item_id` as VirtuousAI holds it (`GET /api/v1/feedback/{id}`).

        Runs in the caller's thread and raises: `ValueError` for an id that is not a UUID (no
        request is made), `VirtuousAIError` when the API answers with an error or not at all.
        """
        item = _as_uuid(item_id)
        if item is None:
            raise ValueError(_not_a_uuid("item_id", "feedback_item_id", str(item_id)))
        document = self._read(self._url(item))
        if not isinstance(document, dict):
            raise VirtuousAIError(200, "expected a feedback item (a JSON object)")
        return document

    def list_thread_reactions(self, thread_id: str) -> list[dict[str, Any]]:
        """Every reaction item in a thread (`GET /api/v1/feedback/threads/{id}/reactions`).

        `thread_id` is the conversation id. Raises like `get_feedback`.
        """
        thread = _as_uuid(thread_id)
        if thread is None:
            raise ValueError(_not_a_uuid("thread_id", "thread_id", str(thread_id)))
        document = self._read(self._url("threads", thread, "reactions"))
        if not isinstance(document, list) or not all(isinstance(i, dict) for i in document):
            raise VirtuousAIError(200, "expected a list of feedback items")
        return document

    def _read(self, url: httpx.URL) -> object:
        request = self._request("GET", url, None)
        try:
            with instrumentation_suppressed():
                response = self._api.client.send(request)
        except httpx.HTTPError as exc:
            detail = f"{type(exc).__name__}: {truncate(str(exc))}"
            raise VirtuousAIError(None, scrub(detail, self._api_key)) from None
        status = response.status_code
        if not 200 <= status < 300:
            raise VirtuousAIError(status, scrub(error_detail(response.content), self._api_key))
        try:
            return response.json()
        except ValueError:
            raise VirtuousAIError(status, "the answer is not JSON") from None


_HOST: Final = socket.gethostname()


def _mark_abandoned(mark: str) -> bool:
    """Whether a mark's holder can no longer be working on the message: its time is up, or it
    was a process of this host that no longer exists (or this very process, whose own threads
    take turns on a lock: a mark of ours found here was left behind by an error)."""
    parts = mark.rsplit(":", 3)  # host:pid:until:nonce
    try:
        host, pid, until = parts[0], int(parts[1]), float(parts[2])
    except (IndexError, ValueError):
        return True  # not a mark we wrote: unreadable, so nobody's
    if until < time.time():
        return True
    if host != _HOST:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # exists, someone else's to signal
    return False


def _superseded(entry: _Entry) -> DeliveryResult:
    what = "retraction" if entry.item is None and entry.pending is None else "reaction"
    return _noted(f"superseded: a newer {what} (at {entry.at}) is already applied")


def _reflects(item: dict[str, Any], body: dict[str, Any]) -> bool:
    """Whether a returned item already says what `body` asked for."""
    return (
        item.get("reaction") == body["reaction"]
        and (item.get("comment") or None) == (body.get("comment") or None)
        and list(item.get("reasons") or []) == list(body.get("reasons") or [])
    )
