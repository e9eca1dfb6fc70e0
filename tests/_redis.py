"""A real, throwaway `redis-server` for tests: a free loopback port, no persistence.

A real server rather than a fake, because what the Redis index must get right is how redis-py
behaves when the server goes away and comes back: refused connections, broken pooled sockets,
key expiry. A test that needs Redis fails (never skips) when it cannot be had, so a CI image
without it is noticed.
"""

from __future__ import annotations

import socket
from pathlib import Path

from tests._services import ServiceProcess, free_port, installed_binary


def redis_server_binary() -> str:
    """The path of `redis-server` (`make services` installs it with scripts/redis-server.sh)."""
    return installed_binary("redis-server", "redis-server.sh")


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer(ServiceProcess):
    """One `redis-server` process; `stop()` then `start()` brings it back on the same port."""

    name = "redis-server"

    def __init__(self, directory: Path, port: int | None = None) -> None:
        # Without --logfile, redis-server logs to stdout, which goes to the log file.
        super().__init__(directory / "redis.log")
        self.binary = redis_server_binary()
        self.directory = directory
        self.port = free_port() if port is None else port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        command = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(self.directory),
        ]  # fmt: skip
        self._spawn(command, cwd=self.directory)
        self._wait_until_ready(
            lambda: _answers_ping(self.port),
            f"redis-server to answer PING on port {self.port}",
            timeout,
            interval=0.02,
        )
