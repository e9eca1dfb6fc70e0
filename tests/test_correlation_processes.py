"""Feedback handled by another process than the one that answered still lands in the answer's
trace, and its metric carries the answer's model and agent version — through a SQLite index
shared on one host, a real Redis server shared across hosts, or only a link token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from brixo_otel import attributes as attrs
from brixo_otel.testing import SpanCapture
from tests._redis import RedisServer
from tests.conftest import Local

ROOT = Path(__file__).resolve().parent.parent
CHILD = ROOT / "tests" / "_scripts" / "correlation_child.py"
OPEN_MESSAGE = ROOT / "tests" / "_scripts" / "open_message_child.py"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def run(*args: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(CHILD), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def assert_linked(answer: dict[str, Any], feedback: dict[str, Any]) -> None:
    assert feedback["trace_id"] == answer["trace_id"]
    assert feedback["parent_span_id"] == answer["span_id"]
    assert feedback["links"] == [answer["span_id"]]
    assert feedback["attributes"]["brixo.rated." + attrs.GEN_AI_REQUEST_MODEL] == "gpt-5"
    assert feedback["attributes"][attrs.LINK_STATUS] == "linked"
    [point] = feedback["metric_points"]
    assert point[attrs.GEN_AI_REQUEST_MODEL] == "gpt-5"
    assert point[attrs.AGENT_VERSION] == "agent-7"  # process A's version, not B's
    assert point[attrs.SIGNAL_VALUE] == "thumbs_up"


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    with RedisServer(tmp_path / "redis") as server:
        yield server.url


def test_through_a_sqlite_index_shared_on_one_host(tmp_path: Path) -> None:
    index = f"sqlite:///{tmp_path / 'index.db'}"
    answer = run("answer", index, "msg-sqlite")
    feedback = run("feedback", index, "msg-sqlite")
    assert_linked(answer, feedback)


def test_through_a_real_redis_server(redis_url: str) -> None:
    answer = run("answer", redis_url, "msg-redis")
    feedback = run("feedback", redis_url, "msg-redis")
    assert_linked(answer, feedback)


def test_through_a_link_token_alone() -> None:
    answer = run("answer", "memory", "msg-token")
    feedback = run("feedback", "memory", "", answer["token"])  # not even the id is passed
    assert_linked(answer, feedback)
    assert feedback["attributes"][attrs.MESSAGE_ID] == "msg-token"


def test_link_secret_rotation_accepts_tokens_signed_with_a_retired_secret(
    capture: SpanCapture, local: Local
) -> None:
    import brixo_otel

    old, new = "retired-secret-0123456789", "current-secret-0123456789"

    def configure(secret: object) -> None:
        local(link_secret=secret)

    configure(old)

    @brixo_otel.message(message_id="m-rot", name="answer")
    def answer() -> str:
        return brixo_otel.link_token()

    token = answer()
    configure([new, old])  # rotated: new tokens signed with `new`, old ones still accepted
    brixo_otel.feedback("thumbs_up", link=token)
    assert brixo_otel.flush(timeout=5)
    feedback = capture.one(attrs.FEEDBACK_SPAN_NAME)
    assert feedback.parent is not None
    assert feedback.parent.span_id == capture.one("answer").context.span_id
    configure(new)  # once the old tokens have expired, the old secret goes
    with pytest.raises(brixo_otel.InvalidSignal, match="signature"):
        brixo_otel.feedback("thumbs_up", link=token)


def _spawn(script: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        env=ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _line(process: subprocess.Popen[str]) -> dict[str, Any]:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, process.stderr.read() if process.stderr else "no output"
    return json.loads(line)  # type: ignore[no-any-return]


def _end(process: subprocess.Popen[str]) -> None:
    process.kill()
    process.communicate(timeout=10)  # reaps it and closes its pipes


def _tell(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None
    process.stdin.write("go\n")
    process.stdin.flush()


@pytest.fixture(params=["sqlite", "redis"])
def shared_index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'index.db'}"
    else:
        with RedisServer(tmp_path / "redis") as server:
            yield server.url


def test_feedback_in_b_while_a_still_streams_links(shared_index: str) -> None:
    """B rates the message while A's span is still open: the index holds it from its start."""
    a = _spawn(OPEN_MESSAGE, shared_index, "msg-open")
    try:
        started = _line(a)
        feedback = run("feedback", shared_index, "msg-open")  # A's span has not ended
        assert feedback["trace_id"] == started["trace_id"]
        assert feedback["parent_span_id"] == started["span_id"]
        assert feedback["attributes"][attrs.LINK_STATUS] == "linked"
        _tell(a)
        assert _line(a)["ended"]
    finally:
        _end(a)


def test_feedback_in_b_before_a_even_starts_links_once_a_writes(shared_index: str) -> None:
    """B commits the feedback before A's message exists; B's link stage retries within the
    link window and links as soon as A's index write lands."""
    b = _spawn(CHILD, "feedback", shared_index, "msg-late", "--ready")
    a: subprocess.Popen[str] | None = None
    try:
        assert _line(b) == {"committed": True}
        a = _spawn(OPEN_MESSAGE, shared_index, "msg-late")
        started = _line(a)
        _tell(b)
        feedback = _line(b)
        assert feedback["trace_id"] == started["trace_id"]
        assert feedback["parent_span_id"] == started["span_id"]
        assert feedback["attributes"][attrs.LINK_STATUS] == "linked"
        _tell(a)
    finally:
        for process in (b, a):
            if process is not None:
                _end(process)
