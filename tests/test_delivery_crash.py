"""Real processes: several on one outbox, kill -9, interpreter exit, os.fork, multiprocessing."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from brixo_otel._delivery._outbox import Outbox
from brixo_otel._delivery._worker import SignalProcessor
from brixo_otel._policies import RetryPolicy
from brixo_otel._signal import Signal, validate
from brixo_otel.exporters import DeliveryResult, SignalExporter
from tests._services import wait_for

pytestmark = pytest.mark.timeout(60)

CHILD = str(Path(__file__).parent / "_scripts" / "delivery_child.py")
FAST = RetryPolicy(initial_backoff=0.01, max_backoff=0.05)


class FileExporter(SignalExporter):
    """Appends "pid id" per delivery to a file every process can read.

    One `O_APPEND` write per line needs no lock, so the exporter itself survives a fork made
    while a parent's thread is mid-export (a lock held at that moment would stay held in the
    child forever).
    """

    name = "brixo"

    def __init__(self, record: Path, delay: float = 0.0) -> None:
        self.record = record
        self.delay = delay

    def export(self, signal: Signal) -> DeliveryResult:
        time.sleep(self.delay)
        fd = os.open(self.record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{os.getpid()} {signal.id}\n".encode())
        finally:
            os.close(fd)
        return DeliveryResult.delivered()


def delivered_ids(*records: Path) -> list[str]:
    ids: list[str] = []
    for record in records:
        if record.exists():
            ids += [line.split()[-1] for line in record.read_text().splitlines()]
    return ids


@pytest.fixture
def outbox_path(tmp_path: Path) -> str:
    return str(tmp_path / "outbox.db")


def run_child(mode: str, outbox_path: str, record: Path, timeout: float = 30) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, CHILD, mode, outbox_path, str(record)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return done.returncode, done.stdout


def deliver_rest(outbox_path: str, record: Path) -> bool:
    """What the next process does with a working destination: deliver the leftovers."""
    outbox = Outbox(outbox_path)
    processor = SignalProcessor(outbox, [FileExporter(record)], policy=FAST, poll_interval=0.05)
    try:
        return processor.flush(timeout=10)
    finally:
        processor.shutdown(timeout=2)
        outbox.close()


def test_four_processes_claiming_from_one_outbox_deliver_each_row_once(
    outbox_path: str, tmp_path: Path
) -> None:
    Outbox(outbox_path).close()  # create the schema once, as an app's first start would
    records = [tmp_path / f"record-{n}.txt" for n in range(4)]
    go = tmp_path / "go"
    children = [
        subprocess.Popen(
            [
                sys.executable,
                CHILD,
                "deliver",
                outbox_path,
                str(record),
                "200",
                str(tmp_path / f"ready-{n}"),
                str(go),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n, record in enumerate(records)
    ]
    try:

        def ready() -> bool | None:
            assert all(child.poll() is None for child in children), "a child died early"
            return all((tmp_path / f"ready-{n}").exists() for n in range(4)) or None

        wait_for(ready, 30, "the children to get ready", interval=0.01)
        go.touch()
        outputs = [child.communicate(timeout=40) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(5)
    for child, (_, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err
    enqueued = [line for out, _ in outputs for line in out.split()]
    ids = delivered_ids(*records)

    assert len(enqueued) == 800
    assert sorted(ids) == sorted(enqueued)  # every id, exactly once
    assert sum(1 for record in records if record.exists() and record.stat().st_size) >= 2
    outbox = Outbox(outbox_path)
    try:
        assert outbox.stats()["brixo"]["delivered"] == 800
        assert outbox.pending_count() == 0
    finally:
        outbox.close()


@pytest.mark.parametrize("mode", ["kill-after-enqueue", "kill-in-flight"])
def test_kill_9_right_after_enqueue_then_a_new_process_delivers(
    mode: str, outbox_path: str, tmp_path: Path
) -> None:
    after = tmp_path / "after.txt"
    code, out = run_child(mode, outbox_path, tmp_path / "never.txt")
    assert code == -9
    [signal_id] = out.split()

    started = time.monotonic()
    assert deliver_rest(outbox_path, after)
    assert time.monotonic() - started < 5  # the dead owner's lease is not waited out
    assert delivered_ids(after) == [signal_id]


@pytest.mark.parametrize(
    ("mode", "exit_code"), [("exit-normal", 0), ("exit-sys-exit", 3), ("exit-exception", 1)]
)
def test_exit_delivers_within_the_budget(
    mode: str, exit_code: int, outbox_path: str, tmp_path: Path
) -> None:
    record = tmp_path / "record.txt"
    code, out = run_child(mode, outbox_path, record)
    assert code == exit_code
    [signal_id] = out.split()  # one was enqueued: a child dead before it would prove nothing
    assert delivered_ids(record) == [signal_id]


def test_exit_with_a_hung_destination_ends_within_the_budget(
    outbox_path: str, tmp_path: Path
) -> None:
    after = tmp_path / "after.txt"
    started = time.monotonic()
    code, out = run_child("exit-hang", outbox_path, tmp_path / "never.txt", timeout=20)
    assert code == 0
    assert time.monotonic() - started < 8  # start-up plus the 1 s budget; never the 1 h hang
    outbox = Outbox(outbox_path)
    try:
        stats = outbox.stats()["brixo"]
        assert (stats["pending"], stats["in_flight"]) == (1, 0)  # released, not lost
    finally:
        outbox.close()
    assert deliver_rest(outbox_path, after)
    assert delivered_ids(after) == out.split()


def _wait_child(pid: int, timeout: float) -> int:
    def exited() -> int | None:
        done, status = os.waitpid(pid, os.WNOHANG)
        return os.waitstatus_to_exitcode(status) if done else None

    try:
        return wait_for(exited, timeout, "the forked child to exit", interval=0.01)
    except TimeoutError:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        raise AssertionError("forked child hung") from None


def test_fork_child_delivers_its_own_and_leaves_the_parents_leases(
    outbox_path: str, tmp_path: Path
) -> None:
    record = tmp_path / "record.txt"
    outbox = Outbox(outbox_path)
    processor = SignalProcessor(
        outbox, [FileExporter(record, delay=0.02)], policy=FAST, poll_interval=0.05
    )
    try:
        before = [validate("thumbs_up", message_id=f"parent-{i}") for i in range(20)]
        for signal in before:
            processor.enqueue(signal)  # the worker and its senders are busy when we fork
        child_signal = validate("thumbs_down", message_id="child")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # "multi-threaded fork", 3.12+
            pid = os.fork()
        if pid == 0:  # pragma: no cover - reports through its exit code
            code = 1
            try:
                ok = processor.enqueue(child_signal) and processor.flush(timeout=15)
                processor.shutdown(timeout=2)
                code = 0 if ok else 2
            finally:
                os._exit(code)
        after = [validate("thumbs_up", message_id=f"parent-late-{i}") for i in range(5)]
        for signal in after:
            processor.enqueue(signal)
        assert processor.flush(timeout=15)
        assert _wait_child(pid, 20) == 0
    finally:
        processor.shutdown(timeout=2)
        outbox.close()

    lines = [line.split() for line in record.read_text().splitlines()]
    ids = [signal_id for _, signal_id in lines]
    assert sorted(ids) == sorted(s.id for s in [*before, child_signal, *after])  # once each


def _deliver_in_forked_process(processor: SignalProcessor, message_id: str) -> None:
    if not processor.enqueue(validate("thumbs_up", message_id=message_id)):
        raise SystemExit(3)
    if not processor.flush(timeout=15):
        raise SystemExit(2)
    processor.shutdown(timeout=2)


def test_multiprocessing_fork_workers_deliver(outbox_path: str, tmp_path: Path) -> None:
    record = tmp_path / "record.txt"
    outbox = Outbox(outbox_path)
    processor = SignalProcessor(outbox, [FileExporter(record)], policy=FAST, poll_interval=0.05)
    try:
        processor.enqueue(validate("thumbs_up", message_id="parent"))  # threads running
        context = multiprocessing.get_context("fork")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            workers = [
                context.Process(target=_deliver_in_forked_process, args=(processor, f"w-{n}"))
                for n in range(2)
            ]
            for worker in workers:
                worker.start()
        for worker in workers:
            worker.join(20)
            assert worker.exitcode == 0
        assert processor.flush(timeout=10)
    finally:
        processor.shutdown(timeout=2)
        outbox.close()
    assert len(delivered_ids(record)) == 3
    assert len(set(delivered_ids(record))) == 3
