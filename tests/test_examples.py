"""`make demo` keeps working: the demo runs end to end and its joined view is right."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_round_trip() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIXO_")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py")],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "all signals delivered: True" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("msg-")}
    assert rows["msg-001"][2:] == ["gpt-4o-mini", "thumbs_up", "yes", "yes"]
    assert rows["msg-002"][2:] == ["claude-haiku", "thumbs_down", "yes", "yes"]
    assert rows["msg-004"][2:] == ["claude-haiku", "-", "-", "-"]
    assert "conversation conv-demo-1: thumbs_up (delivered)" in out
    rates = {line.split()[0]: line.split()[1:] for line in out.splitlines()[-2:]}
    assert rates == {"claude-haiku": ["2", "1", "0%"], "gpt-4o-mini": ["2", "2", "100%"]}
