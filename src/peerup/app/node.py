"""Node: one peer-up identity at work: host, relay reservations, allowlist, services.

Both ``peerup daemon`` and the commands that run without a daemon build a Node, so the
network behaviour is the same either way. Wire protocols kept from the Go original:
services are ``/peerup/<name>/1.0.0`` carrying the raw TCP bytes with half-close, and
``/pingpong/1.0.0`` answers ``ping\\n`` with ``pong\\n``.
Policy: a peer reaches us only if the allowlist allows it (checked at the handshake by
the host's peer gate), and a service only if its ``allowed_peers`` is empty or lists
the peer. When a proxied connection fails, the proxy asks the far node (side protocol
``/peerup/service-status/1.0.0``) whether the service is unknown, disabled, down or
refused to this peer, so the user is told which (app/failures.py words it). The far
node logs and counts every stream it refuses, with the reason.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from peerup.app import failures, tunnel
from peerup.app.failures import Failure
from peerup.core.access import Access
from peerup.core.errors import ConnectError, Error, NegotiationError
from peerup.core.errors import TimeoutError as PeerupTimeout
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.multiaddr import Multiaddr
from peerup.core.peer_id import PeerId
from peerup.net import tracing
from peerup.net.connection import Connection
from peerup.net.holepunch import HolePunchService
from peerup.net.host import Host, HostConfig
from peerup.net.relay_client import RelayClient
from peerup.net.stream import Stream
from peerup.net.tcp_splice import SpliceStats, TcpStreamSplice

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


@dataclass(frozen=True, slots=True)
class ProxyOutcome:
    """How one proxied TCP connection went: ``failure`` is None when it ended
    cleanly (both sides closed), else why it failed or was cut."""

    failure: Failure | None = None
    ended: str = "closed"
    """"closed" (a clean end both ways), or how the splice ended."""
    path: str = ""
    duration_s: float = 0.0
    bytes_out: int = 0
    bytes_in: int = 0
    client: str = ""
    """The local TCP client's address, when known."""

    @property
    def ok(self) -> bool:
        return self.failure is None

    def describe(self) -> str:
        """One line for the user: client, path, duration, bytes, how it ended."""
        how = self.ended if self.failure is None else f"failed: {self.failure.cause.value}"
        parts = [self.path] if self.path else []
        parts += [
            f"{self.duration_s:.2f} s",
            f"{format_bytes(self.bytes_out)} out",
            f"{format_bytes(self.bytes_in)} in",
            how,
        ]
        return (f"{self.client}: " if self.client else "") + ", ".join(parts)


def format_bytes(n: int) -> str:
    """A byte count for people: 512 B, 3.2 KB, 1.0 MB (powers of 1000)."""
    if n < 1000:
        return f"{n} B"
    for unit in ("KB", "MB", "GB"):
        n_f = n / 1000.0
        if n_f < 1000 or unit == "GB":
            return f"{n_f:.1f} {unit}"
        n = int(n_f)
    return f"{n} B"  # unreachable


RECENT_OUTCOMES = 64
"""How many finished connections a proxy remembers (for ``proxy`` through the
daemon, which prints them, and for ``status``)."""


def _end_span(traced: tracing.Span, splice: TcpStreamSplice, conn: Connection) -> None:
    """End a proxied connection's span with its path, outcome and byte counts."""
    if not tracing.is_enabled():
        return
    result = splice.stats
    traced.set("path", "relayed" if conn.is_relayed else "direct")
    if result is not None:
        traced.set("ended_by", result.ended_by)
        traced.set("bytes_up", result.tcp_to_stream_bytes)
        traced.set("bytes_down", result.stream_to_tcp_bytes)
    traced.end()


@dataclass(slots=True)
class ProxyStats:
    connections: int = 0
    failures: int = 0
    last_failure: str | None = None
    bytes_to_service: int = 0
    """Carried from local clients to the far service, added as each connection ends."""
    bytes_from_service: int = 0
    seq: int = 0
    """Outcomes so far; the newest in ``recent`` has this number."""
    recent: deque[ProxyOutcome] = field(
        default_factory=lambda: deque(maxlen=RECENT_OUTCOMES)
    )


@dataclass(frozen=True, slots=True)
class _ProxyJob:
    """What every connection of one proxy shares."""

    peer: PeerId
    service: str
    label: str
    stats: ProxyStats
    on_outcome: Callable[[ProxyOutcome], None] | None


class Node:
    """The running parts of one identity."""

    def __init__(
        self,
        identity: Ed25519PrivateKey,
        *,
        gate: Callable[[PeerId], Access] | None = None,
        authorize: Callable[[PeerId], Access] | None = None,
        config: HostConfig | None = None,
        max_service_connections_per_peer: int = 512,
    ) -> None:
        self.host = Host(identity, config, gate=gate)
        self.max_service_connections_per_peer = max_service_connections_per_peer
        """Connections to local services one peer may have open at once (0: no
        limit); more are refused (``status`` counts them as "limit")."""
        self._service_splices: dict[PeerId, dict[TcpStreamSplice, str]] = {}
        """The running service connections of each peer, with their service's name:
        counted against the limit, and reset when the peer loses access."""
        # The host's gate judges inbound connections only; connections we dial (to a
        # relay, or to a peer by address) are not gated, so every service stream is
        # checked against the allowlist again here.
        self.authorize: Callable[[PeerId], Access] = (
            authorize or gate or (lambda _peer: Access.allow("no allowlist"))
        )
        self.relay_client = RelayClient(self.host)
        # A relayed connection to a peer we allow is upgraded to a direct one where
        # any way works (known addresses, DCUtR); new streams then go direct.
        self.holepunch = HolePunchService(
            self.host, should_upgrade=lambda peer: self.authorize(peer).is_allowed
        )
        self.relay_addrs: list[Multiaddr] = []
        self.direct = True
        """Dial peers' direct addresses too (``direct_connections`` in config)."""
        self.services: dict[str, Service] = {}
        self.disabled_services: frozenset[str] = frozenset()
        """Services in the config but disabled: refused with that reason."""
        self.refusals: Counter[str] = Counter()
        """Inbound streams refused, by reason (``status`` shows them)."""
        self.service_outcomes: Counter[tuple[str, str]] = Counter()
        """Finished connections to our services by (service, outcome: ok, reset,
        error); counted once per connection as it ends (metrics)."""
        self.service_bytes: Counter[tuple[str, str]] = Counter()
        """Bytes by (service, to_service | from_service), added as each ends."""
        self.last_refusal: str | None = None
        self.host.on_protocol_refused.append(self._protocol_refused)
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
        """Make ``relays`` the relays this node keeps reservations on and reaches peers
        through: new ones are kept, the others dropped (no more reservation attempts,
        no circuit address through them, their connection closed once no circuit uses
        it; see ``RelayClient.drop``). A changed address is a drop plus an add."""
        wanted = list(dict.fromkeys(relays))
        for relay in [r for r in self.relay_addrs if r not in wanted]:
            self.relay_addrs.remove(relay)
            dropped = self.relay_client.drop(relay)
            self._forget_circuits_through(relay)
            if dropped.open_circuits:
                log.info(
                    "relay removed: %s (its connection closes when the %d circuits "
                    "through it end)",
                    relay,
                    dropped.open_circuits,
                )
            else:
                log.info("relay removed: %s", relay)
        for relay in wanted:
            if relay not in self.relay_addrs:
                self.relay_addrs.append(relay)
                self.relay_client.keep(relay)
                log.info("relay added: %s", relay)
        self.relay_addrs.sort(key=wanted.index)

    def _forget_circuits_through(self, relay: Multiaddr) -> None:
        """Forget the circuit addresses through ``relay`` that ``connect`` stored."""
        for addrs in self.host.peer_addrs.values():
            addrs[:] = [
                a for a in addrs if not (a.is_circuit and a.split_circuit()[0] == relay)
            ]

    async def reserve_now(self, relay: Multiaddr) -> Multiaddr:
        """Our circuit address through ``relay``, once reserved (keeping it if new)."""
        if relay in self.relay_addrs:
            rsvp = await self.relay_client.wait_reserved(relay)
            return rsvp.circuit_addr.with_peer_id(self.peer_id)
        self.relay_addrs.append(relay)
        return await self.relay_client.reserve_and_keep(relay)

    def expose(self, service: Service) -> None:
        """Serve ``service``; if it replaces one whose ``allowed_peers`` differ, the
        running connections of peers it no longer allows are reset."""
        old = self.services.get(service.name)
        self.services[service.name] = service
        self.host.set_inline_handler(
            tunnel.service_protocol(service.name), self._serve_service
        )
        if old is not None and old.allowed_peers != service.allowed_peers:
            for peer in list(self._service_splices):
                access = service.check(peer)
                if not access.is_allowed:
                    self.reset_service_connections(peer, access.reason, service.name)

    def reset_service_connections(
        self, peer: PeerId, reason: str, service: str | None = None
    ) -> int:
        """Reset ``peer``'s running connections to ``service`` (to every service when
        None), e.g. because it lost access; logged. Returns how many."""
        running = self._service_splices.get(peer)
        if not running:
            return 0
        cut = [s for s, name in running.items() if service is None or name == service]
        for splice in cut:
            splice.abort(f"reset: {reason}")
        if cut:
            log.info(
                "reset %d connection(s) of %s to %s: %s",
                len(cut),
                peer,
                f"service {service!r}" if service is not None else "services",
                reason,
            )
        return len(cut)

    def service_connections(self, peer: PeerId) -> int:
        """How many connections to local services ``peer`` has open."""
        return len(self._service_splices.get(peer, ()))

    def _service_ended(
        self, peer: PeerId, splice: TcpStreamSplice, stats: SpliceStats
    ) -> None:
        running = self._service_splices.get(peer)
        if running is not None:
            name = running.pop(splice, None)
            if not running:
                del self._service_splices[peer]
            if name is not None:
                # Once per connection, at its end: nothing on the data path.
                ended = stats.ended_by
                outcome = (
                    "ok" if ended == "eof"
                    else "reset" if ended.startswith("reset") else "error"
                )  # fmt: skip
                self.service_outcomes[(name, outcome)] += 1
                self.service_bytes[(name, "to_service")] += stats.stream_to_tcp_bytes
                self.service_bytes[(name, "from_service")] += stats.tcp_to_stream_bytes

    def unexpose(self, name: str, reason: str = "removed") -> int:
        """Stop serving ``name`` and reset its running connections (a removed or
        disabled service keeps nothing open); logged. Returns how many were cut."""
        if self.services.pop(name, None) is None:
            return 0
        self.host.remove_handler(tunnel.service_protocol(name))
        cut = 0
        for peer in list(self._service_splices):
            cut += self.reset_service_connections(
                peer, f"service {name!r} was {reason}", name
            )
        return cut

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
        if not self.direct:
            return await self._connect_relayed(peer)
        self.host.add_addrs(peer, self.known_addrs(peer))
        return await self.host.connect(peer)

    def keep_relayed(self) -> None:
        """``direct_connections: false``: reach peers only through our relays, and
        take no part in upgrades to direct connections."""
        self.direct = False
        self.holepunch.disable()

    async def _connect_relayed(self, peer: PeerId) -> Connection:
        causes: list[Error] = []
        for relay in self.relay_addrs:
            circuit = relay.encapsulate(Multiaddr((("p2p-circuit", None),)))
            try:
                return await self.host.connect(circuit.with_peer_id(peer))
            except Error as exc:
                causes.append(exc)
        if not causes:
            raise ConnectError(f"no known address for {peer} (no relay configured)")
        raise ConnectError(
            "dial failed: " + "; ".join(str(c) for c in causes), tuple(causes)
        )

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
            self._refused(stream.remote_peer, name, "not allowed", access.reason)
            stream.reset()
            return
        peer = stream.remote_peer
        running = self._service_splices.get(peer)
        if running is None:
            running = self._service_splices[peer] = {}
        elif 0 < self.max_service_connections_per_peer <= len(running):
            self._refused(
                peer,
                name,
                "limit",
                f"{len(running)} service connections open, the most one peer may have",
            )
            stream.reset()
            return
        splice = TcpStreamSplice(loop=stream.conn.loop)
        running[splice] = name
        splice.on_done = functools.partial(self._service_ended, peer, splice)
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
        # Summed up when it repeats (a service down, or out of descriptors: EMFILE).
        why = f"local {service.host}:{service.port} is down: {exc}"
        stream = splice.stream
        self.host.refused(
            f"{stream.remote_peer if stream else 'a peer'} to service {service.name!r}",
            why,
            "streams",
            line=f"service {service.name}: {why}",
        )
        splice.connect_failed(f"error: service down: {exc}")

    def _protocol_refused(self, stream: Stream, protocol: str) -> None:
        """A peer asked for a protocol we do not serve: log and count it when it was
        one of our services (the peer's proxy is told why by the status protocol)."""
        parts = protocol.split("/")
        if len(parts) != 4 or parts[1] != "peerup" or parts[3] != "1.0.0":
            log.debug("%s asked for %s: not supported", stream.remote_peer, protocol)
            return
        name = parts[2]
        if name in self.disabled_services:
            self._refused(stream.remote_peer, name, "disabled", "service disabled")
        else:
            self._refused(stream.remote_peer, name, "unknown", "no such service")

    def _refused(self, peer: PeerId, service: str, kind: str, reason: str) -> None:
        self.refusals[kind] += 1
        self.last_refusal = f"{service!r} for {peer}: {reason}"
        # The first at once, a flood of them summed up (Host.refused).
        self.host.refused(
            f"{peer} to service {service!r}",
            reason,
            "streams",
            line=f"service {service!r}: refused {peer}: {reason}",
        )

    async def _serve_status(self, stream: Stream) -> None:
        name = (await stream.readline(128)).decode(errors="replace").strip()
        service = self.services.get(name)
        if not self.authorize(stream.remote_peer).is_allowed:
            answer = "denied"
        elif service is None:
            answer = "disabled" if name in self.disabled_services else "unknown"
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
        *,
        label: str | None = None,
    ) -> tuple[asyncio.Server, ProxyStats]:
        """Listen on ``bind:port`` and carry each connection to ``service`` on ``peer``.

        With a connection to the peer already open (the usual, warm case) the stream is
        opened and joined to the accepted socket inside ``connection_made``, so the
        client's first byte goes out without waiting for any task. Every connection's
        outcome is counted in the returned stats (and given to ``on_outcome``); a
        failed one is logged with its cause. ``label`` names the peer in messages (the
        name the user gave; the short peer ID otherwise).
        """
        stats = ProxyStats()
        job = _ProxyJob(peer, service, label or peer.short(), stats, on_outcome)
        protocol = tunnel.service_protocol(service)

        def accepted(splice: TcpStreamSplice) -> None:
            start = time.perf_counter()
            traced = tracing.start("peerup.proxy_connection", lambda: {
                "service": service, "peer": job.label,
            })  # fmt: skip
            conn = self.host.connection_to(peer)
            if conn is not None:
                splice.attach(conn.open_stream([protocol], data_expected=True))
                open_conn = conn

                def done(_result: object) -> None:
                    self._proxy_done(job, splice, open_conn, start)
                    _end_span(traced, splice, open_conn)

                splice.on_done = done
            else:
                self.host.spawn(
                    self._proxy_dial(job, splice, start, traced), "proxy dial"
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
        job: _ProxyJob,
        splice: TcpStreamSplice,
        start: float,
        traced: tracing.Span = tracing.NO_SPAN,
    ) -> None:
        try:
            conn = await self.connect(job.peer)
        except Error as exc:
            failure = failures.explain_dial(exc, job.label, str(self.peer_id))
            splice.abort(f"error: {failure.message}")
            self._report(job, splice, failure, "", start)
            traced.set("outcome", failure.cause.name.lower())
            traced.end()
            return
        splice.attach(conn.open_stream([tunnel.service_protocol(job.service)]))
        await splice.done
        self._proxy_done(job, splice, conn, start)
        _end_span(traced, splice, conn)

    def _proxy_done(
        self, job: _ProxyJob, splice: TcpStreamSplice, conn: Connection, start: float
    ) -> None:
        """Record a finished proxied connection; diagnose (in a task) if the far side
        never took it."""
        result = splice.stats
        assert result is not None
        job.stats.bytes_to_service += result.tcp_to_stream_bytes
        job.stats.bytes_from_service += result.stream_to_tcp_bytes
        path = "relayed" if conn.is_relayed else "direct"
        if result.ended_by == "eof":
            if job.on_outcome is None:
                job.stats.connections += 1  # the warm path: nothing to print
                return
            self._report(job, splice, None, path, start)
            return
        if result.stream_to_tcp_bytes:
            # The far service answered, then the tunnel broke: a cut, not a refusal.
            cut = failures.Failure(
                failures.Cause.CUT,
                f"the tunnel to {job.label} was cut: {result.ended_by}",
                None,
                result.ended_by,
            )
            self._report(job, splice, cut, path, start)
            return
        if self.host.is_closed:
            return
        self.host.spawn(
            self._proxy_failed(job, splice, conn, start), "proxy diagnosis"
        )

    async def _proxy_failed(
        self, job: _ProxyJob, splice: TcpStreamSplice, conn: Connection, start: float
    ) -> None:
        path = "relayed" if conn.is_relayed else "direct"
        failure = await self._diagnose(job, conn, splice)
        self._report(job, splice, failure, path, start)

    def _report(
        self,
        job: _ProxyJob,
        splice: TcpStreamSplice,
        failure: Failure | None,
        path: str,
        start: float,
    ) -> None:
        result = splice.stats
        tcp = splice.tcp
        client = ""
        if tcp is not None:
            peername = tcp.get_extra_info("peername")
            if isinstance(peername, tuple) and len(peername) >= 2:
                client = f"{peername[0]}:{peername[1]}"
        outcome = ProxyOutcome(
            failure,
            "closed" if result is None or result.ended_by == "eof" else result.ended_by,
            path,
            time.perf_counter() - start,
            result.tcp_to_stream_bytes if result else 0,
            result.stream_to_tcp_bytes if result else 0,
            client,
        )
        stats = job.stats
        stats.seq += 1
        stats.recent.append(outcome)
        if failure is None:
            stats.connections += 1
        else:
            stats.failures += 1
            stats.last_failure = failure.line()
            # Where someone prints the outcome (a foreground proxy) the log would
            # say it twice on the same terminal; a daemon's log is the record.
            log.log(
                logging.INFO if job.on_outcome is not None else logging.WARNING,
                "proxy %s/%s: %s [%s]",
                job.label,
                job.service,
                failure.line(),
                failure.detail,
            )
        if job.on_outcome is not None:
            job.on_outcome(outcome)

    async def _diagnose(
        self, job: _ProxyJob, conn: Connection, splice: TcpStreamSplice
    ) -> Failure:
        result = splice.stats
        why = result.ended_by if result is not None else "failed"
        return await self.diagnose_service(
            conn, splice.stream, job.service, job.label, why
        )

    async def diagnose_service(
        self,
        conn: Connection,
        stream: Stream | None,
        service: str,
        label: str,
        why: str,
    ) -> Failure:
        """Why a stream to ``service`` on ``conn``'s peer failed before the service
        said anything: asks the far node (service-status side protocol) when the
        connection still stands. ``label`` names the peer, ``why`` is the raw error."""
        me = str(self.peer_id)
        if not conn.is_open:
            if conn.refused_at_handshake:
                return failures.peer_refused_us(label, me, why)
            return failures.Failure(
                failures.Cause.CUT,
                f"the connection to {label} closed: {conn.close_reason}",
                None,
                why,
            )
        refused = stream is not None and isinstance(
            stream.negotiation_error, NegotiationError
        )
        try:
            status = conn.open_stream([tunnel.SERVICE_STATUS_PROTOCOL])
            await status.write(service.encode() + b"\n")
            async with asyncio.timeout(5):
                answer = (await status.readline(64)).strip().decode()
        except (Error, TimeoutError, UnicodeDecodeError):
            answer = ""
        if answer == "up":
            return failures.Failure(
                failures.Cause.CUT,
                f"{label} reset the connection before its service answered",
                None,
                why,
            )
        if not answer and refused and stream is not None:
            error = stream.negotiation_error
            assert isinstance(error, NegotiationError)
            return failures.unsupported_service(label, service, error)
        if not answer:
            answer = "down"
        return failures.service_failure(answer, label, service, why)

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
