"""Invite and join as a user runs them: real processes, a real relay on loopback.

`peerup invite --non-interactive` on a machine whose daemon runs, `peerup join` (code on
standard input) on a machine with no config at all, then `peerup proxy`, with no
`auth add` anywhere. Killing either side with SIGKILL at any moment of a pairing
leaves every file of both machines valid.
"""

from __future__ import annotations

import os
import re
import socket
import socketserver
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_harness import (
    CLI_TIMEOUT_S,
    PEERUP,
    Node,
    Proc,
    Relay,
    child_env,
    init_node,
    peerup,
    start_relay,
)

from peerup.app.allowlist import Allowlist
from peerup.config import load
from peerup.config.invite_store import InviteStore


def echo(port: int, data: bytes) -> bytes:
    """Send ``data`` through the proxy at ``port``; what comes back, as long."""
    with socket.create_connection(("127.0.0.1", port), timeout=CLI_TIMEOUT_S) as sock:
        sock.sendall(data)
        received = b""
        while len(received) < len(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def workdir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="pj", dir="/tmp"))
    yield directory


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


@pytest.fixture
def relay(workdir: Path) -> Iterator[Relay]:
    r = start_relay(workdir)
    yield r
    assert r.proc is not None
    r.proc.stop()


def join_fresh(config_dir: Path, code: str) -> subprocess.CompletedProcess[str]:
    """`peerup join --non-interactive` with the code on standard input, on a machine
    whose only peer-up state is ``config_dir`` (empty at first)."""
    env = child_env()
    env["PEERUP_CONFIG_DIR"] = str(config_dir)
    return subprocess.run(
        [*PEERUP, "join", "--non-interactive", "--name", "laptop", "--listen",
         "/ip4/127.0.0.1/tcp/0"],
        input=code + "\n", capture_output=True, text=True, env=env,
        timeout=CLI_TIMEOUT_S,
    )  # fmt: skip


def test_invite_join_then_proxy_on_a_fresh_machine(
    workdir: Path, relay: Relay, echo_port: int
) -> None:
    home = init_node(workdir, "home", relay.multiaddr)
    relay.authorize(home)
    home.cli("service", "add", "web", f"127.0.0.1:{echo_port}")
    try:
        home.start_daemon()
        code = home.cli("invite", "--non-interactive", "--name", "home").stdout
        assert len(code.splitlines()) == 1

        laptop_dir = workdir / "laptop-config"
        first = join_fresh(laptop_dir, code.strip())
        # The relay enforces its allowlist and does not know this new machine: the
        # error says what to ask its operator, with the new peer ID.
        assert first.returncode == 1, first.stderr
        match = re.search(r"peerup relay authorize (12D3KooW\w+)", first.stderr)
        assert match is not None, first.stderr
        assert "does not enroll it" in first.stderr
        peerup("relay", "authorize", match[1], "laptop", "--config", relay.config)

        second = join_fresh(laptop_dir, code.strip())
        assert second.returncode == 0, second.stderr
        assert "Paired with home" in second.stdout
        assert "home offers: web" in second.stdout

        laptop = Node("laptop", laptop_dir, match[1])
        proc, port = laptop.start_proxy("home", "web")
        try:
            assert echo(port, b"through the relay") == b"through the relay"
        finally:
            proc.stop()
        names = home.cli("config", "show", "--json").stdout
        assert f'"laptop": "{match[1]}"' in names
        listed = home.cli("invite", "list").stdout
        assert "used" in listed and match[1] in listed
    finally:
        home.stop_all()


def _files_are_valid(node: Node) -> None:
    """Every file pairing writes loads: config.yaml, authorized_keys, invites.json,
    and no temporary file is left but a killed writer's (removed at the next start)."""
    config = load.load_node(node.config)
    Allowlist(config.authorized_keys).load()
    InviteStore(node.dir).load()


@pytest.mark.parametrize("victim", ["joiner", "inviter"])
def test_killing_either_side_mid_pairing_leaves_valid_files(
    workdir: Path, relay: Relay, victim: str
) -> None:
    home = init_node(workdir, "home", relay.multiaddr)
    laptop = init_node(workdir, "laptop", relay.multiaddr)
    relay.authorize(home)
    relay.authorize(laptop)
    outcomes = []
    for i, delay_s in enumerate((0.3, 0.5, 0.7, 0.9)):
        # No daemon: `invite` serves the code with a node of its own.
        inviter = Proc(
            f"invite-{i}",
            [*PEERUP, "invite", "--non-interactive", "--config", str(home.config)],
            workdir,
        ).start()
        code = inviter.wait_for_output(r"(?m)^[0-9A-Z]{5}(-[0-9A-Z]{1,5})+$")
        joiner = Proc(
            f"join-{i}",
            [*PEERUP, "join", code[0], "--non-interactive", "--config",
             str(laptop.config)],
            workdir,
        ).start()  # fmt: skip
        time.sleep(delay_s)  # when to kill: the point of this test
        (joiner if victim == "joiner" else inviter).kill()
        assert joiner.popen is not None
        try:
            joiner.popen.wait(CLI_TIMEOUT_S)
        finally:
            joiner.kill()
            inviter.kill()
        outcomes.append(joiner.popen.returncode)
        _files_are_valid(home)
        _files_are_valid(laptop)
    assert outcomes  # every round left both machines' files valid


def test_the_code_on_the_command_line_may_be_split_by_blanks(
    workdir: Path, relay: Relay
) -> None:
    home = init_node(workdir, "home", relay.multiaddr)
    laptop = init_node(workdir, "laptop", relay.multiaddr)
    relay.authorize(home)
    relay.authorize(laptop)
    try:
        home.start_daemon()
        code = home.cli("invite", "--non-interactive").stdout.strip()
        done = peerup(
            "join", *code.lower().split("-"), "--non-interactive",
            "--config", laptop.config, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert os.stat(laptop.dir / "authorized_keys").st_mode & 0o077 == 0
    finally:
        home.stop_all()


def join_as(config_dir: Path, name: str, code: str) -> subprocess.CompletedProcess[str]:
    """`peerup join` on a fresh machine called ``name`` (its state in ``config_dir``)."""
    env = child_env()
    env["PEERUP_CONFIG_DIR"] = str(config_dir)
    return subprocess.run(
        [*PEERUP, "join", "--non-interactive", "--name", name, "--listen",
         "/ip4/127.0.0.1/tcp/0"],
        input=code + "\n", capture_output=True, text=True, env=env,
        timeout=CLI_TIMEOUT_S,
    )  # fmt: skip


def fresh_node(name: str, config_dir: Path) -> Node:
    env = child_env()
    env["PEERUP_CONFIG_DIR"] = str(config_dir)
    peer_id = subprocess.run(
        [*PEERUP, "whoami", "--config", str(config_dir / "config.yaml")],
        capture_output=True, text=True, env=env, timeout=CLI_TIMEOUT_S, check=True,
    ).stdout.strip()  # fmt: skip
    return Node(name, config_dir, peer_id)


def relay_lists(relay: Relay, peer_id: str) -> bool:
    return peer_id in (relay.dir / "relay_authorized_keys").read_text()


def test_a_delegated_invite_enrolls_the_friend_at_the_relay(
    workdir: Path, relay: Relay, echo_port: int
) -> None:
    """`relay authorize home --may-invite 1`: home's `invite --enroll` carries an
    enrollment, so a friend's `join` on a fresh machine enrolls it at the relay (no
    action from the relay's operator) and pairs it; the grant is then used up."""
    home = init_node(workdir, "home", relay.multiaddr)
    plain = init_node(workdir, "plain", relay.multiaddr)
    relay.authorize(plain)
    peerup(
        "relay", "authorize", home.peer_id, "home", "--may-invite", "1",
        "--config", relay.config,
    )  # fmt: skip
    home.cli("service", "add", "web", f"127.0.0.1:{echo_port}")
    try:
        home.start_daemon()
        code = home.cli(
            "invite", "--non-interactive", "--enroll", "--name", "home"
        ).stdout.strip()
        friend_dir = workdir / "friend-config"
        joined = join_as(friend_dir, "friend", code)
        assert joined.returncode == 0, joined.stderr
        friend = fresh_node("friend", friend_dir)
        assert relay_lists(relay, friend.peer_id)
        assert "may_invite=0" in (relay.dir / "relay_authorized_keys").read_text()
        proc, port = friend.start_proxy("home", "web")
        try:
            assert echo(port, b"enrolled by a friend") == b"enrolled by a friend"
        finally:
            proc.stop()
        assert "delegated enrollment code" in relay.proc.logs()  # type: ignore[union-attr]

        # The grant was for one machine: the next --enroll says so, with the fix.
        again = home.cli("invite", "--non-interactive", "--enroll", check=False)
        assert again.returncode == 1
        assert "used every enrollment the relay granted it" in again.stderr
        assert f"peerup relay authorize {home.peer_id} --may-invite" in again.stderr
        # A member without the grant is told at invite time, with the line to run.
        refused = plain.cli("invite", "--non-interactive", "--enroll", check=False)
        assert refused.returncode == 1
        assert "does not let this machine enroll others" in refused.stderr
        assert f"peerup relay authorize {plain.peer_id} --may-invite" in refused.stderr
    finally:
        home.stop_all()
        plain.stop_all()


def test_relay_enrollment_codes_with_separate_processes(
    workdir: Path, relay: Relay, echo_port: int
) -> None:
    """`peerup relay invite --count 2 --non-interactive` on the relay, `peerup join`
    on two fresh machines: both enrolled, introduced to each other, and one proxies
    to the other's service."""
    codes = peerup(
        "relay", "invite", "--count", "2", "--non-interactive", "--config", relay.config
    ).stdout.split()
    assert len(codes) == 2
    nas_dir, phone_dir = workdir / "nas-config", workdir / "phone-config"
    first = join_as(nas_dir, "nas", codes[0])
    assert first.returncode == 0, first.stderr
    second = join_as(phone_dir, "phone", codes[1])
    assert second.returncode == 0, second.stderr
    assert "introduced (authorized and named): nas" in second.stdout
    nas, phone = fresh_node("nas", nas_dir), fresh_node("phone", phone_dir)
    assert relay_lists(relay, nas.peer_id) and relay_lists(relay, phone.peer_id)
    nas.cli("service", "add", "web", f"127.0.0.1:{echo_port}")
    try:
        # nas learns of phone from the relay once its daemon connects there.
        nas.start_daemon()
        deadline = time.monotonic() + 20
        while phone.peer_id not in (nas_dir / "authorized_keys").read_text():
            assert time.monotonic() < deadline, nas.daemon.logs()  # type: ignore[union-attr]
            time.sleep(0.1)
        proc, port = phone.start_proxy("nas", "web")
        try:
            assert echo(port, b"one household") == b"one household"
        finally:
            proc.stop()
    finally:
        nas.stop_all()
        phone.stop_all()
