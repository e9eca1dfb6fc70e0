"""One of two processes giving the first reactions to the same messages at the same moment.

usage: virtuousai_race.py BASE_URL OUTBOX START_AT VALUE SECONDS_LATER MESSAGE THREAD [MESSAGE ...]

Builds a VirtuousAI exporter on the outbox's shared exporter state (as a running client does),
waits until START_AT (epoch seconds), then exports a reaction VALUE (given SECONDS_LATER after
a fixed moment) to every MESSAGE at once, one thread each; retries each signal the destination
asked to retry, as the worker would; prints one JSON line: message -> final status.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

from brixo_otel._delivery._outbox import Outbox
from brixo_otel._delivery._worker import _OutboxState
from brixo_otel._signal import validate
from brixo_otel.exporters import DeliveryStatus
from brixo_otel.exporters._virtuousai import VirtuousAIExporter

T0 = datetime(2026, 2, 3, 14, 22, 10, tzinfo=timezone.utc)


def main() -> None:
    base_url, path, start_at, value, later, thread, *messages = sys.argv[1:]
    outbox = Outbox(path)
    exporter = VirtuousAIExporter(api_key="test-key", base_url=base_url)
    exporter.bind_state(_OutboxState(outbox, exporter.name))
    results: dict[str, str] = {}

    def react(message: str) -> None:
        signal = validate(
            value,
            message_id=message,
            conversation_id=thread,
            occurred_at=T0 + timedelta(seconds=float(later)),
        )
        for _ in range(20):
            result = exporter.export(signal)
            if result.status is not DeliveryStatus.RETRY:
                break
            time.sleep(0.3)
        results[message] = result.status.value

    time.sleep(max(0.0, float(start_at) - time.time()))
    threads = [threading.Thread(target=react, args=(m,)) for m in messages]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    print(json.dumps(results), flush=True)
    exporter.shutdown()
    outbox.close()


if __name__ == "__main__":
    main()
