"""A process that gives one 👍 to VirtuousAI and then waits to be killed.

usage: virtuousai_crash_child.py BASE_URL OUTBOX MESSAGE_ID THREAD_ID

It prints the signal's id once the signal is in the outbox, then keeps delivering (the test's
server hangs up after every create) until the test sends SIGKILL; it exits by itself only if
nobody kills it within a minute, so a broken test cannot leave it behind for long.
"""

from __future__ import annotations

import sys
import time

from opentelemetry.sdk.trace import TracerProvider

import brixo_otel
from brixo_otel import RetryPolicy
from brixo_otel.exporters._virtuousai import VirtuousAIExporter


def main() -> None:
    base_url, outbox, message_id, thread_id = sys.argv[1:5]
    brixo_otel.configure(
        exporters=[VirtuousAIExporter(api_key="test-key", base_url=base_url)],
        retry_policy=RetryPolicy(initial_backoff=0.02, max_backoff=0.2),
        outbox_path=outbox,
        traces_endpoint="none",
        tracer_provider=TracerProvider(),
    )
    signal = brixo_otel.feedback("thumbs_up", message_id=message_id, conversation_id=thread_id)
    print(signal.id, flush=True)
    time.sleep(60)


if __name__ == "__main__":
    main()
