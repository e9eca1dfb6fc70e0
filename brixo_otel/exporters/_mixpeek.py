"""Mixpeek: thumbs on an agent's message, filed under the agent session it belongs to.

`POST /v1/agents/sessions/{session_id}/feedback` (docs/destinations/mixpeek.md), Bearer
auth plus an `X-Namespace` header. The session id is the signal's conversation id, so Mixpeek
takes only message signals whose conversation is known (passed to `feedback()`, or learnt from the
rated span).

Mixpeek documents no idempotency key, so delivery is at-least-once in the plain sense: a request
that reached Mixpeek but whose answer was lost is sent again. To keep that window as small as we
can, the parsed answer (the receipt) is committed to the exporter's durable state the moment it
arrives, and an attempt that finds a receipt for its signal does not send again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Final

import httpx

from brixo_otel._exporter import DeliveryResult, DeliveryStatus
from brixo_otel._signal import THUMBS_DOWN, THUMBS_UP, Signal
from brixo_otel.exporters._http import (
    JSON_MEDIA_TYPE,
    USER_AGENT,
    HttpSignalExporter,
    check_header_value,
    encode_json,
    path_segment,
    truncate,
)

DEFAULT_BASE_URL: Final = "https://api.mixpeek.com"

#: Our thumbs to Mixpeek's `rating` enum.
RATINGS: Final = {THUMBS_UP: "positive", THUMBS_DOWN: "negative"}

#: State key prefix of a signal's receipt; the value is the receipt as JSON, or `{}` when
#: Mixpeek answered 2xx with a body we could not read (delivered all the same).
_RECEIPT: Final = "receipt:"


@dataclass(frozen=True)
class MixpeekReceipt:
    """What Mixpeek answered to one delivered signal (its `SubmitFeedbackResponse`)."""

    session_id: str
    message_id: str
    rating: str
    #: Whether Mixpeek stored the rated exchange to the agent's memory.
    stored: bool
    #: When Mixpeek recorded the feedback, as it sent it (RFC 3339).
    recorded_at: str

    @property
    def note(self) -> str:
        """The short form kept as the delivery's reason, e.g. `stored=true recorded_at=...`."""
        return f"stored={'true' if self.stored else 'false'} recorded_at={self.recorded_at}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def parse(cls, document: object) -> MixpeekReceipt:
        """The receipt in a decoded answer; `ValueError` naming what is missing or wrong."""
        if not isinstance(document, dict):
            raise ValueError(f"expected a JSON object, got {type(document).__name__}")
        text_fields = ("session_id", "message_id", "rating", "recorded_at")
        for key in text_fields:
            if not isinstance(document.get(key), str):
                raise ValueError(f"{key} is missing or not a string")
        if not isinstance(document.get("stored"), bool):
            raise ValueError("stored is missing or not a boolean")
        return cls(
            session_id=document["session_id"],
            message_id=document["message_id"],
            rating=document["rating"],
            stored=document["stored"],
            recorded_at=document["recorded_at"],
        )


class MixpeekExporter(HttpSignalExporter):
    """Delivers thumbs on messages to Mixpeek's agent-session feedback endpoint.

    Accepts `thumbs_up`/`thumbs_down` on a message whose conversation id is known (it is the
    Mixpeek session id). Each delivery's receipt is kept in the exporter's state (durable behind
    the client's outbox, for the outbox's state lifetime) and read back with `last_receipt`.
    A client passed in stays the caller's: it is used as is and never closed here.
    """

    def __init__(
        self,
        api_key: str,
        namespace: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        client: httpx.Client | None = None,
        allow_insecure_http: bool = False,
        timeout: httpx.Timeout | None = None,
        name: str = "mixpeek",
    ) -> None:
        super().__init__(
            api_key,
            base_url,
            example=DEFAULT_BASE_URL,
            name=name,
            client=client,
            timeout=timeout,
            allow_insecure_http=allow_insecure_http,
        )
        self._namespace = check_header_value(namespace, setting="namespace")
        self._headers = {
            "Authorization": f"Bearer {self._api_key}",
            "X-Namespace": self._namespace,
            "Content-Type": JSON_MEDIA_TYPE,
            "Accept": JSON_MEDIA_TYPE,
            "User-Agent": USER_AGENT,
        }

    @property
    def namespace(self) -> str:
        return self._namespace

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base_url={self.base_url!r}, "
            f"namespace={self._namespace!r}, name={self.name!r})"
        )

    def accepts(self, signal: Signal) -> bool:
        """Thumbs on a message with a known conversation: Mixpeek files feedback per session."""
        return (
            signal.is_thumbs
            and signal.target == "message"
            and signal.message_id is not None
            and signal.conversation_id is not None
        )

    # -- the request, in parts a test (or a subclass) can look at -------------------------------

    def url_for(self, signal: Signal) -> httpx.URL:
        """The session's feedback endpoint; the session id is percent-encoded as one segment."""
        assert signal.conversation_id is not None  # accepts() guarantees it
        return self._api.url(f"/v1/agents/sessions/{path_segment(signal.conversation_id)}/feedback")

    def headers_for(self, signal: Signal) -> dict[str, str]:
        """Mixpeek's two required headers, plus the signal id as an `Idempotency-Key`.

        Mixpeek does not document honouring that key; it costs nothing and deduplicates at once
        if it ever does.
        """
        return {**self._headers, "Idempotency-Key": signal.id}

    def body_for(self, signal: Signal) -> dict[str, Any]:
        """`SubmitFeedbackRequest`: the message, the rating, and the comment when there is one."""
        body: dict[str, Any] = {"message_id": signal.message_id, "rating": RATINGS[signal.value]}
        if signal.user_message is not None:
            body["feedback_text"] = signal.user_message
        return body

    # -- delivery -------------------------------------------------------------------------------

    def last_receipt(self, signal_id: str) -> MixpeekReceipt | None:
        """Mixpeek's answer to the delivery of `signal_id`, or None (not delivered yet, or its
        answer could not be read).

        Behind a client it is read from the outbox, so it is there after a restart, until the
        outbox forgets unused state (90 days); read it while that client runs (its outbox
        closes at shutdown). A standalone exporter keeps receipts in memory.
        """
        return _read_receipt(self.state.get(_RECEIPT + signal_id))

    def _deliver(self, signal: Signal) -> DeliveryResult:
        earlier = self.state.get(_RECEIPT + signal.id)
        if earlier is not None:
            # Delivered before, and the outbox did not hear of it (a crash in between): sending
            # again would file the feedback twice, since Mixpeek has no idempotency key.
            receipt = _read_receipt(earlier)
            note = receipt.note if receipt is not None else "answer not understood"
            return DeliveryResult(DeliveryStatus.DELIVERED, f"delivered earlier; {note}")
        if not self.accepts(signal):
            # Only a row queued under another configuration gets here: feedback() routes by
            # accepts(). It can never be sent, so it is dead-lettered with the rule it broke.
            missing = "" if signal.conversation_id else " without a conversation id"
            return DeliveryResult(
                DeliveryStatus.PERMANENT,
                "Mixpeek takes thumbs_up/thumbs_down on a message whose conversation id (its "
                f"session) is known; got {signal.value} on a {signal.target}{missing}",
            )
        return self._api.call(
            lambda: self._build(signal),
            destination=self.name,
            on_success=lambda body: self._keep_receipt(signal, body),
        )

    def _build(self, signal: Signal) -> httpx.Request:
        content = encode_json(self.body_for(signal))
        return self._api.request(
            "POST", self.url_for(signal), headers=self.headers_for(signal), content=content
        )

    def _keep_receipt(self, signal: Signal, body: bytes) -> DeliveryResult:
        """Read Mixpeek's answer and commit it before the delivery is reported.

        Any 2xx means Mixpeek has the feedback: an answer we cannot read is noted, never retried
        (a retry would file it twice). A failure to store the receipt is logged and the delivery
        still counts, for the same reason.
        """
        receipt: MixpeekReceipt | None
        try:
            receipt = MixpeekReceipt.parse(json.loads(body))
            note = receipt.note
        except ValueError as exc:
            receipt = None
            note = f"delivered; answer not understood: {truncate(str(exc), 120)}"
        try:
            self.state.set(_RECEIPT + signal.id, receipt.to_json() if receipt else "{}")
        except Exception as exc:
            self._warn(
                "receipt",
                "brixo_otel: %s delivered signal %s but could not keep its receipt (%s)",
                signal.id,
                type(exc).__name__,
            )
        return DeliveryResult(DeliveryStatus.DELIVERED, note)


def _read_receipt(stored: str | None) -> MixpeekReceipt | None:
    """The receipt kept in the state, or None (none kept, or `{}` for an unreadable answer)."""
    if not stored:
        return None
    try:
        return MixpeekReceipt.parse(json.loads(stored))
    except ValueError:
        return None
