"""MLflow: a rating as an assessment on the rated trace, pinned to the rated span.

MLflow 3 (docs/destinations/mlflow.md) keeps human feedback as *assessments* on a trace
(`tr-` + the OTel trace id in hex), optionally pinned to one span. An assessment id may be chosen
by the client, so every rating of one message uses the same one (derived from the assessment
name and the message id): a retried create cannot add a second. MLflow answers a create of an id
it already holds with 500 "constraint violation" rather than 409; that, and a changed mind, become
a PATCH of the existing assessment. The id MLflow answers with is kept in the exporter's durable
state with the trace, so a later change or retraction goes straight to it. A trace MLflow has not
ingested yet answers 404, which the worker retries within the not-found window.

MLflow's assessments belong to a trace, and a conversation is not one: conversation ratings are
not taken (they are skipped, visibly, as for any destination that cannot take a signal).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Any, Final

import httpx

from brixo_otel._exporter import DeliveryResult, DeliveryStatus
from brixo_otel._signal import THUMBS_UP, Signal
from brixo_otel.exporters._http import path_segment, permanent
from brixo_otel.exporters._rated import (
    DEFAULT_ANNOTATION_NAME,
    RATING_VALUES,
    UNRESOLVED,
    Mark,
    SpanAddressedExporter,
    check_name,
    noted,
)

_EXAMPLE_TRACKING_URI: Final = "http://localhost:5000"
#: Namespace of the assessment ids. Never change it: a rating sent by a newer version of this
#: library must find the assessment an older one made.
ASSESSMENT_NAMESPACE: Final = uuid.UUID("9d5e2c71-4b0a-5f3e-8c6d-1a7b3e9f0c42")
#: Who gave the rating, as MLflow's `source.source_id`: the app's end user (their identity is not
#: part of a signal).
SOURCE_ID: Final = "end_user"
#: What a PATCH replaces: everything a rating says. Metadata is merged by MLflow, so every key is
#: always sent, empty when the rating has none.
_UPDATE_MASK: Final = "feedback,rationale,metadata"


def assessment_id(assessment_name: str, signal: Signal) -> str:
    """The assessment id of a message's rating: the same in every process and after restarts."""
    digest = uuid.uuid5(ASSESSMENT_NAMESPACE, f"{assessment_name}\0{signal.target_id}").hex
    return f"a-brixo-{digest}"


class MLflowExporter(SpanAddressedExporter):
    """Delivers message ratings to an MLflow 3 tracking server as assessments (HUMAN feedback).

    Thumbs are boolean feedback, csat and nps numeric; the comment is the rationale. `token`
    is sent as a Bearer token, for a server behind auth. A client passed in stays the caller's:
    it is used as is, never closed.
    """

    display_name = "MLflow"

    def __init__(
        self,
        tracking_uri: str,
        *,
        token: str | None = None,
        assessment_name: str = DEFAULT_ANNOTATION_NAME,
        client: httpx.Client | None = None,
        allow_insecure_http: bool = False,
        timeout: httpx.Timeout | None = None,
        name: str = "mlflow",
    ) -> None:
        super().__init__(
            tracking_uri,
            key=token,
            key_setting="token",
            url_setting="tracking_uri",
            example=_EXAMPLE_TRACKING_URI,
            name=name,
            client=client,
            timeout=timeout,
            allow_insecure_http=allow_insecure_http,
        )
        self.assessment_name = check_name(assessment_name, "assessment_name")
        if self._api_key:
            self._headers["Authorization"] = f"Bearer {self._api_key}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(tracking_uri={self.base_url!r}, "
            f"assessment_name={self.assessment_name!r}, name={self.name!r})"
        )

    def accepts(self, signal: Signal) -> bool:
        """Thumbs, csat and nps on a message, and their retraction."""
        if signal.target != "message":
            return False
        return signal.value in RATING_VALUES or signal.is_retraction

    # -- request bodies -------------------------------------------------------------------------

    @staticmethod
    def feedback_for(signal: Signal) -> dict[str, Any]:
        """What a rating says, as the part of an assessment a PATCH replaces.

        MLflow keeps only string metadata values (others are dropped without an error), so the
        reasons are one comma-separated string.
        """
        value: bool | int = signal.score if signal.score is not None else signal.value == THUMBS_UP
        metadata = {
            "brixo.signal.id": signal.id,
            "brixo.value": signal.value,
            "brixo.reasons": ",".join(signal.reasons),
        }
        return {
            "feedback": {"value": value},
            "rationale": signal.user_message or "",
            "metadata": metadata,
        }

    def assessment_for(self, signal: Signal, assessment: str) -> dict[str, Any]:
        """The body of a create: the rating, pinned to the rated span."""
        assert signal.rated is not None and signal.message_id is not None
        body = self.feedback_for(signal)
        body["metadata"]["brixo.message_id"] = signal.message_id
        if signal.conversation_id is not None:
            body["metadata"]["brixo.conversation_id"] = signal.conversation_id
        return {
            "assessment": {
                "assessment_id": assessment,
                "assessment_name": self.assessment_name,
                "trace_id": _trace(signal.rated.trace_id_hex),
                "span_id": signal.rated.span_id_hex,
                "source": {"source_type": "HUMAN", "source_id": SOURCE_ID},
                **body,
            }
        }

    # -- delivery -------------------------------------------------------------------------------

    def _route(self, signal: Signal) -> DeliveryResult:
        if signal.target != "message":
            return permanent("MLflow assessments rate a trace; a conversation rating has none")
        answered, mark = self._checked_mark(signal)
        if answered is not None:
            return answered
        placed = _Placed.parse(mark.ref) if mark is not None else None
        if signal.is_retraction:
            return self._retract(signal, placed)
        if signal.rated is None:
            return permanent(UNRESOLVED)
        if placed is not None and mark is not None and mark.placed:
            result = self._patch(placed, signal)
            if result.status is not DeliveryStatus.NOT_FOUND:
                return result
            # Deleted on MLflow's side (or its trace was): the rating gets a new assessment.
        return self._create(signal)

    def _create(self, signal: Signal) -> DeliveryResult:
        assert signal.rated is not None
        trace = _trace(signal.rated.trace_id_hex)
        wanted = assessment_id(self.assessment_name, signal)
        answered: list[_Placed] = []

        def keep(raw: bytes) -> DeliveryResult:
            placed = _Placed.from_answer(raw)
            answered.append(placed if placed is not None else _Placed(trace, wanted))
            return DeliveryResult.delivered()

        result = self._send(
            "POST", _assessments(trace), self.assessment_for(signal, wanted), on_success=keep
        )
        if result.http_status == 500 and "constraint violation" in result.reason:
            # The assessment exists already (an earlier rating, or a create whose answer was
            # lost): bring it up to this rating.
            placed = _Placed(trace, wanted)
            return self._patch(placed, signal)
        if result.status is DeliveryStatus.NOT_FOUND:
            reason = f"MLflow has not ingested the rated trace yet: {result.reason}"
            return dataclasses.replace(result, reason=reason)
        if result.status is DeliveryStatus.DELIVERED:
            self._save_mark(signal, Mark.of(signal, placed=True, ref=answered[0].dumps()))
        return result

    def _patch(self, placed: _Placed, signal: Signal) -> DeliveryResult:
        body = {"assessment": self.feedback_for(signal), "update_mask": _UPDATE_MASK}
        result = self._send("PATCH", _assessments(placed.trace, placed.assessment), body)
        if result.status is DeliveryStatus.DELIVERED:
            self._save_mark(signal, Mark.of(signal, placed=True, ref=placed.dumps()))
        return result

    def _retract(self, signal: Signal, placed: _Placed | None) -> DeliveryResult:
        if placed is None and signal.rated is not None:
            # No record of ours (state lost, or never placed): the id is deterministic anyway.
            placed = _Placed(
                _trace(signal.rated.trace_id_hex), assessment_id(self.assessment_name, signal)
            )
        if placed is None:
            self._save_mark(signal, Mark.of(signal, placed=False))
            return noted(
                "retraction: no assessment is recorded for this message; nothing to delete"
            )
        result = self._send("DELETE", _assessments(placed.trace, placed.assessment))
        if result.status is DeliveryStatus.NOT_FOUND:
            result = noted("retraction: MLflow has no such trace; nothing to delete")
        if result.status is DeliveryStatus.DELIVERED:
            self._save_mark(signal, Mark.of(signal, placed=False, ref=placed.dumps()))
        return result


class _Placed:
    """Where an assessment is: its trace and the id MLflow answered with."""

    __slots__ = ("assessment", "trace")

    def __init__(self, trace: str, assessment: str) -> None:
        self.trace = trace
        self.assessment = assessment

    def dumps(self) -> str:
        return json.dumps([self.trace, self.assessment], separators=(",", ":"))

    @classmethod
    def parse(cls, ref: str) -> _Placed | None:
        try:
            trace, assessment = json.loads(ref)
        except (ValueError, TypeError):
            return None
        if isinstance(trace, str) and isinstance(assessment, str) and trace and assessment:
            return cls(trace, assessment)
        return None

    @classmethod
    def from_answer(cls, raw: bytes) -> _Placed | None:
        """The stored assessment's trace and id, from a create's answer."""
        try:
            document = json.loads(raw)
        except ValueError:
            return None
        stored = document.get("assessment") if isinstance(document, dict) else None
        if not isinstance(stored, dict):
            return None
        trace, assessment = stored.get("trace_id"), stored.get("assessment_id")
        if isinstance(trace, str) and isinstance(assessment, str) and trace and assessment:
            return cls(trace, assessment)
        return None


def _trace(trace_hex: str) -> str:
    """MLflow's id of a trace ingested over OTLP: `tr-` and the 32-hex OTel trace id."""
    return f"tr-{trace_hex}"


def _assessments(trace: str, assessment: str | None = None) -> str:
    path = f"/api/3.0/mlflow/traces/{path_segment(trace)}/assessments"
    return path if assessment is None else f"{path}/{path_segment(assessment)}"
