"""``peerup demo`` as a user runs it: every step works, including a third machine
that joins with one code from a process and a config directory of its own, enrolled
at the relay by home's invite, and fetches through its own daemon."""

from __future__ import annotations

import json
import subprocess
import sys


def test_the_demo_pairs_a_fresh_machine_with_one_code() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "peerup", "demo", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["ok"] is True
    steps = [s["name"] for s in result["steps"]]
    assert steps[-3:] == ["invite", "join", "fetch"], steps
    assert "hello from home" in result["steps"][-1]["detail"]
    assert "enrolled and paired" in result["steps"][-2]["detail"]
