"""Fixtures for the end-to-end tests: one real peer-up network per session.

``net`` starts, as separate processes in a short directory under /tmp: a relay on a
free loopback port (``relay setup`` + ``relay serve``); "home" and "laptop" (``init``,
``auth add`` of each other, ``relay authorize``, ``daemon``), both reserved on the
relay; and two more identities that run no daemon and so proxy with a node of their
own: "guest" (authorized by home) and "stranger" (authorized by the relay only), and
"outsider" (authorized by home, not by the relay). Home exposes ``ssh`` (a real sshd,
see ``sshd``), ``stream`` (an Ollama-like token server), ``private`` (the same server,
allowed only to stranger), ``down`` (nothing listens) and ``off`` (disabled).

The 60 s interactive ssh session is the slowest test, so when it is selected it is
started in the background as soon as the network is up and checked by its test, which
is moved to the end of the run: it overlaps every other test instead of adding a minute.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_harness import (
    IdleSession,
    Network,
    Node,
    Proc,
    Sshd,
    free_port,
    init_node,
    keep_relayed,
    require_root_sshd,
    root_sshd_missing_reason,
    start_relay,
    start_sshd,
)

IDLE_TEST = "test_interactive_session_survives_idle_gap"

_idle_test_selected = False


@pytest.hookimpl(trylast=True)  # after -k/-m deselection
def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    global _idle_test_selected
    idle = [i for i in items if i.name == IDLE_TEST]
    _idle_test_selected = bool(idle)
    for item in idle:
        items.remove(item)
        items.append(item)


@pytest.fixture(scope="session")
def net() -> Iterator[Network]:
    workdir = Path(tempfile.mkdtemp(prefix="pu", dir="/tmp"))
    relay = start_relay(workdir)
    assert relay.proc is not None
    nodes: list[Node] = []
    token_server: Proc | None = None
    network: Network | None = None
    try:
        home, laptop, guest, stranger, outsider = (
            init_node(workdir, name, relay.multiaddr)
            for name in ("home", "laptop", "guest", "stranger", "outsider")
        )
        nodes = [home, laptop, guest, stranger, outsider]
        for node in (home, laptop, guest, stranger):
            relay.authorize(node)
        home.cli("auth", "add", laptop.peer_id, "--comment", "laptop")
        home.cli("auth", "add", guest.peer_id, "--comment", "guest")
        home.cli("auth", "add", outsider.peer_id, "--comment", "outsider")
        for node in (laptop, guest, stranger, outsider):
            node.cli("auth", "add", home.peer_id, "--comment", "home")
        laptop.cli("name", "set", "home", home.peer_id)
        # Tunnels here go through the relay, as from a laptop behind CGNAT (direct
        # upgrades have tests of their own: tests/app/test_direct_upgrade.py).
        for node in (laptop, guest, stranger, outsider):
            keep_relayed(node)
        sshd_port, token_port, down_port = free_port(), free_port(), free_port()
        home.cli("service", "add", "ssh", f"127.0.0.1:{sshd_port}")
        home.cli("service", "add", "stream", f"127.0.0.1:{token_port}")
        home.cli(
            "service", "add", "private", f"127.0.0.1:{token_port}",
            "--allow", stranger.peer_id,
        )  # fmt: skip
        home.cli("service", "add", "down", f"127.0.0.1:{down_port}")
        home.cli("service", "add", "off", f"127.0.0.1:{token_port}")
        home.cli("service", "disable", "off")
        token_server = Proc(
            "token-server",
            [
                sys.executable,
                str(Path(__file__).with_name("token_server.py")),
                str(token_port),
            ],
            workdir,
        ).start()
        token_server.wait_for_output(r"listening on \d+")
        home.start_daemon()
        laptop.start_daemon()
        network = Network(
            workdir, relay, home, laptop, guest, stranger, outsider,
            sshd_port, token_port, down_port, token_server,
        )  # fmt: skip
        yield network
    finally:
        if network is not None and network.idle_session is not None:
            network.idle_session.abort()
        for node in nodes:
            node.stop_all()
        if token_server is not None:
            token_server.stop()
        relay.proc.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def sshd(net: Network, request: pytest.FixtureRequest) -> Iterator[Sshd]:
    """The real sshd behind home's ``ssh`` service (root only)."""
    require_root_sshd()
    net.sshd = start_sshd(net.workdir, net.sshd_port)
    try:
        yield net.sshd
    finally:
        net.sshd.proc.stop()


@pytest.fixture(scope="session", autouse=True)
def _start_idle_session(request: pytest.FixtureRequest) -> None:
    """Start the 60 s ssh session early, when its test is selected and can run."""
    if not _idle_test_selected or root_sshd_missing_reason() is not None:
        return
    network: Network = request.getfixturevalue("net")
    server: Sshd = request.getfixturevalue("sshd")
    _, port = network.laptop.start_proxy(network.home.peer_id, "ssh")
    script = 'while read line; do echo "got $line"; done; echo bye'
    network.idle_session = IdleSession(
        server.ssh_argv(port, script, options=("-o", "ServerAliveInterval=0"))
    )
    network.idle_session.start()
