"""Our addresses as peers see them, and telling peers when ours change.

Loopback TCP: a host dials from the port it listens on (so that a NAT would map that
port, the one a hole punch needs), records per connection the address identify says
the peer observed, and pushes identify when its addresses change.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable
from typing import Any

import pytest

from peerup.core.keys import Ed25519PrivateKey
from peerup.core.multiaddr import Multiaddr
from peerup.net.host import Host, HostConfig

LOOPBACK = "/ip4/127.0.0.1/tcp/0"
Run = Callable[..., Any]


async def listening(config: HostConfig | None = None) -> tuple[Host, Multiaddr]:
    host = Host(Ed25519PrivateKey.generate(), config)
    bound = (await host.listen(LOOPBACK))[0]
    return host, bound


def test_dials_leave_from_the_listen_port_and_the_peer_says_so(run: Run) -> None:
    async def main() -> None:
        a, a_addr = await listening()
        b, b_addr = await listening()
        conn = await b.connect(a_addr.with_peer_id(a.peer_id))
        assert conn.local_addr == b_addr
        await b.identified(conn)
        assert b.observed_addrs[conn] == b_addr
        assert b.own_observed_addrs() == [b_addr]
        [a_side] = a.connections[b.peer_id]
        await a.identified(a_side)
        assert a.observed_addrs[a_side] == a_addr  # accepted on the listen port
        await b.aclose()
        async with asyncio.timeout(5):
            while a.connections:
                await asyncio.sleep(0.01)
        assert a.observed_addrs == {}
        await a.aclose()

    run(main())


def test_without_reuse_the_port_is_ephemeral_and_not_offered(run: Run) -> None:
    async def main() -> None:
        a, a_addr = await listening()
        b, b_addr = await listening(HostConfig(reuse_listen_port=False))
        conn = await b.connect(a_addr.with_peer_id(a.peer_id))
        assert conn.local_addr != b_addr
        await b.identified(conn)
        assert b.observed_addrs[conn] == conn.local_addr
        assert b.own_observed_addrs() == []
        await b.aclose()
        await a.aclose()

    run(main())


def test_a_busy_four_tuple_falls_back_to_an_ephemeral_port(run: Run) -> None:
    """Closing first leaves our side of the old connection in TIME_WAIT: the same
    ports cannot connect again at once, so the next dial takes any port."""

    async def main() -> None:
        a, a_addr = await listening()
        b, b_addr = await listening()
        first = await b.connect(a_addr.with_peer_id(a.peer_id))
        assert first.local_addr == b_addr
        await first.aclose()
        async with asyncio.timeout(5):
            while a.connections:
                await asyncio.sleep(0.01)
        second = await b.connect(a_addr.with_peer_id(a.peer_id))
        assert second.is_open and second.local_addr != b_addr
        await b.aclose()
        await a.aclose()

    run(main())


def test_identify_push_tells_peers_of_a_new_listen_address(run: Run) -> None:
    async def main() -> None:
        a, a_addr = await listening()
        b, _ = await listening()
        conn = await b.connect(a_addr.with_peer_id(a.peer_id))
        await b.identified(conn)
        assert b.peerstore[a.peer_id].listen_addrs == (a_addr,)
        second = (await a.listen("/ip4/127.0.0.1/tcp/0"))[0]
        async with asyncio.timeout(5):
            while second not in b.peerstore[a.peer_id].listen_addrs:
                await asyncio.sleep(0.01)
        assert second in b.peer_addrs[a.peer_id]
        await b.aclose()
        await a.aclose()

    run(main())


def test_only_so_reuseport_lets_a_dialing_socket_share_the_listen_port(
    run: Run,
) -> None:
    """Why listeners set SO_REUSEPORT (net/tcp.py): on Linux a socket binds a port
    that a socket listens on only if both set it; SO_REUSEADDR alone is refused. A
    second listener is still kept out by the probe (test_listen_owns_port.py)."""

    async def main() -> None:
        host, addr = await listening()
        port = int(addr.value_for("tcp") or 0)
        with socket.socket() as plain:
            plain.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            with pytest.raises(OSError) as refused:
                plain.bind(("127.0.0.1", port))
            assert refused.value.errno == errno.EADDRINUSE
        with socket.socket() as dialing:
            dialing.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            dialing.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            dialing.bind(("127.0.0.1", port))
        await host.aclose()

    run(main())
