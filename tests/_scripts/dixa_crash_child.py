"""A process that dies (SIGKILL) between Dixa's rating offer and its submit.

usage: dixa_crash_child.py SERVER_URL API_KEY OUTBOX CONVERSATION

It configures the client with the Dixa exporter against the contract server (which the test has
set to hang the submit), gives feedback on the conversation, waits until the offer's id is in
the exporter's durable state, prints the signal id and the offer id, and waits to be killed
(SIGKILL) by the test once its submit has reached the server: the submit never gets an answer
and the outbox still has the row in flight.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for tests._services

import brixo_otel
from brixo_otel import RetryPolicy
from brixo_otel.exporters._dixa import DixaExporter
from brixo_otel.testing import SpanCapture
from tests._services import wait_for

AGENT_ID = "eeb3bbe5-0355-4ac1-8af5-20d42a3db24b"
USER_ID = "b0323b42-c428-4afa-970e-20bf5bdeeec4"


def main() -> None:
    url, api_key, outbox, conversation = sys.argv[1:5]
    exporter = DixaExporter(api_key, url, agent_id=AGENT_ID, user_id=USER_ID)
    brixo_otel.configure(
        exporters=[exporter],
        retry_policy=RetryPolicy(initial_backoff=0.02, max_backoff=0.2),
        outbox_path=outbox,
        traces_endpoint="none",
        tracer_provider=SpanCapture().provider,
    )
    sent = brixo_otel.feedback("thumbs_down", conversation_id=conversation, user_message="slow")
    offer = wait_for(
        lambda: exporter.rating_id(sent.id), 20, "the offer in the exporter's state", interval=0.005
    )
    print(sent.id, offer, flush=True)
    time.sleep(60)  # the test kills us (SIGKILL) once the submit is on the wire


if __name__ == "__main__":
    main()
