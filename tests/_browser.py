"""What the browser tests share: Debian's Chromium driven by Playwright, and the chat example run
under a real uvicorn with two worker processes.

Chromium is the system package (`make services` installs it with scripts/chromium.sh); Playwright's
own browser download (`playwright install`) is never used. This module is also the uvicorn
factory (`tests._browser:chat_app`) each worker process imports, so it imports Playwright only
inside the functions that need it.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from tests._services import REPO, ServiceProcess, free_port, installed_binary

if TYPE_CHECKING:
    from fastapi import FastAPI
    from playwright.sync_api import Browser

#: Flags for a headless Chromium in a container: no sandbox (we are root), no GPU, and none of the
#: background traffic a fresh profile starts (updates, sync, field trials).
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)

WORKERS = 2


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless system Chromium, closed afterwards."""
    from playwright.sync_api import sync_playwright

    executable = installed_binary("chromium", "chromium.sh")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=list(CHROMIUM_ARGS), headless=True, timeout=30_000
        )
        try:
            yield browser
        finally:
            browser.close()


def chat_app() -> FastAPI:
    """The web chat example as one uvicorn worker runs it: brixo-otel configured from the
    environment the test set (key, local Brixo server, shared outbox and SQLite index, link
    secret), the official OpenAI instrumentation on the same provider, the real SDK."""
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    from opentelemetry.sdk.resources import PROCESS_PID, SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider

    import brixo_otel
    from examples.web_chat.app import create_app

    # The pid on every span says which worker produced it.
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: "web-chat", PROCESS_PID: os.getpid()})
    )
    brixo_otel.configure(
        tracer_provider=provider,
        # Quick retries: the first delivery of a click made mid-stream meets a 404 until the
        # message's trace (which ends with the stream) has been ingested.
        retry_policy=brixo_otel.RetryPolicy(initial_backoff=0.2, max_backoff=1.0),
    )
    OpenAIInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
    return create_app()


class ChatServer(ServiceProcess):
    """`uvicorn --workers 2 --factory tests._browser:chat_app` on a free loopback port."""

    name = "the web chat app (uvicorn, two workers)"

    def __init__(self, log: Path, environment: Mapping[str, str]) -> None:
        super().__init__(log)
        self.port = free_port()
        self._environment = dict(environment)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "tests._browser:chat_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(WORKERS),
            "--log-level",
            "info",
        ]
        saved = {name: os.environ.get(name) for name in self._environment}
        os.environ.update(self._environment)  # ServiceProcess spawns with this environment
        try:
            self._spawn(command, cwd=REPO)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        self._wait_until_ready(
            lambda: len(self.worker_pids()) >= WORKERS, f"{WORKERS} workers to start", timeout=60
        )

    def worker_pids(self) -> set[int]:
        """The pids of the workers that finished their start-up."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        pids = re.findall(r"Started server process \[(\d+)\]", text)
        started = text.count("Application startup complete.")
        return {int(pid) for pid in pids} if started >= WORKERS else set()


def environment(**values: str) -> dict[str, str]:
    """The worker environment: these values, the repository importable."""
    path = os.environ.get("PYTHONPATH")
    return {**values, "PYTHONPATH": str(REPO) if not path else f"{REPO}{os.pathsep}{path}"}
