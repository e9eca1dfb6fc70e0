"""Pytest fixtures shipped with brixo-otel, loaded through the `pytest11` entry point.

This module loads in every pytest session of every project that installs brixo-otel, so it
imports nothing heavy until a fixture is actually used.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from brixo_otel import Client
    from brixo_otel.exporters import InMemorySignalExporter
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


@pytest.fixture
def signal_capture() -> InMemorySignalExporter:
    """An in-memory signal destination: pass it in `configure(exporters=[signal_capture])` and
    read `signal_capture.signals()` after `brixo_otel.flush()`."""
    from brixo_otel.exporters import InMemorySignalExporter

    return InMemorySignalExporter()


@pytest.fixture
def brixo_client(
    span_capture: SpanCapture, signal_capture: InMemorySignalExporter
) -> Iterator[Client]:
    """brixo-otel configured for a test: spans to `span_capture`, signals to `signal_capture`,
    no network, no outbox file; shut down after the test so no default client leaks out."""
    import brixo_otel

    client = brixo_otel.configure(
        tracer_provider=span_capture.provider,
        traces_endpoint="none",
        exporters=[signal_capture],
        outbox_path=":memory:",
    )
    try:
        yield client
    finally:
        brixo_otel.shutdown(timeout=2.0)
