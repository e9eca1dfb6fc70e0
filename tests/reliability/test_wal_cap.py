"""Issue 13, defect 7: under load from several processes the WAL is checkpointed, and the files on
disk (database, WAL and shared memory) respect `max_bytes`, the WAL counted in it."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from brixo_otel._delivery._database import COMMIT_OVERHEAD_BYTES
from brixo_otel.testing import BrixoTestServer
from tests.reliability._harness import child_env, record_figures, script

pytestmark = pytest.mark.timeout(90)

MAX_BYTES = 2 * 1024 * 1024
PRODUCERS = 2
SECONDS = 8.0


@pytest.fixture
def server() -> Iterator[BrixoTestServer]:
    with BrixoTestServer(require_known_ids=False) as running:
        running.fail_randomly(1.0, status=503)  # nothing leaves: the outbox fills up
        yield running


def on_disk(outbox: Path) -> tuple[int, int]:
    """(all the outbox's files, its WAL), in bytes, as they are now."""
    total = wal = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            size = Path(f"{outbox}{suffix}").stat().st_size
        except FileNotFoundError:
            continue
        total += size
        wal = size if suffix == "-wal" else wal
    return total, wal


def test_the_files_on_disk_respect_the_byte_cap_under_load(
    server: BrixoTestServer, tmp_path: Path
) -> None:
    outbox = tmp_path / "o.db"
    log = tmp_path / "log.txt"
    samples: list[tuple[int, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(on_disk(outbox))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    producers = [
        subprocess.Popen(
            [
                sys.executable,
                script("producer.py"),
                server.url,
                str(outbox),
                f"p{n}",
                str(SECONDS),
                str(log),
                str(MAX_BYTES),
                "600",  # a comment with each rating: the cap is reached within seconds
            ],
            env=child_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(PRODUCERS)
    ]
    try:
        errors = [p.communicate(timeout=SECONDS + 30)[1] for p in producers]
    finally:
        stop.set()
        sampler.join(5)
        for p in producers:
            if p.poll() is None:
                p.kill()
                p.communicate(timeout=10)
    assert [p.returncode for p in producers] == [0] * PRODUCERS, errors
    lines = log.read_text().splitlines()
    refused = sum(1 for line in lines if line.startswith("R "))
    assert refused > 0, f"the cap was never reached ({max(samples)}, {len(lines)} lines)"
    biggest, biggest_wal = max(total for total, _ in samples), max(wal for _, wal in samples)
    assert biggest <= MAX_BYTES, f"{biggest} bytes on disk, past max_bytes={MAX_BYTES}"
    # The WAL is checkpointed back to empty past its share (an eighth of the cap); nothing is
    # written to it past twice that but one commit's page images, while a checkpoint waits.
    assert biggest_wal <= 2 * (MAX_BYTES // 8) + COMMIT_OVERHEAD_BYTES, biggest_wal
    record_figures(
        "wal_cap",
        max_bytes=MAX_BYTES,
        most_on_disk=biggest,
        largest_wal=biggest_wal,
        samples=len(samples),
        acknowledged=sum(1 for line in lines if line[:2] in ("A ", "H ")) - refused,
        refused=refused,
    )
