"""TCP transport: listen and dial for ``/ip4|ip6|dns*/…/tcp/N`` multiaddrs.

Sockets get TCP_NODELAY (asyncio sets it for TCP) and SO_REUSEADDR + SO_REUSEPORT, so
that a later hole punch can dial out from the listening port. DNS names resolve with
the system resolver via asyncio.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from peerup.core.errors import ConnectError
from peerup.core.multiaddr import Multiaddr


def endpoint(addr: Multiaddr) -> tuple[str, int]:
    """``(host, port)`` of a TCP multiaddr.

    Raises:
        ConnectError: not a TCP address.
    """
    ep = addr.without_peer_id().tcp_endpoint()
    if ep is None:
        raise ConnectError(f"not a TCP multiaddr: {addr}")
    return ep


def can_dial(addr: Multiaddr) -> bool:
    """Whether ``addr`` is a direct TCP address."""
    return not addr.is_circuit and addr.without_peer_id().tcp_endpoint() is not None


async def listen(
    addr: Multiaddr, factory: Callable[[], asyncio.Protocol]
) -> tuple[asyncio.Server, list[Multiaddr]]:
    """Listen on ``addr``; returns the server and the bound addresses."""
    host, port = endpoint(addr)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        factory, host, port, reuse_address=True, reuse_port=True, backlog=1024
    )
    bound = []
    for sock in server.sockets:
        name = sock.getsockname()
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            bound.append(Multiaddr.from_tcp(name[0], name[1]))
    return server, bound


async def dial(
    addr: Multiaddr, factory: Callable[[], asyncio.Protocol]
) -> tuple[asyncio.BaseTransport, asyncio.BaseProtocol]:
    """Open a TCP connection to ``addr`` driven by a protocol from ``factory``.

    Raises:
        ConnectError: refused, unreachable or unresolvable.
    """
    host, port = endpoint(addr)
    loop = asyncio.get_running_loop()
    try:
        return await loop.create_connection(factory, host, port)
    except OSError as exc:
        raise ConnectError(f"cannot connect to {addr}: {exc.strerror or exc}") from None
