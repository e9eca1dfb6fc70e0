"""Pytest fixtures shipped with brixo-otel, loaded through the `pytest11` entry point.

This module loads in every pytest session of every project that installs brixo-otel, so it
imports nothing heavy until a fixture is actually used.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from brixo_otel.testing import BrixoTestServer, SpanCapture


@pytest.fixture
def brixo_server() -> Iterator[BrixoTestServer]:
    """A running local Brixo server (API key "test-key"), stopped after the test."""
    from brixo_otel.testing import BrixoTestServer

    server = BrixoTestServer(api_key="test-key").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def span_capture() -> Iterator[SpanCapture]:
    """A private TracerProvider recording finished spans in memory, shut down after the test."""
    from brixo_otel.testing import SpanCapture

    capture = SpanCapture()
    try:
        yield capture
    finally:
        capture.shutdown()
