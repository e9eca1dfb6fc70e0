"""Leave the interpreter one way or another while both endpoints hang.

usage: exit_paths.py MODE SILENT_URL OUTBOX

The Signals API and the OTLP endpoint are SILENT_URL, a socket that accepts and never answers.
The script records a message span (for the OTLP export, which the test's environment makes start
within 0.1 s) and rates three other messages (for the Signals API), gives both exports a second
to get stuck, then prints "EXITING <monotonic>" and leaves by MODE: `return`, `sys.exit`,
`exception` (unhandled), or `signal` (it prints "READY" and sleeps until the test sends SIGTERM
or SIGINT). Whatever the way, the interpreter must be gone within the exit budget.
"""

from __future__ import annotations

import signal
import sys
import time

import brixo_otel


def main() -> None:
    mode, silent, outbox = sys.argv[1:4]
    brixo_otel.configure(
        api_key="test-key",
        base_url=silent,
        traces_endpoint=silent + "/v1/traces",
        outbox_path=outbox,
    )
    with brixo_otel.message_span(message_id="traced-message"):
        pass
    for n in range(3):
        brixo_otel.feedback("thumbs_up", message_id=f"rated-{n}")
    time.sleep(1.0)  # both exports are under way, and stuck, by now
    if mode == "signal":
        # Ctrl-C as Python handles it by default, even when this was started with SIGINT
        # ignored (as a shell starts a background job, and so everything the job starts).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print("READY", flush=True)
        time.sleep(60)
        return
    print(f"EXITING {time.monotonic()}", flush=True)
    if mode == "sys.exit":
        sys.exit(0)
    if mode == "exception":
        raise RuntimeError("the app failed")


if __name__ == "__main__":
    main()
