"""A relay removed from config.yaml stops being used by a running daemon, as real
processes: two ``relay serve``, one ``peerup daemon`` reserved on both.

After the relay's line is deleted from config.yaml (the daemon sees the new mtime),
``status`` no longer lists it nor a circuit address through it within a few seconds;
stopping that relay then costs the daemon no reservation attempt (its log never
mentions the relay again), while the other relay stays reserved.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_harness import Node, Relay, init_node, start_relay, wait_until

from peerup.config import files

# The daemon checks config.yaml's mtime every 2 s.
APPLY_TIMEOUT_S = 6.0


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pu", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def relays_of(node: Node) -> dict[str, bool]:
    live = node.status()["daemon"]
    assert live is not None, "the daemon does not answer"
    return {r["relay"]: r["reserved"] for r in live["relays"]}


def circuit_addrs(node: Node) -> list[str]:
    live = node.status()["daemon"]
    assert live is not None
    return [a for a in live["listen_addrs"] if "/p2p-circuit" in a]


def test_relay_removed_from_config_is_dropped_live(workdir: Path) -> None:
    for sub in ("one", "two"):
        (workdir / sub).mkdir()
    one = start_relay(workdir / "one")
    two = start_relay(workdir / "two")
    relays: list[Relay] = [one, two]
    node: Node | None = None
    try:
        node = init_node(workdir, "home", one.multiaddr)
        one.authorize(node)
        two.authorize(node)
        text = node.config.read_text()
        line = f"  - {one.multiaddr}\n"
        assert line in text
        files.write_atomic(
            node.config, text.replace(line, line + f"  - {two.multiaddr}\n")
        )
        daemon = node.start_daemon()  # waits until every relay is reserved
        assert relays_of(node) == {one.multiaddr: True, two.multiaddr: True}
        assert len(circuit_addrs(node)) == 2

        files.write_atomic(node.config, text)  # back to relay one only
        wait_until(
            "the daemon to drop relay two",
            lambda: relays_of(node) == {one.multiaddr: True},
            APPLY_TIMEOUT_S,
            0.2,
        )
        assert [two.peer_id in a for a in circuit_addrs(node)] == [False]
        daemon.wait_for_output(f"relay removed: {two.multiaddr}")

        log_before = len(daemon.stderr())
        assert two.proc is not None
        two.proc.stop()
        time.sleep(3.0)  # a retry after the lost connection would come at once
        later = daemon.stderr()[log_before:]
        assert two.peer_id[-8:] not in later, later  # logs name relays by short ID
        assert relays_of(node) == {one.multiaddr: True}
    finally:
        if node is not None:
            node.stop_all()
        for relay in relays:
            if relay.proc is not None:
                relay.proc.stop()
