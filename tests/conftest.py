"""Shared fixtures: every test starts with no BRIXO_* settings and fails on internal errors."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# Our own bugs must fail our tests rather than be swallowed by the telemetry guard.
os.environ["BRIXO_OTEL_RAISE_INTERNAL_ERRORS"] = "1"


@pytest.fixture(autouse=True)
def _clean_brixo_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("BRIXO_") and name != "BRIXO_OTEL_RAISE_INTERNAL_ERRORS":
            monkeypatch.delenv(name)
    from brixo_otel._internal import reset_rate_limits

    reset_rate_limits()
    yield
