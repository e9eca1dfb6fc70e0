"""Destinations for feedback signals; `configure(exporters=[...])` sends to all of them."""

from brixo_otel.exporters._base import DeliveryResult, DeliveryStatus, SignalExporter

__all__ = ["DeliveryResult", "DeliveryStatus", "SignalExporter"]
