"""Session fixtures for the real servers (Phoenix, MLflow): each started once per session.

A test module that needs one says `pytest_plugins = ["tests.conftest_servers"]`; loaded as a
plugin, these fixtures are defined once for the whole session, so every module that uses a
server shares the one process. Start-up takes 10 to 60 s each, so when the first server is
needed, every server the collected tests need is spawned at once and they boot side by side.
A server that cannot be installed or started fails the tests that need it; none is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import pytest

from tests._mlflow import MLflowServer
from tests._phoenix import PhoenixServer


class _Server(Protocol):
    def launch(self) -> None: ...

    def wait_until_ready(self) -> None: ...

    def stop(self) -> None: ...


#: The servers by fixture name, and how to make each in its own directory.
_KINDS: dict[str, Callable[[Path], _Server]] = {"phoenix": PhoenixServer, "mlflow": MLflowServer}
#: The server fixtures the collected tests use (directly or through another fixture).
_WANTED: set[str] = set()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        _WANTED.update(_KINDS.keys() & set(getattr(item, "fixturenames", ())))


class _Launched:
    """The servers spawned for this session, or why one could not be."""

    def __init__(self) -> None:
        self.servers: dict[str, _Server] = {}
        self.failures: dict[str, BaseException] = {}

    def get(self, name: str) -> _Server:
        if name in self.failures:
            raise self.failures[name]
        return self.servers[name]


@pytest.fixture(scope="session")
def _servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Launched]:
    launched = _Launched()
    try:
        for name in sorted(_WANTED or _KINDS.keys()):
            try:
                server = _KINDS[name](tmp_path_factory.mktemp(name))
                server.launch()
            except Exception as exc:  # reported by the fixture that needs this server
                launched.failures[name] = exc
            else:
                launched.servers[name] = server
        yield launched
    finally:
        for server in launched.servers.values():
            server.stop()


def _ready(launched: _Launched, name: str) -> _Server:
    server = launched.get(name)
    server.wait_until_ready()
    return server


@pytest.fixture(scope="session")
def phoenix(_servers: _Launched) -> PhoenixServer:
    """One real Phoenix for the whole session."""
    server = _ready(_servers, "phoenix")
    assert isinstance(server, PhoenixServer)
    return server


@pytest.fixture(scope="session")
def mlflow(_servers: _Launched) -> MLflowServer:
    """One real MLflow tracking server for the whole session."""
    server = _ready(_servers, "mlflow")
    assert isinstance(server, MLflowServer)
    return server


@pytest.fixture(scope="session")
def mlflow_experiment(mlflow: MLflowServer) -> str:
    """The experiment the tests' traces go to."""
    return mlflow.create_experiment("brixo-tests")
