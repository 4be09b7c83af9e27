"""``direct_connections: false``: a node that keeps its peer connections on the relay
(no direct dials, no part in hole punching), as the relayed benchmark setup and a user
who does not want peers to learn their addresses need."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from peerup.app.node import Node
from peerup.config import load
from peerup.core.errors import ConnectError
from peerup.core.keys import Ed25519PrivateKey
from peerup.proto import dcutr


def test_config_reads_direct_connections(tmp_path: Path) -> None:
    from peerup.cli import main

    assert main(["init", "--dir", str(tmp_path / "n"), "--non-interactive"]) == 0
    cfg = tmp_path / "n" / "config.yaml"
    assert load.load_node(cfg).direct_connections is True
    cfg.write_text(cfg.read_text() + "direct_connections: false\n")
    assert load.load_node(cfg).direct_connections is False


def test_a_node_kept_relayed_serves_no_dcutr_and_dials_only_relays() -> None:
    async def main() -> None:
        node = Node(Ed25519PrivateKey.generate())
        other = Node(Ed25519PrivateKey.generate())
        assert dcutr.PROTOCOL_ID in node.host.handlers
        node.keep_relayed()
        try:
            assert dcutr.PROTOCOL_ID not in node.host.handlers
            # The peer listens on loopback and we know where: still not dialed.
            addrs = await other.listen(["/ip4/127.0.0.1/tcp/0"])
            node.host.add_addrs(other.peer_id, addrs)
            with pytest.raises(ConnectError, match="no relay configured"):
                await node.connect(other.peer_id)
            assert node.host.connection_to(other.peer_id) is None
        finally:
            await node.aclose()
            await other.aclose()

    asyncio.run(main())
