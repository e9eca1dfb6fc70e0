"""A real MLflow tracking server for the tests, started once per session on a free loopback port.

A real server rather than a fake, because what the MLflow exporter must get right are facts of
the server: the `tr-` trace id prefix, the 500 "constraint violation" it answers to a repeated
assessment id, what a PATCH merges, and how it types a span. MLflow is installed by
scripts/mlflow.sh into its own cached environment; a test that needs it fails (never skips) when
it cannot be had.

The session fixtures `mlflow` and `mlflow_experiment` are in tests/conftest_servers.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests._phoenix import installed_by_script
from tests._services import ServiceProcess, free_port, wait_for

LOOPBACK = "127.0.0.1"
#: About 15 s with the job runner off (specs/mlflow-assessments.md); a loaded machine is slower.
START_TIMEOUT = 120.0
EXPERIMENT_HEADER = "x-mlflow-experiment-id"


def mlflow_binary() -> str:
    """The path of `mlflow`, installing it with scripts/mlflow.sh if missing."""
    return installed_by_script("mlflow.sh", "MLflow")


class MLflowServer(ServiceProcess):
    """One `mlflow server` with a SQLite store, its workers in their own process group."""

    name = "mlflow"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory / "mlflow.log")
        self.binary = mlflow_binary()
        self.directory = directory
        self.port = free_port()
        self.http = httpx.Client(base_url=self.url, timeout=10.0, trust_env=False)
        self._group: int | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, timeout: float = START_TIMEOUT) -> None:
        self.launch()
        self.wait_until_ready(timeout)

    def launch(self) -> None:
        """Spawn MLflow without waiting, so another server can boot alongside it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            # `setsid` execs MLflow as the leader of a new process group, so stop() can end the
            # server's worker processes too, not only the launcher.
            "setsid",
            "env",
            "MLFLOW_DISABLE_TELEMETRY=true",
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false",
            self.binary,
            "server",
            "--backend-store-uri", f"sqlite:///{self.directory / 'mlflow.db'}",
            "--default-artifact-root", str(self.directory / "artifacts"),
            "--host", LOOPBACK,
            "--port", str(self.port),
            "--workers", "1",
        ]  # fmt: skip
        self._spawn(command, cwd=self.directory)
        assert self._process is not None
        self._group = self._process.pid

    def wait_until_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Return once `/health` says OK; raise with the log if MLflow exits or is slow."""

        def ready() -> bool:
            try:
                response = self.http.get("/health")
            except httpx.TransportError:
                return False
            return response.status_code == 200 and response.text.strip() == "OK"

        self._wait_until_ready(ready, f"mlflow to answer /health on port {self.port}", timeout)

    def stop(self) -> None:
        group, self._group = self._group, None
        try:
            if group is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGTERM)
            super().stop()
        finally:
            if group is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)  # any worker that ignored SIGTERM
            self.http.close()

    # -- set-up, through MLflow's own API -------------------------------------------------------

    def create_experiment(self, name: str) -> str:
        response = self.http.post("/api/2.0/mlflow/experiments/create", json={"name": name})
        if response.status_code != 200:
            raise AssertionError(f"create experiment: {response.status_code} {response.text}")
        experiment: str = response.json()["experiment_id"]
        return experiment

    def tracer_provider(self, experiment_id: str) -> TracerProvider:
        """The docs' recipe: the app's own OTLP exporter to MLflow's `/v1/traces`, the
        experiment named by the `x-mlflow-experiment-id` header."""
        provider = TracerProvider()
        exporter = OTLPSpanExporter(
            endpoint=f"{self.url}/v1/traces",
            headers={EXPERIMENT_HEADER: experiment_id},
            timeout=10,
        )
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        return provider

    # -- reading back ---------------------------------------------------------------------------

    def trace(self, trace_hex: str) -> dict[str, Any] | None:
        """The trace with its spans (`GET /api/3.0/mlflow/traces/get`), or None before MLflow
        has it."""
        response = self.http.get(
            "/api/3.0/mlflow/traces/get", params={"trace_id": f"tr-{trace_hex}"}
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise AssertionError(f"get trace: {response.status_code} {response.text}")
        trace: dict[str, Any] = response.json()["trace"]
        return trace

    def wait_for_trace(self, trace_hex: str) -> dict[str, Any]:
        return wait_for(lambda: self.trace(trace_hex), 15.0, f"mlflow to store trace {trace_hex}")

    def assessments(self, trace_hex: str) -> list[dict[str, Any]]:
        """The trace's assessments, as its trace info lists them."""
        response = self.http.get(f"/api/3.0/mlflow/traces/tr-{trace_hex}")
        if response.status_code != 200:
            raise AssertionError(f"trace info: {response.status_code} {response.text}")
        found: list[dict[str, Any]] = response.json()["trace"]["trace_info"].get("assessments", [])
        return found

    def assessment(self, trace_hex: str, assessment_id: str) -> dict[str, Any] | None:
        response = self.http.get(
            f"/api/3.0/mlflow/traces/tr-{trace_hex}/assessments/{assessment_id}"
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise AssertionError(f"assessment: {response.status_code} {response.text}")
        found: dict[str, Any] = response.json()["assessment"]
        return found
