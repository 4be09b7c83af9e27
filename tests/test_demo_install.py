"""The README's first command on a fresh checkout: ``scripts/demo`` installs peer-up
into the checkout's own ``.venv`` (never the system Python), shows progress while it
compiles the data path, and the demo's tunnel works (issue 10, item 13).

Slow (a venv, a pip install and a mypyc build: a few minutes), so it runs in CI and
when selected by name; elsewhere it skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_scripts_demo_installs_into_the_checkouts_venv(tmp_path: Path) -> None:
    if not os.environ.get("CI") and not os.environ.get("PEERUP_TEST_DEMO"):
        pytest.skip("slow: runs in CI, or with PEERUP_TEST_DEMO=1")
    checkout = tmp_path / "peer-up"
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, archive.split("\0")):
        src = ROOT / name
        if src.is_file():
            dst = checkout / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEERUP_")}
    env["HOME"] = str(tmp_path / "home")
    env["PYTHON"] = sys.executable
    env["PEERUP_BUILD_PROGRESS_S"] = "5"
    done = subprocess.run(
        ["bash", "scripts/demo"],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        stdin=subprocess.DEVNULL,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: tunnel works over the relayed path" in done.stdout, done.stdout
    venv_peerup = checkout / ".venv" / "bin" / "peerup"
    assert venv_peerup.exists()
    assert "installing peer-up into .venv" in done.stderr
    # Progress while compiling: a line every few seconds, then the time it took.
    assert "build-native:" in done.stderr and "built in" in done.stderr, done.stderr
    version = subprocess.run(
        [str(venv_peerup), "version"], capture_output=True, text=True, env=env
    )
    assert version.returncode == 0, version.stderr
    assert "compiled with mypyc" in version.stdout, version.stdout
    # The venv's peerup is this checkout's, not whatever the system Python has.
    where = subprocess.run(
        [str(checkout / ".venv" / "bin" / "python"), "-c",
         "import peerup; print(peerup.__file__)"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert where.stdout.strip().startswith(str(checkout)), where.stdout
