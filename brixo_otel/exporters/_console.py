"""A destination for development: see each signal as it would leave the app."""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from brixo_otel._exporter import DeliveryResult, DeliveryStatus, SignalExporter
from brixo_otel._signal import Signal


class ConsoleSignalExporter(SignalExporter):
    """Writes one compact JSON line per signal, to `stream` or else to the current stdout.

    stdout is looked up at each export rather than at construction, so redirection and test
    capture made later still see the output. A lock keeps lines from concurrent export threads
    whole.
    """

    def __init__(self, stream: TextIO | None = None, name: str = "console") -> None:
        self._stream = stream
        self.name = name
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    def accepts(self, signal: Signal) -> bool:
        """Every kind of signal, retractions included: this destination is for seeing them."""
        return True

    def export(self, signal: Signal) -> DeliveryResult:
        line = signal.to_json() + "\n"
        stream = self._stream if self._stream is not None else sys.stdout
        try:
            with self._lock:
                stream.write(line)
                stream.flush()
        except (OSError, ValueError) as exc:
            # A closed or broken stream (e.g. at interpreter exit): keep the signal for later.
            return DeliveryResult(DeliveryStatus.RETRY, f"cannot write: {type(exc).__name__}")
        return DeliveryResult.delivered()
