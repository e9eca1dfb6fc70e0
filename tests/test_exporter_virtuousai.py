"""VirtuousAI: one reaction item per message, created, changed, retracted and read back, against
a contract server written from the spec, over real sockets (and a real crash)."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal as signals
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

import brixo_otel
from brixo_otel._delivery._outbox import Outbox
from brixo_otel._errors import ConfigurationError
from brixo_otel._signal import Signal, retraction, validate
from brixo_otel.exporters import DeliveryStatus
from brixo_otel.exporters._http import USER_AGENT
from brixo_otel.exporters._virtuousai import (
    VirtuousAIError,
    VirtuousAIExporter,
    client_feedback_id,
)
from tests._contract.virtuousai import VirtuousAIContractServer
from tests._delivery import configure_delivery

pytestmark = pytest.mark.timeout(60)

CHILD = str(Path(__file__).parent / "_scripts" / "virtuousai_crash_child.py")
MESSAGE = "8540d774-4863-4d2b-b788-4ecb19412e85"
THREAD = "51f72284-0555-48fe-a20a-4369ee94dc3e"
T0 = datetime(2026, 2, 3, 14, 22, 10, tzinfo=timezone.utc)
KEY = "reaction:" + MESSAGE


@pytest.fixture
def server() -> Iterator[VirtuousAIContractServer]:
    with VirtuousAIContractServer() as running:
        yield running


@pytest.fixture
def exporter(server: VirtuousAIContractServer) -> Iterator[VirtuousAIExporter]:
    made = VirtuousAIExporter(api_key="test-key", base_url=server.url)
    yield made
    made.shutdown()


def reaction(
    value: str = "thumbs_up",
    *,
    at: float = 0,
    message: str = MESSAGE,
    thread: str | None = THREAD,
    **kwargs: Any,
) -> Signal:
    return validate(
        value,
        message_id=message,
        conversation_id=thread,
        occurred_at=T0 + timedelta(seconds=at),
        **kwargs,
    )


def retract(*, at: float = 0, message: str = MESSAGE) -> Signal:
    return dataclasses.replace(
        retraction(message_id=message), occurred_at=T0 + timedelta(seconds=at)
    )


def calls(server: VirtuousAIContractServer) -> list[tuple[str, str, int | None]]:
    return [(r.method, r.path, r.status) for r in server.requests()]


def connect(
    server: VirtuousAIContractServer,
    outbox: Path,
    *,
    errors: list[tuple[str, str]] | None = None,
) -> VirtuousAIExporter:
    """A real client (outbox, worker, retries) whose only destination is VirtuousAI."""
    exporter = VirtuousAIExporter(api_key="test-key", base_url=server.url)
    configure_delivery(
        [exporter],
        outbox,
        None if errors is None else lambda s, d, reason: errors.append((s.id, reason)),
    )
    return exporter


# -- creating -----------------------------------------------------------------------------------


def test_a_reaction_is_created_exactly_as_the_spec_shows(
    server: VirtuousAIContractServer, tmp_path: Path
) -> None:
    exporter = connect(server, tmp_path / "o.db")
    sent = brixo_otel.feedback(
        "thumbs_down",
        message_id=MESSAGE,
        conversation_id=THREAD,
        user_message="It invented a citation.",
        reasons=["incorrect", "hallucination"],
    )
    assert brixo_otel.flush(timeout=10)

    [request] = server.requests()
    assert (request.method, request.path, request.status) == ("POST", "/api/v1/feedback", 201)
    assert request.headers["x-api-key"] == "test-key"
    assert "authorization" not in request.headers and "vai_token" not in request.headers
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == USER_AGENT
    assert request.json() == {
        "clientFeedbackId": str(
            uuid.uuid5(uuid.UUID("6f1d3f5e-7f43-5c4b-9a63-0e2b1c0a7d11"), sent.id)
        ),
        "kind": "message_reaction",
        "messageId": MESSAGE,
        "reaction": "thumbs_down",
        "threadId": THREAD,
        "sourceSurface": "chat_message",
        "comment": "It invented a citation.",
        "reasons": ["incorrect", "hallucination"],
    }
    [item] = server.items()
    assert item["clientFeedbackId"] == client_feedback_id(sent.id)
    assert (item["reaction"], item["tenantId"]) == ("thumbs_down", server.tenant_id)
    assert exporter.get_feedback(item["id"]) == item


def test_the_thread_id_comes_from_the_rated_span_when_the_app_omits_it(
    server: VirtuousAIContractServer, tmp_path: Path
) -> None:
    connect(server, tmp_path / "o.db")

    @brixo_otel.message(message_id=MESSAGE, conversation_id=THREAD)
    def answer() -> str:
        return "42"

    answer()
    brixo_otel.feedback("thumbs_up", message_id=MESSAGE)
    assert brixo_otel.flush(timeout=10)
    [request] = server.requests()
    assert request.json()["threadId"] == THREAD


def test_uuids_are_sent_in_canonical_form(
    server: VirtuousAIContractServer, exporter: VirtuousAIExporter
) -> None:
    signal = reaction(message=MESSAGE.upper(), thread="{" + THREAD.upper() + "}")
    assert exporter.export(signal).status is DeliveryStatus.DELIVERED
    [request] = server.requests()
    assert (request.json()["messageId"], request.json()["threadId"]) == (MESSAGE, THREAD)
    assert exporter.state.get(KEY) is not None  # one state key per message, whatever its spelling


def test_what_it_accepts(exporter: VirtuousAIExporter) -> None:
    assert exporter.accepts(reaction("thumbs_up"))
    assert exporter.accepts(reaction("thumbs_down"))
    assert exporter.accepts(retract())  # a retraction needs no threadId
    assert not exporter.accepts(reaction(thread=None))  # a reaction does
    assert not exporter.accepts(validate("thumbs_up", conversation_id=THREAD))
    assert not exporter.accepts(
        validate("csat", score=4, message_id=MESSAGE, conversation_id=THREAD)
    )
    assert not exporter.accepts(retraction(conversation_id=THREAD))


# -- refusing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        (
            {"message": "msg_1042"},
            "message_id 'msg_1042' is not a UUID, and VirtuousAI requires messageId",
        ),
        (
            {"thread": "conv-7"},
            "conversation_id 'conv-7' is not a UUID, and VirtuousAI requires threadId",
        ),
        (
            {"message": "x" * 500},
            "message_id 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…' (500 characters)",
        ),
        ({"thread": MESSAGE + "0"}, "is not a UUID, and VirtuousAI requires threadId"),
    ],
)
def test_ids_that_are_not_uuids_are_refused_before_sending(
    kwargs: dict[str, str],
    fragment: str,
    server: VirtuousAIContractServer,
    exporter: VirtuousAIExporter,
) -> None:
    result = exporter.export(reaction(**kwargs))
    assert result.status is DeliveryStatus.PERMANENT
    assert fragment in result.reason
    assert len(result.reason) < 250  # never the whole of a huge id
    assert server.requests() == []


def test_a_non_uuid_message_id_is_dead_lettered_through_the_client(
    server: VirtuousAIContractServer, tmp_path: Path
) -> None:
    errors: list[tuple[str, str]] = []
    connect(server, tmp_path / "o.db", errors=errors)
    sent = brixo_otel.feedback("thumbs_up", message_id="msg_1042", conversation_id=THREAD)
    assert brixo_otel.flush(timeout=10)
    [(signal_id, reason)] = errors
    assert signal_id == sent.id and "messageId" in reason
    assert server.requests() == []


class Tampering(VirtuousAIExporter):
    """Sends a create body changed by `tamper`: the spec's validation errors, seen through us."""

    def __init__(self, tamper: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tamper = tamper

    def body_for(self, signal: Signal, feedback_id: str) -> dict[str, Any]:
        body = super().body_for(signal, feedback_id)
        self.tamper(body)
        return body


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (
            lambda b: b.update(clientFeedbackId="retry-1"),
            "HTTP 422: body.clientFeedbackId: value is not a valid uuid",
        ),
        (
            lambda b: b.update(reaction="meh"),
            "HTTP 422: body.reaction: value is not a valid enumeration member; "
            "permitted: 'thumbs_up', 'thumbs_down'",
        ),
        (lambda b: b.pop("kind"), "HTTP 422: body.kind: field required"),
        (
            lambda b: b.update(messageId="m", threadId=7),
            "HTTP 422: body.messageId: value is not a valid uuid; "
            "body.threadId: value is not a valid uuid",
        ),
        (
            lambda b: b.update(reasons="too_long"),
            "HTTP 422: body.reasons: value is not a valid list",
        ),
    ],
)
def test_validation_errors_are_permanent_with_the_api_detail(
    tamper: Any, reason: str, server: VirtuousAIContractServer
) -> None:
    exporter = Tampering(tamper, api_key="test-key", base_url=server.url)
    try:
        result = exporter.export(reaction())
    finally:
        exporter.shutdown()
    assert (result.status, result.reason) == (DeliveryStatus.PERMANENT, reason)
    assert [status for _, _, status in calls(server)] == [422]
    assert server.items() == []
    assert exporter.state.get(KEY) is None  # the refused create's write-ahead is undone


def test_a_refused_key_pauses_delivery_and_never_shows_up(
    server: VirtuousAIContractServer, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "vai-SECRET-0123456789"
    exporter = VirtuousAIExporter(api_key=secret, base_url=server.url)
    caplog.set_level(logging.DEBUG)
    try:
        result = exporter.export(reaction())
        assert (result.status, result.reason) == (
            DeliveryStatus.UNAUTHORIZED,
            "HTTP 401: Unauthorized",
        )
        # A server that echoes the key it refused: the reason must not carry it on.
        server.fail_next(1, 403, body={"detail": f"key {secret} is revoked"})
        echoed = exporter.export(reaction())
        assert echoed.status is DeliveryStatus.UNAUTHORIZED
        assert echoed.reason == "HTTP 403: key [redacted] is revoked"
        with pytest.raises(VirtuousAIError) as raised:
            exporter.get_feedback(str(uuid.uuid4()))
        assert raised.value.status == 401
    finally:
        exporter.shutdown()
    shown = [result.reason, echoed.reason, repr(exporter), str(raised.value), caplog.text]
    assert not any(secret in text for text in shown)
    assert server.items() == []


@pytest.mark.parametrize(
    "api_key, base_url, kwargs, fragment",
    [
        ("", "https://vai.example", {}, "api_key is empty"),
        ("key\n", "https://vai.example", {}, None),  # surrounding whitespace is stripped
        ("a key", "https://vai.example", {}, "whitespace"),
        ("k", "http://vai.example", {}, "plain http"),
        ("k", "https://user:pw@vai.example", {}, "must not contain credentials"),
        ("k", "https://vai.example/?tenant=1", {}, "must not have a query"),
        ("k", "https://vai.example", {"source_surface": " "}, "source_surface"),
    ],
)
def test_configuration_is_checked_up_front(
    api_key: str, base_url: str, kwargs: dict[str, Any], fragment: str | None
) -> None:
    if fragment is None:
        VirtuousAIExporter(api_key, base_url, **kwargs).shutdown()
        return
    with pytest.raises(ConfigurationError, match=fragment):
        VirtuousAIExporter(api_key, base_url, **kwargs)


def test_a_base_url_path_prefix_is_kept(server: VirtuousAIContractServer) -> None:
    exporter = VirtuousAIExporter("test-key", server.url + "/tenant-a/", source_surface="widget")
    try:
        exporter.export(reaction())
    finally:
        exporter.shutdown()
    [request] = server.requests()
    assert request.path == "/tenant-a/api/v1/feedback"
    assert request.json()["sourceSurface"] == "widget"
    assert repr(exporter) == (
        f"VirtuousAIExporter(base_url='{server.url}/tenant-a', source_surface='widget', "
        "name='virtuousai')"
    )


# -- retrying -----------------------------------------------------------------------------------


def test_throttling_and_server_errors_are_retried_until_the_item_exists(
    server: VirtuousAIContractServer, tmp_path: Path
) -> None:
    connect(server, tmp_path / "o.db")
    server.fail_next(1, 429, retry_after="0.05")
    server.fail_next(1, 500)
    server.fail_next(1, 503, retry_after="0")
    sent = brixo_otel.feedback("thumbs_up", message_id=MESSAGE, conversation_id=THREAD)
    assert brixo_otel.flush(timeout=10)
    requests = server.requests()
    assert [r.status for r in requests] == [429, 500, 503, 201]
    assert {r.json()["clientFeedbackId"] for r in requests} == {client_feedback_id(sent.id)}
    assert len(server.items()) == 1


def test_unreadable_state_is_treated_as_unknown_with_a_warning(
    server: VirtuousAIContractServer,
    exporter: VirtuousAIExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    exporter.state.set(KEY, "not json")
    assert exporter.export(reaction()).status is DeliveryStatus.DELIVERED
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "brixo_otel: unreadable virtuousai state for a message; treating it as unknown"
    ]
    assert len(server.items()) == 1


def test_a_create_answer_without_an_id_is_retried(
    server: VirtuousAIContractServer, exporter: VirtuousAIExporter
) -> None:
    server.fail_next(1, 201, body={"ok": True})
    result = exporter.export(reaction())
    assert result.status is DeliveryStatus.RETRY and "without an item id" in result.reason
    assert exporter.export(reaction()).status is DeliveryStatus.DELIVERED
    assert len(server.items()) == 1


def test_a_lost_create_answer_is_recovered_by_the_same_client_feedback_id(
    server: VirtuousAIContractServer, exporter: VirtuousAIExporter
) -> None:
    server.drop_after_create(1)
    signal = reaction()
    lost = exporter.export(signal)
    assert lost.status is DeliveryStatus.RETRY  # the server acted; we never heard
    assert len(server.items()) == 1
    assert exporter.export(signal).status is DeliveryStatus.DELIVERED
    [item] = server.items()
    assert [r.status for r in server.requests()] == [None, 200]
    assert item["id"] in (exporter.state.get(KEY) or "")


# -- changing and retracting ---------------------------------------------------------------------


def test_a_changed_mind_patches_the_one_item(
    server: VirtuousAIContractServer, tmp_path: Path
) -> None:
    connect(server, tmp_path / "o.db")
    brixo_otel.feedback("thumbs_up", message_id=MESSAGE, conversation_id=THREAD, user_message="ok")
    assert brixo_otel.flush(timeout=10)
    brixo_otel.feedback(
        "thumbs_down", message_id=MESSAGE, conversation_id=THREAD, reasons=["too_long"]
    )
    assert brixo_otel.flush(timeout=10)

    [item] = server.items()
    assert (item["reaction"], item["comment"], item["reasons"]) == (
        "thumbs_down",
        None,
        ["too_long"],
    )
    post, patch = server.requests()
    assert (post.method, patch.method, patch.path) == (
        "POST",
        "PATCH",
        f"/api/v1/feedback/{item['id']}",
    )
    assert patch.json() == {
        "kind": "message_reaction",
        "reaction": "thumbs_down",
        "comment": None,
        "reasons": ["too_long"],
    }


def test_a_retraction_deletes_the_item_and_a_new_reaction_makes_a_new_one(
    server: VirtuousAIContractServer, tmp_path: Path
) -> None:
    connect(server, tmp_path / "o.db")
    brixo_otel.feedback("thumbs_up", message_id=MESSAGE, conversation_id=THREAD)
    assert brixo_otel.flush(timeout=10)
    [first] = server.items()
    brixo_otel.retract_feedback(message_id=MESSAGE)  # no conversation id needed
    assert brixo_otel.flush(timeout=10)
    assert server.items() == []
    again = brixo_otel.feedback("thumbs_down", message_id=MESSAGE, conversation_id=THREAD)
    assert brixo_otel.flush(timeout=10)
    [second] = server.items()
    assert second["id"] != first["id"]
    assert second["clientFeedbackId"] == client_feedback_id(again.id)
    assert [(m, s) for m, _, s in calls(server)] == [
        ("POST", 201),
        ("DELETE", 204),
        ("POST", 201),
    ]


def test_a_retraction_with_nothing_recorded_is_delivered_without_a_request(
    server: VirtuousAIContractServer, exporter: VirtuousAIExporter
) -> None:
    result = exporter.export(retract())
    assert result.status is DeliveryStatus.DELIVERED and "nothing to delete" in result.reason
    not_uuid = exporter.export(retract(message="msg_1042"))
    assert not_uuid.status is DeliveryStatus.DELIVERED and "not a UUID" in not_uuid.reason
    # The retraction is remembered: an older reaction arriving late does not create an item.
    late = exporter.export(reaction(at=-5))
    assert late.status is DeliveryStatus.DELIVERED and "superseded" in late.reason
    assert server.requests() == []


def test_deleting_an_item_that_is_already_gone_is_success(
    server: VirtuousAIContractServer, exporter: VirtuousAIExporter
) -> None:
    exporter.export(reaction())
    [item] = server.items()
    server.remove_item(item["id"])
    assert exporter.export(retract(at=1)).status is DeliveryStatus.DELIVERED
    assert calls(server)[-1] == ("DELETE", f"/api/v1/feedback/{item['id']}", 404)


def test_patching_an_item_deleted_elsewhere_creates_it_again(
    server: VirtuousAIContractServer, exporter: VirtuousAIExporter
) -> None:
    exporter.export(reaction("thumbs_up"))
    [item] = server.items()
    server.remove_item(item["id"])
    changed = reaction("thumbs_down", at=1)
    assert exporter.export(changed).status is DeliveryStatus.DELIVERED
    [new] = server.items()
    assert [(m, s) for m, _, s in calls(server)] == [("POST", 201), ("PATCH", 404), ("POST", 201)]
    assert (new["reaction"], new["clientFeedbackId"]) == (
        "thumbs_down",
        client_feedback_id(changed.id),
    )


def test_older_signals_arriving_late_never_overwrite_newer_ones(
    server: VirtuousAIContractServer, exporter: VirtuousAIExporter
) -> None:
    newer = reaction("thumbs_down", at=10)
    assert exporter.export(newer).status is DeliveryStatus.DELIVERED
    older = exporter.export(reaction("thumbs_up", at=5))
    stale_retraction = exporter.export(retract(at=7))
    assert older.status is stale_retraction.status is DeliveryStatus.DELIVERED
    assert "superseded: a newer reaction (at 2026-02-03T14:22:20.000Z)" in older.reason
    assert "superseded" in stale_retraction.reason
    again = exporter.export(newer)  # a retry of what is already applied sends nothing
    assert again.status is DeliveryStatus.DELIVERED and "already applied" in again.reason
    [item] = server.items()
    assert item["reaction"] == "thumbs_down"
    assert [m for m, _, _ in calls(server)] == ["POST"]


def test_a_retraction_is_not_undone_by_an_older_reaction_retried_later(
    server: VirtuousAIContractServer, exporter: VirtuousAIExporter
) -> None:
    exporter.export(reaction("thumbs_up", at=0))
    exporter.export(retract(at=2))
    late = exporter.export(reaction("thumbs_down", at=1))
    assert late.status is DeliveryStatus.DELIVERED
    assert "superseded: a newer retraction" in late.reason
    assert server.items() == []
    assert [m for m, _, _ in calls(server)] == ["POST", "DELETE"]


def test_reactions_racing_on_one_message_make_one_item(
    server: VirtuousAIContractServer, exporter: VirtuousAIExporter
) -> None:
    signals_ = [reaction(("thumbs_up", "thumbs_down")[n % 2], at=n) for n in range(8)]
    start = threading.Barrier(len(signals_))
    results: list[DeliveryStatus] = []

    def export(signal: Signal) -> None:
        start.wait(5)
        results.append(exporter.export(signal).status)

    threads = [threading.Thread(target=export, args=(s,)) for s in signals_]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == [DeliveryStatus.DELIVERED] * 8
    [item] = server.items()
    assert item["reaction"] == "thumbs_down"  # the newest (at=7) wins, whatever ran first
    assert [m for m, _, _ in calls(server)].count("POST") == 1


def test_a_changed_mind_during_an_unconfirmed_create_lands_on_the_same_item(
    server: VirtuousAIContractServer, exporter: VirtuousAIExporter
) -> None:
    first = reaction("thumbs_up", at=0)
    server.drop_after_create(1)
    assert exporter.export(first).status is DeliveryStatus.RETRY
    # Before the 👍 is retried, the 👎 arrives: it reuses the 👍's clientFeedbackId, gets the
    # item the lost create made, and patches it.
    assert exporter.export(reaction("thumbs_down", at=1)).status is DeliveryStatus.DELIVERED
    late = exporter.export(first)
    assert late.status is DeliveryStatus.DELIVERED and "superseded" in late.reason
    [item] = server.items()
    assert item["reaction"] == "thumbs_down"
    assert item["clientFeedbackId"] == client_feedback_id(first.id)
    assert [(m, s) for m, _, s in calls(server)] == [("POST", None), ("POST", 200), ("PATCH", 200)]


def test_a_retraction_waits_for_an_unconfirmed_create(
    server: VirtuousAIContractServer, exporter: VirtuousAIExporter
) -> None:
    first = reaction("thumbs_up", at=0)
    server.drop_after_create(1)
    assert exporter.export(first).status is DeliveryStatus.RETRY
    waiting = exporter.export(retract(at=1))
    assert waiting.status is DeliveryStatus.RETRY and "not confirmed" in waiting.reason
    assert exporter.export(first).status is DeliveryStatus.DELIVERED
    assert exporter.export(retract(at=1)).status is DeliveryStatus.DELIVERED
    assert server.items() == []


def test_a_crash_between_create_and_record_leaves_one_item_that_later_changes(
    server: VirtuousAIContractServer, tmp_path: Path
) -> None:
    outbox = tmp_path / "o.db"
    server.drop_after_create(1_000)  # every create acts, and then the answer is lost
    with subprocess.Popen(
        [sys.executable, CHILD, server.url, str(outbox), MESSAGE, THREAD],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            server.wait_for(lambda: len(server.items()) == 1, timeout=20)
        finally:  # killed once the item exists, or at once if it never appears
            os.kill(child.pid, signals.SIGKILL)
            out, err = child.communicate(timeout=10)
    assert child.returncode == -signals.SIGKILL, err
    [signal_id] = out.split()
    [item] = server.items()
    assert item["clientFeedbackId"] == client_feedback_id(signal_id)
    state = Outbox(outbox)
    try:
        assert '"pending"' in (state.state_get("virtuousai", KEY) or "")  # nothing recorded
    finally:
        state.close()

    server.drop_after_create(0)
    exporter = connect(server, outbox)  # a new process on the same outbox completes the create
    assert brixo_otel.flush(timeout=10)
    assert server.items() == [item]
    assert item["id"] in (exporter.state.get(KEY) or "")
    brixo_otel.feedback("thumbs_down", message_id=MESSAGE, conversation_id=THREAD)
    assert brixo_otel.flush(timeout=10)

    [changed] = server.items()
    assert (changed["id"], changed["reaction"]) == (item["id"], "thumbs_down")
    posts = [r for r in server.requests() if r.method == "POST"]
    assert {r.json()["clientFeedbackId"] for r in posts} == {item["clientFeedbackId"]}
    assert posts[-1].status == 200  # the existing item, not a second one
    assert calls(server)[-1] == ("PATCH", f"/api/v1/feedback/{item['id']}", 200)


# -- reading ------------------------------------------------------------------------------------


def test_the_read_calls_return_the_items(
    server: VirtuousAIContractServer, exporter: VirtuousAIExporter
) -> None:
    other_message = str(uuid.uuid4())
    exporter.export(reaction("thumbs_up"))
    exporter.export(reaction("thumbs_down", message=other_message, at=1))
    exporter.export(reaction("thumbs_up", message=str(uuid.uuid4()), thread=str(uuid.uuid4())))
    items = {item["messageId"]: item for item in server.items()}

    listed = exporter.list_thread_reactions(THREAD.upper())
    assert [item["messageId"] for item in listed] == [MESSAGE, other_message]
    assert listed == [items[MESSAGE], items[other_message]]
    assert exporter.get_feedback(items[MESSAGE]["id"]) == items[MESSAGE]
    assert exporter.list_thread_reactions(str(uuid.uuid4())) == []

    missing = str(uuid.uuid4())
    with pytest.raises(VirtuousAIError, match="HTTP 404: Feedback item not found") as raised:
        exporter.get_feedback(missing)
    assert (raised.value.status, raised.value.detail) == (404, "Feedback item not found")
    before = len(server.requests())
    with pytest.raises(ValueError, match="item_id 'nope' is not a UUID"):
        exporter.get_feedback("nope")
    with pytest.raises(ValueError, match="thread_id"):
        exporter.list_thread_reactions("conv-7")
    assert len(server.requests()) == before


def test_a_read_with_no_server_raises_a_clear_error() -> None:
    with VirtuousAIContractServer() as gone:
        url = gone.url
    exporter = VirtuousAIExporter("test-key", url, timeout=httpx.Timeout(2.0))
    try:
        with pytest.raises(VirtuousAIError, match="could not be reached: ConnectError") as raised:
            exporter.get_feedback(str(uuid.uuid4()))
        assert raised.value.status is None
        assert exporter.export(reaction()).status is DeliveryStatus.RETRY
    finally:
        exporter.shutdown()


# -- the contract server itself -----------------------------------------------------------------


def test_the_contract_server_follows_the_spec(server: VirtuousAIContractServer) -> None:
    body = {
        "clientFeedbackId": "91682908-9b2b-46c5-8c0f-d5df82e2290d",
        "kind": "message_reaction",
        "messageId": MESSAGE,
        "reaction": "thumbs_up",
        "threadId": THREAD,
    }
    url = server.url + "/api/v1/feedback"
    with httpx.Client() as http:
        assert http.post(url, json=body).status_code == 401
        assert (
            http.post(url, json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
        )
        created = http.post(url, json=body, headers={"Authorization": "Bearer test-key"})
        again = http.post(url, json=body, headers={"vai_token": "test-key"})
        assert (created.status_code, again.status_code) == (201, 200)
        item = created.json()
        assert again.json() == item
        assert set(item) == {
            "clientFeedbackId", "comment", "createdAt", "id", "kind", "messageId", "reaction",
            "reasons", "sourceSurface", "tenantId", "threadId", "turnId", "updatedAt", "userId",
        }  # fmt: skip
        assert item["sourceSurface"] == "chat_message"  # the spec's default

        auth = {"X-API-Key": "test-key"}
        item_url = f"{url}/{item['id']}"
        missing_kind = http.patch(item_url, json={"reaction": "thumbs_down"}, headers=auth)
        assert missing_kind.status_code == 422
        assert missing_kind.json() == {
            "detail": [
                {"loc": ["body", "kind"], "msg": "field required", "type": "value_error.missing"}
            ]
        }
        patched = http.patch(
            item_url, json={"kind": "message_reaction", "comment": "hm"}, headers=auth
        )
        assert (patched.json()["reaction"], patched.json()["comment"]) == ("thumbs_up", "hm")
        assert http.get(f"{url}/not-a-uuid", headers=auth).status_code == 422
        assert http.delete(item_url, headers=auth).status_code == 204
        assert http.delete(item_url, headers=auth).status_code == 404
        assert http.get(item_url, headers=auth).status_code == 404
        assert http.put(item_url, headers=auth).status_code == 405
        assert http.post(url, content=b"{", headers=auth).status_code == 422
        assert http.get(f"{url}/threads/conv-7/reactions", headers=auth).status_code == 422
        assert http.get(f"{server.url}/api/v1/other", headers=auth).status_code == 404
