"""A destination that keeps signals in memory, so tests can assert on what was delivered."""

from __future__ import annotations

import threading

from brixo_otel._exporter import DeliveryResult, SignalExporter
from brixo_otel._signal import Signal


class InMemorySignalExporter(SignalExporter):
    """Records every exported signal, in export order; safe to export from many threads."""

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self._signals: list[Signal] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    def accepts(self, signal: Signal) -> bool:
        """Every kind of signal, retractions included: this destination is for seeing them."""
        return True

    def export(self, signal: Signal) -> DeliveryResult:
        with self._lock:
            self._signals.append(signal)
        return DeliveryResult.delivered()

    def signals(self) -> list[Signal]:
        """A copy, so a test can iterate while the worker keeps exporting."""
        with self._lock:
            return list(self._signals)

    def clear(self) -> None:
        with self._lock:
            self._signals.clear()
