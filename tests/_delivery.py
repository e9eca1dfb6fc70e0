"""What the exporter and delivery tests share: a client with a real outbox and worker, fast
retries, and a look at the outbox's dead letters."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import brixo_otel
from brixo_otel import RetryPolicy
from brixo_otel._delivery._outbox import Outbox
from brixo_otel.exporters import SignalExporter
from brixo_otel.testing import SpanCapture

ErrorHook = Callable[[brixo_otel.Signal, str, str], None]

#: Retries in tens of milliseconds, so a test sees several attempts within a second.
FAST = RetryPolicy(initial_backoff=0.02, max_backoff=0.2)


def configure_delivery(
    exporters: Sequence[SignalExporter], outbox: Path, on_error: ErrorHook | None = None
) -> brixo_otel.Client:
    """A real client (outbox file, worker, retries) sending only to `exporters`."""
    return brixo_otel.configure(
        exporters=exporters,
        retry_policy=FAST,
        outbox_path=outbox,
        traces_endpoint="none",
        tracer_provider=SpanCapture().provider,
        on_error=on_error,
    )


def connect(
    exporters: Sequence[SignalExporter], outbox: Path, errors: list[str] | None = None
) -> brixo_otel.Client:
    """`configure_delivery`, collecting each dead-letter reason into `errors` when given."""
    hook: ErrorHook | None = None
    if errors is not None:

        def hook(signal: brixo_otel.Signal, destination: str, reason: str) -> None:
            errors.append(reason)

    return configure_delivery(exporters, outbox, hook)


def dead_reasons(outbox: Path) -> list[str]:
    store = Outbox(str(outbox))
    try:
        return [letter.reason for letter in store.dead_letters()]
    finally:
        store.close()
