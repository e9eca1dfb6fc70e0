"""Issue 13, defects 3 and 4: an outbox that is locked by another process, on a full disk,
read-only or deleted while the app runs. `feedback()` returns within tens of milliseconds,
what the outbox cannot take is held in memory (bounded, and what the buffer refuses counted),
and nothing the caller was acknowledged for is lost once the fault clears."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

import brixo_otel
from brixo_otel import OutboxLimits
from brixo_otel._delivery import _worker
from brixo_otel._delivery._outbox import Outbox
from brixo_otel.exporters import BrixoSignalExporter
from brixo_otel.testing import BrixoTestServer
from tests._services import wait_for
from tests.reliability._harness import FAST, child_env, percentile, record_figures, script

pytestmark = pytest.mark.timeout(90)

#: What `feedback()` may cost while the outbox cannot take the signal: the bounded wait
#: (APP_WAIT_SECONDS, 20 ms) and a margin for a loaded two-core machine.
CALLER_BOUND = 0.1


@pytest.fixture
def server() -> Iterator[BrixoTestServer]:
    with BrixoTestServer(require_known_ids=False) as running:
        yield running


def connect(server: BrixoTestServer, outbox: Path, **options: Any) -> brixo_otel.Client:
    return brixo_otel.configure(
        exporters=[BrixoSignalExporter(api_key="test-key", base_url=server.url)],
        outbox_path=outbox,
        traces_endpoint="none",
        tracer_provider=TracerProvider(),
        retry_policy=FAST,
        **options,
    )


def stored(server: BrixoTestServer) -> set[str]:
    return {s.idempotency_key for s in server.signals() if s.idempotency_key}


def rate(count: int, prefix: str) -> tuple[list[str], list[float]]:
    """`count` ratings, and how long each `feedback()` took."""
    ids, latencies = [], []
    for n in range(count):
        started = time.perf_counter()
        ids.append(brixo_otel.feedback("thumbs_down", message_id=f"{prefix}-{n}").id)
        latencies.append(time.perf_counter() - started)
    return ids, latencies


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        pytest.fail(
            f"{what} needs root (to mount a tmpfs, or to drop the power to override permissions)"
        )


# -- locked -------------------------------------------------------------------------------------


def test_an_outbox_locked_by_another_process_holds_signals_and_loses_none(
    server: BrixoTestServer, tmp_path: Path
) -> None:
    outbox = tmp_path / "o.db"
    connect(server, outbox)
    before = brixo_otel.feedback("thumbs_up", message_id="before").id
    assert brixo_otel.flush(timeout=10)

    holder = subprocess.Popen(
        [sys.executable, script("hold_lock.py"), str(outbox)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "LOCKED"
        ids, latencies = rate(40, "locked")
        assert max(latencies) < CALLER_BOUND, f"feedback() took up to {max(latencies):.3f} s"
        assert not brixo_otel.flush(timeout=0.5)  # held: nothing can be committed yet
        assert stored(server) == {before}
    finally:
        holder.communicate("release\n", timeout=15)
    assert brixo_otel.flush(timeout=20)
    assert stored(server) == {before, *ids}
    record_figures(
        "outbox_locked",
        acknowledged=len(ids),
        delivered=len(stored(server) & set(ids)),
        caller_p50_ms=round(percentile(latencies, 0.5) * 1000, 2),
        caller_p99_ms=round(percentile(latencies, 0.99) * 1000, 2),
    )


# -- full disk ----------------------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    require_root("a full disk")
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the disk is full; returns it (delete it to make room)."""
    filler = directory / "filler"
    chunk = b"\0" * 4096
    with filler.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_a_full_disk_holds_signals_in_a_bounded_buffer_and_counts_what_it_refuses(
    server: BrixoTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_worker, "MAX_HELD", 25)  # the buffer's bound, small for the test
    reader = InMemoryMetricReader()
    errors: list[str] = []
    with tmpfs(tmp_path / "disk", "2m") as disk:
        connect(
            server,
            disk / "o.db",
            outbox_limits=OutboxLimits(max_bytes=1024 * 1024),
            meter_provider=MeterProvider(metric_readers=[reader]),
            on_error=lambda signal, destination, reason: errors.append(reason),
        )
        before = brixo_otel.feedback("thumbs_up", message_id="before").id
        assert brixo_otel.flush(timeout=10)
        filler = fill(disk)

        ids, latencies = rate(35, "full")
        assert max(latencies) < CALLER_BOUND, f"feedback() took up to {max(latencies):.3f} s"
        assert not brixo_otel.flush(timeout=0.5)
        # The buffer took 25; the 10 past its bound were refused, loudly: `on_error` for each
        # destination (the OpenTelemetry record and Brixo), and the refused counter.
        refused = [reason for reason in errors if "memory buffer holds 25" in reason]
        assert len(refused) == 10 * 2
        assert refused_count(reader) == {
            ("brixo", "buffer_full"): 10,
            ("opentelemetry", "buffer_full"): 10,
        }

        filler.unlink()  # room again
        assert brixo_otel.flush(timeout=20)
    assert stored(server) == {before, *ids[:25]}
    record_figures(
        "outbox_disk_full",
        acknowledged=25,
        refused_by_buffer=10,
        delivered=len(stored(server) & set(ids)),
        caller_p50_ms=round(percentile(latencies, 0.5) * 1000, 2),
        caller_p99_ms=round(percentile(latencies, 0.99) * 1000, 2),
    )


def refused_count(reader: InMemoryMetricReader) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != "brixo.signals.refused":
                    continue
                for point in metric.data.data_points:  # type: ignore[union-attr]
                    attributes = dict(point.attributes or {})
                    key = (str(attributes.get("destination")), str(attributes.get("reason")))
                    counts[key] = int(point.value)  # type: ignore[union-attr]
    return counts


# -- read-only ----------------------------------------------------------------------------------

#: Run a child as root without the capabilities that override file permissions, so a
#: read-only file or directory is read-only to it.
UNPRIVILEGED = [
    "setpriv",
    "--inh-caps=-dac_override,-dac_read_search,-fowner",
    "--bounding-set=-dac_override,-dac_read_search,-fowner",
]


def start_readonly_app(mode: str, server: BrixoTestServer, outbox: Path) -> subprocess.Popen[str]:
    require_root("a read-only outbox")
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is needed to run the app without permission overrides")
    return subprocess.Popen(
        [*UNPRIVILEGED, sys.executable, script("readonly_app.py"), mode, server.url, str(outbox)],
        env=child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_read_only_outbox_file_holds_signals_until_it_is_writable_again(
    server: BrixoTestServer, tmp_path: Path
) -> None:
    outbox = tmp_path / "o.db"
    Outbox(str(outbox)).close()  # made by an earlier run; now read-only
    outbox.chmod(0o444)
    child = start_readonly_app("file", server, outbox)
    try:
        assert child.stdout is not None
        held = child.stdout.readline()
        assert held.startswith("HELD"), child.communicate(timeout=10)[1][-3000:]
        latencies = json.loads(held.split(" ", 1)[1])
        assert max(latencies) < CALLER_BOUND
        assert stored(server) == set()  # nothing could be committed, so nothing was sent
        # Writable again: the file, and the WAL and shared-memory files SQLite made beside it
        # (with the file's mode, so read-only too).
        for made in tmp_path.glob("o.db*"):
            made.chmod(0o644)
        out, err = child.communicate("writable\n", timeout=40)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate(timeout=10)
    assert child.returncode == 0, err[-3000:]
    report = json.loads(out.splitlines()[-1])
    assert report["flushed"], err[-3000:]
    assert set(report["acknowledged"]) <= stored(server)
    record_figures(
        "outbox_read_only_file",
        acknowledged=len(report["acknowledged"]),
        delivered=len(set(report["acknowledged"]) & stored(server)),
        caller_p99_ms=round(percentile(latencies, 0.99) * 1000, 2),
    )


def test_a_deleted_outbox_in_a_read_only_directory_keeps_serving_until_it_can_be_recreated(
    server: BrixoTestServer, tmp_path: Path
) -> None:
    directory = tmp_path / "state"
    directory.mkdir()
    outbox = directory / "o.db"
    server.fail_next(1000, 503)  # nothing goes out meanwhile: every signal stays in the outbox
    child = start_readonly_app("dir", server, outbox)
    try:
        assert child.stdout is not None and child.stdin is not None
        ready = child.stdout.readline()
        assert ready.strip() == "READY", child.communicate(timeout=10)[1][-3000:]
        for leftover in directory.iterdir():
            leftover.unlink()
        directory.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
        child.stdin.write("deleted\n")
        child.stdin.flush()
        held = child.stdout.readline()
        assert held.startswith("HELD"), child.communicate(timeout=10)[1][-3000:]
        latencies = json.loads(held.split(" ", 1)[1])
        assert max(latencies) < CALLER_BOUND
        assert not outbox.exists()  # it could not be recreated yet
        directory.chmod(0o755)
        server.reset_faults()
        out, err = child.communicate("writable\n", timeout=40)
    finally:
        directory.chmod(0o755)
        if child.poll() is None:
            child.kill()
            child.communicate(timeout=10)
    assert child.returncode == 0, err[-3000:]
    report = json.loads(out.splitlines()[-1])
    assert report["flushed"]
    assert set(report["acknowledged"]) <= stored(server)
    assert report["exists"]
    assert "cannot be recreated" in err and "recreated it" in err  # loudly, both times
    record_figures(
        "outbox_deleted_read_only_dir",
        acknowledged=len(report["acknowledged"]),
        delivered=len(set(report["acknowledged"]) & stored(server)),
        caller_p99_ms=round(percentile(latencies, 0.99) * 1000, 2),
    )


# -- deleted ------------------------------------------------------------------------------------


def test_an_outbox_deleted_while_running_is_recreated_loudly_and_loses_nothing(
    server: BrixoTestServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = tmp_path / "o.db"
    connect(server, outbox)
    early, _ = rate(5, "early")
    assert brixo_otel.flush(timeout=10)
    server.fail_next(10_000, 503)  # what comes next stays queued in the outbox meanwhile
    queued, _ = rate(10, "queued")
    time.sleep(0.3)
    caplog.set_level(logging.ERROR, logger="brixo_otel")
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{outbox}{suffix}")
    after, latencies = rate(10, "after")
    assert max(latencies) < CALLER_BOUND

    # Recreated on disk with everything still to deliver: what a process started now (after a
    # crash of this one, say) would find and deliver.
    def on_disk() -> bool | None:
        if not outbox.exists():
            return None
        with contextlib.closing(sqlite3.connect(outbox, timeout=5)) as conn:
            try:
                owed = {
                    signal_id
                    for (signal_id,) in conn.execute(
                        "SELECT signal_id FROM deliveries"
                        " WHERE destination = 'brixo' AND state IN (0, 1)"
                    )
                }
            except sqlite3.OperationalError:  # made a moment ago, its tables not yet
                return None
        return True if owed == {*queued, *after} else None

    wait_for(on_disk, 10, "the recreated outbox to hold every queued signal")
    recreated = [r for r in caplog.records if "deleted or replaced" in r.getMessage()]
    assert recreated and recreated[0].levelno == logging.ERROR

    server.reset_faults()
    assert brixo_otel.flush(timeout=20)
    assert stored(server) == {*early, *queued, *after}
    record_figures(
        "outbox_deleted",
        acknowledged=len(early) + len(queued) + len(after),
        delivered=len(stored(server)),
        caller_p99_ms=round(percentile(latencies, 0.99) * 1000, 2),
    )
