"""Issue 13, defect 8: leases renewed for exports longer than the lease; dead letters pruned by
their own retention and cap, apart from the caps on live rows; one request bounded in total time
against a server that trickles its answer; `flush()` returning as soon as nothing left can be
sent before its deadline."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider

import brixo_otel
from brixo_otel import OutboxLimits
from brixo_otel._delivery._outbox import Outbox, OutboxFull
from brixo_otel._signal import validate
from brixo_otel.exporters import BrixoSignalExporter, DeliveryStatus
from brixo_otel.testing import BrixoTestServer
from tests._services import wait_for
from tests.reliability._harness import FAST, child_env, record_figures, script

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def server() -> Iterator[BrixoTestServer]:
    with BrixoTestServer(require_known_ids=False) as running:
        yield running


def requests_for(server: BrixoTestServer, signal_id: str) -> int:
    return sum(1 for r in server.requests() if r.headers.get("idempotency-key") == signal_id)


# -- leases -------------------------------------------------------------------------------------


def test_an_export_longer_than_the_lease_keeps_its_row(
    server: BrixoTestServer, tmp_path: Path
) -> None:
    lease, export = 2.5, 6.0  # the export outlasts two leases
    server.hang_next(1, export)
    outbox = str(tmp_path / "o.db")
    children = []
    try:
        first = subprocess.Popen(
            [sys.executable, script("lease_app.py"), server.url, outbox, str(lease), "first"],
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        children.append(first)
        assert first.stdout is not None
        signal_id = first.stdout.readline().split()[-1]
        wait_for(lambda: requests_for(server, signal_id) or None, 10, "the first request")
        started = time.monotonic()
        second = subprocess.Popen(
            [sys.executable, script("lease_app.py"), server.url, outbox, str(lease), "second"],
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        children.append(second)
        assert second.stdout is not None and second.stdout.readline().strip() == "STARTED"
        # The hung request answers after `export` seconds; meanwhile the second process looked
        # for expired leases every second.
        wait_for(
            lambda: any(s.idempotency_key == signal_id for s in server.signals()) or None,
            export + 5,
            "the slow export to finish",
        )
        time.sleep(2 * lease)  # and the second process had time to send it again, were it to
        assert requests_for(server, signal_id) == 1
        assert time.monotonic() - started > lease  # the lease did run out more than once
    finally:
        for child in children:
            child.kill()
            child.communicate(timeout=10)


# -- dead letters -------------------------------------------------------------------------------


def dead(outbox: Outbox, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        outbox.add(validate("thumbs_up", message_id=f"m-{n}"), ["brixo"])
    for delivery in outbox.claim(["brixo"], count):
        outbox.dead_letter(delivery, "HTTP 400: refused")


def test_dead_letters_have_their_own_cap_and_retention_and_crowd_out_nothing(
    tmp_path: Path,
) -> None:
    outbox = Outbox(
        str(tmp_path / "o.db"),
        OutboxLimits(max_rows=10, max_dead_letters=4, dead_letter_retention=3600),
    )
    try:
        dead(outbox, 10)
        # Ten dead letters, and still room for ten live rows: they are not counted in max_rows.
        for n in range(10):
            outbox.add(validate("thumbs_up", message_id=f"live-{n}"), ["brixo"])
        with pytest.raises(OutboxFull):
            outbox.add(validate("thumbs_up", message_id="one-too-many"), ["brixo"])
        assert outbox.prune_dead() == 6  # the oldest past the cap of 4
        assert len(outbox.dead_letters()) == 4
        with outbox._transaction() as conn:  # two of them grow old
            conn.execute(
                "UPDATE deliveries SET created_at = created_at - 7200 WHERE id IN"
                " (SELECT id FROM deliveries WHERE state = 2 ORDER BY id LIMIT 2)"
            )
        assert outbox.prune_dead() == 2
        assert [d.signal.message_id for d in outbox.dead_letters() if d.signal] == ["m-8", "m-9"]
        assert outbox.pending_count(["brixo"]) == 10  # live rows untouched
    finally:
        outbox.close()


def test_a_running_client_prunes_dead_letters(server: BrixoTestServer, tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    seeded = Outbox(str(path))
    dead(seeded, 12)
    seeded.close()
    brixo_otel.configure(
        exporters=[BrixoSignalExporter(api_key="test-key", base_url=server.url)],
        outbox_path=path,
        traces_endpoint="none",
        tracer_provider=TracerProvider(),
        retry_policy=FAST,
        outbox_limits=OutboxLimits(max_dead_letters=5),
    )
    brixo_otel.feedback("thumbs_up", message_id="wakes-the-worker")
    assert brixo_otel.flush(timeout=10)

    def pruned() -> bool | None:
        check = Outbox(str(path))
        try:
            return True if len(check.dead_letters()) == 5 else None
        finally:
            check.close()

    wait_for(pruned, 10, "the worker to prune the dead letters to their cap")


# -- a trickling answer -------------------------------------------------------------------------


def test_one_request_is_bounded_in_total_time_against_a_trickling_server(
    server: BrixoTestServer,
) -> None:
    # Each byte comes well within the read timeout, so only a bound on the whole request ends
    # it: connect (0.5 s) and read (1 s) add up to 1.5 s. The answer would take ~15 s.
    server.trickle_next(1, 0.25)
    exporter = BrixoSignalExporter(
        api_key="test-key", base_url=server.url, timeout=httpx.Timeout(1.0, connect=0.5)
    )
    try:
        signal = validate("thumbs_up", message_id="trickled")
        started = time.monotonic()
        result = exporter.export(signal)
        took = time.monotonic() - started
        assert result.status is DeliveryStatus.RETRY, result
        assert "Timeout" in result.reason
        assert took < 2.5, f"the request took {took:.1f} s"
        # The server had stored it before answering; the retry is deduplicated by its key.
        assert exporter.export(signal).status is DeliveryStatus.DELIVERED
        assert [s.idempotency_key for s in server.signals()] == [signal.id]
    finally:
        exporter.shutdown()
    record_figures("trickle_total_bound", seconds=round(took, 2))


# -- flush returns early ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retry_after", "target"),
    [
        (429, "60", "message_id"),  # the message's span is not known: its link waits too
        (503, "Wed, 21 Oct 2099 07:28:00 GMT", "conversation_id"),
    ],
)
def test_flush_returns_at_once_when_what_is_left_waits_past_its_deadline(
    server: BrixoTestServer, tmp_path: Path, status: int, retry_after: str, target: str
) -> None:
    server.fail_next(1, status, retry_after=retry_after)  # the destination pauses for 60+ s
    brixo_otel.configure(
        exporters=[BrixoSignalExporter(api_key="test-key", base_url=server.url)],
        outbox_path=tmp_path / "o.db",
        traces_endpoint="none",
        tracer_provider=TracerProvider(),
        retry_policy=FAST,
    )
    brixo_otel.feedback("thumbs_up", **{target: "paused"})
    wait_for(lambda: server.requests() or None, 10, "the first attempt")
    started = time.monotonic()
    assert not brixo_otel.flush(timeout=10)
    took = time.monotonic() - started
    assert took < 1.5, f"flush(timeout=10) waited {took:.1f} s for a pause of 60 s or more"
