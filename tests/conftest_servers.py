"""Session fixtures for the real servers (Phoenix, MLflow): each started once per session.

A test module that needs one says `pytest_plugins = ["tests.conftest_servers"]`; loaded as a
plugin, these fixtures are defined once for the whole session, so every module that uses a
server shares the one process (start-up takes 15 to 60 s). A server that cannot be installed or
started fails the tests that need it; none is skipped.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests._mlflow import MLflowServer
from tests._phoenix import PhoenixServer


@pytest.fixture(scope="session")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PhoenixServer]:
    """One real Phoenix for the whole session."""
    with PhoenixServer(tmp_path_factory.mktemp("phoenix")) as server:
        yield server


@pytest.fixture(scope="session")
def mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MLflowServer]:
    """One real MLflow tracking server for the whole session."""
    with MLflowServer(tmp_path_factory.mktemp("mlflow")) as server:
        yield server


@pytest.fixture(scope="session")
def mlflow_experiment(mlflow: MLflowServer) -> str:
    """The experiment the tests' traces go to."""
    return mlflow.create_experiment("brixo-tests")
