"""kill -9 at random moments while ``auth add`` (and ``service add``) edit the files.

Every round starts a real ``peerup`` process and SIGKILLs it (or, with a daemon, the
CLI or the daemon itself) after a random short delay, so kills land before, during and
after the write. Afterwards ``auth validate`` and ``config validate`` must pass,
``authorized_keys`` must parse, and every edit that reported success must be there.
The random seed is printed (pytest shows it on failure); set ``PEERUP_E2E_SEED`` to replay one.
"""

from __future__ import annotations

import os
import random
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_harness import PEERUP, Node, child_env, init_node, peerup

from peerup.app.allowlist import parse_authorized_keys
from peerup.config import load
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.peer_id import PeerId

ROUNDS = 30


@pytest.fixture
def node() -> Iterator[Node]:
    workdir = Path(tempfile.mkdtemp(prefix="pu", dir="/tmp"))
    node = init_node(workdir, "n", relay=None)
    try:
        yield node
    finally:
        node.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def seed() -> int:
    return int(os.environ.get("PEERUP_E2E_SEED") or random.randrange(1 << 32))


def _random_peer() -> str:
    return str(PeerId.from_public_key(Ed25519PrivateKey.generate().public_key))


def _start(node: Node, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*PEERUP, *args, "--config", str(node.config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=30)
    return proc.returncode, out


def _check_files_valid(node: Node, peers: list[str], services: list[str]) -> None:
    node.cli("auth", "validate")
    node.cli("config", "validate")
    path = node.dir / "authorized_keys"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    listed = {
        str(e.peer_id) for e in parse_authorized_keys(path.read_text(), str(path))
    }
    assert set(peers) <= listed, "an add that reported success is missing"
    configured = {s.name for s in load.load_node(node.config).services}
    assert set(services) <= configured, "a service add that reported success is missing"


def test_kill_9_during_file_edits_leaves_every_file_valid(
    node: Node, seed: int
) -> None:
    rng = random.Random(seed)
    print(f"PEERUP_E2E_SEED={seed}")
    added: list[str] = []
    services: list[str] = []
    for i in range(ROUNDS):
        peer = _random_peer()
        service = f"svc{i}"
        if i % 3 == 2:
            proc = _start(node, "service", "add", service, f"127.0.0.1:{2000 + i}")
        else:
            proc = _start(node, "auth", "add", peer, "--comment", f"round {i}")
        # Python's start-up takes ~0.3 s, so this spread covers before/during/after.
        try:
            proc.wait(rng.uniform(0.1, 0.8))
        except subprocess.TimeoutExpired:
            proc.kill()
        code, out = _finish(proc)
        if code == 0 and "authorized:" in out:
            added.append(peer)
        if code == 0 and "added" in out:
            services.append(service)
    assert added, f"no add finished before its kill; delays too short (seed {seed})"
    _check_files_valid(node, added, services)


def test_kill_9_of_cli_or_daemon_during_auth_add_leaves_every_file_valid(
    node: Node, seed: int
) -> None:
    rng = random.Random(seed)
    print(f"PEERUP_E2E_SEED={seed}")
    node.start_daemon(wait_relays=False)
    added: list[str] = []
    daemon_kills = 0
    for i in range(ROUNDS):
        assert node.daemon is not None
        peer = _random_peer()
        proc = _start(node, "auth", "add", peer, "--comment", f"round {i}")
        kill_daemon = rng.random() < 0.5
        try:
            proc.wait(rng.uniform(0.1, 0.8))
        except subprocess.TimeoutExpired:
            if not kill_daemon:
                proc.kill()
        if kill_daemon:
            node.daemon.kill()
            daemon_kills += 1
        code, out = _finish(proc)
        if code == 0 and "authorized:" in out:
            added.append(peer)
        if kill_daemon:
            node.procs.remove(node.daemon)
            node.start_daemon(wait_relays=False)
    node.stop_all()
    assert added, f"no add finished before its kill (seed {seed})"
    assert daemon_kills, f"the daemon was never killed (seed {seed})"
    _check_files_valid(node, added, [])
    # The daemon comes back on the files the kills left behind.
    node.start_daemon(wait_relays=False)
    entries = peerup("auth", "list", "--json", "--config", node.config).stdout
    assert all(p in entries for p in added)
