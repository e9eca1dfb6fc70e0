"""Arize Phoenix: a rating as a span annotation on the rated span, where Phoenix shows ratings.

Phoenix (docs/destinations/phoenix.md) keeps human feedback as *annotations*: `POST
/v1/span_annotations` puts one on a span, `POST /v1/session_annotations` on a session (the
conversation). Its upsert key is (name, span, `identifier`), so every rating of one message
carries the same identifier (`brixo:<annotation name>:<message id>`): a changed mind updates the
annotation instead of adding a second, and a retried request lands on the same row. A retraction
deletes by that identifier, which Phoenix scopes to a project: `project` must name the project
the app's traces go to (`default` unless they carry `openinference.project.name`).

`sync=true` makes Phoenix answer 404 for a span it has not ingested yet (without it Phoenix
accepts, retries in memory and may lose the annotation on a restart); a 404 is NOT_FOUND, which
the worker retries within the not-found window, since feedback often beats its trace.

What the span-addressed exporters share (the unresolved-span rule, per-message locks, the mark
of the newest rating applied) is in `_rated`.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Final

import httpx

from brixo_otel._errors import ConfigurationError
from brixo_otel._exporter import DeliveryResult, DeliveryStatus
from brixo_otel._signal import Signal
from brixo_otel.exporters._http import (
    path_segment,
    permanent,
    truncate,
)
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

logger = logging.getLogger(__name__)

#: Phoenix's project when spans carry no `openinference.project.name`.
DEFAULT_PROJECT: Final = "default"
#: Phoenix reserves this annotation name for notes (400).
_RESERVED_NAMES: Final = ("note",)
_EXAMPLE_BASE_URL: Final = "http://localhost:6006"
_PHOENIX_KINDS: Final = {"message": "span", "conversation": "session"}


# -- Phoenix -------------------------------------------------------------------------------------


class PhoenixExporter(SpanAddressedExporter):
    """Delivers ratings to Arize Phoenix as annotations, on the rated span or the session.

    `base_url` is Phoenix's root (`http://localhost:6006`, or its path prefix when it runs
    behind one); `api_key` is sent as a Bearer token when Phoenix runs with auth; `project` is
    the project the app's traces go to (retractions delete within it). Takes thumbs, csat and
    nps and their retraction, on a message or a conversation. A client passed in stays the
    caller's: it is used as is, never closed.
    """

    display_name = "Phoenix"

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
        answered, mark = self._checked_mark(signal)
        if answered is not None:
            return answered
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
