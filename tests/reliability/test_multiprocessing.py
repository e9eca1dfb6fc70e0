"""The suite's multiprocessing part: a pool of workers started by fork, spawn or forkserver, on
one outbox; every rating delivered, no worker hung, the pool done in bounded time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from brixo_otel.testing import BrixoTestServer
from tests.reliability._harness import last_json, record_figures, run

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server() -> Iterator[BrixoTestServer]:
    with BrixoTestServer(require_known_ids=False) as running:
        yield running


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_pool_of_workers_delivers_every_rating(
    server: BrixoTestServer, tmp_path: Path, method: str
) -> None:
    result = run("multiprocess_app.py", method, server.url, str(tmp_path / "o.db"), timeout=90)
    assert result.returncode == 0, result.stderr[-3000:]
    report = last_json(result.stdout)
    assert report["flushed"]
    assert len(report["workers"]) >= 1
    stored = {s.idempotency_key for s in server.signals()}
    assert set(report["acknowledged"]) <= stored
    assert report["pool_seconds"] < 30
    record_figures(
        f"multiprocessing_{method}",
        acknowledged=len(report["acknowledged"]),
        delivered=len(set(report["acknowledged"]) & stored),
        pool_seconds=round(report["pool_seconds"], 2),
    )
