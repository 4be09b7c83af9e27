"""ssh and scp to a real sshd on "home", through the laptop daemon's proxy and the relay.

Root only (the system sshd on a test port): skipped when not root or sshd is missing,
failed instead under CI. The 60 s interactive session is started by conftest as soon
as the network is up and checked here last.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from e2e_harness import IDLE_GAP_S, SESSION_S, Network, Sshd, require_root_sshd

pytestmark = pytest.mark.root

SCP_BYTES = 100 * 1024 * 1024


@pytest.fixture(scope="module")
def ssh_port(net: Network, sshd: Sshd) -> int:
    """A ``peerup proxy HOME ssh 0`` on the laptop (through its daemon)."""
    _, port = net.laptop.start_proxy(net.home.peer_id, "ssh")
    return port


def _run(argv: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def test_ssh_echo_through_relay_prints_ok(
    net: Network, sshd: Sshd, ssh_port: int
) -> None:
    done = _run(sshd.ssh_argv(ssh_port, "echo", "ok"), 60)

    assert done.returncode == 0, f"{done.stderr}\n{net.logs()}"
    assert done.stdout == "ok\n"
    status = net.laptop.status()["daemon"]
    paths = {p["peer_id"]: p["path"] for p in status["peers"]}
    assert paths.get(net.home.peer_id) == "relayed", status["peers"]
    assert any(
        p["service"] == "ssh" and p["connections"] >= 1 and p["failures"] == 0
        for p in status["proxies"]
    ), status["proxies"]


@pytest.mark.parametrize("direction", ["upload", "download"])
def test_scp_100_mb_arrives_identical(
    net: Network, sshd: Sshd, ssh_port: int, direction: str
) -> None:
    src = net.workdir / f"scp-{direction}.src"
    dst = net.workdir / f"scp-{direction}.dst"
    with src.open("wb") as fh:
        for _ in range(SCP_BYTES // (1 << 20)):
            fh.write(os.urandom(1 << 20))
    remote = "root@127.0.0.1:"
    if direction == "upload":
        argv = sshd.scp_argv(ssh_port, str(src), remote + str(dst))
    else:
        argv = sshd.scp_argv(ssh_port, remote + str(src), str(dst))
    try:
        done = _run(argv, 180)
        assert done.returncode == 0, f"{done.stderr}\n{net.logs()}"
        assert dst.stat().st_size == SCP_BYTES
        assert _sha256(dst) == _sha256(src)
    finally:
        src.unlink(missing_ok=True)
        dst.unlink(missing_ok=True)


def test_interactive_session_survives_idle_gap(net: Network, sshd: Sshd) -> None:
    require_root_sshd()
    session = net.idle_session
    assert session is not None, "conftest starts the session when this test is selected"
    session.join(SESSION_S + 60)

    detail = f"events: {session.events}\nssh stderr: {session.stderr}\n"
    assert session.error is None, detail + net.logs()
    assert session.returncode == 0, detail
    received = [(t, what) for t, what in session.events if what.startswith("recv")]
    assert [what for _, what in received] == [
        "recv got one",
        "recv got two",
        "recv got three",
        "recv bye",
    ], detail
    times = dict((what, t) for t, what in session.events)
    assert times["send two"] - times["recv got one"] >= IDLE_GAP_S - 1, detail
    assert times["recv got three"] >= SESSION_S, detail
