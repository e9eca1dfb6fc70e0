"""Destinations for feedback signals; `configure(exporters=[...])` sends to all of them."""

from brixo_otel.exporters._base import (
    DeliveryResult,
    DeliveryStatus,
    ExporterState,
    SignalExporter,
)
from brixo_otel.exporters._brixo import BrixoSignalExporter
from brixo_otel.exporters._console import ConsoleSignalExporter
from brixo_otel.exporters._memory import InMemorySignalExporter

__all__ = [
    "BrixoSignalExporter",
    "ConsoleSignalExporter",
    "DeliveryResult",
    "DeliveryStatus",
    "ExporterState",
    "InMemorySignalExporter",
    "SignalExporter",
]
