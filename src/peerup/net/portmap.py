"""Port mapping on the home router: PCP, NAT-PMP or UPnP IGD; renewed, removed on exit.

What: ask the default gateway to forward an external port to our listen port, so that
peers can dial us directly even from behind a NAT that hole punching cannot get
through (a symmetric NAT or a CGNAT on their side). The gateway is asked through PCP
(RFC 6887), falling back to NAT-PMP (RFC 6886) where it only speaks that (the
sans-IO session in proto/portmap.py, over a UDP socket to the gateway's port 5351),
and through UPnP IGD (net/upnp.py, the ``async-upnp-client`` library) if port 5351 is
closed or silent. The first that grants a mapping is kept: renewed at half its
lifetime, and deleted by :meth:`PortMapper.aclose`.

Every attempt ends in a :class:`PortMapResult`, a value that says what was mapped or
why nothing was (no gateway, nothing on the router answers, the router refused, or the
router's own address is not public: another NAT in front of it); app/doctor.py words
the advice. After a failure or a lost mapping, the whole attempt is made again after
``retry_after_s`` (the router may be switched on, or UPnP enabled, later).

The protocol (TCP or UDP) is a parameter, for QUIC later; one mapper keeps one
mapping. Not supported: IPv6 (no NAT there; pinholes are not requested), a gateway
other than the default route's (read from Linux's /proc/net/route; elsewhere, or
without a default route, the result says so).
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from peerup.core.errors import RemoteProtocolError
from peerup.core.multiaddr import Multiaddr
from peerup.proto import natpmp
from peerup.proto import portmap as session_mod
from peerup.proto.pcp import Protocol
from peerup.proto.portmap import Method, PortMapSession

log = logging.getLogger(__name__)

ROUTE_TABLE: Final = Path("/proc/net/route")
NOT_PUBLIC: Final = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "224.0.0.0/3",
    )
)
"""Private, shared (CGNAT), loopback, link-local, multicast and reserved space: a
router with such an address is behind another NAT. (Not ``is_private``: that also
calls the documentation ranges private, which the NAT lab uses as its internet.)"""


class Outcome(enum.Enum):
    DISCOVERING = "discovering"
    MAPPED = "mapped"
    UNSUPPORTED = "no port mapping on the router"
    REFUSED = "refused"
    NOT_PUBLIC = "router not public"
    NO_GATEWAY = "no gateway"
    LOST = "lost"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class PortMapConfig:
    """How the mapper asks (the daemon uses the defaults)."""

    protocol: Protocol = "tcp"
    lifetime_s: int = 3600
    """Lease asked for; renewed at half of what the router grants."""
    methods: tuple[str, ...] = ("pcp", "natpmp", "upnp")
    """Which to try, in this order of preference (PCP and NAT-PMP share a socket)."""
    pcp_tries: int = session_mod.DEFAULT_MAX_TRIES
    """PCP/NAT-PMP requests sent (250 ms, doubling) before the gateway counts as
    silent: 4 is 3.75 s."""
    upnp_search_s: float = 2.0
    """How long to wait for an IGD to answer the SSDP search."""
    upnp_call_timeout_s: float = 5.0
    release_timeout_s: float = 2.0
    """At exit: how long to wait for the router to confirm the mapping's removal."""
    retry_after_s: float = 600.0
    description: str = "peerup"
    gateway: str | None = None
    """The gateway to ask; None: the default route's."""
    gateway_port: int = natpmp.PORT
    """Its PCP/NAT-PMP port (5351; tests point it elsewhere)."""


@dataclass(frozen=True, slots=True)
class PortMapResult:
    """Where the port mapping stands."""

    outcome: Outcome
    protocol: str
    internal_port: int
    reason: str
    method: str | None = None
    """"PCP", "NAT-PMP" or "UPnP"."""
    gateway: str | None = None
    external_ip: str | None = None
    external_port: int | None = None
    lease_s: int | None = None
    """Granted lease; 0: permanent (UPnP routers that allow nothing else)."""
    renewals: int = 0
    since: float = 0.0
    """Wall-clock time of this state."""

    @property
    def external_addr(self) -> Multiaddr | None:
        """The mapped address as a multiaddr (only while mapped)."""
        if self.outcome is not Outcome.MAPPED or self.external_ip is None:
            return None
        return Multiaddr.parse(
            f"/ip4/{self.external_ip}/{self.protocol}/{self.external_port}"
        )


def is_public(ip: str) -> bool:
    try:
        addr = ipaddress.IPv4Address(ip)
    except ValueError:
        return False
    return not any(addr in net for net in NOT_PUBLIC)


def default_gateway(table: Path = ROUTE_TABLE) -> str | None:
    """The IPv4 default route's gateway, from /proc/net/route (Linux); None if there
    is none or the file cannot be read."""
    try:
        lines = table.read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) < 8 or fields[1] != "00000000" or fields[7] != "00000000":
            continue
        try:
            flags = int(fields[3], 16)
            gateway = int(fields[2], 16)
        except ValueError:
            continue
        if flags & 0x2 and gateway:  # RTF_GATEWAY
            return str(ipaddress.IPv4Address(gateway.to_bytes(4, "little")))
    return None


def local_ip_toward(gateway: str) -> str:
    """Our address on the link toward ``gateway`` (a UDP connect sends nothing).

    Raises:
        OSError: no route to it.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((gateway, natpmp.PORT))
        return str(sock.getsockname()[0])


class _GatewayDatagrams(asyncio.DatagramProtocol):
    """Datagrams from the gateway's port 5351, and the socket's errors (an ICMP port
    unreachable arrives as ConnectionRefusedError on a connected UDP socket)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | OSError] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        if isinstance(exc, OSError):
            self.queue.put_nowait(exc)


class _PortClosed(Exception):
    """The gateway's port 5351 answered with ICMP port unreachable."""


class PortMapper:
    """Keeps one port mapping for ``internal_port`` while it runs."""

    def __init__(
        self,
        internal_port: int,
        config: PortMapConfig | None = None,
        on_change: Callable[[PortMapResult], None] | None = None,
    ) -> None:
        self.config = config or PortMapConfig()
        self.internal_port = internal_port
        self.on_change = on_change
        self.result = PortMapResult(
            Outcome.DISCOVERING,
            self.config.protocol,
            internal_port,
            "asking the router",
            since=time.time(),
        )
        self._task: asyncio.Task[None] | None = None
        self._session: PortMapSession | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._datagrams: _GatewayDatagrams | None = None
        self._igd: object | None = None
        """The net.upnp.Igd holding our mapping (typed loosely: imported lazily)."""
        self._closed = False

    def start(self) -> None:
        """Begin (once); the mapper then runs until :meth:`aclose`."""
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"port mapping :{self.internal_port}"
            )

    async def aclose(self) -> None:
        """Stop, and remove the mapping from the router (waiting at most
        ``release_timeout_s`` for it to confirm). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            async with asyncio.timeout(self.config.release_timeout_s):
                await self._release()
        except TimeoutError:
            log.info("port mapping: the router did not confirm the removal in time")
        finally:
            self._close_socket()
        self._set(
            replace(
                self.result,
                outcome=Outcome.STOPPED,
                reason="stopped (mapping removed)",
                since=time.time(),
            )
        )

    # --- the attempt ------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            result = await self._map_once()
            self._set(result)
            if result.outcome is Outcome.MAPPED:
                lost = await self._keep()
                self._set(lost)
            await asyncio.sleep(self.config.retry_after_s)  # policy: when to ask again

    def _set(self, result: PortMapResult) -> None:
        changed = result != self.result
        self.result = result
        if result.outcome is Outcome.MAPPED and changed:
            log.info("port mapping: %s", describe(result))
        elif changed:
            log.info("port mapping: %s", result.reason)
        if changed and self.on_change is not None:
            self.on_change(result)

    def _result(
        self,
        outcome: Outcome,
        reason: str,
        *,
        method: str | None = None,
        gateway: str | None = None,
        external_ip: str | None = None,
        external_port: int | None = None,
        lease_s: int | None = None,
    ) -> PortMapResult:
        return PortMapResult(
            outcome,
            self.config.protocol,
            self.internal_port,
            reason,
            method,
            gateway,
            external_ip,
            external_port,
            lease_s,
            since=time.time(),
        )

    async def _map_once(self) -> PortMapResult:
        gateway = self.config.gateway or default_gateway()
        if gateway is None:
            return self._result(
                Outcome.NO_GATEWAY,
                "no IPv4 default gateway found (only Linux's /proc/net/route is read)",
            )
        try:
            client_ip = local_ip_toward(gateway)
        except OSError as exc:
            return self._result(
                Outcome.NO_GATEWAY, f"no route to the gateway {gateway}: {exc}"
            )
        methods = self.config.methods
        tried: list[str] = []
        refused: PortMapResult | None = None
        pcp_methods = tuple(
            m for m in (Method.PCP, Method.NATPMP) if m.name.lower() in methods
        )
        if pcp_methods:
            result = await self._try_pcp(gateway, client_ip, pcp_methods)
            if result.outcome in (Outcome.MAPPED, Outcome.NOT_PUBLIC):
                return result
            if result.outcome is Outcome.REFUSED:
                refused = result
            tried.append(result.reason)
        if "upnp" in methods:
            result = await self._try_upnp(gateway, client_ip)
            if result.outcome in (Outcome.MAPPED, Outcome.NOT_PUBLIC):
                return result
            if result.outcome is Outcome.REFUSED:
                refused = result
            tried.append(result.reason)
        if refused is not None:
            return replace(refused, reason="; ".join(tried))
        return self._result(Outcome.UNSUPPORTED, "; ".join(tried), gateway=gateway)

    async def _open_socket(self, gateway: str, client_ip: str) -> _GatewayDatagrams:
        loop = asyncio.get_running_loop()
        transport, datagrams = await loop.create_datagram_endpoint(
            _GatewayDatagrams,
            local_addr=(client_ip, 0),
            remote_addr=(gateway, self.config.gateway_port),
        )
        self._transport, self._datagrams = transport, datagrams
        return datagrams

    def _close_socket(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._transport = self._datagrams = None

    async def _drive(self, session: PortMapSession) -> list[session_mod.Event]:
        """Run ``session`` until it has events: send, wait for an answer or its next
        deadline, feed it. Raises _PortClosed on ICMP port unreachable."""
        loop = asyncio.get_running_loop()
        assert self._transport is not None and self._datagrams is not None
        while True:
            for datagram in session.data_to_send():
                self._transport.sendto(datagram)
            deadline = session.next_deadline()
            try:
                async with asyncio.timeout_at(deadline):
                    item = await self._datagrams.queue.get()
            except TimeoutError:
                events = session.handle_timeout(loop.time())
            else:
                if isinstance(item, ConnectionRefusedError):
                    raise _PortClosed()
                if isinstance(item, OSError):
                    log.debug("port mapping socket: %s", item)
                    continue
                try:
                    events = session.receive_datagram(item, loop.time())
                except RemoteProtocolError as exc:
                    log.info(
                        "port mapping: ignored a bad answer from the router: %s", exc
                    )
                    continue
            if events:
                return events

    async def _try_pcp(
        self, gateway: str, client_ip: str, methods: tuple[Method, ...]
    ) -> PortMapResult:
        names = "/".join(m.value for m in methods)
        try:
            await self._open_socket(gateway, client_ip)
        except OSError as exc:
            return self._result(Outcome.UNSUPPORTED, f"{names}: {exc}", gateway=gateway)
        session = PortMapSession(
            self.config.protocol,
            self.internal_port,
            client_ip,
            os.urandom(12),
            lifetime_s=self.config.lifetime_s,
            max_tries=self.config.pcp_tries,
            methods=methods,
        )
        session.start(asyncio.get_running_loop().time())
        try:
            events = await self._drive(session)
        except _PortClosed:
            self._close_socket()
            return self._result(
                Outcome.UNSUPPORTED,
                f"{names}: the router's port {self.config.gateway_port} is closed "
                f"({gateway})",
                gateway=gateway,
            )
        event = events[0]
        if isinstance(event, session_mod.MappingGranted):
            self._session = session
            result = self._result(
                Outcome.MAPPED,
                "mapped",
                method=event.method.value,
                gateway=gateway,
                external_ip=event.external_ip,
                external_port=event.external_port,
                lease_s=event.lifetime_s,
            )
            return await self._check_public(result)
        self._close_socket()
        if isinstance(event, session_mod.MappingRefused):
            return self._result(
                Outcome.REFUSED,
                f"{event.method.value}: the router refused: {event.reason}",
                method=event.method.value,
                gateway=gateway,
            )
        return self._result(
            Outcome.UNSUPPORTED,
            f"{names}: no answer from {gateway}:{self.config.gateway_port}",
            gateway=gateway,
        )

    async def _try_upnp(self, gateway: str, client_ip: str) -> PortMapResult:
        from peerup.net import upnp

        cfg = self.config
        try:
            location = await upnp.discover(client_ip, cfg.upnp_search_s)
            if location is None:
                return self._result(
                    Outcome.UNSUPPORTED,
                    f"UPnP: no Internet Gateway Device answered the search within "
                    f"{cfg.upnp_search_s:g} s",
                    gateway=gateway,
                )
            igd = await upnp.Igd.open(location, cfg.upnp_call_timeout_s)
            mapping = await igd.add(
                cfg.protocol,
                self.internal_port,
                client_ip,
                self.internal_port,
                cfg.lifetime_s,
                cfg.description,
                cfg.upnp_call_timeout_s,
            )
        except upnp.UpnpFailure as exc:
            return self._result(
                Outcome.REFUSED, f"UPnP: {exc}", method="UPnP", gateway=gateway
            )
        self._igd = igd
        try:
            external_ip = await igd.external_ip(cfg.upnp_call_timeout_s)
        except upnp.UpnpFailure as exc:
            await self._release()
            return self._result(
                Outcome.REFUSED, f"UPnP: {exc}", method="UPnP", gateway=gateway
            )
        result = self._result(
            Outcome.MAPPED,
            "mapped",
            method="UPnP",
            gateway=gateway,
            external_ip=external_ip,
            external_port=mapping.external_port,
            lease_s=mapping.lease_s,
        )
        return await self._check_public(result)

    async def _check_public(self, result: PortMapResult) -> PortMapResult:
        if result.external_ip is not None and is_public(result.external_ip):
            return result
        await self._release()
        return replace(
            result,
            outcome=Outcome.NOT_PUBLIC,
            reason=(
                f"{result.method}: the router mapped the port, but its own address "
                f"{result.external_ip} is not public: another NAT (a carrier-grade NAT, "
                "or a second router) is in front of it, so the mapping was removed"
            ),
        )

    # --- keeping it -------------------------------------------------------------------

    async def _keep(self) -> PortMapResult:
        """Renew until the mapping is lost; the result that says so."""
        if self._session is not None:
            return await self._keep_pcp(self._session)
        return await self._keep_upnp()

    async def _keep_pcp(self, session: PortMapSession) -> PortMapResult:
        while True:
            try:
                events = await self._drive(session)
            except _PortClosed:
                events = []
            event = events[0] if events else None
            if isinstance(event, session_mod.MappingGranted):
                self._set(
                    replace(
                        self.result,
                        external_ip=event.external_ip,
                        external_port=event.external_port,
                        lease_s=event.lifetime_s,
                        renewals=self.result.renewals + 1,
                    )
                )
                continue
            self._session = None
            self._close_socket()
            why = (
                f"the router refused the renewal: {event.reason}"
                if isinstance(event, session_mod.MappingRefused)
                else "the router stopped answering renewals"
            )
            return replace(
                self.result, outcome=Outcome.LOST, reason=why, since=time.time()
            )

    async def _keep_upnp(self) -> PortMapResult:
        from peerup.net import upnp

        igd = self._igd
        assert isinstance(igd, upnp.Igd)
        cfg = self.config
        while True:
            lease = self.result.lease_s or cfg.lifetime_s
            await asyncio.sleep(max(1.0, lease / 2))  # the renewal timer
            try:
                mapping = await igd.add(
                    cfg.protocol,
                    self.result.external_port or self.internal_port,
                    local_ip_toward(self.result.gateway or ""),
                    self.internal_port,
                    self.result.lease_s if self.result.lease_s is not None else 0,
                    cfg.description,
                    cfg.upnp_call_timeout_s,
                )
            except (upnp.UpnpFailure, OSError) as exc:
                self._igd = None
                return replace(
                    self.result,
                    outcome=Outcome.LOST,
                    reason=f"UPnP: the renewal failed: {exc}",
                    since=time.time(),
                )
            self._set(
                replace(
                    self.result,
                    external_port=mapping.external_port,
                    lease_s=mapping.lease_s,
                    renewals=self.result.renewals + 1,
                )
            )

    async def _release(self) -> None:
        session, self._session = self._session, None
        if session is not None and self._transport is not None:
            if not session.release(asyncio.get_running_loop().time()):
                try:
                    await self._drive(session)  # until MappingReleased
                except _PortClosed:
                    pass
        igd, self._igd = self._igd, None
        if igd is not None:
            from peerup.net import upnp

            assert isinstance(igd, upnp.Igd)
            port = self.result.external_port or self.internal_port
            try:
                await igd.delete(
                    self.config.protocol, port, self.config.upnp_call_timeout_s
                )
            except upnp.UpnpFailure as exc:
                log.info("port mapping: removing the UPnP mapping failed: %s", exc)


def describe(result: PortMapResult) -> str:
    """One line: "UPnP mapped 203.0.113.20:41234 -> :4001, lease 1h" (or the reason)."""
    if result.outcome is not Outcome.MAPPED:
        return result.reason
    lease = result.lease_s
    if lease is None:
        lease_text = ""
    elif lease == 0:
        lease_text = ", permanent lease (removed on exit)"
    else:
        lease_text = f", lease {_duration(lease)}"
    proto = "" if result.protocol == "tcp" else f" {result.protocol.upper()}"
    return (
        f"{result.method} mapped{proto} {result.external_ip}:{result.external_port} -> "
        f":{result.internal_port}{lease_text}"
    )


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}min"
    return f"{seconds}s"
