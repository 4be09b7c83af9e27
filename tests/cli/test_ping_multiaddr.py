"""``peerup ping`` and ``traceroute`` given a multiaddr dial that address.

Two real nodes on loopback, no relay: the far node (a ``Node`` answering
``/pingpong/1.0.0``) listens on a port nobody told our config about, so the only way
to reach it is the address in the argument. Both ways a command runs are covered:
with its own node (no daemon), and through a running daemon (its local API), each on
an event loop in a background thread while ``main([...])`` runs in the test's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_harness import Cli

from background_loop import Background
from peerup.app.daemon import Daemon
from peerup.app.node import Node
from peerup.config import load
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.multiaddr import Multiaddr

START_TIMEOUT_S = 10.0




def far_node(bg: Background) -> Multiaddr:
    """A node listening on loopback; its full multiaddr (with /p2p/)."""

    async def start() -> Multiaddr:
        node = Node(Ed25519PrivateKey.generate())
        bg.closers.append(node.aclose)
        addrs = await node.listen(["/ip4/127.0.0.1/tcp/0"])
        return addrs[0].with_peer_id(node.peer_id)

    addr: Multiaddr = bg.call(start())
    return addr


def start_daemon(bg: Background, config: Path) -> None:
    async def start() -> None:
        daemon = Daemon(load.load_node(config))
        await daemon.start()
        bg.closers.append(daemon.aclose)

    bg.call(start())


@pytest.mark.parametrize("through_daemon", [False, True], ids=["own-node", "daemon"])
def test_ping_dials_the_multiaddr_given(
    cli: Cli, node_config: Path, background: Background, through_daemon: bool
) -> None:
    target = far_node(background)
    if through_daemon:
        start_daemon(background, node_config)

    result = cli("ping", str(target), "-c", "2", "--interval", "0",
                 "--config", node_config, "--json")  # fmt: skip

    assert result.code == 0, result.err
    answer = result.json()
    assert (answer["sent"], answer["received"]) == (2, 2), answer
    assert answer["path"] == "direct"


@pytest.mark.parametrize("through_daemon", [False, True], ids=["own-node", "daemon"])
def test_traceroute_dials_the_multiaddr_given(
    cli: Cli, node_config: Path, background: Background, through_daemon: bool
) -> None:
    target = far_node(background)
    if through_daemon:
        start_daemon(background, node_config)

    result = cli("traceroute", str(target), "--config", node_config, "--json")

    assert result.code == 0, result.err
    answer = result.json()
    assert answer["peer_id"] == str(target.peer_id)
    assert answer["path"] == "direct"
    [hop] = answer["hops"]
    assert (hop["what"], hop["addr"]) == ("peer", str(target.without_peer_id()))
    assert hop["rtt_ms"] is not None


def test_ping_by_peer_id_alone_says_there_is_no_way_to_reach_it(
    cli: Cli, node_config: Path, background: Background
) -> None:
    target = far_node(background)

    result = cli("ping", str(target.peer_id), "-c", "1", "--config", node_config)

    assert result.code == 1
    assert "no address known" in result.err
