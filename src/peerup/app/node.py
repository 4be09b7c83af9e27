"""Node: one peer-up identity at work: host, relay reservations, allowlist, services.

Both ``peerup daemon`` and the commands that run without a daemon build a Node, so the
network behaviour is the same either way. Wire protocols kept from the Go original:
services are ``/peerup/<name>/1.0.0`` carrying the raw TCP bytes with half-close, and
``/pingpong/1.0.0`` answers ``ping\\n`` with ``pong\\n``.
Policy: a peer reaches us only if the allowlist allows it (checked at the handshake by
the host's peer gate), and a service only if its ``allowed_peers`` is empty or lists
the peer. When a proxied connection fails, the proxy asks the far node (side protocol
``/peerup/service-status/1.0.0``) whether the service is down or the peer refused, so
the user is told which.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from peerup.app import tunnel
from peerup.core.access import Access
from peerup.core.errors import ConnectError, Error, NegotiationError, RelayError
from peerup.core.errors import TimeoutError as PeerupTimeout
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.multiaddr import Multiaddr
from peerup.core.peer_id import PeerId
from peerup.net.connection import Connection
from peerup.net.host import Host, HostConfig
from peerup.net.relay_client import RelayClient
from peerup.net.stream import Stream
from peerup.net.tcp_splice import SpliceStats, TcpStreamSplice
from peerup.proto import relay_v2

log = logging.getLogger(__name__)

PINGPONG_PROTOCOL = "/pingpong/1.0.0"


@dataclass(frozen=True, slots=True)
class Service:
    """An exposed local TCP service."""

    name: str
    host: str
    port: int
    allowed_peers: tuple[PeerId, ...] = ()

    def check(self, peer: PeerId) -> Access:
        if self.allowed_peers and peer not in self.allowed_peers:
            return Access.deny(f"peer not in allowed_peers of service {self.name!r}")
        return Access.allow("allowed")


class ProxyFailure(enum.Enum):
    """Why a proxied connection could not be made."""

    PEER_OFFLINE = "peer offline or unreachable"
    NOT_ALLOWED = "refused: this peer is not allowed"
    SERVICE_DOWN = "the remote service is down"
    UNKNOWN_SERVICE = "the remote peer does not expose this service"


@dataclass(frozen=True, slots=True)
class ProxyOutcome:
    """How one proxied TCP connection went."""

    ok: bool
    failure: ProxyFailure | None = None
    detail: str = ""
    path: str = ""
    setup_ms: float = 0.0
    bytes_out: int = 0
    bytes_in: int = 0


@dataclass(slots=True)
class ProxyStats:
    connections: int = 0
    failures: int = 0
    last_failure: str | None = None
    outcomes: list[ProxyOutcome] = field(default_factory=list)


class Node:
    """The running parts of one identity."""

    def __init__(
        self,
        identity: Ed25519PrivateKey,
        *,
        gate: Callable[[PeerId], Access] | None = None,
        authorize: Callable[[PeerId], Access] | None = None,
        config: HostConfig | None = None,
    ) -> None:
        self.host = Host(identity, config, gate=gate)
        # The host's gate judges inbound connections only; connections we dial (to a
        # relay, or to a peer by address) are not gated, so every service stream is
        # checked against the allowlist again here.
        self.authorize: Callable[[PeerId], Access] = (
            authorize or gate or (lambda _peer: Access.allow("no allowlist"))
        )
        self.relay_client = RelayClient(self.host)
        self.relay_addrs: list[Multiaddr] = []
        self.services: dict[str, Service] = {}
        self.host.set_handler(PINGPONG_PROTOCOL, self._serve_pingpong)
        self.host.set_handler(tunnel.SERVICE_STATUS_PROTOCOL, self._serve_status)

    @property
    def peer_id(self) -> PeerId:
        return self.host.peer_id

    async def aclose(self) -> None:
        await self.host.aclose()

    # --- setup ----------------------------------------------------------------------

    async def listen(self, addrs: list[str]) -> list[Multiaddr]:
        bound = []
        for addr in addrs:
            bound += await self.host.listen(addr)
        return bound

    def use_relays(self, relays: list[Multiaddr]) -> None:
        """Keep reservations on ``relays`` and reach peers through them."""
        for relay in relays:
            if relay not in self.relay_addrs:
                self.relay_addrs.append(relay)
                self.relay_client.keep(relay)

    async def reserve_now(self, relay: Multiaddr) -> Multiaddr:
        """Our circuit address through ``relay``, once reserved (keeping it if new)."""
        if relay in self.relay_addrs:
            rsvp = await self.relay_client.wait_reserved(relay)
            return rsvp.circuit_addr.with_peer_id(self.peer_id)
        self.relay_addrs.append(relay)
        return await self.relay_client.reserve_and_keep(relay)

    def expose(self, service: Service) -> None:
        self.services[service.name] = service
        self.host.set_inline_handler(
            tunnel.service_protocol(service.name), self._serve_service
        )

    def unexpose(self, name: str) -> None:
        if self.services.pop(name, None) is not None:
            self.host.remove_handler(tunnel.service_protocol(name))

    def known_addrs(self, peer: PeerId) -> list[Multiaddr]:
        """Where ``peer`` may be reached: learned direct addresses, then our relays."""
        circuits = [
            r.encapsulate(Multiaddr((("p2p-circuit", None),))).with_peer_id(peer)
            for r in self.relay_addrs
        ]
        return [*self.host.peer_addrs.get(peer, []), *circuits]

    async def connect(self, peer: PeerId) -> Connection:
        existing = self.host.connection_to(peer)
        if existing is not None:
            return existing
        self.host.add_addrs(peer, self.known_addrs(peer))
        return await self.host.connect(peer)

    # --- serving ----------------------------------------------------------------------

    async def _serve_pingpong(self, stream: Stream) -> None:
        while True:
            line = await stream.readline(64)
            if not line:
                return
            if line.strip() == b"ping":
                await stream.write(b"pong\n")

    def _serve_service(self, stream: Stream) -> None:
        """Inline handler: the stream is joined to the splice at once (what it
        delivers waits there, unacknowledged), and the splice's connection to the
        local service is made by a short task; no task lives as long as the stream."""
        name = (stream.protocol or "").split("/")[2]
        service = self.services.get(name)
        if service is None:
            stream.reset()
            return
        access = self.authorize(stream.remote_peer)
        if access.is_allowed:
            access = service.check(stream.remote_peer)
        if not access.is_allowed:
            log.info(
                "service %s: refused %s: %s", name, stream.remote_peer, access.reason
            )
            stream.reset()
            return
        splice = TcpStreamSplice(loop=stream.conn.loop)
        # Connecting starts before the stream's first bytes are handed over, so that
        # they can go straight out (see TcpStreamSplice.connect_now).
        error = splice.connect_now(service.host, service.port)
        splice.attach(stream)
        if error is not None:
            self._service_down(splice, service, error)
            return
        if not splice.adopt_connected():
            self.host.spawn(self._connect_service(splice, service), "service connect")

    async def _connect_service(self, splice: TcpStreamSplice, service: Service) -> None:
        try:
            await splice.finish_connect()
        except OSError as exc:
            self._service_down(splice, service, exc)

    def _service_down(
        self, splice: TcpStreamSplice, service: Service, exc: OSError
    ) -> None:
        log.info(
            "service %s: local %s:%d is down: %s",
            service.name,
            service.host,
            service.port,
            exc,
        )
        splice.connect_failed(f"error: service down: {exc}")

    async def _serve_status(self, stream: Stream) -> None:
        name = (await stream.readline(128)).decode(errors="replace").strip()
        service = self.services.get(name)
        if not self.authorize(stream.remote_peer).is_allowed:
            answer = "denied"
        elif service is None:
            answer = "unknown"
        elif not service.check(stream.remote_peer).is_allowed:
            answer = "denied"
        else:
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(service.host, service.port), 5
                )
                writer.close()
                answer = "up"
            except (OSError, TimeoutError):
                answer = "down"
        await stream.write(answer.encode() + b"\n")

    # --- proxying ---------------------------------------------------------------------

    async def start_proxy(
        self,
        peer: PeerId,
        service: str,
        port: int,
        bind: str = "127.0.0.1",
        on_outcome: Callable[[ProxyOutcome], None] | None = None,
    ) -> tuple[asyncio.Server, ProxyStats]:
        """Listen on ``bind:port`` and carry each connection to ``service`` on ``peer``.

        With a connection to the peer already open (the usual, warm case) the stream is
        opened and joined to the accepted socket inside ``connection_made``, so the
        client's first byte goes out without waiting for any task.
        """
        stats = ProxyStats()
        protocol = tunnel.service_protocol(service)

        def accepted(splice: TcpStreamSplice) -> None:
            start = time.perf_counter()
            conn = self.host.connection_to(peer)
            if conn is not None:
                splice.attach(conn.open_stream([protocol], data_expected=True))
                open_conn = conn
                splice.on_done = lambda result: self._proxy_done(
                    result, open_conn, service, stats, on_outcome, start
                )
            else:
                self.host.spawn(
                    self._proxy_dial(splice, peer, service, stats, on_outcome, start),
                    "proxy dial",
                )

        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: TcpStreamSplice(accepted, loop=loop),
            bind,
            port,
            reuse_address=True,
        )
        return server, stats

    async def _proxy_dial(
        self,
        splice: TcpStreamSplice,
        peer: PeerId,
        service: str,
        stats: ProxyStats,
        on_outcome: Callable[[ProxyOutcome], None] | None,
        start: float,
    ) -> None:
        try:
            conn = await self.connect(peer)
        except Error as exc:
            causes = exc.causes if isinstance(exc, ConnectError) else (exc,)
            refused = any(
                isinstance(c, RelayError)
                and c.status == relay_v2.Status.PERMISSION_DENIED
                for c in causes
            )
            failure = ProxyFailure.NOT_ALLOWED if refused else ProxyFailure.PEER_OFFLINE
            splice.abort(f"error: {exc}")
            self._report(ProxyOutcome(False, failure, str(exc)), stats, on_outcome)
            return
        splice.attach(conn.open_stream([tunnel.service_protocol(service)]))
        result = await splice.done
        self._proxy_done(result, conn, service, stats, on_outcome, start)

    def _proxy_done(
        self,
        result: SpliceStats,
        conn: Connection,
        service: str,
        stats: ProxyStats,
        on_outcome: Callable[[ProxyOutcome], None] | None,
        start: float,
    ) -> None:
        """Record a finished proxied connection; diagnose (in a task) if it failed."""
        if result.ended_by != "eof" and result.stream_to_tcp_bytes == 0:
            if not self.host.is_closed:
                self.host.spawn(
                    self._proxy_failed(result, conn, service, stats, on_outcome),
                    "proxy diagnosis",
                )
            return
        if on_outcome is None:
            stats.connections += 1
            return
        path = "relayed" if conn.is_relayed else "direct"
        outcome = ProxyOutcome(
            True,
            None,
            result.ended_by,
            path,
            (time.perf_counter() - start) * 1000,
            result.tcp_to_stream_bytes,
            result.stream_to_tcp_bytes,
        )
        self._report(outcome, stats, on_outcome)

    async def _proxy_failed(
        self,
        result: SpliceStats,
        conn: Connection,
        service: str,
        stats: ProxyStats,
        on_outcome: Callable[[ProxyOutcome], None] | None,
    ) -> None:
        path = "relayed" if conn.is_relayed else "direct"
        failure, detail = await self._diagnose(conn, service, result.ended_by)
        self._report(ProxyOutcome(False, failure, detail, path), stats, on_outcome)

    def _report(
        self,
        outcome: ProxyOutcome,
        stats: ProxyStats,
        on_outcome: Callable[[ProxyOutcome], None] | None,
    ) -> None:
        if outcome.ok:
            stats.connections += 1
        else:
            assert outcome.failure is not None
            stats.failures += 1
            stats.last_failure = f"{outcome.failure.value}: {outcome.detail}"
            log.warning("proxy: %s (%s)", outcome.failure.value, outcome.detail)
        if on_outcome is not None:
            on_outcome(outcome)

    async def _diagnose(
        self, conn: Connection, service: str, why: str
    ) -> tuple[ProxyFailure, str]:
        if not conn.is_open:
            if conn.muxed_bytes_received == 0:
                # The peer finished the handshake and hung up without a single frame:
                # that is how a peer gate refuses us.
                return ProxyFailure.NOT_ALLOWED, (
                    "the peer closed the connection right after the handshake "
                    "(are we in its authorized_keys?)"
                )
            return ProxyFailure.PEER_OFFLINE, why
        try:
            stream = conn.open_stream([tunnel.SERVICE_STATUS_PROTOCOL])
            await stream.write(service.encode() + b"\n")
            async with asyncio.timeout(5):
                answer = (await stream.readline(64)).strip().decode()
        except (Error, TimeoutError, NegotiationError):
            return ProxyFailure.SERVICE_DOWN, why
        return {
            "denied": (ProxyFailure.NOT_ALLOWED, "not in the service's allowed_peers"),
            "down": (ProxyFailure.SERVICE_DOWN, "nothing listens on its local_address"),
            "unknown": (ProxyFailure.UNKNOWN_SERVICE, f"no service named {service!r}"),
        }.get(answer, (ProxyFailure.SERVICE_DOWN, why))

    # --- diagnostics ------------------------------------------------------------------

    async def pingpong(
        self, peer: PeerId, timeout_s: float = 10.0
    ) -> tuple[float, Connection]:
        """One ``/pingpong/1.0.0`` round trip on a new stream; returns (rtt_s, conn)."""
        conn = await self.connect(peer)
        start = time.perf_counter()
        stream = conn.open_stream([PINGPONG_PROTOCOL])
        try:
            async with asyncio.timeout(timeout_s):
                await stream.write(b"ping\n")
                line = await stream.readline(16)
        except TimeoutError:
            stream.reset()
            raise PeerupTimeout(f"no pong within {timeout_s:g}s") from None
        rtt = time.perf_counter() - start
        conn.rtt_s = rtt
        await stream.aclose()
        if line.strip() != b"pong":
            raise NegotiationError(f"unexpected pingpong answer {line!r}")
        return rtt, conn
