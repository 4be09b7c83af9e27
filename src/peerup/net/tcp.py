"""TCP transport: listen and dial for ``/ip4|ip6|dns*/…/tcp/N`` multiaddrs.

Sockets get TCP_NODELAY (asyncio sets it for TCP). A listener owns its port: before it
binds, a probe socket without SO_REUSEPORT binds the same address, and fails with
:class:`ListenError` if any other socket listens there (a second daemon or relay on the
same port must not start silently and take half of the incoming connections). The
listener itself then binds with SO_REUSEADDR (a restart need not wait for TIME_WAIT)
and SO_REUSEPORT, so that our *dialing* sockets may bind the same port: a connection
dialed from the listen port makes the NAT in front of us map that port, the mapping
the relay then observes (identify) and the mapping a hole punch (DCUtR, a TCP
simultaneous open) needs. Linux lets a socket bind a port another socket listens on
only when both set SO_REUSEPORT (and have the same owner); SO_REUSEADDR alone is
refused. The probe leaves a window of a few microseconds in which a second listener
starting at the same instant would get in. A dial from the listen port that cannot
be made (the same 4-tuple in use or in TIME_WAIT) falls back to an ephemeral port,
except for hole punches, where only the listen port is of any use. DNS names resolve
with the system resolver via asyncio.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import socket
from collections.abc import Callable

from peerup.core.errors import ConnectError, TransportError
from peerup.core.multiaddr import Multiaddr

log = logging.getLogger(__name__)

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
        ListenError: the address is in use (by any process, see the module
            docstring), not this machine's, or not allowed.
    """
    host, port = endpoint(addr)
    loop = asyncio.get_running_loop()
    try:
        if port:
            # Port 0 needs no probe: the kernel never hands out a port that another
            # socket uses, SO_REUSEPORT or not.
            await _probe_unused(loop, host, port)
        server = await loop.create_server(
            factory, host, port, reuse_address=True, reuse_port=True, backlog=1024
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


async def _probe_unused(loop: asyncio.AbstractEventLoop, host: str, port: int) -> None:
    """Raise OSError (EADDRINUSE) if any socket listens on ``host:port``: a bind
    without SO_REUSEPORT conflicts with every listener there, ours included."""
    infos = await loop.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            probe.bind(sockaddr)


async def dial(
    addr: Multiaddr,
    factory: Callable[[], asyncio.Protocol],
    *,
    local: tuple[str, int] | None = None,
    local_only: bool = False,
) -> tuple[asyncio.BaseTransport, asyncio.BaseProtocol]:
    """Open a TCP connection to ``addr`` driven by a protocol from ``factory``.

    Args:
        local: bind the dialing socket to this ``(ip, port)`` first (our listen
            address), with SO_REUSEPORT; if that fails, dial from an ephemeral port.
        local_only: with ``local``, fail instead of falling back (a hole punch).

    Raises:
        ConnectError: refused, unreachable or unresolvable.
    """
    host, port = endpoint(addr)
    loop = asyncio.get_running_loop()
    if local is not None:
        try:
            sock = await _connect_from(loop, local, host, port)
        except OSError as exc:
            if local_only:
                raise ConnectError(
                    f"cannot connect to {addr} from port {local[1]}: "
                    f"{exc.strerror or exc}"
                ) from None
            log.debug("dial %s from port %d failed (%s); any port", addr, local[1], exc)
        else:
            try:
                return await loop.create_connection(factory, sock=sock)
            except OSError as exc:
                sock.close()
                raise ConnectError(
                    f"cannot connect to {addr}: {exc.strerror or exc}"
                ) from None
    try:
        return await loop.create_connection(factory, host, port)
    except OSError as exc:
        raise ConnectError(f"cannot connect to {addr}: {exc.strerror or exc}") from None


async def _connect_from(
    loop: asyncio.AbstractEventLoop, local: tuple[str, int], host: str, port: int
) -> socket.socket:
    """A socket bound to ``local`` (SO_REUSEADDR + SO_REUSEPORT, like our listener)
    and connected to ``host:port``."""
    ip = _parse_ip(host)
    if ip is not None:
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        remote: tuple[str, int] = (host, port)
    else:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        want = socket.AF_INET6 if ":" in local[0] else socket.AF_INET
        found = [info for info in infos if info[0] == want]
        if not found:
            raise OSError(errno.EAFNOSUPPORT, f"{host} has no address of that family")
        family = found[0][0]
        remote = (str(found[0][4][0]), int(found[0][4][1]))
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setblocking(False)
        sock.bind(local)
        await loop.sock_connect(sock, remote)
    except BaseException:
        sock.close()
        raise
    return sock


def local_for(
    listen_addrs: list[Multiaddr], target: Multiaddr
) -> tuple[str, int] | None:
    """The listen address to dial ``target`` from: one of the same IP family that is
    a wildcard, or loopback exactly when ``target`` is; None if there is none (or
    ``target`` is not an IP address)."""
    ip = _ip(target)
    if ip is None:
        return None
    for addr in listen_addrs:
        own = _ip(addr)
        port = addr.value_for("tcp")
        if own is None or port is None or own.version != ip.version:
            continue
        if own.is_unspecified or own.is_loopback == ip.is_loopback:
            return str(own), int(port)
    return None


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


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
