"""The Dixa exporter against a contract server written from Dixa's spec: the two-step rating
(offer, then submit) and the optional internal note, through the real client, outbox and worker,
including a process killed between the two steps."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import brixo_otel
from brixo_otel._cli import main as cli
from brixo_otel._errors import ConfigurationError
from brixo_otel._signal import Signal, retraction, validate
from brixo_otel.exporters import DeliveryStatus
from brixo_otel.exporters._dixa import DixaExporter, DixaProgress, conversation_number
from tests._contract.dixa import DixaContractServer
from tests._delivery import connect, dead_reasons
from tests._services import wait_for

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parent.parent
CHILD = str(Path(__file__).parent / "_scripts" / "dixa_crash_child.py")
KEY = "dixa-live-key-0123456789abcdef"
AGENT = "eeb3bbe5-0355-4ac1-8af5-20d42a3db24b"
USER = "b0323b42-c428-4afa-970e-20bf5bdeeec4"
OCCURRED = "2024-03-11T16:39:30Z"


@pytest.fixture
def server() -> Iterator[DixaContractServer]:
    contract = DixaContractServer(api_key=KEY)
    try:
        yield contract
    finally:
        contract.close()


def dixa(server: DixaContractServer, **kwargs: Any) -> DixaExporter:
    kwargs.setdefault("agent_id", AGENT)
    kwargs.setdefault("user_id", USER)
    return DixaExporter(KEY, server.url, **kwargs)


@pytest.fixture
def exporter(server: DixaContractServer) -> Iterator[DixaExporter]:
    """A standalone exporter (in-memory state), for answers that need no worker."""
    standalone = dixa(server)
    yield standalone
    standalone.shutdown()


def rating(value: str = "csat", conversation_id: str = "9456", **kwargs: Any) -> Signal:
    if value == "csat":
        kwargs.setdefault("score", 4)
    return validate(value, conversation_id=conversation_id, occurred_at=OCCURRED, **kwargs)


# --- success ------------------------------------------------------------------------------------


def test_a_csat_reaches_dixa_exactly_as_specified(server: DixaContractServer, outbox: Path) -> None:
    exporter = dixa(server)
    connect([exporter], outbox)
    sent = brixo_otel.feedback(
        "csat", score=4, conversation_id="9456", user_message="Best!", occurred_at=OCCURRED
    )
    assert brixo_otel.flush(timeout=10)

    offer_request, submit_request = server.requests()
    [offer] = server.offers(9456)
    assert offer_request.path == "/beta/conversations/9456/ratings/offer"
    assert offer_request.headers["authorization"] == KEY  # the raw key: no scheme
    assert offer_request.headers["content-type"] == "application/json"
    assert offer_request.json() == {
        "userId": USER,
        "agentId": AGENT,
        "ratingType": "Csat",
        "offeredAt": "2024-03-11T16:39:30.000Z",
    }
    assert submit_request.path == f"/beta/conversations/9456/ratings/{offer.id}/submit"
    assert submit_request.headers["authorization"] == KEY
    assert submit_request.json() == {
        "ratingResult": {"_type": "Csat", "value": 4},
        "submittedAt": "2024-03-11T16:39:30.000Z",
        "comment": "Best!",
    }
    assert [r.status for r in server.requests()] == [200, 200]
    assert server.results(9456) == [
        {
            "ratingId": offer.id,
            "ratingResult": {"_type": "Csat", "value": 4},
            "comment": "Best!",
            "submittedAt": "2024-03-11T16:39:30.000Z",
        }
    ]
    assert exporter.rating_id(sent.id) == offer.id  # kept in the outbox's state
    assert server.notes() == []  # post_notes is off by default


@pytest.mark.parametrize(
    ("value", "score", "rating_type", "sent_value"),
    [
        ("thumbs_up", None, "ThumbsUpOrDown", 1),
        ("thumbs_down", None, "ThumbsUpOrDown", 0),
        ("csat", 1, "Csat", 1),
        ("nps", 0, "Nps", 0),
        ("nps", 10, "Nps", 10),
    ],
)
def test_each_kind_of_rating_maps_to_its_dixa_type(
    server: DixaContractServer,
    exporter: DixaExporter,
    value: str,
    score: int | None,
    rating_type: str,
    sent_value: int,
) -> None:
    result = exporter.export(rating(value, score=score))
    assert result.status is DeliveryStatus.DELIVERED, result.reason
    [offer] = server.offers()
    assert offer.rating_type == rating_type
    assert offer.results == [
        {
            "ratingId": offer.id,
            "ratingResult": {"_type": rating_type, "value": sent_value},
            "submittedAt": "2024-03-11T16:39:30.000Z",
        }
    ]


def test_what_dixa_accepts() -> None:
    exporter = DixaExporter(KEY, agent_id=AGENT, user_id=USER)
    try:
        for value in ("thumbs_up", "thumbs_down"):
            assert exporter.accepts(validate(value, conversation_id="1"))
        assert exporter.accepts(validate("csat", score=3, conversation_id="1"))
        assert exporter.accepts(validate("nps", score=3, conversation_id="1"))
        # ratings are per conversation: a message's rating is not taken, even with its conversation
        assert not exporter.accepts(validate("thumbs_up", message_id="m", conversation_id="1"))
        assert not exporter.accepts(retraction(conversation_id="1"))  # Dixa cannot delete one
        # not an int64, yet accepted: it is dead-lettered with the reason, for the user to see
        assert exporter.accepts(validate("thumbs_up", conversation_id="conv_1"))
    finally:
        exporter.shutdown()


def test_notes_carry_the_comment_and_the_trace_link_once(server: DixaContractServer) -> None:
    exporter = dixa(
        server, post_notes=True, trace_url=lambda s: f"https://tempo.example/trace/{s.id}"
    )
    try:
        signal = rating("thumbs_down", user_message="It ignored my question")
        result = exporter.export(signal)
        assert result.status is DeliveryStatus.DELIVERED
        assert result.reason.endswith("submitted; internal note posted")
        [note] = server.notes(9456)
        assert note.message == (
            "Customer feedback: thumbs down\n"
            "Comment: It ignored my question\n"
            f"Trace: https://tempo.example/trace/{signal.id}"
        )
        assert note.agent_id is None  # written by the integration, not by the rated agent
        assert exporter.progress(signal.id) == DixaProgress(
            offer=server.offers()[0].id, submitted=True, note=note.id
        )
        # a repeated attempt (the outbox never heard of the success) does nothing again
        assert exporter.export(signal).status is DeliveryStatus.DELIVERED
        assert len(server.requests()) == 3
    finally:
        exporter.shutdown()


def test_a_failing_note_is_retried_alone_and_never_loses_the_rating(
    server: DixaContractServer, outbox: Path
) -> None:
    connect([dixa(server, post_notes=True)], outbox)
    server.fail_next(2, 503, route="note")
    brixo_otel.feedback("nps", score=9, conversation_id="77")
    assert brixo_otel.flush(timeout=10)
    assert [(r.route, r.status) for r in server.requests()] == [
        ("offer", 200),
        ("submit", 200),
        ("note", 503),
        ("note", 503),
        ("note", 201),
    ]
    assert server.offer_count(77) == 1 and len(server.results(77)) == 1
    assert server.notes(77)[0].message == "Customer feedback: NPS 9/10"


def test_a_refused_note_keeps_the_rating_delivered(
    server: DixaContractServer, caplog: pytest.LogCaptureFixture
) -> None:
    exporter = dixa(server, post_notes=True)
    try:
        server.fail_next(1, 403, route="note")
        result = exporter.export(rating())
        assert result.status is DeliveryStatus.DELIVERED  # the key may not write notes
        assert "internal note not posted: HTTP 403" in result.reason
        assert len(server.results()) == 1 and server.notes() == []
        assert any("internal note was refused" in r.getMessage() for r in caplog.records)
    finally:
        exporter.shutdown()


def test_ids_come_from_the_callable_first_then_the_settings(server: DixaContractServer) -> None:
    seen: list[str] = []

    def ids(signal: Signal) -> tuple[str | None, str | None]:
        seen.append(signal.id)
        return ("agent-for-" + (signal.conversation_id or ""), None)

    exporter = dixa(server, ids=ids)
    try:
        signal = rating()
        assert exporter.export(signal).status is DeliveryStatus.DELIVERED
        [offer] = server.offers()
        assert (offer.agent_id, offer.user_id) == ("agent-for-9456", USER)
        assert seen == [signal.id]
    finally:
        exporter.shutdown()


def test_app_callbacks_that_raise_never_lose_or_garble_a_rating(
    server: DixaContractServer, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(signal: Signal) -> Any:
        raise LookupError("no such conversation in our store")

    exporter = dixa(server, ids=broken)
    linked = dixa(server, post_notes=True, trace_url=broken, name="dixa-notes")
    try:
        result = exporter.export(rating())
        assert result.status is DeliveryStatus.RETRY  # the lookup may work next time
        assert "ids callable raised LookupError" in result.reason
        assert server.requests() == []
        assert linked.export(rating()).status is DeliveryStatus.DELIVERED
        assert server.notes()[0].message == "Customer feedback: CSAT 4/5"  # no link, still a note
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings == [
            "brixo_otel: dixa: the ids callable raised LookupError; the signal will be retried",
            "brixo_otel: dixa-notes: trace_url raised LookupError; the note goes without a link",
        ]
    finally:
        exporter.shutdown()
        linked.shutdown()


def test_an_offer_answered_without_its_id_is_not_offered_again(
    server: DixaContractServer, exporter: DixaExporter
) -> None:
    server.fail_next(1, 200, body={"data": {"userId": USER}}, route="offer")
    signal = rating()
    result = exporter.export(signal)
    assert result.status is DeliveryStatus.PERMANENT
    assert result.reason.startswith("rating offer: Dixa answered 2xx without data.id")
    assert exporter.rating_id(signal.id) is None


# --- a crash between the offer and the submit ----------------------------------------------------


def test_a_process_killed_between_offer_and_submit_completes_the_rating_once(
    server: DixaContractServer, outbox: Path
) -> None:
    server.hang_next(1, 20, route="submit")  # the child's submit never gets an answer
    child = subprocess.Popen(
        [sys.executable, CHILD, server.url, KEY, str(outbox), "31337"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()  # printed once the offer id is in durable state
        # Kill it only once its submit is on the wire: the crash falls between the two steps.
        wait_for(lambda: server.requests(route="submit") or None, 20, "the submit", interval=0.01)
        child.send_signal(signal.SIGKILL)
        _, stderr = child.communicate(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate(timeout=20)
    assert child.returncode == -9, stderr
    signal_id, offer_id = line.split()
    assert server.offer_count(31337) == 1 and server.results(31337) == []

    exporter = dixa(server)
    connect([exporter], outbox)  # the next process on the same outbox
    assert brixo_otel.flush(timeout=10)
    assert server.offer_count(31337) == 1  # no second offer: the stored one was submitted
    received_at = server.results(31337)[0]["submittedAt"]
    assert received_at == server.offers(31337)[0].offered_at  # the click, fixed in the child
    assert server.results(31337) == [
        {
            "ratingId": offer_id,
            "ratingResult": {"_type": "ThumbsUpOrDown", "value": 0},
            "comment": "slow",
            "submittedAt": received_at,
        }
    ]
    assert [r.route for r in server.requests()] == ["offer", "submit", "submit"]
    assert exporter.progress(signal_id) == DixaProgress(offer=offer_id, submitted=True)


def test_a_failed_submit_is_retried_without_a_second_offer(
    server: DixaContractServer, outbox: Path
) -> None:
    connect([dixa(server)], outbox)
    server.fail_next(1, 429, retry_after="0.2", route="offer")
    server.fail_next(1, 500, route="offer")
    server.fail_next(1, 503, route="submit")
    server.fail_next(1, 502, route="submit")
    brixo_otel.feedback("thumbs_up", conversation_id="5")
    assert brixo_otel.flush(timeout=10)
    assert [(r.route, r.status) for r in server.requests()] == [
        ("offer", 429),
        ("offer", 500),
        ("offer", 200),
        ("submit", 503),
        ("submit", 502),
        ("submit", 200),
    ]
    assert server.offer_count(5) == 1 and len(server.results(5)) == 1


# --- errors -------------------------------------------------------------------------------------


class _Misbehaving(DixaExporter):
    """Sends what the spec forbids, to prove the server's detail reaches the dead letter."""

    def __init__(self, url: str, fault: str) -> None:
        super().__init__(KEY, url, agent_id=AGENT, user_id=USER)
        self.fault = fault

    def offer_body(self, signal: Signal, agent_id: str, user_id: str) -> dict[str, Any]:
        body = super().offer_body(signal, agent_id, user_id)
        if self.fault == "bad-rating-type":
            body["ratingType"] = "Stars"
        return body

    def submit_body(self, signal: Signal) -> dict[str, Any]:
        body = super().submit_body(signal)
        if self.fault == "out-of-range":
            body["ratingResult"]["value"] = 6
        return body


@pytest.mark.parametrize(
    ("fault", "detail", "routes"),
    [
        (
            "bad-rating-type",
            "rating offer: HTTP 400: Invalid value for: body (ratingType must be one of Csat, "
            "Nps, ThumbsUpOrDown, got 'Stars')",
            ["offer"],
        ),
        (
            "out-of-range",
            "rating submit: HTTP 400: Invalid value for: body (ratingResult.value for Csat must "
            "be an integer from 1 to 5, got 6)",
            ["offer", "submit"],
        ),
    ],
)
def test_dixa_validation_errors_are_dead_lettered_with_the_detail(
    server: DixaContractServer, outbox: Path, fault: str, detail: str, routes: list[str]
) -> None:
    errors: list[str] = []
    connect([_Misbehaving(server.url, fault)], outbox, errors)
    brixo_otel.feedback("csat", score=5, conversation_id="9456")
    assert brixo_otel.flush(timeout=10)
    assert [r.route for r in server.requests()] == routes  # never retried
    assert server.results() == []
    assert errors == [detail]
    assert dead_reasons(outbox) == [detail]


def test_an_unknown_rating_id_is_dead_lettered_and_forgotten(
    server: DixaContractServer, outbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    errors: list[str] = []
    exporter = dixa(server)
    connect([exporter], outbox, errors)
    server.keep_offers = False  # the offer's id is unknown by the time it is submitted
    signal = brixo_otel.feedback("thumbs_up", conversation_id="12")
    assert brixo_otel.flush(timeout=10)
    [offer_request, submit_request] = server.requests()
    assert (offer_request.status, submit_request.status) == (200, 404)  # not retried
    lost = submit_request.path.split("/")[-2]
    assert errors == [
        f"rating submit: Dixa does not know offer {lost}: HTTP 404: "
        "An entity in this request could not be found"
    ]
    assert exporter.rating_id(signal.id) is None  # forgotten, so a requeue offers anew

    server.keep_offers = True
    assert cli(["outbox", "retry", "--path", str(outbox)]) == 0
    assert "1 dead letter(s) back to pending" in capsys.readouterr().out
    connect([dixa(server)], outbox)
    assert brixo_otel.flush(timeout=10)
    assert server.offer_count(12) == 1 and len(server.results(12)) == 1


@pytest.mark.parametrize(
    "conversation_id", ["conv_42", "9223372036854775808", "-5", "+5", " 5", "\uff11\uff12", "4.0"]
)
def test_a_conversation_id_that_is_not_an_int64_is_dead_lettered_unsent(
    server: DixaContractServer, exporter: DixaExporter, conversation_id: str
) -> None:
    result = exporter.export(validate("thumbs_up", conversation_id=conversation_id))
    assert result.status is DeliveryStatus.PERMANENT
    assert "is not a Dixa conversation id" in result.reason
    assert "pass that as conversation_id" in result.reason
    assert server.requests() == []


def test_the_largest_int64_is_a_conversation_id() -> None:
    assert conversation_number("9223372036854775807") == 2**63 - 1
    assert conversation_number("007") == 7
    assert conversation_number("9223372036854775808") is None


def test_a_non_int64_conversation_reaches_the_dead_letters(
    server: DixaContractServer, outbox: Path
) -> None:
    errors: list[str] = []
    connect([dixa(server)], outbox, errors)
    brixo_otel.feedback("thumbs_up", conversation_id="conv_42")
    assert brixo_otel.flush(timeout=10)
    assert len(errors) == 1 and "'conv_42' is not a Dixa conversation id" in errors[0]
    assert dead_reasons(outbox) == errors


@pytest.mark.parametrize(("missing", "setting"), [("agent_id", "agent_id"), ("user_id", "user_id")])
def test_a_missing_agent_or_user_names_the_setting(
    server: DixaContractServer, missing: str, setting: str
) -> None:
    exporter = dixa(server, **{missing: None})
    try:
        result = exporter.export(rating())
        assert result.status is DeliveryStatus.PERMANENT
        assert f"DixaExporter({setting}=...)" in result.reason
        assert server.requests() == []
    finally:
        exporter.shutdown()


def test_a_key_dixa_refuses_pauses_delivery_and_is_never_shown(
    server: DixaContractServer, outbox: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "dixa-wrong-key-9876543210"
    connect([DixaExporter(wrong, server.url, agent_id=AGENT, user_id=USER)], outbox)
    brixo_otel.feedback("thumbs_up", conversation_id="1")
    assert not brixo_otel.flush(timeout=0.5)  # kept, not dropped
    assert [(r.route, r.status) for r in server.requests()] == [("offer", 401)]
    assert any("refused the API key" in r.getMessage() for r in caplog.records)
    brixo_otel.shutdown()
    for record in caplog.records:
        assert wrong not in record.getMessage() and KEY not in record.getMessage()


def test_a_key_dixa_echoes_in_an_error_never_reaches_the_reason(
    server: DixaContractServer, exporter: DixaExporter
) -> None:
    server.fail_next(1, 400, body={"message": f"bad key {KEY}"}, route="submit")
    result = exporter.export(rating())
    assert result.status is DeliveryStatus.PERMANENT
    assert KEY not in result.reason and "[redacted]" in result.reason
    assert KEY not in repr(exporter)


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"base_url": "http://dixa.example"}, ConfigurationError, "plain http"),
        ({"api_key": " "}, ConfigurationError, "api_key is empty"),
        ({"agent_id": ""}, ConfigurationError, "agent_id is empty"),
        ({"user_id": 42}, TypeError, "user_id must be a string"),
        ({"ids": "agent"}, TypeError, "ids must be a callable"),
    ],
)
def test_bad_configuration_is_refused_at_once(
    kwargs: dict[str, Any], error: type[Exception], fragment: str
) -> None:
    arguments = {"api_key": KEY, **kwargs}
    with pytest.raises(error, match=fragment):
        DixaExporter(**arguments)


# --- the contract server itself -----------------------------------------------------------------


def test_the_contract_server_holds_to_the_spec(server: DixaContractServer) -> None:
    """What the exporter never sends, the server must still refuse as the spec says."""
    with httpx.Client(base_url=server.url) as client:

        def post(path: str, body: Any, key: str = KEY) -> tuple[int, Any]:
            response = client.post(path, json=body, headers={"Authorization": key})
            return response.status_code, response.json()

        offer = {"userId": USER, "agentId": AGENT, "ratingType": "Nps"}
        assert post("/beta/conversations/1/ratings/offer", offer, f"Bearer {KEY}")[0] == 401
        assert post("/beta/conversations/abc/ratings/offer", offer) == (
            400,
            {"message": "Invalid value for: path parameter conversationId"},
        )
        assert post("/beta/conversations/9223372036854775808/ratings/offer", offer)[0] == 400
        assert post("/beta/conversations/1/ratings/offer", {**offer, "userId": None}) == (
            400,
            {"message": "Invalid value for: body (missing required field userId)"},
        )
        status, created = post("/beta/conversations/1/ratings/offer", offer)
        assert status == 200 and created["data"]["ratingType"] == "Nps"
        offer_id = created["data"]["id"]
        wrong_type = {"ratingResult": {"_type": "Csat", "value": 3}}
        assert post(f"/beta/conversations/1/ratings/{offer_id}/submit", wrong_type)[0] == 400
        assert post(f"/beta/conversations/2/ratings/{offer_id}/submit", wrong_type)[0] == 404
        note = {"message": "hi", "agentId": "not-a-uuid"}
        assert post("/beta/conversations/1/notes", note) == (
            400,
            {"message": "Invalid value for: body (agentId must be a UUID, got 'not-a-uuid')"},
        )
        assert post("/beta/conversations/1/notes", {"message": "hi"})[0] == 201
