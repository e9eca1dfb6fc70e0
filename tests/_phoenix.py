"""A real Arize Phoenix for the tests, started once per session on free loopback ports.

A real server rather than a fake, because what the Phoenix exporter must get right are facts of
the server: the span id casing it accepts, what `sync=true` answers for a span not ingested yet,
its upsert key, and how it classifies a span. Phoenix is installed by scripts/phoenix.sh into
its own cached environment; a test that needs it fails (never skips) when it cannot be had.

The session fixture `phoenix` is in tests/conftest_servers.py.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests._services import REPO, ServiceProcess, free_port, wait_for

LOOPBACK = "127.0.0.1"
#: The project the tests' traces go to (the resource attribute that picks a Phoenix project).
PROJECT = "brixo-tests"
PROJECT_ATTRIBUTE = "openinference.project.name"
#: Start-up took 37 to 54 s on a loaded 2-core machine (specs/phoenix-annotations.md).
START_TIMEOUT = 180.0


#: A first install downloads about 850 MB; later runs find the cached environment at once.
INSTALL_TIMEOUT = 900.0


def installed_by_script(script: str, what: str) -> str:
    """The executable that `scripts/<script>` installs (into its own cached environment) and
    prints. Raises when it cannot be had: a test that needs a real server fails, never skips."""
    path = REPO / "scripts" / script
    try:
        result = subprocess.run(
            ["bash", str(path)],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(
            f"{what} did not install within {INSTALL_TIMEOUT:g} s ({path})"
        ) from None
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines or not Path(lines[-1]).is_file():
        raise RuntimeError(
            f"{what} is needed and could not be installed by {path}:\n{result.stderr[-2000:]}"
        )
    return lines[-1]


def phoenix_binary() -> str:
    """The path of `phoenix`, installing it with scripts/phoenix.sh if missing."""
    return installed_by_script("phoenix.sh", "Phoenix")


class PhoenixServer(ServiceProcess):
    """One `phoenix serve` with its own SQLite database, on free loopback ports."""

    name = "phoenix"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory / "phoenix.log")
        self.binary = phoenix_binary()
        self.directory = directory
        self.port = free_port()
        # The gRPC listener binds all interfaces whatever PHOENIX_HOST says: a free port at least.
        self.grpc_port = free_port()
        self.http = httpx.Client(base_url=self.url, timeout=10.0, trust_env=False)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, timeout: float = START_TIMEOUT) -> None:
        self.launch()
        self.wait_until_ready(timeout)

    def launch(self) -> None:
        """Spawn Phoenix without waiting, so another server can boot alongside it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        environment = {
            "PHOENIX_HOST": LOOPBACK,
            "PHOENIX_PORT": str(self.port),
            "PHOENIX_GRPC_PORT": str(self.grpc_port),
            "PHOENIX_WORKING_DIR": str(self.directory),
            "PHOENIX_SQL_DATABASE_URL": f"sqlite:///{self.directory / 'phoenix.db'}",
            "PHOENIX_TELEMETRY_ENABLED": "false",
            "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
        }
        # ServiceProcess inherits this process's environment; `env` adds Phoenix's own and execs.
        settings = [f"{name}={value}" for name, value in environment.items()]
        self._spawn(["env", *settings, self.binary, "serve"], cwd=self.directory)

    def wait_until_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Return once `/readyz` answers 200; raise with the log if Phoenix exits or is slow."""

        def ready() -> bool:
            try:
                return self.http.get("/readyz").status_code == 200
            except httpx.TransportError:
                return False

        self._wait_until_ready(ready, f"phoenix to answer /readyz on port {self.port}", timeout)

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            self.http.close()

    # -- traces, the way an app sends them ------------------------------------------------------

    def tracer_provider(self, project: str = PROJECT) -> TracerProvider:
        """The docs' recipe: the app's own OTLP exporter to Phoenix's `/v1/traces`, the project
        named by a resource attribute. Simple (synchronous) export: a span is sent at its end."""
        provider = TracerProvider(resource=Resource.create({PROJECT_ATTRIBUTE: project}))
        exporter = OTLPSpanExporter(endpoint=f"{self.url}/v1/traces", timeout=10)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        return provider

    # -- reading back through Phoenix's own API -------------------------------------------------

    def _data(self, path: str, params: Mapping[str, str]) -> list[dict[str, Any]]:
        response = self.http.get(path, params=params)
        if response.status_code == 404:
            # "Project ... not found" before the project's first span, "None of the supplied
            # span_ids exist" before the span's: either way, nothing is annotated yet.
            return []
        if response.status_code != 200:
            raise AssertionError(
                f"GET {path} {dict(params)}: {response.status_code} {response.text}"
            )
        data: list[dict[str, Any]] = response.json()["data"]
        return data

    def spans(self, span_id: str, project: str = PROJECT) -> list[dict[str, Any]]:
        """The spans with this OTel span id in `project` (empty until Phoenix ingested it)."""
        return self.find_spans({"span_id": span_id}, project)

    def find_spans(self, query: Mapping[str, str], project: str = PROJECT) -> list[dict[str, Any]]:
        """The spans matching `query` (`trace_id`, `name`, ...; Phoenix's span filters)."""
        response = self.http.get(f"/v1/projects/{project}/spans", params=query)
        if response.status_code == 404:  # the project does not exist before its first span
            return []
        if response.status_code != 200:
            raise AssertionError(f"spans: {response.status_code} {response.text}")
        data: list[dict[str, Any]] = response.json()["data"]
        return data

    def wait_for_span(self, span_id: str, project: str = PROJECT) -> dict[str, Any]:
        """The span once Phoenix has ingested it (ingestion is asynchronous)."""
        found = wait_for(
            lambda: (self.spans(span_id, project) or [None])[0],
            15.0,
            f"phoenix to ingest span {span_id}",
            interval=0.05,
        )
        return found

    def span_annotations(self, span_id: str, project: str = PROJECT) -> list[dict[str, Any]]:
        return self._data(f"/v1/projects/{project}/span_annotations", {"span_ids": span_id})

    def session_annotations(self, session_id: str, project: str = PROJECT) -> list[dict[str, Any]]:
        return self._data(
            f"/v1/projects/{project}/session_annotations", {"session_ids": session_id}
        )
