"""Issue 13, defect 8 (last part): two processes sharing an outbox take the first two reactions
to one message at the same moment; VirtuousAI gets one item per message, not one per process,
and it says the newer reaction."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from brixo_otel._delivery._outbox import Outbox
from tests._contract import Reply
from tests._contract.virtuousai import VirtuousAIContractServer
from tests.reliability._harness import child_env, script

pytestmark = pytest.mark.timeout(90)

THREAD = "51f72284-0555-48fe-a20a-4369ee94dc3e"
MESSAGES = [str(uuid.uuid4()) for _ in range(6)]


class SlowCreates(VirtuousAIContractServer):
    """VirtuousAI taking half a second to create an item: long enough for both processes to be
    in the middle of their first reaction to a message at once."""

    def handle(self, route: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        if route == "POST create":
            time.sleep(0.5)
        return super().handle(route, path, headers, body)


@pytest.fixture
def server() -> Iterator[VirtuousAIContractServer]:
    with SlowCreates() as running:
        yield running


def test_first_reactions_racing_from_two_processes_make_one_item_per_message(
    server: VirtuousAIContractServer, tmp_path: Path
) -> None:
    outbox = tmp_path / "o.db"
    Outbox(str(outbox)).close()  # the shared state's file, as a running client made it
    start_at = time.time() + 2.0  # both processes are up by then
    racers = [
        subprocess.Popen(
            [
                sys.executable,
                script("virtuousai_race.py"),
                server.url,
                str(outbox),
                str(start_at),
                value,
                later,
                THREAD,
                *MESSAGES,
            ],
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for value, later in (("thumbs_up", "0"), ("thumbs_down", "1"))
    ]
    outputs = [racer.communicate(timeout=60) for racer in racers]
    assert [r.returncode for r in racers] == [0, 0], [err[-2000:] for _, err in outputs]
    results: list[dict[str, Any]] = [json.loads(out.splitlines()[-1]) for out, _ in outputs]
    assert all(set(r.values()) == {"delivered"} for r in results), results

    items = server.items()
    per_message = Counter(item["messageId"] for item in items)
    assert per_message == dict.fromkeys(MESSAGES, 1), "a message got more than one item"
    # Whatever ran first, each item says the newer reaction (given one second later).
    assert {item["reaction"] for item in items} == {"thumbs_down"}
