"""Fixtures for the interop tests: ``start_peer`` and ``dial`` (see interop_harness)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from interop_harness import (
    DIAL_TIMEOUT_S,
    Dial,
    DialResult,
    Peer,
    PeerError,
    StartPeer,
    launch,
    require,
    run_dial,
)


@pytest.fixture
def start_peer(tmp_path: Path) -> Iterator[StartPeer]:
    """``start_peer(impl, role="listen", *args)``: a running peer, stopped at teardown.

    Teardown sends SIGTERM to every peer started and fails the test unless each exits 0.
    """
    peers: list[Peer] = []

    def start(impl: str, role: str = "listen", *args: str) -> Peer:
        require(impl)
        peer = launch(impl, role, list(args), tmp_path / "peers")
        peers.append(peer)
        return peer

    yield start
    problems = []
    for peer in peers:
        try:
            peer.stop()
        except PeerError as exc:
            problems.append(str(exc))
    if problems:
        pytest.fail("\n\n".join(problems))


@pytest.fixture
def dial() -> Dial:
    """``dial(impl, target, steps)``: run a dial to completion; its parsed result."""

    def run(
        impl: str, target: str, steps: str, timeout_s: float = DIAL_TIMEOUT_S
    ) -> DialResult:
        require(impl)
        return run_dial(impl, target, steps, timeout_s)

    return run
