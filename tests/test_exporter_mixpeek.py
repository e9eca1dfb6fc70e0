"""The Mixpeek exporter against a contract server written from Mixpeek's spec, through the real
client, outbox and worker where delivery behaviour matters; and fan-out to several destinations."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import brixo_otel
from brixo_otel._cli import main as cli
from brixo_otel._delivery._outbox import Outbox
from brixo_otel._errors import ConfigurationError
from brixo_otel._signal import Signal, retraction, validate
from brixo_otel.exporters import DeliveryStatus, InMemorySignalExporter
from brixo_otel.exporters._dixa import DixaExporter
from brixo_otel.exporters._mixpeek import MixpeekExporter, MixpeekReceipt
from tests._contract.dixa import DixaContractServer
from tests._contract.mixpeek import MixpeekContractServer
from tests._delivery import connect, dead_reasons

pytestmark = pytest.mark.timeout(30)

KEY = "sk_live_mixpeek_0123456789abcdef"
NAMESPACE = "production"
OCCURRED = "2026-02-03T14:22:10Z"


@pytest.fixture
def server() -> Iterator[MixpeekContractServer]:
    contract = MixpeekContractServer(api_key=KEY)
    try:
        yield contract
    finally:
        contract.close()


@pytest.fixture
def exporter(server: MixpeekContractServer) -> Iterator[MixpeekExporter]:
    """A standalone exporter (in-memory state), for answers that need no worker."""
    mixpeek = MixpeekExporter(KEY, NAMESPACE, server.url)
    yield mixpeek
    mixpeek.shutdown()


def thumbs(value: str = "thumbs_up", **kwargs: Any) -> Signal:
    kwargs.setdefault("message_id", "msg_abc123")
    kwargs.setdefault("conversation_id", "ses_abc123")
    return validate(value, occurred_at=OCCURRED, **kwargs)


# --- success ------------------------------------------------------------------------------------


def test_feedback_reaches_mixpeek_exactly_as_specified(
    server: MixpeekContractServer, outbox: Path
) -> None:
    mixpeek = MixpeekExporter(KEY, NAMESPACE, server.url)
    connect([mixpeek], outbox)
    up = brixo_otel.feedback(
        "thumbs_up",
        message_id="msg_abc123",
        conversation_id="ses/42 ü?",
        user_message="This was very helpful!",
        occurred_at=OCCURRED,
    )
    down = brixo_otel.feedback("thumbs_down", message_id="msg_2", conversation_id="ses_9")
    assert brixo_otel.flush(timeout=10)

    # sent concurrently, so in either order
    by_signal = {r.headers["idempotency-key"]: r for r in server.requests()}
    first, second = by_signal[up.id], by_signal[down.id]
    assert first.path == "/v1/agents/sessions/ses%2F42%20%C3%BC%3F/feedback"
    assert first.headers["authorization"] == f"Bearer {KEY}"
    assert first.headers["x-namespace"] == NAMESPACE
    assert first.headers["content-type"] == "application/json"
    assert first.headers["idempotency-key"] == up.id
    assert first.headers["user-agent"].startswith(f"brixo-otel/{brixo_otel.__version__}")
    assert first.json() == {
        "message_id": "msg_abc123",
        "rating": "positive",
        "feedback_text": "This was very helpful!",
    }
    assert second.json() == {"message_id": "msg_2", "rating": "negative"}  # no text: omitted
    assert {(f.session_id, f.message_id, f.rating) for f in server.feedback()} == {
        ("ses/42 ü?", "msg_abc123", "positive"),
        ("ses_9", "msg_2", "negative"),
    }

    receipt = mixpeek.last_receipt(up.id)
    assert receipt is not None
    assert (receipt.session_id, receipt.message_id, receipt.rating, receipt.stored) == (
        "ses/42 ü?",
        "msg_abc123",
        "positive",
        True,
    )
    assert mixpeek.last_receipt(down.id) is not None
    brixo_otel.shutdown()
    # durable: the receipt is in the outbox, for the next process to read
    store = Outbox(str(outbox))
    try:
        kept = store.state_get("mixpeek", f"receipt:{up.id}")
    finally:
        store.close()
    assert kept is not None and MixpeekReceipt.parse(json.loads(kept)) == receipt


def test_the_session_comes_from_the_rated_span(server: MixpeekContractServer, outbox: Path) -> None:
    connect([MixpeekExporter(KEY, NAMESPACE, server.url)], outbox)

    @brixo_otel.message(message_id="msg_7", conversation_id="ses_from_trace")
    def answer() -> str:
        return "hi"

    answer()
    brixo_otel.feedback("thumbs_down", message_id="msg_7")  # no conversation_id given
    assert brixo_otel.flush(timeout=10)
    [stored] = server.feedback()
    assert (stored.session_id, stored.message_id, stored.rating) == (
        "ses_from_trace",
        "msg_7",
        "negative",
    )


def test_the_receipt_is_the_delivery_note_and_a_second_attempt_sends_nothing(
    server: MixpeekContractServer, exporter: MixpeekExporter
) -> None:
    signal = thumbs()
    result = exporter.export(signal)
    assert result.status is DeliveryStatus.DELIVERED
    assert re.fullmatch(r"stored=true recorded_at=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", result.reason)
    # As after a crash between Mixpeek's answer and the outbox commit: no second filing.
    again = exporter.export(signal)
    assert again.status is DeliveryStatus.DELIVERED and again.reason.startswith("delivered earlier")
    assert again.reason == f"delivered earlier; {result.reason}"  # the kept receipt's note
    assert len(server.requests()) == 1 and len(server.feedback()) == 1


def test_a_2xx_with_an_unreadable_body_is_still_delivered(
    server: MixpeekContractServer, exporter: MixpeekExporter
) -> None:
    server.fail_next(1, 200, body=b"<html>OK</html>")
    signal = thumbs()
    result = exporter.export(signal)
    assert result.status is DeliveryStatus.DELIVERED
    assert "answer not understood" in result.reason
    assert exporter.last_receipt(signal.id) is None
    again = exporter.export(signal)
    assert again.status is DeliveryStatus.DELIVERED
    assert again.reason == "delivered earlier; answer not understood"
    assert len(server.requests()) == 1  # never filed twice


class _UnwritableState:
    """An outbox whose state cannot be written (a full disk): reads find nothing."""

    def get(self, key: str) -> str | None:
        return None

    def set(self, key: str, value: str) -> None:
        raise OSError("disk full")

    def delete(self, key: str) -> None:
        pass


def test_a_receipt_that_cannot_be_kept_still_counts_as_delivered(
    server: MixpeekContractServer, exporter: MixpeekExporter, caplog: pytest.LogCaptureFixture
) -> None:
    exporter.bind_state(_UnwritableState())
    signal = thumbs()
    result = exporter.export(signal)
    assert result.status is DeliveryStatus.DELIVERED  # Mixpeek has it: a retry would file twice
    assert result.reason.startswith("stored=true")
    assert len(server.feedback()) == 1
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"brixo_otel: mixpeek delivered signal {signal.id} but could not keep its receipt (OSError)"
    ]


def test_what_mixpeek_accepts() -> None:
    mixpeek = MixpeekExporter(KEY, NAMESPACE)
    try:
        assert mixpeek.accepts(thumbs("thumbs_up"))
        assert mixpeek.accepts(thumbs("thumbs_down"))
        assert not mixpeek.accepts(thumbs(conversation_id=None))  # no session to file it under
        assert not mixpeek.accepts(validate("thumbs_up", conversation_id="ses"))
        assert not mixpeek.accepts(thumbs("csat", score=4))
        assert not mixpeek.accepts(thumbs("nps", score=9))
        assert not mixpeek.accepts(retraction(message_id="m", conversation_id="ses"))
    finally:
        mixpeek.shutdown()


def test_what_mixpeek_cannot_take_is_skipped_not_refused(
    server: MixpeekContractServer, outbox: Path
) -> None:
    client = connect([MixpeekExporter(KEY, NAMESPACE, server.url)], outbox)
    brixo_otel.feedback("csat", score=4, message_id="m", conversation_id="ses")
    brixo_otel.feedback("thumbs_up", message_id="m")  # no conversation known: no session
    assert brixo_otel.flush(timeout=5)
    assert server.requests() == []
    assert client._outbox.stats()["mixpeek"]["skipped"] == 2


# --- errors -------------------------------------------------------------------------------------


class _Misbehaving(MixpeekExporter):
    """Sends what the spec forbids, to prove the server's detail reaches the dead letter."""

    def __init__(self, url: str, fault: str) -> None:
        super().__init__(KEY, NAMESPACE, url)
        self.fault = fault

    def headers_for(self, signal: Signal) -> dict[str, str]:
        headers = super().headers_for(signal)
        if self.fault == "no-namespace":
            del headers["X-Namespace"]
        return headers

    def body_for(self, signal: Signal) -> dict[str, Any]:
        body = super().body_for(signal)
        if self.fault == "bad-rating":
            body["rating"] = "thumbs_up"
        elif self.fault == "no-message-id":
            del body["message_id"]
        return body


@pytest.mark.parametrize(
    ("fault", "detail"),
    [
        ("no-namespace", "header.x-namespace: Field required"),
        ("bad-rating", "body.rating: Input should be 'positive' or 'negative'"),
        ("no-message-id", "body.message_id: Field required"),
    ],
)
def test_validation_errors_are_dead_lettered_with_the_detail(
    server: MixpeekContractServer, outbox: Path, fault: str, detail: str
) -> None:
    errors: list[str] = []
    connect([_Misbehaving(server.url, fault)], outbox, errors)
    brixo_otel.feedback("thumbs_up", message_id="m", conversation_id="ses")
    assert brixo_otel.flush(timeout=10)
    assert [r.status for r in server.requests()] == [422]  # never retried
    assert server.feedback() == []
    assert errors == [f"HTTP 422: {detail}"]
    assert dead_reasons(outbox) == [f"HTTP 422: {detail}"]


def test_a_refused_key_pauses_delivery_and_is_never_shown(
    server: MixpeekContractServer, outbox: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "sk_live_wrong_9876543210"
    connect([MixpeekExporter(wrong, NAMESPACE, server.url)], outbox)
    brixo_otel.feedback("thumbs_up", message_id="m", conversation_id="ses")
    assert not brixo_otel.flush(timeout=0.5)  # kept, not dropped
    assert [r.status for r in server.requests()] == [401]
    assert any("refused the API key" in r.getMessage() for r in caplog.records)
    brixo_otel.shutdown()
    for record in caplog.records:
        assert wrong not in record.getMessage() and KEY not in record.getMessage()
    store = Outbox(str(outbox))
    try:
        assert store.stats()["mixpeek"]["pending"] == 1
    finally:
        store.close()


def test_a_key_echoed_in_an_error_never_reaches_the_reason(
    server: MixpeekContractServer, exporter: MixpeekExporter
) -> None:
    server.fail_next(1, 401, body={"detail": f"invalid token Bearer {KEY}"})
    server.fail_next(1, 400, body={"detail": f"bad key {KEY}"})
    first, second = exporter.export(thumbs()), exporter.export(thumbs())
    assert first.status is DeliveryStatus.UNAUTHORIZED
    assert second.status is DeliveryStatus.PERMANENT
    for result in (first, second):
        assert KEY not in result.reason and "[redacted]" in result.reason
    assert KEY not in repr(exporter)


def test_throttling_and_server_errors_are_retried_then_delivered(
    server: MixpeekContractServer, outbox: Path
) -> None:
    connect([MixpeekExporter(KEY, NAMESPACE, server.url)], outbox)
    server.fail_next(1, 429, retry_after="0.3")
    server.fail_next(1, 502)
    server.fail_next(1, 500)
    brixo_otel.feedback("thumbs_up", message_id="m", conversation_id="ses")
    assert brixo_otel.flush(timeout=10)
    requests = server.requests()
    assert [r.status for r in requests] == [429, 502, 500, 200]
    assert requests[1].received_at - requests[0].received_at >= 0.28  # Retry-After honoured
    assert len({r.headers["idempotency-key"] for r in requests}) == 1
    assert len(server.feedback()) == 1


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"base_url": "http://api.mixpeek.example"}, "plain http"),
        ({"base_url": "https://user:pw@api.mixpeek.com"}, "credentials"),
        ({"base_url": "https://api.mixpeek.com/?x=1"}, "query or fragment"),
        ({"namespace": "  "}, "namespace is empty"),
        ({"api_key": KEY + "\n tail"}, "api_key contains whitespace"),
    ],
)
def test_bad_configuration_is_refused_at_once(kwargs: dict[str, str], fragment: str) -> None:
    arguments: dict[str, Any] = {"api_key": KEY, "namespace": NAMESPACE, **kwargs}
    with pytest.raises(ConfigurationError, match=fragment) as raised:
        MixpeekExporter(**arguments)
    assert KEY not in str(raised.value)


# --- fan-out --------------------------------------------------------------------------------------


def test_fan_out_with_mixpeek_down(
    server: MixpeekContractServer, outbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    memory = InMemorySignalExporter()
    dixa_server = DixaContractServer()
    try:
        dixa = DixaExporter(
            dixa_server.api_key, dixa_server.url, agent_id="agent-1", user_id="user-1"
        )
        connect([memory, MixpeekExporter(KEY, NAMESPACE, server.url), dixa], outbox)
        server.fail_always(503)
        on_message = brixo_otel.feedback("thumbs_up", message_id="m-1", conversation_id="4711")
        on_conversation = brixo_otel.feedback("csat", score=5, conversation_id="4711")

        dixa_server.wait_for(lambda: len(dixa_server.results(4711)) == 1)
        server.wait_for(lambda: len(server.requests()) >= 2)  # Mixpeek tried and is retrying
        assert {s.id for s in memory.signals()} == {on_message.id, on_conversation.id}
        assert not brixo_otel.flush(timeout=0.2)  # Mixpeek's row is still pending
        assert server.feedback() == []

        assert cli(["outbox", "status", "--path", str(outbox)]) == 0
        table = capsys.readouterr().out.splitlines()
        header = table[0].split()[1:]
        rows = {
            line.split()[0]: dict(zip(header, map(int, line.split()[1:]), strict=True))
            for line in table[1:-2]
        }
        assert rows["memory"]["delivered"] == 2 and rows["dixa"]["delivered"] == 1
        mixpeek = rows["mixpeek"]
        assert mixpeek["pending"] + mixpeek["in_flight"] == 1 and mixpeek["delivered"] == 0
        assert mixpeek["dead"] == 0  # retrying, not dead
        assert mixpeek["skipped"] == 1  # a csat on a conversation is not Mixpeek's

        server.clear_faults()  # Mixpeek recovers: the kept row goes out
        assert brixo_otel.flush(timeout=10)
        assert [f.message_id for f in server.feedback()] == ["m-1"]
        brixo_otel.shutdown()
    finally:
        dixa_server.close()
