"""A real, throwaway Prometheus and the example app it scrapes, for the dashboard test.

A real Prometheus rather than parsing /metrics ourselves, because what must be right is what
Grafana will see: the names the OpenTelemetry exporter gives metrics and labels, and what
PromQL's `sum by`, `or` and division make of them. A test that needs Prometheus fails (never
skips) when it cannot be had, so a CI image without it is noticed.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from tests._services import REPO, ServiceProcess, free_port, installed_binary

EXAMPLE_APP = REPO / "examples" / "prometheus_app.py"
LOOPBACK = "127.0.0.1"
SCRAPE_JOB = "brixo-example"


def prometheus_binary() -> str:
    """The path of `prometheus` (`make services` installs it with scripts/prometheus.sh)."""
    return installed_binary("prometheus", "prometheus.sh")


class ExampleApp(ServiceProcess):
    """examples/prometheus_app.py serving /metrics on a free loopback port."""

    name = "the example app"
    READY_LINE = "serving metrics on "

    def __init__(self, directory: Path, messages_per_model: int) -> None:
        super().__init__(directory / "app.log")
        self.port = free_port()
        self.messages_per_model = messages_per_model

    @property
    def target(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        command = [
            sys.executable,
            str(EXAMPLE_APP),
            "--port",
            str(self.port),
            "--messages",
            str(self.messages_per_model),
        ]
        self._spawn(command, cwd=REPO)
        self._wait_until_ready(
            lambda: self.READY_LINE in self.tail(), "the example app to serve /metrics", timeout
        )


class PrometheusServer(ServiceProcess):
    """One `prometheus` on a free loopback port, scraping `targets` every second."""

    name = "prometheus"

    def __init__(self, directory: Path, targets: Sequence[str]) -> None:
        super().__init__(directory / "prometheus.log")
        self.binary = prometheus_binary()
        self.directory = directory
        self.port = free_port()
        self.targets = list(targets)
        self._http: httpx.Client | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def write_config(self) -> Path:
        """A one-job config; JSON is valid YAML, which spares a YAML dependency."""
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "scrape_configs": [
                {"job_name": SCRAPE_JOB, "static_configs": [{"targets": self.targets}]}
            ],
        }
        path = self.directory / "prometheus.yml"
        path.write_text(json.dumps(config, indent=2))
        return path

    def start(self, timeout: float = 30.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.write_config()
        command = [
            self.binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.directory / 'data'}",
            f"--web.listen-address={LOOPBACK}:{self.port}",
            "--log.level=warn",
        ]
        self._spawn(command, cwd=self.directory)
        # No proxy from the environment may see loopback traffic.
        self._http = httpx.Client(base_url=self.url, timeout=5.0, trust_env=False)

        def ready() -> bool:
            try:
                return self._http_client().get("/-/ready").status_code == 200
            except httpx.TransportError:
                return False

        self._wait_until_ready(ready, "prometheus to be ready", timeout)

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            http, self._http = self._http, None
            if http is not None:
                http.close()

    def _http_client(self) -> httpx.Client:
        if self._http is None:
            raise RuntimeError("prometheus is not running")
        return self._http

    def api(self, path: str, params: Mapping[str, str | Sequence[str]]) -> Any:
        """GET an /api/v1 endpoint and return its `data`, raising on a PromQL error."""
        response = self._http_client().get(f"/api/v1/{path}", params=params)
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            raise AssertionError(f"Prometheus refused {path} {dict(params)}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """An instant query: each series of the result as (labels, value)."""
        data = self.api("query", {"query": expr})
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        if data["resultType"] != "vector":
            raise AssertionError(f"expected an instant vector from {expr!r}, got {data}")
        return [(item["metric"], float(item["value"][1])) for item in data["result"]]

    def scalar(self, expr: str) -> float | None:
        """The value of a query that yields at most one series (None when it yields none)."""
        result = self.query(expr)
        if len(result) > 1:
            raise AssertionError(f"{expr!r} gave {len(result)} series, expected at most one")
        if not result or math.isnan(result[0][1]):
            return None
        return result[0][1]
