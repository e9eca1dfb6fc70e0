"""Langfuse: a rating as a score on the rated observation, where Langfuse shows scores.

Langfuse (docs/destinations/langfuse.md) keeps human feedback as *scores* on a trace, an observation
(a span) or a session. `POST /api/public/scores` upserts on the score's `id`, so every rating of
one message carries the same id (a UUID derived from the score name and the message id): a
changed mind replaces the score, a retried request lands on the same one, and a retraction
deletes it with `DELETE /api/public/scores/{id}`. Langfuse accepts a score before its trace is
ingested, so there is no not-found wait here; the rated span's ids (`traceId` as 32 lowercase
hex, `observationId` as 16) are what Langfuse's own OTLP ingestion gives the trace and span.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any, Final

import httpx

from brixo_otel._exporter import DeliveryResult, DeliveryStatus
from brixo_otel._signal import Signal
from brixo_otel.exporters._http import check_header_value, path_segment, permanent
from brixo_otel.exporters._rated import (
    DEFAULT_ANNOTATION_NAME,
    RATING_VALUES,
    UNRESOLVED,
    Mark,
    SpanAddressedExporter,
    check_name,
    noted,
    score_of,
)

DEFAULT_BASE_URL: Final = "https://cloud.langfuse.com"
#: Namespace of the score ids. Never change it: a rating sent by a newer version of this library
#: must replace the score an older one made.
SCORE_NAMESPACE: Final = uuid.UUID("3c0f5d0e-9a4b-5e61-8a4f-2b7d6c1e9f30")
_SCORES: Final = "/api/public/scores"


def score_id(score_name: str, signal: Signal) -> str:
    """The score's upsert id: one per score name and rated message (or conversation)."""
    return str(uuid.uuid5(SCORE_NAMESPACE, f"{score_name}\0{signal.target}\0{signal.target_id}"))


class LangfuseExporter(SpanAddressedExporter):
    """Delivers ratings to Langfuse as scores: on the rated observation, or on the session.

    Thumbs are BOOLEAN scores (1 / 0), csat and nps NUMERIC ones; the comment is the score's
    comment. `public_key` and `secret_key` are the project's API keys (sent as Basic auth, never
    logged). A client passed in stays the caller's: it is used as is, never closed.
    """

    display_name = "Langfuse"

    def __init__(
        self,
        public_key: str,
        secret_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        score_name: str = DEFAULT_ANNOTATION_NAME,
        client: httpx.Client | None = None,
        allow_insecure_http: bool = False,
        timeout: httpx.Timeout | None = None,
        name: str = "langfuse",
    ) -> None:
        secret = check_header_value(secret_key, setting="secret_key")
        public = check_header_value(public_key, setting="public_key")
        # The encoded pair is as secret as the key itself: it is scrubbed out of errors too.
        basic = base64.b64encode(f"{public}:{secret}".encode()).decode("ascii")
        super().__init__(
            base_url,
            key=secret,
            key_setting="secret_key",
            url_setting="base_url",
            example=DEFAULT_BASE_URL,
            name=name,
            client=client,
            timeout=timeout,
            allow_insecure_http=allow_insecure_http,
            secrets=(basic,),
        )
        self.score_name = check_name(score_name, "score_name")
        self._headers["Authorization"] = f"Basic {basic}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base_url={self.base_url!r}, "
            f"score_name={self.score_name!r}, name={self.name!r})"
        )

    def accepts(self, signal: Signal) -> bool:
        """Thumbs, csat and nps and their retraction, on a message or a conversation."""
        return signal.value in RATING_VALUES or signal.is_retraction

    def score_for(self, signal: Signal) -> dict[str, Any]:
        """The body of `POST /api/public/scores` for a rating."""
        metadata: dict[str, Any] = {
            "brixo.signal.id": signal.id,
            "brixo.value": signal.value,
            "brixo.reasons": list(signal.reasons),
        }
        if signal.message_id is not None:
            metadata["brixo.message_id"] = signal.message_id
        if signal.conversation_id is not None:
            metadata["brixo.conversation_id"] = signal.conversation_id
        score: dict[str, Any] = {
            "id": score_id(self.score_name, signal),
            "name": self.score_name,
            "metadata": metadata,
        }
        if signal.is_thumbs:
            score.update(value=int(score_of(signal)), dataType="BOOLEAN")
        else:
            score.update(value=score_of(signal), dataType="NUMERIC")
        if signal.user_message is not None:
            score["comment"] = signal.user_message
        if signal.target == "message":
            assert signal.rated is not None
            score["traceId"] = signal.rated.trace_id_hex
            score["observationId"] = signal.rated.span_id_hex
        else:
            score["sessionId"] = signal.conversation_id
        return score

    def _route(self, signal: Signal) -> DeliveryResult:
        answered, _ = self._checked_mark(signal)
        if answered is not None:
            return answered
        if signal.is_retraction:
            path = f"{_SCORES}/{path_segment(score_id(self.score_name, signal))}"
            result = self._send("DELETE", path)
            if result.status is DeliveryStatus.NOT_FOUND:
                result = noted("retraction: Langfuse has no such score; nothing to delete")
            if result.status is DeliveryStatus.DELIVERED:
                self._save_mark(signal, Mark.of(signal, placed=False))
            return result
        if signal.target == "message" and signal.rated is None:
            return permanent(UNRESOLVED)
        result = self._send("POST", _SCORES, self.score_for(signal))
        if result.status is DeliveryStatus.DELIVERED:
            self._save_mark(signal, Mark.of(signal, placed=True))
        return result
