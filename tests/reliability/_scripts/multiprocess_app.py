"""An app that hands ratings to a multiprocessing pool.

usage: multiprocess_app.py START_METHOD BASE_URL OUTBOX

Configures brixo-otel, rates a message itself, then maps nine ratings over a pool of three
workers started with START_METHOD (fork: they inherit the configured client; spawn and
forkserver: each configures its own), closes and joins the pool, flushes what is left, and
prints one JSON line: the acknowledged ids, the workers' pids, and how long the pool took.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # `tests` importable by spawn

import brixo_otel
from tests.reliability import _mp_target


def main() -> None:
    method, base_url, outbox = sys.argv[1:4]
    _mp_target.configure(base_url, outbox)
    acknowledged = [brixo_otel.feedback("thumbs_down", message_id=f"{method}-parent").id]
    context = multiprocessing.get_context(method)
    started = time.monotonic()
    jobs = [(base_url, outbox, f"{method}-{n}") for n in range(9)]
    with context.Pool(3) as pool:
        results = pool.map(_mp_target.rate, jobs, chunksize=1)
        pool.close()
        pool.join()
    took = time.monotonic() - started
    acknowledged += [signal_id for signal_id, _ in results]
    flushed = brixo_otel.flush(timeout=20)
    report = {
        "acknowledged": acknowledged,
        "workers": sorted({pid for _, pid in results}),
        "pool_seconds": took,
        "flushed": flushed,
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
