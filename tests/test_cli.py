"""The `brixo-otel` command: send, outbox status/dead/retry, dev-server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from brixo_otel._cli import main as cli
from brixo_otel.testing import BrixoTestServer
from tests._services import wait_for


def test_send_delivers_one_signal_and_says_so(
    brixo_server: BrixoTestServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("BRIXO_API_KEY", "test-key")
    monkeypatch.setenv("BRIXO_BASE_URL", brixo_server.url)
    monkeypatch.setenv("BRIXO_OTLP_TRACES_ENDPOINT", "none")
    brixo_server.register_message("msg_1042")
    outbox = tmp_path / "outbox.db"
    code = cli(
        ["send", "thumbs_up", "--message-id", "msg_1042", "--user-message", "great",
         "--path", str(outbox)]
    )  # fmt: skip
    assert code == 0
    assert "thumbs_up on message 'msg_1042': delivered" in capsys.readouterr().out
    [received] = brixo_server.signals()
    assert (received.target_id, received.user_message) == ("msg_1042", "great")

    assert cli(["send", "meh", "--message-id", "x", "--path", str(outbox)]) == 2
    assert "accepted: thumbs_up" in capsys.readouterr().err

    brixo_server.fail_next(5, 503)
    assert cli(["send", "thumbs_down", "--conversation-id", "c", "--path", str(outbox),
                "--timeout", "0.3"]) == 1  # fmt: skip
    assert "queued (not yet delivered" in capsys.readouterr().out
    assert cli(["outbox", "status", "--path", str(outbox), "--json"]) == 0
    assert '"pending": 1' in capsys.readouterr().out


def test_outbox_commands_explain_a_missing_outbox(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no outbox at"):
        cli(["outbox", "status", "--path", str(tmp_path / "nowhere.db")])


def test_dev_server_runs_standalone(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "brixo_otel._cli", "dev-server", "--port", str(port),
         "--api-key", "k", "--accept-unknown-ids", "--db", str(tmp_path / "dev.db")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/v1/messages/any-id/signals"
        body = {"data": {"type": "signals", "attributes": {"name": "feedback",
                                                            "value": "thumbs_up"}}}  # fmt: skip
        headers = {"Authorization": "Bearer k", "Content-Type": "application/vnd.api+json"}

        def answered() -> httpx.Response | None:
            try:
                return httpx.post(url, json=body, headers=headers, timeout=2)
            except httpx.TransportError:
                return None  # not listening yet

        response = wait_for(answered, 20, "the dev server to answer", interval=0.1)
        assert response.status_code == 204
        assert httpx.post(url, json=body, timeout=2).status_code == 401
    finally:
        process.terminate()
        stdout, _ = process.communicate(timeout=10)
    assert f"127.0.0.1:{port}" in stdout
