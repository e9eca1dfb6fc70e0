"""What the tests that run real servers share: installing a binary, and picking a free port."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def installed_binary(name: str, installer: str) -> str:
    """The path of `name`, installed by `scripts/<installer>` if missing.

    Raises when it cannot be had: a test that needs a real server fails, it never skips.
    """
    found = shutil.which(name)
    if found is not None:
        return found
    script = REPO / "scripts" / installer
    result = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, timeout=300, check=False
    )
    found = shutil.which(name)
    if result.returncode != 0 or found is None:
        raise RuntimeError(
            f"{name} is needed and could not be installed by {script}:\n{result.stderr[-2000:]}"
        )
    return found


def free_port() -> int:
    """A loopback port nothing listens on right now (the kernel's pick, so no guessing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
