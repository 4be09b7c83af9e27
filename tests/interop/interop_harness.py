"""Drive the interop test peers of ``interop/CONTRACT.md`` as subprocesses.

Every implementation (ours, go-libp2p, js-libp2p, py-libp2p) has the same command line,
so a test names an implementation and a role and gets a running peer (``start_peer``)
or a finished dial (``dial``). A peer is ready once it prints its NDJSON ``ready`` line;
it is stopped with SIGTERM and must exit 0, as the contract says.

A partner whose binary, virtualenv or node_modules is missing is skipped locally with
the setup command to run; under CI (the ``CI`` environment variable set) the test fails
instead, so CI can never silently skip interop.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
IMPLS = ("ours", "go", "js", "py")
PARTNERS = ("go", "js", "py")

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
DIAL_TIMEOUT_S = 180.0

ECHO = "/echo/1.0.0"
PING = "/ipfs/ping/1.0.0"
IDENTIFY = "/ipfs/id/1.0.0"


def peer_command(impl: str) -> list[str]:
    """The contract's command line of ``impl``'s test peer."""
    if impl == "ours":
        return [sys.executable, "-m", "peerup.interop"]
    if impl == "go":
        return [str(REPO / "interop/go/bin/peer")]
    if impl == "js":
        return [shutil.which("node") or "node", str(REPO / "interop/js/peer.mjs")]
    if impl == "py":
        return [
            str(REPO / "interop/py/.venv/bin/python"),
            str(REPO / "interop/py/peer.py"),
        ]
    raise ValueError(f"unknown implementation {impl!r}")


def missing_reason(impl: str) -> str | None:
    """Why ``impl``'s test peer cannot run here, or None if it can."""
    if impl == "ours":
        return None
    if impl == "go":
        if not os.access(REPO / "interop/go/bin/peer", os.X_OK):
            return "go peer not built: run interop/go/setup.sh"
        return None
    if impl == "js":
        if shutil.which("node") is None:
            return "node is not installed (js-libp2p peer)"
        if not (REPO / "interop/js/node_modules/libp2p/package.json").is_file():
            return "js peer dependencies missing: run interop/js/setup.sh"
        return None
    if impl == "py":
        venv = REPO / "interop/py/.venv"
        if not os.access(venv / "bin/python", os.X_OK):
            return "py-libp2p virtualenv missing: run interop/py/setup.sh"
        if not list(venv.glob("lib/python*/site-packages/libp2p/__init__.py")):
            return (
                "py-libp2p not installed in interop/py/.venv: run interop/py/setup.sh"
            )
        return None
    raise ValueError(f"unknown implementation {impl!r}")


def is_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(*impls: str) -> None:
    """Skip (locally) or fail (under CI) unless every one of ``impls`` can run."""
    for impl in impls:
        reason = missing_reason(impl)
        if reason is None:
            continue
        if is_ci():
            pytest.fail(f"CI must run every interop partner, but {impl}: {reason}")
        pytest.skip(f"{impl}: {reason}")


def tail(path: Path, n_bytes: int = 3000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-n_bytes:].decode(errors="replace")


class PeerError(Exception):
    """A test peer did not start, did not stop cleanly, or printed nonsense."""


@dataclass
class Peer:
    """A running ``listen`` or ``relay`` test peer."""

    impl: str
    role: str
    proc: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    ready: dict[str, Any] = field(default_factory=dict)

    @property
    def multiaddr(self) -> str:
        return str(self.ready["multiaddr"])

    @property
    def peer_id(self) -> str:
        return str(self.ready["peer_id"])

    def logs(self) -> str:
        return f"--- {self.impl} {self.role} stderr ---\n{tail(self.stderr_path)}"

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.stdout_path.read_text(errors="replace")
            if "\n" in text:
                line = text.split("\n", 1)[0]
                try:
                    msg = json.loads(line)
                except ValueError:
                    raise PeerError(
                        f"{self.impl} {self.role}: not NDJSON: {line!r}"
                    ) from None
                if msg.get("event") != "ready" or "multiaddr" not in msg:
                    raise PeerError(
                        f"{self.impl} {self.role}: first line is not ready: {line}"
                    )
                self.ready = msg
                return
            if self.proc.poll() is not None:
                raise PeerError(
                    f"{self.impl} {self.role} exited {self.proc.returncode} "
                    "before ready\n" + self.logs()
                )
            if time.monotonic() > deadline:
                raise PeerError(
                    f"{self.impl} {self.role}: no ready line within {timeout_s:g}s\n"
                    + self.logs()
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM the peer; raise PeerError unless it exits 0 in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise PeerError(
                    f"{self.impl} {self.role} ignored SIGTERM for {STOP_TIMEOUT_S:g}s\n"
                    + self.logs()
                ) from None
        if self.proc.returncode != 0:
            raise PeerError(
                f"{self.impl} {self.role} exited {self.proc.returncode} on SIGTERM, "
                "want 0\n" + self.logs()
            )


def launch(impl: str, role: str, args: list[str], workdir: Path) -> Peer:
    """Start ``impl`` in ``role`` and wait for its ready line."""
    workdir.mkdir(parents=True, exist_ok=True)
    stem = f"{impl}-{role}-{time.monotonic_ns()}"
    stdout_path = workdir / f"{stem}.out"
    stderr_path = workdir / f"{stem}.err"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        proc = subprocess.Popen(
            [*peer_command(impl), role, *args],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
    peer = Peer(impl, role, proc, stdout_path, stderr_path)
    try:
        peer.wait_ready(READY_TIMEOUT_S)
    except BaseException:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        raise
    return peer


@dataclass(frozen=True)
class DialResult:
    """What one ``dial`` run printed and how it exited."""

    impl: str
    returncode: int
    result: dict[str, Any]
    stderr: str
    elapsed_s: float

    @property
    def steps(self) -> dict[str, dict[str, Any]]:
        return dict(self.result.get("steps", {}))

    def describe(self) -> str:
        return (
            f"{self.impl} dial exited {self.returncode} after {self.elapsed_s:.1f}s\n"
            f"result: {json.dumps(self.result)[:4000]}\n"
            f"--- {self.impl} dial stderr ---\n{self.stderr[-3000:]}"
        )


def run_dial(
    impl: str, target: str, steps: str, timeout_s: float = DIAL_TIMEOUT_S
) -> DialResult:
    """Run ``impl dial TARGET --steps STEPS`` and parse its one result line."""
    start = time.monotonic()
    try:
        proc = subprocess.run(
            [*peer_command(impl), "dial", target, "--steps", steps],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired as exc:
        stderr = (exc.stderr or b"").decode(errors="replace")
        raise PeerError(
            f"{impl} dial ran past {timeout_s:g}s\n{stderr[-3000:]}"
        ) from None
    elapsed = time.monotonic() - start
    stderr = proc.stderr.decode(errors="replace")
    results = []
    for line in proc.stdout.decode(errors="replace").splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict) and msg.get("event") == "result":
            results.append(msg)
    if len(results) != 1:
        raise PeerError(
            f"{impl} dial printed {len(results)} result lines "
            f"(exit {proc.returncode})\n"
            f"stdout: {proc.stdout[-2000:]!r}\n{stderr[-3000:]}"
        )
    return DialResult(impl, proc.returncode, results[0], stderr, elapsed)


def assert_all_steps_ok(dial: DialResult, listener: Peer | None = None) -> None:
    """Every step ok, the overall result ok, exit 0."""
    context = dial.describe() + ("\n" + listener.logs() if listener else "")
    failed = {name: step for name, step in dial.steps.items() if not step.get("ok")}
    assert not failed, f"failed steps {failed}\n{context}"
    assert dial.result.get("ok") is True, context
    assert dial.returncode == 0, context


StartPeer = Callable[..., Peer]
Dial = Callable[..., DialResult]
