"""What the NAT-lab tests share: the lab command, the checks before bringing a lab up
(root, tools, no other lab: one at a time on a machine), and the base of their Lab
record (commands run in a lab host, the processes started there, their logs)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from e2e.e2e_harness import Proc, skip_or_fail

ROOT = Path(__file__).resolve().parents[2]
NATLAB = ROOT.parent / "shared" / "natlab" / "natlab"


def natlab(*args: str) -> subprocess.CompletedProcess[str]:
    """One ``natlab`` command (up, down, status, exec …)."""
    return subprocess.run(
        [str(NATLAB), *args], capture_output=True, text=True, timeout=60
    )


def require_lab(*paths: str) -> None:
    """Skip (fail in CI) unless a lab can come up here: root, ip and nft, the lab
    script, ``paths`` (other programs a test needs), and no lab up already."""
    if os.geteuid() != 0:
        skip_or_fail("needs root (the NAT lab builds network namespaces)")
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            skip_or_fail(f"{tool} is missing (scripts/setup-system installs it)")
    for path in paths:
        if not os.path.exists(path):
            skip_or_fail(f"{path} is missing (scripts/setup-system installs it)")
    if not NATLAB.exists():
        skip_or_fail(f"{NATLAB} is missing")
    status = natlab("status")
    if "no lab up" not in status.stdout:
        skip_or_fail(f"another NAT lab is up (one at a time): {status.stdout[:200]}")


@dataclass
class LabBase:
    workdir: Path
    procs: list[Proc] = field(default_factory=list)

    def argv(self, host: str, *command: str) -> list[str]:
        return [str(NATLAB), "exec", host, "--", *command]

    def start(self, name: str, host: str, *command: str) -> Proc:
        proc = Proc(name, self.argv(host, *command), self.workdir).start()
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(p.logs()[-6000:] for p in self.procs)
