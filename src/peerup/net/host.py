"""Host: one libp2p identity with its listeners, connections and protocol handlers.

Spec: libp2p/specs connections/README.md (dialing, connection reuse),
identify/README.md and ping/ping.md (always on). The host dials with a ``/p2p/`` check
(the Noise handshake refuses any other peer), reuses an open connection to a peer
(direct preferred over relayed), joins concurrent dials to the same peer, consults the
peer gate on every connection right after Noise, and runs one task per inbound stream
in a task set it owns. Transports are pluggable: TCP and in-memory are built in; the
relay client adds ``/p2p-circuit`` (see ``net/relay_client.py``).

Limits against hostile peers (``HostConfig``): inbound connections that have not
finished the handshake are capped in all and per source address, the oldest cut
first; new ones are refused while fewer than ``reserved_fds`` descriptors are free
(kept for the peers already in and their local services); a peer may hold
``max_connections_per_peer`` connections and ``max_streams_per_peer`` inbound streams
across them. Refusals are logged through a :class:`~peerup.net.refusals.RefusalLog`:
the first from a source at once, the others summed up every
``refusal_log_interval_s``; before the handshake a connection is named by its address.
Not supported: connection pruning by a connection manager; a peer record store.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from peerup import __version__
from peerup.core.access import Access
from peerup.core.errors import ConnectError, Error, NegotiationError, PeerIdMismatch
from peerup.core.errors import TimeoutError as PeerupTimeout
from peerup.core.keys import Ed25519PrivateKey, PublicKey
from peerup.core.multiaddr import Multiaddr
from peerup.core.peer_id import PeerId
from peerup.net import limits, memory, tcp, tracing
from peerup.net.connection import Connection, ConnectionCallbacks, ConnectionConfig
from peerup.net.refusals import RefusalLog
from peerup.net.stream import Stream
from peerup.net.tasks import TaskSet
from peerup.proto import identify, ping

log = logging.getLogger(__name__)

Handler = Callable[[Stream], Awaitable[None]]
InlineHandler = Callable[[Stream], None]
"""Called with a negotiated stream inside the connection's receive callback: no task.
For handlers that only wire the stream to callbacks (a splice); must not block."""
PeerGate = Callable[[PeerId], Access]


@dataclass(frozen=True, slots=True)
class HostConfig:
    """Tunables of a host."""

    connection: ConnectionConfig = field(default_factory=ConnectionConfig)
    dial_timeout_s: float = 10.0
    """From dial start to a ready muxer."""
    direct_dial_timeout_s: float = 3.0
    """Per direct address while other addresses (e.g. relay circuits) remain to try."""
    identify_timeout_s: float = 10.0
    reuse_listen_port: bool = True
    """Dial TCP from the port we listen on (see net/tcp.py), so that a NAT maps that
    port and peers observe it: the address a hole punch needs."""
    agent_version: str = f"peerup/{__version__}"
    max_identify_bytes: int = identify.MAX_MESSAGE_BYTES
    max_pending_connections: int = 256
    """Inbound connections (direct) still in their handshake, all sources together;
    past it the oldest is cut. 0: no limit."""
    max_pending_per_ip: int = 32
    """The same, from one IP address."""
    reserved_fds: int = 64
    """Descriptors kept free for the peers already connected and their local service
    connections: below, new inbound connections are refused at once."""
    max_connections_per_peer: int = 8
    """Connections one peer may have open (direct and relayed); more are refused."""
    max_streams_per_peer: int = 1024
    """Inbound streams one peer may have open across its connections (each of which
    also has yamux's ``max_inbound_streams``); more are reset."""
    refusal_log_interval_s: float = 10.0
    """Refusals from one source after the first are logged as one summary per this
    interval (see ``net/refusals.py``)."""


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """What identify told us about a peer."""

    peer_id: PeerId
    protocols: tuple[str, ...] = ()
    agent_version: str | None = None
    protocol_version: str | None = None
    listen_addrs: tuple[Multiaddr, ...] = ()
    observed_addr: Multiaddr | None = None


class Dialer(Protocol):
    """A way to reach a multiaddr (TCP, in-memory, relay circuit)."""

    def can_dial(self, addr: Multiaddr) -> bool: ...

    async def dial(
        self, host: Host, addr: Multiaddr, peer: PeerId | None
    ) -> Connection: ...


class Host:
    """A libp2p node."""

    def __init__(
        self,
        identity: Ed25519PrivateKey,
        config: HostConfig | None = None,
        *,
        gate: PeerGate | None = None,
        memory_network: memory.MemoryNetwork | None = None,
    ) -> None:
        self.identity = identity
        self.peer_id = PeerId.from_public_key(identity.public_key)
        self.config = config or HostConfig()
        self.gate: PeerGate = gate or (lambda _peer: Access.allow("no gate"))
        self.memory_network = memory_network
        self.handlers: dict[str, Handler | InlineHandler] = {}
        self._inline_protocols: set[str] = set()
        self._protocols: frozenset[str] = frozenset()
        self.connections: dict[PeerId, list[Connection]] = {}
        self.peerstore: dict[PeerId, PeerInfo] = {}
        self.peer_addrs: dict[PeerId, list[Multiaddr]] = {}
        self.observed_addrs: dict[Connection, Multiaddr] = {}
        """Per open connection: our address as its peer sees it (identify)."""
        self._hole_punches: dict[tuple[str, int], tuple[PeerId, bool]] = {}
        """Hole punches under way: the peer and our role, by the peer's address."""
        self.listen_addrs: list[Multiaddr] = []
        self.extra_addrs: list[Multiaddr] = []
        self.dialers: list[Dialer] = []
        self._servers: list[asyncio.Server] = []
        self._dialing: dict[PeerId, asyncio.Future[Connection]] = {}
        self._identified: dict[Connection, asyncio.Event] = {}
        self._tasks = TaskSet(f"host {self.peer_id.short()}")
        self._closed = False
        self._pending: dict[Connection, str] = {}
        """Inbound direct connections in their handshake, oldest first, by source."""
        self._pending_by_source: dict[str, dict[Connection, None]] = {}
        self._fds = limits.FdGauge()
        self.refusals = RefusalLog(self.config.refusal_log_interval_s)
        self.on_refused: list[Callable[[str, str], None]] = []
        """Told ``(source, reason)`` of each refusal the log reports on its own line
        (the first per source per interval; the rest are summed up): the audit log."""
        self.refusal_counts: dict[str, int] = {}
        """Refusals since start by reason (at most 256 reasons; then ``other``), for
        metrics."""
        self._refusal_timer: asyncio.TimerHandle | None = None
        self.on_protocol_refused: list[Callable[[Stream, str], None]] = []
        """Told when a peer asks for a protocol we have no handler for."""
        self.on_connection: list[Callable[[Connection], None]] = []
        self.on_disconnect: list[Callable[[Connection], None]] = []
        self.on_new_addrs: list[Callable[[PeerId, list[Multiaddr]], None]] = []
        """Told when addresses of a peer become known (identify, a dial, the caller)."""
        self.set_handler(identify.PROTOCOL_ID, self._serve_identify)
        self.set_handler(identify.PUSH_PROTOCOL_ID, self._serve_identify_push)
        self.set_handler(ping.PROTOCOL_ID, self._serve_ping)

    # --- lifecycle ------------------------------------------------------------------

    async def __aenter__(self) -> Host:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def is_closed(self) -> bool:
        return self._closed

    async def aclose(self) -> None:
        """Close listeners, connections and every task. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for server in self._servers:
            server.close()
        for conns in list(self.connections.values()):
            for conn in list(conns):
                conn.close("host shutting down")
        for conn in list(self._pending):
            conn.close("host shutting down")
        if self._refusal_timer is not None:
            self._refusal_timer.cancel()
        for summary in self.refusals.flush(asyncio.get_running_loop().time()):
            log.info("%s", summary.line())
        await self._tasks.aclose()
        for server in self._servers:
            await server.wait_closed()

    def spawn(self, coro: Coroutine[Any, Any, object], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` as a task owned by this host (cancelled on close)."""
        return self._tasks.spawn(coro, name)

    # --- listening --------------------------------------------------------------------

    async def listen(self, addr: Multiaddr | str) -> list[Multiaddr]:
        """Listen on ``addr``; returns the bound addresses (port 0 resolved).

        Raises:
            tcp.ListenError: the port is taken (listeners own their port), or the
                address is not this machine's or not allowed.
        """
        ma = Multiaddr.parse(addr) if isinstance(addr, str) else addr
        memkey = ma.value_for("memory")
        if memkey is not None:
            if self.memory_network is None:
                raise ConnectError("no memory network configured")
            self.memory_network.listen(memkey, lambda: self._new_connection(False))
            bound = [ma]
        else:
            server, bound = await tcp.listen(ma, lambda: self._new_connection(False))
            self._servers.append(server)
            limits.quiet_accept_errors(asyncio.get_running_loop())
        self.listen_addrs.extend(bound)
        self.addresses_changed()
        return bound

    @property
    def addrs(self) -> list[Multiaddr]:
        """What identify advertises: listen addresses (wildcards expanded) and extra
        addresses such as relay circuits."""
        return [*tcp.expand_wildcards(self.listen_addrs), *self.extra_addrs]

    def addrs_with_id(self) -> list[Multiaddr]:
        return [a.with_peer_id(self.peer_id) for a in self.addrs]

    # --- handlers ---------------------------------------------------------------------

    def addresses_changed(self) -> None:
        """Our addresses changed (e.g. a relay reservation): tell connected peers."""
        if not self._closed and self.connections:
            self._push_identify()

    def set_handler(self, protocol: str, handler: Handler) -> None:
        """Serve ``protocol`` on inbound streams with ``handler``, one task each."""
        self._set_handler(protocol, handler, inline=False)

    def set_inline_handler(self, protocol: str, handler: InlineHandler) -> None:
        """Serve ``protocol`` by calling ``handler(stream)`` as soon as the stream is
        negotiated, without a task (see :data:`InlineHandler`)."""
        self._set_handler(protocol, handler, inline=True)

    def _set_handler(
        self, protocol: str, handler: Handler | InlineHandler, *, inline: bool
    ) -> None:
        is_new = protocol not in self.handlers
        self.handlers[protocol] = handler
        self._protocols = frozenset(self.handlers)
        if inline:
            self._inline_protocols.add(protocol)
        else:
            self._inline_protocols.discard(protocol)
        if is_new and not self._closed and self.connections:
            self._push_identify()

    def remove_handler(self, protocol: str) -> None:
        self._inline_protocols.discard(protocol)
        if self.handlers.pop(protocol, None) is not None:
            self._protocols = frozenset(self.handlers)
            if self.connections:
                self._push_identify()

    # --- connections ------------------------------------------------------------------

    def _callbacks(self, *, is_accepted: bool = False) -> ConnectionCallbacks:
        return ConnectionCallbacks(
            gate=self.gate,
            supported_protocols=lambda: self._protocols,
            on_ready=self._on_ready,
            on_stream=self._on_stream,
            on_closed=self._on_closed,
            on_protocol_refused=self._on_protocol_refused,
            on_made=self._on_made_accepted if is_accepted else None,
        )

    def _new_connection(
        self,
        is_initiator: bool,
        expected_peer: PeerId | None = None,
        *,
        is_relayed: bool = False,
    ) -> Connection:
        return Connection(
            self.identity,
            is_initiator,
            self._callbacks(is_accepted=not is_initiator and not is_relayed),
            self.config.connection,
            expected_peer=expected_peer,
            is_relayed=is_relayed,
        )

    def accept_connection(self, *, is_relayed: bool) -> Connection:
        """A responder connection for a transport outside the host (relay circuits)."""
        return self._new_connection(False, is_relayed=is_relayed)

    def initiate_connection(
        self, peer: PeerId | None, *, is_relayed: bool
    ) -> Connection:
        """An initiator connection for a transport outside the host."""
        return self._new_connection(True, peer, is_relayed=is_relayed)

    def expect_hole_punch(
        self, peer: PeerId, addrs: Iterable[Multiaddr], *, is_initiator: bool
    ) -> None:
        """While a hole punch with ``peer`` at ``addrs`` runs: a connection accepted
        from one of them is the punch itself (the peer's SYN reached our listener
        before our own dial left), so it must be ``peer`` and takes the role above
        TCP that DCUtR gave us, not the responder's (``hole_punch_over`` ends it).
        The IP address alone is matched too, see ``_hole_punch_from``."""
        for addr in addrs:
            endpoint = addr.without_peer_id().tcp_endpoint()
            if endpoint is not None:
                self._hole_punches[endpoint] = (peer, is_initiator)

    def hole_punch_over(self, addrs: Iterable[Multiaddr]) -> None:
        for addr in addrs:
            endpoint = addr.without_peer_id().tcp_endpoint()
            if endpoint is not None:
                self._hole_punches.pop(endpoint, None)

    def _on_made_accepted(self, conn: Connection) -> None:
        if self._hole_punches and conn.remote_addr is not None:
            endpoint = conn.remote_addr.tcp_endpoint()
            punch = self._hole_punch_from(endpoint) if endpoint is not None else None
            if punch is not None:
                # Nothing was sent yet: the role is still ours to set.
                conn.expected_peer, conn.is_initiator = punch
        self._on_accepted(conn)

    def _hole_punch_from(self, endpoint: tuple[str, int]) -> tuple[PeerId, bool] | None:
        """The hole punch an accepted connection from ``endpoint`` belongs to: the
        one expecting that address, else the only one expecting its IP address (a
        NAT that maps each destination to another port sent the SYN from a port the
        relay never saw; a filter that checks addresses only let it in)."""
        punch = self._hole_punches.get(endpoint)
        if punch is not None:
            return punch
        same_ip = {p for (ip, _), p in self._hole_punches.items() if ip == endpoint[0]}
        return same_ip.pop() if len(same_ip) == 1 else None

    def _on_accepted(self, conn: Connection) -> None:
        """A direct inbound connection was accepted: hold it to the limits on
        connections that have not finished their handshake."""
        source = _source(conn)
        config = self.config
        self._fds.opened()
        free = self._fds.free(conn.loop.time())
        if free < config.reserved_fds:
            conn.close(
                f"refused: {max(free, 0)} file descriptors free, "
                f"{config.reserved_fds} kept for peers already connected"
            )
            return
        self._pending[conn] = source
        same = self._pending_by_source.get(source)
        if same is None:
            same = self._pending_by_source[source] = {}
        same[conn] = None
        if 0 < config.max_pending_per_ip < len(same):
            oldest = next(iter(same))
            oldest.close(
                f"cut: {len(same)} handshakes pending from {source}, the oldest goes"
            )
        if 0 < config.max_pending_connections < len(self._pending):
            oldest = next(iter(self._pending))
            oldest.close(
                f"cut: {len(self._pending)} handshakes pending, the oldest goes"
            )

    @property
    def pending_handshakes(self) -> int:
        """Inbound direct connections still in their handshake."""
        return len(self._pending)

    def _forget_pending(self, conn: Connection) -> str | None:
        source = self._pending.pop(conn, None)
        if source is not None:
            same = self._pending_by_source.get(source)
            if same is not None:
                same.pop(conn, None)
                if not same:
                    del self._pending_by_source[source]
        return source

    def _on_ready(self, conn: Connection) -> None:
        self._forget_pending(conn)
        conns = self.connections.get(conn.remote_peer)
        limit = self.config.max_connections_per_peer
        if conns is not None and 0 < limit <= len(conns):
            # Before anyone sees it: the connection goes, the peer's others stay.
            self.refused(
                str(conn.remote_peer),
                f"it has {len(conns)} connections, the most one peer may have",
            )
            conn.close("refused: too many connections from this peer")
            return
        self.connections.setdefault(conn.remote_peer, []).append(conn)
        event = asyncio.Event()
        self._identified[conn] = event
        if not self._closed:
            self.spawn(
                self._identify(conn, event), f"identify {conn.remote_peer.short()}"
            )
        for callback in self.on_connection:
            callback(conn)

    def _on_closed(self, conn: Connection, reason: str) -> None:
        self.observed_addrs.pop(conn, None)
        if not conn.was_muxed:
            # Failed before its handshake finished. (Always forgotten: a hole punch
            # may have made an accepted connection the initiator.)
            source = self._forget_pending(conn) or _source(conn)
            why = conn.gate_refusal
            if self._closed or conn.is_initiator:
                pass  # a dial of ours: its caller learns why
            elif why is not None:
                peer = conn.remote_peer
                self.refused(
                    source,
                    f"peer {peer} not allowed: {why}",
                    line=f"refused peer {peer} at the handshake: {why}",
                )
            else:
                # Logged (summed up) by source: garbage, silence, a cut.
                self.refused(source, reason)
        conns = self.connections.get(conn.remote_peer)
        if conns and conn in conns:
            conns.remove(conn)
            if not conns:
                del self.connections[conn.remote_peer]
            for callback in self.on_disconnect:
                callback(conn)
        event = self._identified.pop(conn, None)
        if event is not None:
            event.set()

    def refused(
        self,
        source: str,
        reason: str,
        what: str = "connections",
        *,
        line: str | None = None,
    ) -> None:
        """Log a refusal of ``source`` (an address, or a peer) for ``reason``: the
        first at once (as ``line`` if given), the ones that follow summed up as
        ``what`` (plural) refused (see ``net/refusals.py``)."""
        key = reason if reason in self.refusal_counts or len(self.refusal_counts) < 256 else "other"
        self.refusal_counts[key] = self.refusal_counts.get(key, 0) + 1
        loop = asyncio.get_running_loop()
        if self.refusals.add(source, reason, loop.time(), what):
            log.info("%s", line or f"refused {what[:-1]} from {source}: {reason}")
            for callback in self.on_refused:
                callback(source, reason)
        if self._refusal_timer is None:
            self._arm_refusal_timer(loop)

    def _arm_refusal_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        deadline = self.refusals.next_deadline()
        if deadline is not None and not self._closed:
            self._refusal_timer = loop.call_at(deadline, self._refusal_summaries)

    def _refusal_summaries(self) -> None:
        self._refusal_timer = None
        loop = asyncio.get_running_loop()
        for summary in self.refusals.due(loop.time()):
            log.info("%s", summary.line())
        self._arm_refusal_timer(loop)

    def _on_protocol_refused(self, stream: Stream, protocol: str) -> None:
        if not self.on_protocol_refused:
            log.debug("%s asked for %s: not supported", stream.remote_peer, protocol)
        for callback in self.on_protocol_refused:
            callback(stream, protocol)

    def connection_to(self, peer: PeerId) -> Connection | None:
        """An open connection to ``peer``, direct ones first."""
        relayed = None
        for conn in self.connections.get(peer, ()):
            if conn.is_open:
                if not conn.is_relayed:
                    return conn
                relayed = relayed or conn
        return relayed

    async def connect(self, target: Multiaddr | PeerId | str) -> Connection:
        """A connection to ``target``: reused if one is open, dialed otherwise.

        Raises:
            ConnectError: no address works; PeerIdMismatch: the wrong peer answered;
            TimeoutError: the dial took longer than ``dial_timeout_s``.
        """
        if isinstance(target, str):
            target = (
                Multiaddr.parse(target)
                if target.startswith("/")
                else PeerId.from_string(target)
            )
        if isinstance(target, PeerId):
            peer: PeerId | None = target
            addrs = list(self.peer_addrs.get(target, []))
        else:
            peer = target.peer_id
            addrs = [target]
        if peer is not None:
            if peer == self.peer_id:
                raise ConnectError("cannot dial ourselves")
            existing = self.connection_to(peer)
            if existing is not None:
                return existing
            pending = self._dialing.get(peer)
            if pending is not None:
                return await asyncio.shield(pending)
        if not addrs:
            raise ConnectError(f"no known address for {peer}")
        if peer is None:
            return await self._dial_any(None, addrs)
        fut: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()
        self._dialing[peer] = fut
        try:
            with tracing.span("peerup.dial", lambda: {"peer": str(peer), "addrs": len(addrs)}):
                conn = await self._dial_any(peer, addrs)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()
            raise
        finally:
            self._dialing.pop(peer, None)
        fut.set_result(conn)
        return conn

    async def _dial_any(
        self, peer: PeerId | None, addrs: list[Multiaddr]
    ) -> Connection:
        errors = []
        causes: list[Error] = []
        mismatches: list[PeerIdMismatch] = []
        # Direct addresses first, circuits last. A stale direct address (another
        # network's LAN, or a loopback address that reaches some other peer) must not
        # hold up the relay path: it gets the shorter direct timeout while other
        # candidates remain, and a peer ID mismatch there just moves on.
        ordered = sorted(addrs, key=lambda a: a.is_circuit)
        for i, addr in enumerate(ordered):
            is_last = i == len(ordered) - 1
            timeout_s = (
                self.config.dial_timeout_s
                if is_last or addr.is_circuit
                else min(self.config.dial_timeout_s, self.config.direct_dial_timeout_s)
            )
            try:
                async with asyncio.timeout(timeout_s):
                    return await self._dial_one(addr, peer)
            except PeerIdMismatch as exc:
                mismatches.append(exc)
                causes.append(exc)
                errors.append(f"{addr}: {exc}")
            except TimeoutError:
                causes.append(PeerupTimeout(f"timed out after {timeout_s:g}s"))
                errors.append(f"{addr}: timed out after {timeout_s:g}s")
            except Error as exc:
                causes.append(exc)
                errors.append(f"{addr}: {exc}")
        if mismatches and len(mismatches) == len(errors):
            raise mismatches[0]
        if len(errors) == 1:
            raise ConnectError(f"dial failed: {errors[0]}", tuple(causes))
        raise ConnectError("dial failed: " + "; ".join(errors), tuple(causes))

    async def _dial_one(self, addr: Multiaddr, peer: PeerId | None) -> Connection:
        """One address tried: the transport's connect (a relay's HOP CONNECT for a
        circuit), then Noise and yamux; traced as ``peerup.handshake``."""
        with tracing.span("peerup.handshake", lambda: {
            "addr": str(addr), "path": "relayed" if addr.is_circuit else "direct",
        }):  # fmt: skip
            return await self._connect_and_handshake(addr, peer)

    async def _connect_and_handshake(
        self, addr: Multiaddr, peer: PeerId | None
    ) -> Connection:
        for dialer in self.dialers:
            if dialer.can_dial(addr):
                conn = await dialer.dial(self, addr, peer)
                break
        else:
            memkey = addr.value_for("memory")
            if memkey is not None and self.memory_network is not None:
                proto = self.memory_network.dial(
                    memkey, lambda: self._new_connection(True, peer)
                )
                assert isinstance(proto, Connection)
                conn = proto
            elif tcp.can_dial(addr):
                _, proto2 = await tcp.dial(
                    addr,
                    lambda: self._new_connection(True, peer),
                    local=self._dial_from(addr),
                )
                assert isinstance(proto2, Connection)
                conn = proto2
            else:
                raise ConnectError(f"no transport can dial {addr}")
        try:
            await conn.ready
        except BaseException:
            conn.close("dial abandoned")
            raise
        if not addr.is_circuit:
            self.add_addrs(conn.remote_peer, [addr.without_peer_id()])
        return conn

    def _dial_from(self, addr: Multiaddr) -> tuple[str, int] | None:
        if not self.config.reuse_listen_port:
            return None
        return tcp.local_for(self.listen_addrs, addr)

    async def dial_direct(
        self,
        addr: Multiaddr,
        peer: PeerId,
        *,
        is_initiator: bool = True,
        from_listen_port: bool = False,
    ) -> Connection:
        """A new direct TCP connection to ``peer`` at ``addr``, whatever is open.

        Args:
            is_initiator: False to take the responder's part above TCP although we
                dial (the server role DCUtR gives one side of a simultaneous open).
            from_listen_port: dial only from our listen port, no fallback (a hole
                punch: only that port's NAT mapping was announced).

        Raises:
            ConnectError: no listen port to dial from, or the dial failed;
            PeerIdMismatch: another peer answered.
        """
        local = self._dial_from(addr)
        if from_listen_port and local is None:
            raise ConnectError(f"no listen address to dial {addr} from")

        def connection() -> Connection:
            # Not _new_connection: whatever our role above TCP, we dialed it.
            return Connection(
                self.identity,
                is_initiator,
                self._callbacks(),
                self.config.connection,
                expected_peer=peer,
            )

        _, proto = await tcp.dial(
            addr, connection, local=local, local_only=from_listen_port
        )
        assert isinstance(proto, Connection)
        try:
            await proto.ready
        except BaseException:
            proto.close("dial abandoned")
            raise
        return proto

    def own_observed_addrs(self) -> list[Multiaddr]:
        """Our addresses as peers observe them on direct connections that use our
        listen port (dialed from it or accepted on it): where the NAT in front of us
        maps that port, i.e. where others may reach us. Most recent first."""
        ports = {p for a in self.listen_addrs if (p := a.value_for("tcp")) is not None}
        out: list[Multiaddr] = []
        for conn, observed in reversed(list(self.observed_addrs.items())):
            local = conn.local_addr
            if conn.is_relayed or local is None or not conn.is_open:
                continue
            if local.value_for("tcp") in ports and observed not in out:
                out.append(observed)
        return out

    def add_addrs(self, peer: PeerId, addrs: Iterable[Multiaddr]) -> None:
        known = self.peer_addrs.setdefault(peer, [])
        new = []
        for addr in addrs:
            if addr not in known:
                known.append(addr)
                new.append(addr)
        if new:
            for callback in self.on_new_addrs:
                callback(peer, new)

    # --- streams ----------------------------------------------------------------------

    async def new_stream(
        self, target: Multiaddr | PeerId | str | Connection, protocols: list[str] | str
    ) -> Stream:
        """Open a stream to ``target`` for the first of ``protocols`` the peer takes.

        With one protocol the stream negotiates optimistically: it is returned at
        once and a refusal surfaces on the first read as NegotiationError.
        """
        protos = [protocols] if isinstance(protocols, str) else list(protocols)
        conn = target if isinstance(target, Connection) else await self.connect(target)
        stream = conn.open_stream(protos)
        if len(protos) > 1:
            await stream.negotiated()
        return stream

    def _on_stream(self, stream: Stream) -> None:
        assert stream.protocol is not None
        handler = self.handlers.get(stream.protocol)
        if handler is None or self._closed:
            stream.reset()
            return
        conns = self.connections.get(stream.remote_peer)
        if conns is not None and len(conns) > 1:
            # One connection is held to yamux's max_inbound_streams by itself.
            limit = self.config.max_streams_per_peer
            open_streams = sum(c.inbound_stream_count for c in conns)
            if 0 < limit < open_streams:
                self.refused(
                    str(stream.remote_peer),
                    f"{open_streams - 1} streams open, the most one peer may have",
                    "streams",
                )
                stream.reset()
                return
        if stream.protocol in self._inline_protocols:
            try:
                handler(stream)
            except Exception:
                log.exception(
                    "%s handler for %s crashed", stream.protocol, stream.remote_peer
                )
                stream.reset()
            return
        self.spawn(
            self._run_handler(cast(Handler, handler), stream),
            f"{stream.protocol} handler",
        )

    async def _run_handler(self, handler: Handler, stream: Stream) -> None:
        try:
            await handler(stream)
        except (Error, OSError, asyncio.IncompleteReadError) as exc:
            log.debug(
                "%s handler for %s ended: %s", stream.protocol, stream.remote_peer, exc
            )
            stream.reset()
        except Exception:
            log.exception(
                "%s handler for %s crashed", stream.protocol, stream.remote_peer
            )
            stream.reset()
        else:
            await stream.aclose()

    # --- identify -----------------------------------------------------------------------

    def _identify_message(self, conn: Connection) -> identify.Identify:
        return identify.Identify(
            public_key=self.identity.public_key.to_protobuf(),
            listen_addrs=tuple(self.addrs),
            protocols=tuple(self.handlers),
            observed_addr=conn.remote_addr,
            protocol_version=identify.PROTOCOL_VERSION,
            agent_version=self.config.agent_version,
        )

    async def _serve_identify(self, stream: Stream) -> None:
        await stream.write(self._identify_message(stream.conn).encode_prefixed())

    async def _serve_identify_push(self, stream: Stream) -> None:
        raw = await stream.read_all(self.config.max_identify_bytes)
        self._store_identify(stream.conn, identify.decode_stream(raw))

    async def _identify(self, conn: Connection, done: asyncio.Event) -> None:
        try:
            async with asyncio.timeout(self.config.identify_timeout_s):
                stream = conn.open_stream([identify.PROTOCOL_ID])
                raw = await stream.read_all(self.config.max_identify_bytes)
                await stream.aclose()
            self._store_identify(conn, identify.decode_stream(raw))
        except (Error, TimeoutError, ValueError) as exc:
            log.debug("identify with %s failed: %s", conn.remote_peer.short(), exc)
        finally:
            done.set()

    def _store_identify(self, conn: Connection, msg: identify.Identify) -> None:
        if msg.public_key is not None:
            key = PublicKey.from_protobuf(msg.public_key)
            if not conn.remote_peer.matches(key):
                log.info(
                    "identify from %s carries another key; ignored", conn.remote_peer
                )
                return
        self.peerstore[conn.remote_peer] = PeerInfo(
            conn.remote_peer,
            msg.protocols,
            msg.agent_version,
            msg.protocol_version,
            msg.listen_addrs,
            msg.observed_addr,
        )
        if msg.observed_addr is not None and conn.is_open:
            self.observed_addrs[conn] = msg.observed_addr
        self.add_addrs(conn.remote_peer, _dialable(msg.listen_addrs, conn.remote_addr))

    async def identified(self, conn: Connection) -> PeerInfo | None:
        """Wait until identify with ``conn``'s peer finished; its info, if it worked."""
        event = self._identified.get(conn)
        if event is not None:
            await event.wait()
        return self.peerstore.get(conn.remote_peer)

    def _push_identify(self) -> None:
        for conns in list(self.connections.values()):
            for conn in conns:
                if conn.is_open:
                    self.spawn(self._push_one(conn), "identify push")

    async def _push_one(self, conn: Connection) -> None:
        try:
            stream = conn.open_stream([identify.PUSH_PROTOCOL_ID])
            await stream.write(self._identify_message(conn).encode_prefixed())
            await stream.close_write()
            await stream.read_all(0)
        except (Error, ValueError) as exc:
            log.debug("identify push to %s failed: %s", conn.remote_peer.short(), exc)

    # --- ping -------------------------------------------------------------------------

    async def _serve_ping(self, stream: Stream) -> None:
        while True:
            try:
                payload = await stream.readexactly(ping.PAYLOAD_BYTES)
            except asyncio.IncompleteReadError:
                return
            await stream.write(payload)

    async def ping(
        self, target: Multiaddr | PeerId | str | Connection, count: int = 1
    ) -> list[float]:
        """Ping over ``/ipfs/ping/1.0.0``; returns each RTT in seconds.

        Raises:
            NegotiationError: the peer does not serve ping.
        """
        stream = await self.new_stream(target, ping.PROTOCOL_ID)
        # perf_counter, not loop.time(): uvloop's counts whole milliseconds.
        checker = ping.PingChecker()
        rtts = []
        try:
            for _ in range(count):
                await stream.write(
                    checker.start(os.urandom(ping.PAYLOAD_BYTES), time.perf_counter())
                )
                result = None
                while result is None:
                    data = await stream.read(ping.PAYLOAD_BYTES)
                    if not data:
                        raise NegotiationError("ping stream closed by peer")
                    result = checker.receive_data(data, time.perf_counter())
                rtts.append(result.rtt_s)
        finally:
            await stream.aclose()
        return rtts


def _source(conn: Connection) -> str:
    """Where a connection came from, for limits and the log: the IP address of a
    direct one (its port varies), the circuit of a relayed one."""
    addr = conn.remote_addr
    if addr is None:
        return "an unknown address"
    endpoint = None if conn.is_relayed else addr.tcp_endpoint()
    return endpoint[0] if endpoint is not None else str(addr)


def _dialable(addrs: Iterable[Multiaddr], via: Multiaddr | None) -> list[Multiaddr]:
    """The advertised addresses worth dialing later: no circuits (we know our relays),
    no wildcards, and loopback only when the peer was reached over loopback."""
    via_loopback = via is not None and tcp.is_loopback(via)
    return [
        a
        for a in addrs
        if not a.is_circuit
        and not tcp.is_unspecified(a)
        and (via_loopback or not tcp.is_loopback(a))
    ]
