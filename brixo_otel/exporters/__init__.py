"""Destinations for feedback signals; `configure(exporters=[...])` sends to all of them."""

from brixo_otel._exporter import (
    DeliveryResult,
    DeliveryStatus,
    ExporterState,
    SignalExporter,
)
from brixo_otel.exporters._brixo import BrixoSignalExporter
from brixo_otel.exporters._console import ConsoleSignalExporter
from brixo_otel.exporters._dixa import DixaExporter
from brixo_otel.exporters._langfuse import LangfuseExporter
from brixo_otel.exporters._memory import InMemorySignalExporter
from brixo_otel.exporters._mixpeek import MixpeekExporter
from brixo_otel.exporters._mlflow import MLflowExporter
from brixo_otel.exporters._phoenix import PhoenixExporter
from brixo_otel.exporters._virtuousai import VirtuousAIError, VirtuousAIExporter

__all__ = [
    "BrixoSignalExporter",
    "ConsoleSignalExporter",
    "DeliveryResult",
    "DeliveryStatus",
    "DixaExporter",
    "ExporterState",
    "InMemorySignalExporter",
    "LangfuseExporter",
    "MLflowExporter",
    "MixpeekExporter",
    "PhoenixExporter",
    "SignalExporter",
    "VirtuousAIError",
    "VirtuousAIExporter",
]
