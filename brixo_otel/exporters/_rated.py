"""What the span-addressed exporters (Phoenix, Langfuse, MLflow) share.

They place a rating *on the rated span*, so they share three rules: a message rating whose span
the pipeline could not resolve is dead-lettered (there is nowhere to put it, and an unaddressed
one would mislead); one lock per rated message, so a process never races itself on one item;
and a durable mark of the newest rating applied, so a retry that arrives after a newer rating
(or after a retraction) cannot overwrite it.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import logging
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Final

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
    permanent,
)

logger = logging.getLogger(__name__)

#: Why a message rating that the pipeline could not link to its span is dead-lettered: a
#: span-addressed destination has nowhere to put it, and an unaddressed one would mislead.
UNRESOLVED: Final = "rated span not resolved within the link window: cannot place a span annotation"

#: The values the span-addressed destinations take (ratings and their retraction).
RATING_VALUES: Final = (*THUMBS, CSAT, NPS)

DEFAULT_ANNOTATION_NAME: Final = "user_feedback"


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
    #: How errors name the destination ("Phoenix takes thumbs, ...").
    display_name: str = "this destination"

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
        secrets: Sequence[str] = (),
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
        # The key (and whatever else is as secret: `secrets`) is cut out of an error's detail
        # before the detail is cut to length, which `export`'s redaction afterwards cannot do
        # for a key that straddles the cut.
        self._api = HttpApi(root, client=client, timeout=timeout, secrets=(self._api_key, *secrets))
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

    def _checked_mark(self, signal: Signal) -> tuple[DeliveryResult | None, Mark | None]:
        """The rating's durable mark, and the answer already due without sending anything: a
        value this destination does not take, or a rating older than the one applied."""
        if signal.value not in RATING_VALUES and not signal.is_retraction:
            refused = permanent(
                f"{self.display_name} takes thumbs, csat and nps ratings, not {signal.value}"
            )
            return refused, None
        mark = self._mark(signal)
        return (mark.skip(signal) if mark is not None else None), mark

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
