"""What the tests that run real servers share: finding a binary, picking a free port, a bounded
wait, and a child process that logs to a file and is always reaped."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeVar

REPO = Path(__file__).resolve().parent.parent

T = TypeVar("T")
S = TypeVar("S", bound="ServiceProcess")


def installed_binary(name: str, installer: str) -> str:
    """The path of `name`, which `make services` (scripts/`installer`) installs.

    Nothing is installed from inside the tests: a test that needs a real server fails, with the
    command that provides it, and never skips.
    """
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(
            f"{name} is needed by this test and is not on PATH; `make services` installs it "
            f"(or run: bash {REPO / 'scripts' / installer})"
        )
    return found


def free_port() -> int:
    """A loopback port nothing listens on right now (the kernel's pick, so no guessing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(
    check: Callable[[], T | None], timeout: float, what: str, *, interval: float = 0.2
) -> T:
    """Poll `check` until it returns something other than None; every wait here is bounded."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            raise TimeoutError(f"gave up after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class ServiceProcess:
    """A server run as a child process for a test, its output going to `log` (a pipe nobody
    reads could fill up). Subclasses `start()` it with `_spawn` and `_wait_until_ready`;
    `stop()` (safe to repeat) terminates it politely, kills it if need be, and always reaps it,
    so no zombie or ResourceWarning is left behind."""

    #: How the process is named in errors.
    name = "the server"

    def __init__(self, log: Path) -> None:
        self.log = log
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Spawn the process and return once it is ready."""
        raise NotImplementedError

    def _spawn(self, command: Sequence[str], cwd: Path) -> None:
        if self._process is not None:
            raise RuntimeError(f"{self.name} is already running")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as output:
            self._process = subprocess.Popen(
                list(command),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def _wait_until_ready(
        self, ready: Callable[[], bool], what: str, timeout: float, interval: float = 0.2
    ) -> None:
        """Poll `ready()` until true; stop the process and raise, with its log, if it exits
        first or `timeout` runs out."""

        def check() -> bool | None:
            # Exit first: whatever answers `ready()` then is not this process.
            if self.exited():
                raise RuntimeError(f"{self.name} exited early:\n{self.tail()}")
            return True if ready() else None

        try:
            wait_for(check, timeout, what, interval=interval)
        except TimeoutError as exc:
            self.stop()
            raise TimeoutError(f"{exc}; {self.log.name} ends:\n{self.tail()}") from None
        except BaseException:
            self.stop()
            raise

    def tail(self) -> str:
        """The end of the process's output, for error messages."""
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else "(no output)"

    def exited(self) -> bool:
        return self._process is None or self._process.poll() is not None

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def __enter__(self: S) -> S:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
