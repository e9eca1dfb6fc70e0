"""Arize Phoenix: a rating as a span annotation on the rated span, where Phoenix shows ratings.

Phoenix (specs/phoenix-annotations.md) keeps human feedback as *annotations*: `POST
/v1/span_annotations` puts one on a span, `POST /v1/session_annotations` on a session (the
conversation). Its upsert key is (name, span, `identifier`), so every rating of one message
carries the same identifier (`brixo:<annotation name>:<message id>`): a changed mind updates the
annotation instead of adding a second, and a retried request lands on the same row. A retraction
deletes by that identifier, which Phoenix scopes to a project: `project` must name the project
the app's traces go to (`default` unless they carry `openinference.project.name`).

`sync=true` makes Phoenix answer 404 for a span it has not ingested yet (without it Phoenix
accepts, retries in memory and may lose the annotation on a restart); a 404 is NOT_FOUND, which
the worker retries within the not-found window, since feedback often beats its trace.

This module also holds what the span-addressed exporters (Phoenix, Langfuse, MLflow) share: the
check for an unresolved rated span, the per-message lock, and the durable mark of the newest
rating applied, so a retry that arrives after a newer rating cannot overwrite it.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import logging
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final

import httpx

from brixo_otel._errors import ConfigurationError
from brixo_otel._exporter import DeliveryResult, DeliveryStatus
from brixo_otel._forksafe import after_fork_in_child
from brixo_otel._internal import raise_internal_errors
from brixo_otel._signal import CSAT, NPS, THUMBS, THUMBS_UP, Signal, format_timestamp
from brixo_otel._urls import check_endpoint_url
from brixo_otel.exporters._http import (
    JSON_MEDIA_TYPE,
    USER_AGENT,
    HttpApi,
    HttpSignalExporter,
    check_header_value,
    encode_json,
    path_segment,
    permanent,
    truncate,
)

logger = logging.getLogger(__name__)

#: Why a message rating that the pipeline could not link to its span is dead-lettered: a
#: span-addressed destination has nowhere to put it, and an unaddressed one would mislead.
UNRESOLVED: Final = "rated span not resolved within the link window: cannot place a span annotation"

#: The values the span-addressed destinations take (ratings and their retraction).
RATING_VALUES: Final = (*THUMBS, CSAT, NPS)

DEFAULT_ANNOTATION_NAME: Final = "user_feedback"
#: Phoenix's project when spans carry no `openinference.project.name`.
DEFAULT_PROJECT: Final = "default"
#: Phoenix reserves this annotation name for notes (400).
_RESERVED_NAMES: Final = ("note",)
_EXAMPLE_BASE_URL: Final = "http://localhost:6006"
_PHOENIX_KINDS: Final = {"message": "span", "conversation": "session"}


# -- shared by the span-addressed exporters ------------------------------------------------------


def score_of(signal: Signal) -> float:
    """1.0 / 0.0 for thumbs; the score itself for csat (1 to 5) and nps (0 to 10)."""
    if signal.score is not None:
        return float(signal.score)
    return 1.0 if signal.value == THUMBS_UP else 0.0


def noted(note: str) -> DeliveryResult:
    """Delivered, with a note for the log: nothing was sent because nothing needed sending."""
    return DeliveryResult(DeliveryStatus.DELIVERED, note)


def moment(signal: Signal) -> str:
    """The signal's moment as fixed-width UTC text, which orders as the moments do."""
    return format_timestamp(signal.occurred_at, "microseconds")


def rating_key(signal: Signal) -> str:
    """The state key of what is rated: one rating per message, one per conversation."""
    return f"{signal.target}:{signal.target_id}"


@dataclasses.dataclass(frozen=True)
class Mark:
    """What an exporter's durable state remembers about one rated message or conversation.

    `at` and `signal` are the moment and id of the newest signal applied; `placed` says whether
    a rating is on the destination now (False after a retraction); `ref` is whatever the
    destination needs to address that rating again (MLflow: trace and assessment id).
    """

    at: str
    signal: str
    placed: bool
    ref: str = ""

    def skip(self, signal: Signal) -> DeliveryResult | None:
        """Why `signal` needs no request: applied already, or older than what is applied.

        Only a strictly older signal is skipped: two clicks in the same microsecond cannot be
        ordered, and the one that arrives later is the better guess.
        """
        if self.signal == signal.id:
            return noted("already applied")
        if moment(signal) < self.at:
            what = "rating" if self.placed else "retraction"
            return noted(f"superseded: a newer {what} (at {self.at}) is already applied")
        return None

    def dumps(self) -> str:
        return json.dumps(
            {"at": self.at, "signal": self.signal, "placed": self.placed, "ref": self.ref},
            separators=(",", ":"),
        )

    @classmethod
    def loads(cls, text: str) -> Mark:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        at, signal, placed, ref = (data.get(k) for k in ("at", "signal", "placed", "ref"))
        if not (isinstance(at, str) and isinstance(signal, str) and isinstance(placed, bool)):
            raise ValueError("at, signal and placed are missing or mistyped")
        return cls(at, signal, placed, ref if isinstance(ref, str) else "")

    @classmethod
    def of(cls, signal: Signal, *, placed: bool, ref: str = "") -> Mark:
        return cls(moment(signal), signal.id, placed, ref)


class KeyLocks:
    """A fixed set of locks, one picked per rated message: two ratings of one message never
    race through "read the mark, send, write the mark", while unrelated messages rarely wait.

    Striped rather than one lock per key, so nothing grows with the number of messages; made
    afresh in a forked child, because a lock held by a parent's thread would stay held there.
    """

    STRIPES: Final = 64

    def __init__(self) -> None:
        self._reset()
        after_fork_in_child(self, KeyLocks._reset)

    def _reset(self) -> None:
        self._locks = [threading.Lock() for _ in range(self.STRIPES)]

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._locks[zlib.crc32(key.encode("utf-8", "surrogatepass")) % self.STRIPES]:
            yield


class SpanAddressedExporter(HttpSignalExporter):
    """Base of the exporters that put a rating *on* the rated span (or its conversation).

    The key is optional (a local Phoenix or MLflow runs without auth); the endpoint is checked as
    for every HTTP exporter. `_route` does the destination's work under a per-message lock, with
    `_mark`/`_save_mark` reading and writing the durable mark.
    """

    #: The worker hands these exporters a message rating only once its rated span is resolved
    #: (or the link window has closed, and `rated` is None).
    needs_rated_span = True

    def __init__(
        self,
        base_url: str,
        *,
        key: str | None,
        key_setting: str,
        url_setting: str,
        example: str,
        name: str,
        client: httpx.Client | None,
        timeout: httpx.Timeout | None,
        allow_insecure_http: bool,
    ) -> None:
        # Not HttpSignalExporter.__init__: that one requires a key.
        self._api_key = "" if key is None else check_header_value(key, setting=key_setting)
        root = check_endpoint_url(
            base_url,
            allow_insecure_http=allow_insecure_http,
            setting=url_setting,
            example=example,
            api_root=True,
        )
        self.name = name
        self._api = HttpApi(root, client=client, timeout=timeout)
        self._headers = {"Accept": JSON_MEDIA_TYPE, "User-Agent": USER_AGENT}
        self._locks = KeyLocks()

    def _deliver(self, signal: Signal) -> DeliveryResult:
        try:
            with self._locks.hold(rating_key(signal)):
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

    @abc.abstractmethod
    def _route(self, signal: Signal) -> DeliveryResult:
        """Deliver `signal`, holding its message's lock."""

    def _mark(self, signal: Signal) -> Mark | None:
        raw = self.state.get(rating_key(signal))
        if raw is None:
            return None
        try:
            return Mark.loads(raw)
        except (ValueError, TypeError):
            self._warn("state", "brixo_otel: unreadable %s state for a rating; treating it as new")
            return None

    def _save_mark(self, signal: Signal, mark: Mark) -> None:
        self.state.set(rating_key(signal), mark.dumps())

    def _send(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        params: dict[str, str] | None = None,
        on_success: Callable[[bytes], DeliveryResult] | None = None,
    ) -> DeliveryResult:
        """One request to `path` (already escaped) under the API root; never raises."""
        url = self._api.url(path)
        if params:
            url = url.copy_merge_params(params)

        def build() -> httpx.Request:
            headers = dict(self._headers)
            content = None
            if body is not None:
                headers["Content-Type"] = JSON_MEDIA_TYPE
                content = encode_json(body)
            return self._api.request(method, url, headers=headers, content=content)

        return self._api.call(build, destination=self.name, on_success=on_success)


def check_name(value: object, setting: str) -> str:
    """A non-blank annotation, score or assessment name."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{setting} must be a non-empty string, got {value!r}")
    return value.strip()


# -- Phoenix -------------------------------------------------------------------------------------


class PhoenixExporter(SpanAddressedExporter):
    """Delivers ratings to Arize Phoenix as annotations, on the rated span or the session.

    `base_url` is Phoenix's root (`http://localhost:6006`, or its path prefix when it runs
    behind one); `api_key` is sent as a Bearer token when Phoenix runs with auth; `project` is
    the project the app's traces go to (retractions delete within it). Takes thumbs, csat and
    nps and their retraction, on a message or a conversation. A client passed in stays the
    caller's: it is used as is, never closed.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        project: str | None = None,
        annotation_name: str = DEFAULT_ANNOTATION_NAME,
        client: httpx.Client | None = None,
        allow_insecure_http: bool = False,
        timeout: httpx.Timeout | None = None,
        name: str = "phoenix",
    ) -> None:
        super().__init__(
            base_url,
            key=api_key,
            key_setting="api_key",
            url_setting="base_url",
            example=_EXAMPLE_BASE_URL,
            name=name,
            client=client,
            timeout=timeout,
            allow_insecure_http=allow_insecure_http,
        )
        _refuse_collector_path(self.base_url)
        self.annotation_name = check_name(annotation_name, "annotation_name")
        if self.annotation_name in _RESERVED_NAMES:
            raise ConfigurationError(
                f"annotation_name {self.annotation_name!r} is reserved by Phoenix for notes"
            )
        self.project = DEFAULT_PROJECT if project is None else check_name(project, "project")
        if self._api_key:
            self._headers["Authorization"] = f"Bearer {self._api_key}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base_url={self.base_url!r}, project={self.project!r}, "
            f"annotation_name={self.annotation_name!r}, name={self.name!r})"
        )

    def accepts(self, signal: Signal) -> bool:
        """Thumbs, csat and nps and their retraction, on a message or a conversation."""
        return signal.value in RATING_VALUES or signal.is_retraction

    def identifier(self, signal: Signal) -> str:
        """The annotation's upsert identifier: one per rated message (or conversation) and
        annotation name, the same in every process and after every restart."""
        return f"brixo:{self.annotation_name}:{signal.target_id}"

    def annotation_for(self, signal: Signal) -> dict[str, Any]:
        """One annotation of `POST /v1/span_annotations` (or session_annotations)."""
        result: dict[str, Any] = {"label": signal.value, "score": score_of(signal)}
        if signal.user_message is not None:
            result["explanation"] = signal.user_message
        metadata: dict[str, Any] = {
            "brixo.signal.id": signal.id,
            "brixo.reasons": list(signal.reasons),
        }
        if signal.message_id is not None:
            metadata["brixo.message_id"] = signal.message_id
        if signal.conversation_id is not None:
            metadata["brixo.conversation_id"] = signal.conversation_id
        annotation: dict[str, Any] = {
            "name": self.annotation_name,
            "annotator_kind": "HUMAN",
            "result": result,
            "metadata": metadata,
            "identifier": self.identifier(signal),
        }
        if signal.target == "message":
            assert signal.rated is not None
            annotation["span_id"] = signal.rated.span_id_hex
        else:
            annotation["session_id"] = signal.conversation_id
        return annotation

    def _route(self, signal: Signal) -> DeliveryResult:
        if signal.value not in RATING_VALUES and not signal.is_retraction:
            return permanent(f"Phoenix takes thumbs, csat and nps ratings, not {signal.value}")
        mark = self._mark(signal)
        skipped = mark.skip(signal) if mark is not None else None
        if skipped is not None:
            return skipped
        if signal.is_retraction:
            return self._retract(signal, mark)
        if signal.target == "message" and signal.rated is None:
            return permanent(UNRESOLVED)
        kind = _PHOENIX_KINDS[signal.target]
        result = self._send(
            "POST",
            f"/v1/{kind}_annotations",
            {"data": [self.annotation_for(signal)]},
            params={"sync": "true"},
        )
        if result.status is DeliveryStatus.DELIVERED:
            self._save_mark(signal, Mark.of(signal, placed=True))
        elif result.status is DeliveryStatus.NOT_FOUND:
            what = "rated span" if kind == "span" else "session (conversation)"
            reason = f"Phoenix has not ingested the {what} yet: {result.reason}"
            return dataclasses.replace(result, reason=reason)
        return result

    def _retract(self, signal: Signal, mark: Mark | None) -> DeliveryResult:
        """Delete by identifier, always: idempotent, and right even when the mark was lost."""
        kind = _PHOENIX_KINDS[signal.target]
        result = self._send(
            "DELETE",
            f"/v1/projects/{path_segment(self.project)}/{kind}_annotations",
            params={"identifier": self.identifier(signal), "delete_all": "true"},
        )
        if result.status is DeliveryStatus.NOT_FOUND:
            if mark is None or not mark.placed:
                # No such project yet, and nothing of ours was placed: nothing to delete.
                result = noted("retraction: Phoenix has no such project; nothing to delete")
            else:
                return permanent(
                    f"Phoenix has no project {truncate(self.project, 80)!r} to delete the "
                    "annotation from: set project= to the project the traces go to "
                    f"({result.reason})"
                )
        if result.status is DeliveryStatus.DELIVERED:
            self._save_mark(signal, Mark.of(signal, placed=False))
        return result


def _refuse_collector_path(base_url: str) -> None:
    """The traces endpoint is a common slip for the API root; say so rather than 404 forever."""
    if base_url.rstrip("/").endswith("/v1/traces"):
        raise ConfigurationError(
            f"base_url {base_url!r} is the OTLP traces endpoint; give Phoenix's root, e.g. "
            f"{_EXAMPLE_BASE_URL!r}"
        )
