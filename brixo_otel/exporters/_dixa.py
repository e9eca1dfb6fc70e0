"""Dixa: a user's rating of a conversation, as a Dixa conversation rating (and an internal note).

See docs/destinations/dixa.md. Dixa rates conversations, not messages, and a rating takes two
calls: an *offer* (`POST /beta/conversations/{id}/ratings/offer`, whose answer carries the rating
id) and a *result* (`POST .../ratings/{ratingId}/submit`). Optionally a third call adds an internal
note with the user's comment and a link to the trace.

Dixa documents no idempotency key, and a second offer for one click would count as a second
survey in Dixa's metrics. So each step's outcome is committed to the exporter's durable state
(the outbox, behind a client) before the next step starts: an attempt after a crash, a timeout or
a retryable answer resumes at the first step not yet done. The offer id is kept before the submit
is sent; the submit is marked done before the note is sent.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Final

import httpx

from brixo_otel._errors import ConfigurationError
from brixo_otel._exporter import DeliveryResult, DeliveryStatus
from brixo_otel._signal import CSAT, NPS, THUMBS_DOWN, THUMBS_UP, Signal, format_timestamp
from brixo_otel.exporters._http import (
    JSON_MEDIA_TYPE,
    USER_AGENT,
    HttpSignalExporter,
    encode_json,
    path_segment,
    permanent,
    redact,
    truncate,
)

DEFAULT_BASE_URL: Final = "https://dev.dixa.io"

#: Our values to Dixa's `ratingType`.
RATING_TYPES: Final = {
    THUMBS_UP: "ThumbsUpOrDown",
    THUMBS_DOWN: "ThumbsUpOrDown",
    CSAT: "Csat",
    NPS: "Nps",
}

#: Dixa's conversation ids (csid) are `integer(int64)` path parameters.
INT64_MAX: Final = 2**63 - 1

#: Per-signal (agent_id, user_id); either may be None to fall back to the exporter's setting.
IdsCallback = Callable[[Signal], tuple[str | None, str | None]]
#: The URL of the rated trace in the app's observability tool, for the internal note.
TraceUrlCallback = Callable[[Signal], str | None]

_DIGITS: Final = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() also takes other scripts
_PROGRESS: Final = "rating:"
_THUMBS_VALUES: Final = {THUMBS_UP: 1, THUMBS_DOWN: 0}
_NOT_DONE: Final = frozenset({DeliveryStatus.RETRY, DeliveryStatus.THROTTLED})


def conversation_number(conversation_id: str) -> int | None:
    """The Dixa conversation id (csid) in `conversation_id`, or None if it is not an int64.

    Only ASCII digits are taken: a sign, spaces or a prefix (`conv_42`) mean the app passed its
    own id rather than Dixa's, which Dixa would refuse on every attempt.
    """
    if not _DIGITS.fullmatch(conversation_id):
        return None
    number = int(conversation_id)
    return number if number <= INT64_MAX else None


@dataclass
class DixaProgress:
    """How far the delivery of one signal got; committed after each step."""

    #: The rating id from the offer's answer (`data.id`), once the offer is made.
    offer: str | None = None
    #: Whether the rating result was submitted for that offer.
    submitted: bool = False
    #: The internal note's id (or `"posted"` if its answer had none), once it is posted.
    note: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> DixaProgress:
        if not text:
            return cls()
        try:
            data = json.loads(text)
        except ValueError:
            return cls()
        if not isinstance(data, dict):
            return cls()
        offer, note = data.get("offer"), data.get("note")
        return cls(
            offer=offer if isinstance(offer, str) and offer else None,
            submitted=data.get("submitted") is True,
            note=note if isinstance(note, str) and note else None,
        )


class DixaExporter(HttpSignalExporter):
    """Delivers conversation ratings to Dixa: thumbs, CSAT (1-5) and NPS (0-10).

    Takes only signals that rate a conversation (`feedback(value, conversation_id=...)` without
    a message id), because Dixa rates conversations; the conversation id must be Dixa's numeric
    conversation id. A rating offer names the rated agent and the rating user, both required by
    Dixa: give them once (`agent_id=`, `user_id=`) or per signal with `ids=`, a callable that
    returns `(agent_id, user_id)` for a signal (None in either place falls back to the static
    setting; signals carry no free attributes, so the callable looks them up by the signal's ids).

    With `post_notes=True`, each rating also adds an internal note holding the user's comment
    and, if `trace_url` is given, a link to the rated trace. Retractions are not taken: Dixa has
    no way to delete a rating. A client passed in stays the caller's and is never closed here.
    """

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        agent_id: str | None = None,
        user_id: str | None = None,
        ids: IdsCallback | None = None,
        post_notes: bool = False,
        trace_url: TraceUrlCallback | None = None,
        client: httpx.Client | None = None,
        allow_insecure_http: bool = False,
        timeout: httpx.Timeout | None = None,
        name: str = "dixa",
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
        self._agent_id = _optional_id(agent_id, "agent_id")
        self._user_id = _optional_id(user_id, "user_id")
        if ids is not None and not callable(ids):
            raise TypeError(f"ids must be a callable returning (agent_id, user_id), got {ids!r}")
        if trace_url is not None and not callable(trace_url):
            raise TypeError(f"trace_url must be a callable returning a URL, got {trace_url!r}")
        self._ids = ids
        self._post_notes = bool(post_notes)
        self._trace_url = trace_url
        self._headers = {
            # Dixa takes the key as is, without a scheme.
            "Authorization": self._api_key,
            "Content-Type": JSON_MEDIA_TYPE,
            "Accept": JSON_MEDIA_TYPE,
            "User-Agent": USER_AGENT,
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base_url={self.base_url!r}, agent_id={self._agent_id!r}, "
            f"user_id={self._user_id!r}, post_notes={self._post_notes!r}, name={self.name!r})"
        )

    def accepts(self, signal: Signal) -> bool:
        """Thumbs, CSAT and NPS on a conversation; Dixa has no message ratings and no deletes."""
        return (
            signal.target == "conversation"
            and signal.value in RATING_TYPES
            and signal.conversation_id is not None
        )

    # -- the requests, in parts a test (or a subclass) can look at ------------------------------

    def offer_body(self, signal: Signal, agent_id: str, user_id: str) -> dict[str, Any]:
        """The rating offer; `offeredAt` is the click, fixed at the call like `submittedAt`."""
        return {
            "userId": user_id,
            "agentId": agent_id,
            "ratingType": RATING_TYPES[signal.value],
            "offeredAt": format_timestamp(signal.occurred_at),
        }

    def submit_body(self, signal: Signal) -> dict[str, Any]:
        """The rating result: thumbs as 1 (up) or 0 (down), CSAT and NPS as their score.

        The deprecated `userId` is left out, as the spec allows.
        """
        value = _THUMBS_VALUES[signal.value] if signal.is_thumbs else signal.score
        body: dict[str, Any] = {
            "ratingResult": {"_type": RATING_TYPES[signal.value], "value": value},
            "submittedAt": format_timestamp(signal.occurred_at),
        }
        if signal.user_message is not None:
            body["comment"] = signal.user_message
        return body

    def note_body(self, signal: Signal) -> dict[str, Any]:
        """The internal note: what the user gave, their comment, and the trace link.

        No `agentId`: the note is written by this integration, not by the rated agent.
        """
        lines = [f"Customer feedback: {_describe(signal)}"]
        if signal.user_message:
            lines.append(f"Comment: {signal.user_message}")
        link = self._link_for(signal)
        if link:
            lines.append(f"Trace: {link}")
        return {"message": "\n".join(lines)}

    def url_for(self, conversation: int, *steps: str) -> httpx.URL:
        return self._api.url("/".join(("/beta/conversations", str(conversation), *steps)))

    # -- delivery -------------------------------------------------------------------------------

    def rating_id(self, signal_id: str) -> str | None:
        """The Dixa rating id offered for `signal_id`, once the offer is made (kept in state)."""
        return self.progress(signal_id).offer

    def progress(self, signal_id: str) -> DixaProgress:
        """How far the delivery of `signal_id` got (nothing done, for an unknown id)."""
        return DixaProgress.from_json(self.state.get(_PROGRESS + signal_id))

    def _deliver(self, signal: Signal) -> DeliveryResult:
        if not self.accepts(signal):
            # Only a row queued under another configuration gets here: feedback() routes by
            # accepts(). It can never be sent, so it is dead-lettered with the rule it broke.
            return permanent(
                "Dixa takes thumbs_up, thumbs_down, csat and nps on a conversation; got "
                f"{signal.value} on a {signal.target}"
            )
        assert signal.conversation_id is not None  # accepts() guarantees it
        conversation = conversation_number(signal.conversation_id)
        if conversation is None:
            return permanent(
                f"conversation_id {truncate(signal.conversation_id, 80)!r} is not a Dixa "
                "conversation id: Dixa takes the conversation's number (digits only, at most "
                f"{INT64_MAX}, e.g. '9456'); pass that as conversation_id"
            )
        progress = self.progress(signal.id)
        if not progress.submitted:
            if progress.offer is None:
                offered = self._offer(signal, conversation)
                if isinstance(offered, DeliveryResult):
                    return offered
                progress.offer = offered
                # Committed before the submit goes out: a retry must find it, or it would
                # offer a second time. A failure here raises, and the row is retried.
                self._save(signal.id, progress)
            submitted = self._submit(signal, conversation, progress)
            if submitted is not None:
                return submitted
            progress.submitted = True
            self._save_quietly(signal.id, progress)
        done = f"rating {progress.offer} submitted"
        if not self._post_notes or progress.note is not None:
            return DeliveryResult(DeliveryStatus.DELIVERED, done)
        return self._note(signal, conversation, progress, done)

    def _offer(self, signal: Signal, conversation: int) -> str | DeliveryResult:
        """Step 1: offer a rating; the rating id, or why not."""
        chosen = self._agent_and_user(signal)
        if isinstance(chosen, DeliveryResult):
            return chosen
        agent_id, user_id = chosen
        found: list[str] = []

        def read_offer(body: bytes) -> DeliveryResult:
            offer_id = _data_field(body, "id")
            if offer_id is None:
                # The offer may exist, but without its id it cannot be submitted; offering
                # again would leave it orphaned in Dixa's survey metrics.
                return permanent(
                    "Dixa answered 2xx without data.id, so the rating cannot be submitted: "
                    f"{truncate(body.decode('utf-8', 'replace'), 120)}"
                )
            found.append(offer_id)
            return DeliveryResult.delivered()

        result = self._post(
            self.url_for(conversation, "ratings", "offer"),
            self.offer_body(signal, agent_id, user_id),
            read_offer,
        )
        if found:
            return found[0]
        return _step("rating offer", result)

    def _submit(
        self, signal: Signal, conversation: int, progress: DixaProgress
    ) -> DeliveryResult | None:
        """Step 2: submit the result for the stored offer; None when done."""
        assert progress.offer is not None
        # The id comes from Dixa, and is escaped all the same: it goes into a path.
        rating = path_segment(progress.offer)
        result = self._post(
            self.url_for(conversation, "ratings", rating, "submit"), self.submit_body(signal)
        )
        if result.status is DeliveryStatus.DELIVERED:
            return None
        if result.status is DeliveryStatus.NOT_FOUND:
            # The conversation answered the offer, so it is the offer Dixa no longer knows.
            # Retrying with it cannot succeed: forget it, so `brixo-otel outbox retry` offers anew.
            unknown, progress.offer = progress.offer, None
            self._save_quietly(signal.id, progress)
            return permanent(f"rating submit: Dixa does not know offer {unknown}: {result.reason}")
        return _step("rating submit", result)

    def _note(
        self, signal: Signal, conversation: int, progress: DixaProgress, done: str
    ) -> DeliveryResult:
        """Step 3: the internal note. Its failure never undoes or repeats the rating."""
        note_ids: list[str] = []

        def read_note(body: bytes) -> DeliveryResult:
            note_ids.append(_data_field(body, "id") or "posted")
            return DeliveryResult.delivered()

        result = self._post(self.url_for(conversation, "notes"), self.note_body(signal), read_note)
        if result.status is DeliveryStatus.DELIVERED:
            progress.note = note_ids[0] if note_ids else "posted"
            self._save_quietly(signal.id, progress)
            return DeliveryResult(DeliveryStatus.DELIVERED, f"{done}; internal note posted")
        if result.status in _NOT_DONE:
            # Retried later; the stored progress makes that attempt post only the note.
            return DeliveryResult(
                result.status, f"{done}; internal note: {result.reason}", result.retry_after
            )
        # Refused for good (or the key may not write notes): keep the rating, report the note.
        self._warn(
            "note",
            "brixo_otel: %s: the rating was submitted but the internal note was refused: %s",
            redact(result, self._api_key).reason,
        )
        return DeliveryResult(
            DeliveryStatus.DELIVERED, f"{done}; internal note not posted: {result.reason}"
        )

    def _agent_and_user(self, signal: Signal) -> tuple[str, str] | DeliveryResult:
        agent_id, user_id = self._agent_id, self._user_id
        if self._ids is not None:
            try:
                given = self._ids(signal)
            except Exception as exc:
                self._warn(
                    "ids",
                    "brixo_otel: %s: the ids callable raised %s; the signal will be retried",
                    type(exc).__name__,
                )
                return DeliveryResult(
                    DeliveryStatus.RETRY, f"ids callable raised {truncate(repr(exc), 200)}"
                )
            if (
                not isinstance(given, tuple)
                or len(given) != 2
                or not all(item is None or isinstance(item, str) for item in given)
            ):
                return permanent(
                    f"ids callable must return (agent_id, user_id) strings or None, got {given!r}"
                )
            agent_id = given[0] or agent_id
            user_id = given[1] or user_id
        for value, setting in ((agent_id, "agent_id"), (user_id, "user_id")):
            if not value:
                return permanent(
                    f"a Dixa rating offer needs the {setting.replace('_id', '')}'s id: pass "
                    f"DixaExporter({setting}=...) or return it from ids=..."
                )
        assert agent_id is not None and user_id is not None
        return agent_id, user_id

    def _link_for(self, signal: Signal) -> str | None:
        if self._trace_url is None:
            return None
        try:
            link = self._trace_url(signal)
        except Exception as exc:
            self._warn(
                "trace_url",
                "brixo_otel: %s: trace_url raised %s; the note goes without a link",
                type(exc).__name__,
            )
            return None
        return link if isinstance(link, str) and link else None

    def _post(
        self,
        url: httpx.URL,
        body: dict[str, Any],
        on_success: Callable[[bytes], DeliveryResult] | None = None,
    ) -> DeliveryResult:
        return self._api.call(
            lambda: self._api.request(
                "POST", url, headers=self._headers, content=encode_json(body)
            ),
            destination=self.name,
            on_success=on_success,
        )

    def _save(self, signal_id: str, progress: DixaProgress) -> None:
        self.state.set(_PROGRESS + signal_id, progress.to_json())

    def _save_quietly(self, signal_id: str, progress: DixaProgress) -> None:
        """Save progress whose loss costs at most a repeated call that Dixa takes again."""
        try:
            self._save(signal_id, progress)
        except Exception as exc:
            self._warn(
                "state",
                "brixo_otel: %s could not record its progress on signal %s (%s)",
                signal_id,
                type(exc).__name__,
            )


def _optional_id(value: object, setting: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{setting} must be a string (a Dixa user id), got {type(value).__name__}")
    if not value.strip():
        raise ConfigurationError(f"{setting} is empty; give a Dixa user id or leave it out")
    return value.strip()


def _step(step: str, result: DeliveryResult) -> DeliveryResult:
    """`result`, its reason saying which of the calls answered so."""
    return dataclasses.replace(result, reason=f"{step}: {result.reason}")


def _data_field(body: bytes, key: str) -> str | None:
    """`data.<key>` of a Dixa answer, if it is a non-empty string."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    data = document.get("data") if isinstance(document, dict) else None
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, str) and value else None


def _describe(signal: Signal) -> str:
    if signal.value == THUMBS_UP:
        return "thumbs up"
    if signal.value == THUMBS_DOWN:
        return "thumbs down"
    top = 5 if signal.value == CSAT else 10
    return f"{signal.value.upper()} {signal.score}/{top}"
