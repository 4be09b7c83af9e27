"""TCP transport: listen and dial for ``/ip4|ip6|dns*/…/tcp/N`` multiaddrs.

Sockets get TCP_NODELAY (asyncio sets it for TCP). Listeners get SO_REUSEADDR (a
restart need not wait for TIME_WAIT) but not SO_REUSEPORT: a listener owns its port, so
a second daemon or relay on the same port fails with :class:`ListenError` instead of
starting silently and taking half of the incoming connections. Port reuse belongs only
on the dialing sockets of a hole punch (not implemented yet). DNS names resolve with
the system resolver via asyncio.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket
from collections.abc import Callable

from peerup.core.errors import ConnectError, TransportError
from peerup.core.multiaddr import Multiaddr

_LISTEN_HINTS: dict[int, str] = {
    errno.EADDRINUSE: "another peerup daemon or relay may be running; stop it or "
    "change `listen` in {config}",
    errno.EACCES: "ports below 1024 need root; change `listen` in {config}",
    errno.EADDRNOTAVAIL: "this machine has no such address; change `listen` in "
    "{config}",
}


class ListenError(TransportError):
    """A listen address could not be bound (in use, not ours, not allowed).

    Attributes:
        addr: the multiaddr we tried to listen on.
        code: the OS error number (``errno.EADDRINUSE`` …).
        reason: the OS reason, e.g. ``address already in use``.
        config: the config file whose ``listen`` names ``addr``, when known.
        hint: what to do about it (the CLI prints it after the message).
    """

    def __init__(
        self, addr: Multiaddr, code: int, reason: str, config: str | None = None
    ) -> None:
        super().__init__(f"cannot listen on {addr}: {reason}")
        self.addr = addr
        self.code = code
        self.reason = reason
        self.config = config
        template = _LISTEN_HINTS.get(code)
        self.hint = template.format(config=config or "the config") if template else None

    def in_config(self, path: object) -> ListenError:
        """The same error, its hint naming the config file to change."""
        return ListenError(self.addr, self.code, self.reason, str(path))


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
    """Listen on ``addr``; returns the server and the bound addresses.

    Raises:
        ListenError: the address is in use (by any process: no SO_REUSEPORT), not
            this machine's, or not allowed.
    """
    host, port = endpoint(addr)
    loop = asyncio.get_running_loop()
    try:
        server = await loop.create_server(
            factory, host, port, reuse_address=True, backlog=1024
        )
    except OSError as exc:
        # asyncio and uvloop put the address into strerror; the errno says it all
        # (a resolver error has its own negative codes and its own text).
        code = exc.errno or 0
        if code > 0 and not isinstance(exc, socket.gaierror):
            reason = os.strerror(code).lower()
        else:
            reason = exc.strerror or str(exc)
        raise ListenError(addr, code, reason) from None
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


def _ip(addr: Multiaddr) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = addr.value_for("ip4") or addr.value_for("ip6")
    return ipaddress.ip_address(value) if value is not None else None


def is_unspecified(addr: Multiaddr) -> bool:
    """Whether ``addr`` is a wildcard (``0.0.0.0`` / ``::``) address."""
    ip = _ip(addr)
    return ip is not None and ip.is_unspecified


def is_loopback(addr: Multiaddr) -> bool:
    """Whether ``addr`` is a loopback address."""
    ip = _ip(addr)
    return ip is not None and ip.is_loopback


def local_ips() -> list[str]:
    """This machine's primary IPv4 and IPv6 addresses. A UDP ``connect`` only selects
    a route; no packet is sent."""
    ips = []
    for family, probe in (
        (socket.AF_INET, "192.0.2.1"),
        (socket.AF_INET6, "2001:db8::1"),
    ):
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.connect((probe, 9))
                ips.append(str(sock.getsockname()[0]))
        except OSError:
            continue
    return ips


def expand_wildcards(addrs: list[Multiaddr]) -> list[Multiaddr]:
    """Replace ``0.0.0.0`` / ``::`` listen addresses by loopback and this machine's
    primary address of that family, which peers can dial."""
    out: list[Multiaddr] = []
    for addr in addrs:
        ip, port = _ip(addr), addr.value_for("tcp")
        if ip is None or not ip.is_unspecified or port is None:
            out.append(addr)
            continue
        v6 = ip.version == 6
        for host in ["::1" if v6 else "127.0.0.1", *local_ips()]:
            if (":" in host) == v6:
                candidate = Multiaddr.from_tcp(host, int(port))
                if candidate not in out:
                    out.append(candidate)
    return out
