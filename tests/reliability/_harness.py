"""What the reliability suite shares: its child scripts, a server that accepts and never
answers, bounded waits, and the figures it reports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from brixo_otel import RetryPolicy

SCRIPTS = Path(__file__).resolve().parent / "_scripts"
REPO = Path(__file__).resolve().parents[2]
#: Retries in tens of milliseconds, so a fault that clears is seen within a second.
FAST = RetryPolicy(initial_backoff=0.02, max_backoff=0.25)
#: Where each test's figures are appended, one JSON object per line (docs/reliability.md is
#: written from it); unset, nothing is recorded. Read at import: the tests' autouse fixture
#: clears every BRIXO_* variable before each test.
FIGURES_ENV = "BRIXO_RELIABILITY_FIGURES"
_FIGURES_FILE = os.environ.get(FIGURES_ENV)


def script(name: str) -> str:
    return str(SCRIPTS / name)


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child script: ours, plus `extra`; the package is whatever this
    interpreter imports (PYTHONPATH kept, so a run against another checkout tests that one)."""
    env = {**os.environ, **extra}
    env.setdefault("PYTHONPATH", "")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env["PYTHONPATH"], str(REPO)) if p)
    return env


def run(
    name: str, *args: str, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a child script to completion (killed, and the test failed, past `timeout`)."""
    return subprocess.run(
        [sys.executable, script(name), *args],
        env=env or child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def last_json(output: str) -> dict[str, Any]:
    """The last line of a child's output that is a JSON object: its report."""
    for line in reversed(output.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            loaded: dict[str, Any] = json.loads(line)
            return loaded
    raise AssertionError(f"no JSON report in the child's output:\n{output[-3000:]}")


class SilentServer:
    """A loopback socket that accepts every connection and never answers: the endpoint that
    hangs (an overloaded collector, a black-holed load balancer)."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self._sock.settimeout(0.1)
        self.port: int = self._sock.getsockname()[1]
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="silent-server", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            self._held.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self._held:
            conn.close()
        self._sock.close()


@contextmanager
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    try:
        yield server
    finally:
        server.close()


def percentile(values: Sequence[float], fraction: float) -> float:
    """The value below which `fraction` of `values` lie (nearest rank); 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


def record_figures(test: str, **figures: Any) -> None:
    """Append this test's figures to the file `BRIXO_RELIABILITY_FIGURES` names, if any."""
    target = _FIGURES_FILE
    if not target:
        return
    line = json.dumps({"test": test, "at": time.time(), **figures}, sort_keys=True)
    with open(target, "a", encoding="utf-8") as out:
        out.write(line + "\n")
