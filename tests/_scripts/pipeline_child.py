"""Both sides of the SIGKILL test of the pipeline, on one outbox and one SQLite span index.

`commit-and-die`: answer 20 messages, give feedback on them (the first ten are emitted and
exported, the other ten only committed), print the signal ids as one JSON line and SIGKILL
itself. `restart`: configure on the same files and let the pipeline finish the work.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import brixo_otel


def main() -> None:
    mode, outbox, index, base_url = sys.argv[1:5]
    client = brixo_otel.configure(
        api_key="test-key",
        base_url=base_url,
        traces_endpoint=base_url + "/v1/traces",
        allow_insecure_http=True,
        outbox_path=outbox,
        span_index=index,
        link_window=30,
    )
    if mode == "restart":
        brixo_otel.flush(20)  # links and emits what A committed
        brixo_otel.flush(20)  # exports the feedback spans just emitted
        brixo_otel.shutdown()
        return

    @brixo_otel.message(name="answer")
    def answer(message_id: str) -> str:
        return "an answer"

    ids = []
    for n in range(20):
        answer(f"m-{n}")
    flush_index = getattr(client.span_index, "flush", None)
    if callable(flush_index):
        flush_index(10.0)  # B must find A's spans in the shared index
    for n in range(20):
        ids.append(brixo_otel.feedback("thumbs_up", message_id=f"m-{n}").id)
        if n == 9:
            brixo_otel.flush(10)
            brixo_otel.flush(10)
    print(json.dumps({"signals": ids}), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main()
