"""ssh's own habit: ``ProxyCommand peerup proxy --stdio home ssh``, no local port.

Real OpenSSH (ssh, scp, rsync over ssh) with the ``ssh_config`` snippet the README
gives, through our relay to the real sshd behind home's ``ssh`` service: once with
the laptop's daemon carrying the bytes (``POST /v1/pipe``), once with ``guest``, which
runs no daemon and so carries them with a node of its own. A missing service fails
at once with the reason on ssh's stderr.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_harness import Network, Node, Sshd, child_env

FILE_BYTES = 8 * 1024 * 1024


def _ssh_config(net: Network, node: Node, sshd: Sshd, service: str = "ssh") -> Path:
    """The README's snippet, written for ``node`` (its config file and python)."""
    proxy = " ".join(
        shlex.quote(a)
        for a in (
            sys.executable, "-m", "peerup", "proxy", "--stdio", "home", service,
            "--config", str(node.config),
        )
    )  # fmt: skip
    path = net.workdir / f"ssh_config-{node.name}-{service}"
    path.write_text(
        "Host home\n"
        f"  ProxyCommand {proxy}\n"
        "  User root\n"
        f"  IdentityFile {sshd.client_key}\n"
        "  IdentitiesOnly yes\n"
        "  StrictHostKeyChecking no\n"
        "  UserKnownHostsFile /dev/null\n"
        "  BatchMode yes\n"
        "  LogLevel ERROR\n"
    )
    return path


def _run(argv: list[str], timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout_s, env=child_env()
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(params=["laptop", "guest"])
def client(request: pytest.FixtureRequest, net: Network) -> Node:
    """laptop proxies through its daemon; guest runs no daemon (a node of its own)."""
    node: Node = getattr(net, request.param)
    if node.name == "guest":
        node.cli("name", "set", "home", net.home.peer_id, check=False)
    return node


def test_ssh_scp_and_rsync_through_proxycommand(
    net: Network, sshd: Sshd, client: Node
) -> None:
    config = _ssh_config(net, client, sshd)

    done = _run(["ssh", "-F", str(config), "home", "echo", "hello from home"])
    assert done.returncode == 0, f"{done.stderr}\n{net.logs()}"
    assert done.stdout == "hello from home\n"
    if client.daemon is not None:  # carried by the daemon, not a node of its own
        client.daemon.wait_for_output(r"pipe home/ssh: relayed, \d+ B out", 10)

    src = net.workdir / f"pc-{client.name}.src"
    src.write_bytes(os.urandom(FILE_BYTES))
    up = net.workdir / f"pc-{client.name}.up"
    down = net.workdir / f"pc-{client.name}.down"
    synced = net.workdir / f"pc-{client.name}.rsync"
    try:
        done = _run(["scp", "-F", str(config), str(src), f"home:{up}"])
        assert done.returncode == 0, done.stderr
        done = _run(["scp", "-F", str(config), f"home:{up}", str(down)])
        assert done.returncode == 0, done.stderr
        assert _sha256(down) == _sha256(src)
        done = _run(
            ["rsync", "-e", f"ssh -F {config}", str(src), f"home:{synced}"]
        )
        assert done.returncode == 0, done.stderr
        assert _sha256(synced) == _sha256(src)
    finally:
        for path in (src, up, down, synced):
            path.unlink(missing_ok=True)


def test_proxycommand_to_a_missing_service_says_why(
    net: Network, sshd: Sshd, client: Node
) -> None:
    config = _ssh_config(net, client, sshd, service="nope")

    done = _run(["ssh", "-F", str(config), "home", "true"], 30)

    assert done.returncode != 0
    assert "error: home has no service 'nope'" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_stdio_without_a_port_and_with_one(net: Network) -> None:
    done = net.guest.cli("proxy", "home", "ssh", check=False)
    assert done.returncode == 2
    assert "--stdio" in done.stderr
    done = net.guest.cli("proxy", "--stdio", "home", "ssh", "2222", check=False)
    assert done.returncode == 2
    assert done.stderr.startswith("error: --stdio carries standard input")
