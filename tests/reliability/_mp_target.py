"""What the multiprocessing children of `_scripts/multiprocess_app.py` run: importable by
`spawn` and `forkserver` children, which start from nothing and configure their own client."""

from __future__ import annotations

import os

from opentelemetry.sdk.trace import TracerProvider

import brixo_otel
from brixo_otel import RetryPolicy
from brixo_otel._api import current
from brixo_otel.exporters import BrixoSignalExporter


def configure(base_url: str, outbox: str) -> None:
    brixo_otel.configure(
        exporters=[BrixoSignalExporter(api_key="test-key", base_url=base_url)],
        outbox_path=outbox,
        traces_endpoint="none",
        tracer_provider=TracerProvider(),
        retry_policy=RetryPolicy(initial_backoff=0.02, max_backoff=0.25),
    )


def rate(job: tuple[str, str, str]) -> tuple[str, int]:
    """Rate one message from a pool worker: a forked one uses the client it inherited, a
    spawned one configures its own. Returns the signal's id and the worker's pid."""
    base_url, outbox, message_id = job
    if current() is None:
        configure(base_url, outbox)
    signal = brixo_otel.feedback("thumbs_up", message_id=message_id)
    # Pool workers leave by os._exit (no atexit hooks): the signal is committed, and the flush
    # gives this worker a moment to send it; whatever it does not, another process does.
    brixo_otel.flush(timeout=2)
    return signal.id, os.getpid()
