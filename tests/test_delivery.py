"""Delivery through the public API to the project's Brixo-compatible server, over real sockets,
with real SQLite outboxes and real subprocesses."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import brixo_otel
from brixo_otel import RetryPolicy
from brixo_otel._cli import main as cli
from brixo_otel.testing import BrixoTestServer, SpanCapture
from tests._services import wait_for

FAST = RetryPolicy(initial_backoff=0.02, max_backoff=0.2, max_retry_after=2.0)
ROOT = Path(__file__).resolve().parent.parent


def connect(
    server: BrixoTestServer,
    outbox: Path,
    *,
    api_key: str = "test-key",
    policy: RetryPolicy = FAST,
    traces_endpoint: str | None = None,
    **kwargs: object,
) -> brixo_otel.Client:
    return brixo_otel.configure(
        api_key=api_key,
        base_url=server.url,
        traces_endpoint=traces_endpoint or server.traces_endpoint,
        outbox_path=outbox,
        retry_policy=policy,
        tracer_provider=SpanCapture().provider,
        **kwargs,  # type: ignore[arg-type]
    )


def signal_requests(server: BrixoTestServer) -> list[tuple[str, int | None]]:
    return [(r.path, r.status) for r in server.requests() if r.path.endswith("/signals")]


def test_signal_reaches_the_api_exactly_as_specified(
    brixo_server: BrixoTestServer, outbox: Path
) -> None:
    connect(brixo_server, outbox)
    brixo_server.register_message("msg_1042")
    sent = brixo_otel.feedback(
        "thumbs_up",
        message_id="msg_1042",
        user_message="Love this product!",
        occurred_at="2026-02-03T14:22:10Z",
    )
    assert brixo_otel.flush(timeout=10)
    [received] = brixo_server.signals()
    assert (received.target, received.target_id, received.name, received.value) == (
        "message",
        "msg_1042",
        "feedback",
        "thumbs_up",
    )
    assert received.occurred_at == "2026-02-03T14:22:10.000Z"
    assert received.user_message == "Love this product!"
    assert received.idempotency_key == sent.id
    [request] = [r for r in brixo_server.requests() if r.path.endswith("/signals")]
    assert request.headers["authorization"] == "Bearer test-key"
    assert request.headers["content-type"] == "application/vnd.api+json"
    assert request.headers["user-agent"].startswith(f"brixo-otel/{brixo_otel.__version__}")


def test_ids_with_slashes_and_unicode_round_trip_through_a_real_trace(
    brixo_server: BrixoTestServer, outbox: Path
) -> None:
    client = connect(brixo_server, outbox)
    message_id, conversation_id = "tenant/7 msg ünï🙂", "conv/42 ?#%"

    @brixo_otel.message(message_id=message_id, conversation_id=conversation_id)
    def answer() -> None: ...

    answer()
    client.flush(timeout=10)  # the trace teaches the server both ids
    brixo_otel.feedback("thumbs_down", message_id=message_id)
    brixo_otel.feedback("thumbs_up", conversation_id=conversation_id)
    assert brixo_otel.flush(timeout=10)
    assert {(s.target, s.target_id) for s in brixo_server.signals()} == {
        ("message", message_id),
        ("conversation", conversation_id),
    }


def test_not_found_is_retried_until_the_trace_arrives(
    brixo_server: BrixoTestServer, outbox: Path
) -> None:
    connect(brixo_server, outbox)
    brixo_otel.feedback("thumbs_up", message_id="early-bird")
    wait_for(
        lambda: ("/v1/messages/early-bird/signals", 404) in signal_requests(brixo_server) or None,
        5,
        "the first attempt to be answered 404",
        interval=0.02,
    )
    brixo_server.register_message("early-bird")  # the trace is ingested a moment later
    assert brixo_otel.flush(timeout=10)
    statuses = [status for _, status in signal_requests(brixo_server)]
    assert statuses[0] == 404 and statuses[-1] == 204
    assert len(brixo_server.signals()) == 1


def test_not_found_window_ends_in_a_dead_letter(
    brixo_server: BrixoTestServer, outbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    errors: list[tuple[str, str]] = []
    connect(
        brixo_server,
        outbox,
        traces_endpoint="none",
        policy=RetryPolicy(initial_backoff=0.02, max_backoff=0.05, not_found_window=0.3),
        on_error=lambda s, destination, reason: errors.append((destination, reason)),
    )
    brixo_otel.feedback("thumbs_up", message_id="never-traced")
    wait_for(lambda: errors or None, 10, "the dead letter", interval=0.02)
    assert brixo_otel.flush(timeout=10)  # nothing left pending: it was dead-lettered
    assert brixo_server.signals() == []
    assert errors and errors[0][0] == "brixo" and "404" in errors[0][1]
    assert cli(["outbox", "dead", "--path", str(outbox)]) == 0
    assert "never-traced" in capsys.readouterr().out


@pytest.mark.parametrize("status", [400, 413])
def test_permanent_errors_are_dead_lettered_with_the_api_detail(
    brixo_server: BrixoTestServer, outbox: Path, status: int, capsys: pytest.CaptureFixture[str]
) -> None:
    errors: list[str] = []
    connect(brixo_server, outbox, on_error=lambda s, d, reason: errors.append(reason))
    brixo_server.register_message("m")
    brixo_server.fail_next(
        1, status, body={"errors": [{"status": str(status), "title": "x", "detail": "too odd"}]}
    )
    brixo_otel.feedback("thumbs_up", message_id="m")
    assert brixo_otel.flush(timeout=10)
    assert brixo_server.signals() == []
    assert len(signal_requests(brixo_server)) == 1  # never retried
    assert errors == [errors[0]] and str(status) in errors[0] and "too odd" in errors[0]

    assert cli(["outbox", "retry", "--path", str(outbox)]) == 0
    assert "1 dead letter(s) back to pending" in capsys.readouterr().out
    connect(brixo_server, outbox)  # a running client picks the row up again
    assert brixo_otel.flush(timeout=10)
    assert len(brixo_server.signals()) == 1


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 429])
def test_transient_errors_are_retried(
    brixo_server: BrixoTestServer, outbox: Path, status: int
) -> None:
    connect(brixo_server, outbox)
    brixo_server.register_message("m")
    brixo_server.fail_next(2, status)
    brixo_otel.feedback("thumbs_up", message_id="m")
    assert brixo_otel.flush(timeout=10)
    assert [s for _, s in signal_requests(brixo_server)] == [status, status, 204]


def test_retry_after_is_honoured(brixo_server: BrixoTestServer, outbox: Path) -> None:
    connect(brixo_server, outbox)
    brixo_server.register_message("m")
    brixo_server.fail_next(1, 429, retry_after="1")
    brixo_otel.feedback("thumbs_up", message_id="m")
    assert brixo_otel.flush(timeout=10)
    first, second = [r for r in brixo_server.requests() if r.path.endswith("/signals")]
    assert (first.status, second.status) == (429, 204)
    assert second.received_at - first.received_at >= 0.95


def test_refused_key_pauses_delivery_until_a_valid_key_is_configured(
    brixo_server: BrixoTestServer, outbox: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    connect(brixo_server, outbox, api_key="sk-wrong-0123456789")
    brixo_server.register_message("m")
    for _ in range(3):
        brixo_otel.feedback("thumbs_up", message_id="m")
    assert not brixo_otel.flush(timeout=1.0)  # held, not dropped
    refused = [r for r in caplog.records if "refused" in r.getMessage().lower()]
    assert len(refused) == 1 and refused[0].levelno >= logging.ERROR
    # paused at the first 401: at most the batch already in flight (4) was sent
    assert len(signal_requests(brixo_server)) <= 3

    connect(brixo_server, outbox, api_key="test-key")
    assert brixo_otel.flush(timeout=10)
    assert len(brixo_server.signals()) == 3
    for record in caplog.records:
        text = record.getMessage() + repr(record.args) + str(record.exc_info)
        assert "sk-wrong-0123456789" not in text and "test-key" not in text


def test_a_thousand_signals_through_a_flaky_server_arrive_once_each(
    brixo_server: BrixoTestServer, outbox: Path
) -> None:
    connect(brixo_server, outbox)
    brixo_server.register_message("m")
    brixo_server.fail_randomly(0.3, status=500, seed=7)
    sent = {brixo_otel.feedback("thumbs_up", message_id="m").id for _ in range(1000)}
    assert brixo_otel.flush(timeout=120)
    stored = [s.idempotency_key for s in brixo_server.signals()]
    assert len(stored) == 1000 and set(stored) == sent
    assert brixo_server.duplicate_count() == 0  # nothing delivered was sent again
    failures = [s for _, s in signal_requests(brixo_server) if s == 500]
    assert 200 < len(failures) < 500


# -- processes ---------------------------------------------------------------------------


def run_python(
    code: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def child_env(server: BrixoTestServer, outbox: Path) -> dict[str, str]:
    return {
        "BRIXO_API_KEY": "test-key",
        "BRIXO_BASE_URL": server.url,
        "BRIXO_OTLP_TRACES_ENDPOINT": "none",
        "BRIXO_OUTBOX_PATH": str(outbox),
    }


def test_sigkill_right_after_feedback_loses_nothing(
    brixo_server: BrixoTestServer, outbox: Path
) -> None:
    brixo_server.register_message("m-crash")
    brixo_server.set_latency(1.0)  # the first attempt is still in flight when the process dies
    result = run_python(
        """
        import os, signal, brixo_otel
        brixo_otel.configure()
        s = brixo_otel.feedback("thumbs_down", message_id="m-crash")
        print(s.id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """,
        child_env(brixo_server, outbox),
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    signal_id = result.stdout.strip()
    brixo_server.set_latency(0)
    connect(brixo_server, outbox)  # the next process on the same outbox
    assert brixo_otel.flush(timeout=15)
    received = brixo_server.wait_for_signals(1)
    assert [s.idempotency_key for s in received] == [signal_id]


def test_four_processes_share_one_outbox_and_deliver_each_signal_once(
    brixo_server: BrixoTestServer, outbox: Path
) -> None:
    brixo_server.register_message("m")
    code = """
        import brixo_otel
        brixo_otel.configure()
        for _ in range(50):
            brixo_otel.feedback("thumbs_up", message_id="m")
        assert brixo_otel.flush(timeout=60)
    """
    env = child_env(brixo_server, outbox)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)],
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for worker in workers:
        _, stderr = worker.communicate(timeout=90)
        assert worker.returncode == 0, stderr
    keys = [s.idempotency_key for s in brixo_server.signals()]
    assert len(keys) == 200 and len(set(keys)) == 200
    assert len(signal_requests(brixo_server)) == 200  # not one resend
    assert brixo_server.duplicate_count() == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX only")
def test_feedback_in_a_forked_child(brixo_server: BrixoTestServer, outbox: Path) -> None:
    connect(brixo_server, outbox)
    brixo_server.register_message("m")
    brixo_otel.feedback("thumbs_up", message_id="m")  # the parent's worker is running
    pid = os.fork()
    if pid == 0:  # child: must get a working worker of its own, and no deadlock
        code = 1
        try:
            brixo_otel.feedback("thumbs_down", message_id="m")
            code = 0 if brixo_otel.flush(timeout=20) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert brixo_otel.flush(timeout=10)
    assert sorted(s.value for s in brixo_server.signals()) == ["thumbs_down", "thumbs_up"]
