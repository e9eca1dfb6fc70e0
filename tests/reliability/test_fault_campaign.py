"""The fault campaign of issue 13, shortened: producer processes share one outbox and rate
messages without pause, against a loopback Signals API that cycles through 500, 429 with a
`Retry-After` in seconds, as a date or as garbage, 503, connections reset before and after the
signal is stored, requests that hang and answers that trickle, while producers are killed with
SIGKILL at random and replaced. Afterwards:

- every signal a producer was acknowledged for (committed when `feedback()` returned, or held in
  memory by a producer that was not killed) is delivered at least once;
- the server stored no message under two idempotency keys (retries keep the signal's id);
- nothing is dead-lettered without a reason.

The figures go to docs/reliability.md (see `_harness.record_figures`).
"""

from __future__ import annotations

import os
import random
import signal as signals
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from email.utils import formatdate
from pathlib import Path

import pytest

from brixo_otel.testing import BrixoTestServer
from brixo_otel.testing._faults import Drop, DropAfterStore, Fail, Fault, Hang, Trickle
from tests.reliability._harness import child_env, percentile, record_figures, run, script

pytestmark = pytest.mark.timeout(170)

PRODUCERS = 3
#: How long the faults last, in seconds; producers are killed and replaced meanwhile.
CAMPAIGN_SECONDS = 24.0
#: How long one producer rates before it exits by itself (if it is not killed first).
PRODUCER_SECONDS = 9.0
#: Share of requests a fault mode applies to while it is on.
FAULT_RATE = 0.6
SEED = 13


def fault_modes() -> list[tuple[str, Fault | None]]:
    """The server's moods, in the order they come round."""
    in_two_seconds = formatdate(time.time() + 2, usegmt=True)
    return [
        ("ok", None),
        ("500", Fail(500)),
        ("429 Retry-After seconds", Fail(429, retry_after="1")),
        ("reset before storing", Drop()),
        ("429 Retry-After date", Fail(429, retry_after=in_two_seconds)),
        ("reset after storing", DropAfterStore()),
        ("429 Retry-After garbage", Fail(429, retry_after="soon, maybe")),
        ("503", Fail(503, retry_after="1")),
        ("accept and hang", Hang(4.0)),
        ("ok", None),
        ("trickle", Trickle(0.05)),
    ]


@pytest.fixture
def server() -> Iterator[BrixoTestServer]:
    with BrixoTestServer(require_known_ids=False) as running:
        yield running


class Producers:
    """The producer processes, killed and replaced at random."""

    def __init__(self, server: BrixoTestServer, outbox: Path, logs: Path) -> None:
        self.server, self.outbox, self.logs = server, outbox, logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.killed: set[str] = set()
        self.finished: dict[str, int] = {}
        self.started = 0

    def start(self) -> None:
        name = f"p{self.started}"
        self.started += 1
        with (self.logs / f"{name}.err").open("wb") as errors:  # the child keeps its own copy
            self.running[name] = subprocess.Popen(
                [
                    sys.executable,
                    script("producer.py"),
                    self.server.url,
                    str(self.outbox),
                    name,
                    str(PRODUCER_SECONDS),
                    str(self.logs / f"{name}.log"),
                ],
                env=child_env(),
                stdout=subprocess.DEVNULL,
                stderr=errors,
            )

    def reap(self) -> None:
        for name, process in list(self.running.items()):
            if process.poll() is not None:
                self.finished[name] = process.returncode
                del self.running[name]

    def kill_one(self, rng: random.Random) -> None:
        if not self.running:
            return
        name = rng.choice(sorted(self.running))
        os.kill(self.running[name].pid, signals.SIGKILL)
        self.running[name].wait(10)
        self.killed.add(name)
        self.finished[name] = -signals.SIGKILL
        del self.running[name]

    def stop(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for process in self.running.values():
            process.wait(max(0.1, deadline - time.monotonic()))
        self.reap()


def cycle_faults(server: BrixoTestServer, stop: threading.Event, seen: list[str]) -> None:
    """Switch the server's mood every 0.6 s until `stop`."""
    index = 0
    while not stop.is_set():
        modes = fault_modes()
        name, fault = modes[index % len(modes)]
        if fault is None:
            server.fault_randomly(0.0, Fail(503))
        else:
            server.fault_randomly(FAULT_RATE, fault, seed=SEED + index)
        seen.append(name)
        index += 1
        stop.wait(0.6)
    server.fault_randomly(0.0, Fail(503))


def read_logs(logs: Path) -> dict[str, list[list[str]]]:
    return {
        log.stem: [line.split() for line in log.read_text().splitlines() if line.strip()]
        for log in logs.glob("*.log")
    }


def test_nothing_acknowledged_is_lost_under_a_flapping_server_and_sigkills(
    server: BrixoTestServer, tmp_path: Path
) -> None:
    outbox = tmp_path / "o.db"
    logs = tmp_path / "logs"
    logs.mkdir()
    rng = random.Random(SEED)
    producers = Producers(server, outbox, logs)
    stop, modes_seen = threading.Event(), []
    cycler = threading.Thread(target=cycle_faults, args=(server, stop, modes_seen), daemon=True)
    cycler.start()
    kills = 0
    try:
        for _ in range(PRODUCERS):
            producers.start()
        deadline = time.monotonic() + CAMPAIGN_SECONDS
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.8, 2.0))
            producers.reap()
            if rng.random() < 0.8:
                producers.kill_one(rng)
                kills += 1
            while len(producers.running) < PRODUCERS and time.monotonic() < deadline - 2:
                producers.start()
    finally:
        stop.set()
        cycler.join(5)
        producers.stop(timeout=PRODUCER_SECONDS + 15)
        for process in producers.running.values():
            process.kill()
    assert not producers.running
    exits = {
        name: code for name, code in producers.finished.items() if name not in producers.killed
    }
    assert set(exits.values()) <= {0}, {
        name: (logs / f"{name}.err").read_text()[-2000:] for name, code in exits.items() if code
    }

    # A process started afterwards delivers what the killed ones left (their leases are those
    # of dead processes: it takes them back at once) and what waited out a pause.
    drained = run("drain.py", server.url, str(outbox), "60", timeout=120)
    assert drained.returncode == 0, drained.stderr[-3000:]

    logged = read_logs(logs)
    committed = {line[1] for lines in logged.values() for line in lines if line[0] == "A"}
    held = {name: {line[1] for line in lines if line[0] == "H"} for name, lines in logged.items()}
    refused = {line[1] for lines in logged.values() for line in lines if line[0] == "R"}
    stored = server.signals()
    delivered = {s.idempotency_key for s in stored}

    lost = committed - refused - delivered
    assert not lost, f"{len(lost)} committed signals never delivered"
    held_by_survivors = set().union(*(ids for n, ids in held.items() if n not in producers.killed))
    assert not held_by_survivors - delivered, "signals held in memory lost at a normal exit"
    held_by_killed = set().union(*(ids for n, ids in held.items() if n in producers.killed))
    lost_in_memory = held_by_killed - delivered  # SIGKILL while the outbox was busy: by design

    keys_per_message = Counter(s.target_id for s in stored)
    assert max(keys_per_message.values()) == 1, keys_per_message.most_common(3)
    with closing(sqlite3.connect(outbox)) as conn:
        dead = conn.execute("SELECT reason FROM deliveries WHERE state = 2").fetchall()
    assert all(reason and reason.strip() for (reason,) in dead)

    latencies = [float(line[2]) for lines in logged.values() for line in lines if line[0] in "AH"]
    requests = [r for r in server.requests() if r.path.endswith("/signals")]
    record_figures(
        "fault_campaign",
        producers_started=producers.started,
        sigkills=len(producers.killed),
        seconds=CAMPAIGN_SECONDS,
        fault_modes=sorted(set(modes_seen)),
        acknowledged=len(committed - refused) + len(held_by_survivors),
        held_by_killed=len(held_by_killed),
        lost_in_memory_at_sigkill=len(lost_in_memory),
        delivered=len(delivered),
        lost=len(lost),
        refused=len(refused),
        requests=len(requests),
        duplicates_deduplicated_by_key=server.duplicate_count(),
        dead=len(dead),
        caller_p50_ms=round(percentile(latencies, 0.5) * 1000, 3),
        caller_p99_ms=round(percentile(latencies, 0.99) * 1000, 3),
        caller_max_ms=round(max(latencies) * 1000, 3),
    )
