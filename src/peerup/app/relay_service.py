"""The circuit relay v2 server (hop): reservations, circuits, limits, access.

Spec: libp2p/specs relay/circuit-v2.md "Hop protocol" and "Stop protocol". Split as
STYLE.md 3.4 asks: ``ReservationBook`` is pure policy (caps on reservations in total,
per peer and per IP; circuits in total and per peer; TTL) testable without a network;
``RelayService`` only decodes, asks the book, encodes, and splices the two streams.
Copying: net/stream_splice.py (callbacks, no task per circuit).
Limits: ``circuit_duration_s`` / ``circuit_data_bytes`` of 0 or None mean unlimited and
then no ``Limit`` is sent; when a limit ends a circuit both streams are reset.
Access: the relay's allowlist is enforced at the handshake by the host's peer gate
(see app/allowlist.py); ``RelayService.access`` is checked again per request.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from peerup.core.access import Access
from peerup.core.errors import Error, RemoteProtocolError
from peerup.core.multiaddr import Multiaddr
from peerup.core.peer_id import PeerId
from peerup.net.host import Host
from peerup.net.relay_client import read_message
from peerup.net.stream import Stream
from peerup.net.stream_splice import StreamSplice
from peerup.proto import relay_v2

log = logging.getLogger(__name__)
Status = relay_v2.Status


@dataclass(frozen=True, slots=True)
class RelayResources:
    """Caps and limits of a relay. 0 means unlimited for every field."""

    max_reservations: int = 1024
    max_reservations_per_ip: int = 64
    reservation_ttl_s: int = 3600
    max_circuits: int = 4096
    max_circuits_per_peer: int = 1024
    circuit_duration_s: int = 0
    circuit_data_bytes: int = 0
    connect_timeout_s: float = 10.0

    @classmethod
    def for_interop(
        cls,
        *,
        unlimited: bool,
        limit_duration_s: float | None,
        limit_data_bytes: int | None,
    ) -> RelayResources:
        """The interop relay role's settings (see interop/CONTRACT.md)."""
        if unlimited or limit_duration_s or limit_data_bytes:
            return cls(
                max_reservations=0,
                max_reservations_per_ip=0,
                max_circuits=0,
                max_circuits_per_peer=0,
                circuit_duration_s=int(limit_duration_s or 0),
                circuit_data_bytes=int(limit_data_bytes or 0),
            )
        # Public-relay defaults, as go-libp2p and js-libp2p use: 2 min / 128 KiB.
        return cls(circuit_duration_s=120, circuit_data_bytes=128 * 1024)

    @property
    def limit(self) -> relay_v2.Limit | None:
        lim = relay_v2.Limit(
            self.circuit_duration_s or None, self.circuit_data_bytes or None
        )
        return None if lim.is_unlimited else lim


@dataclass(frozen=True, slots=True)
class ReserveResult:
    status: Status
    reason: str
    expire: int | None = None


@dataclass(frozen=True, slots=True)
class CircuitDecision:
    """Whether a circuit may open, with the status to answer."""

    status: Status
    reason: str

    @property
    def is_allowed(self) -> bool:
        return self.status is Status.OK


@dataclass(slots=True)
class _Slot:
    ip: str | None
    expire: int


@dataclass
class ReservationBook:
    """Pure bookkeeping of reservations and circuits."""

    resources: RelayResources
    slots: dict[PeerId, _Slot] = field(default_factory=dict)
    circuits: dict[PeerId, int] = field(default_factory=dict)

    def reserve(self, peer: PeerId, ip: str | None, now: float) -> ReserveResult:
        """Grant or refresh ``peer``'s reservation."""
        self.expire_old(now)
        r = self.resources
        expire = int(now) + r.reservation_ttl_s
        if peer in self.slots:
            self.slots[peer] = _Slot(ip, expire)
            return ReserveResult(Status.OK, "refreshed", expire)
        if r.max_reservations and len(self.slots) >= r.max_reservations:
            return ReserveResult(Status.RESOURCE_LIMIT_EXCEEDED, "relay is full")
        if ip is not None and r.max_reservations_per_ip:
            same_ip = sum(1 for s in self.slots.values() if s.ip == ip)
            if same_ip >= r.max_reservations_per_ip:
                return ReserveResult(
                    Status.RESOURCE_LIMIT_EXCEEDED, f"too many reservations from {ip}"
                )
        self.slots[peer] = _Slot(ip, expire)
        return ReserveResult(Status.OK, "reserved", expire)

    def expire_old(self, now: float) -> None:
        for peer in [p for p, s in self.slots.items() if s.expire <= now]:
            del self.slots[peer]

    def release(self, peer: PeerId) -> None:
        self.slots.pop(peer, None)

    def has_reservation(self, peer: PeerId, now: float) -> bool:
        slot = self.slots.get(peer)
        return slot is not None and slot.expire > now

    def open_circuit(self, src: PeerId, dst: PeerId, now: float) -> CircuitDecision:
        """May ``src`` open a circuit to ``dst`` now? Counts it if so."""
        if not self.has_reservation(dst, now):
            return CircuitDecision(Status.NO_RESERVATION, "target has no reservation")
        r = self.resources
        total = sum(self.circuits.values())
        if r.max_circuits and total >= r.max_circuits:
            return CircuitDecision(
                Status.RESOURCE_LIMIT_EXCEEDED, "relay circuit limit reached"
            )
        for peer in (src, dst):
            if (
                r.max_circuits_per_peer
                and self.circuits.get(peer, 0) >= r.max_circuits_per_peer
            ):
                return CircuitDecision(
                    Status.RESOURCE_LIMIT_EXCEEDED, f"circuit limit reached for {peer}"
                )
        for peer in (src, dst):
            self.circuits[peer] = self.circuits.get(peer, 0) + 1
        return CircuitDecision(Status.OK, "circuit opened")

    def close_circuit(self, src: PeerId, dst: PeerId) -> None:
        for peer in (src, dst):
            left = self.circuits.get(peer, 0) - 1
            if left > 0:
                self.circuits[peer] = left
            else:
                self.circuits.pop(peer, None)

    @property
    def circuit_count(self) -> int:
        return sum(self.circuits.values()) // 2


class RelayService:
    """Serves ``/libp2p/circuit/relay/0.2.0/hop`` on a host."""

    def __init__(
        self,
        host: Host,
        resources: RelayResources | None = None,
        *,
        access: Callable[[PeerId], Access] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.host = host
        self.resources = resources or RelayResources()
        self.book = ReservationBook(self.resources)
        self.access = access or (lambda _p: Access.allow("open relay"))
        self.clock = clock
        self.total_circuits = 0

    def start(self) -> None:
        self.host.set_handler(relay_v2.HOP_PROTOCOL_ID, self._handle_hop)
        self.host.on_disconnect.append(self._on_disconnect)

    async def aclose(self) -> None:
        self.host.remove_handler(relay_v2.HOP_PROTOCOL_ID)

    def _on_disconnect(self, conn: object) -> None:
        peer = getattr(conn, "remote_peer", None)
        if isinstance(peer, PeerId) and self.host.connection_to(peer) is None:
            self.book.release(peer)

    async def _reply(self, stream: Stream, status: Status, **fields: object) -> None:
        msg = relay_v2.HopMessage(relay_v2.HopType.STATUS, status=status, **fields)  # type: ignore[arg-type]
        await stream.write(msg.encode())

    async def _handle_hop(self, stream: Stream) -> None:
        try:
            async with asyncio.timeout(self.resources.connect_timeout_s):
                msg = relay_v2.HopMessage.decode(await read_message(stream))
        except (RemoteProtocolError, TimeoutError) as exc:
            log.info(
                "malformed hop message from %s: %s", stream.remote_peer.short(), exc
            )
            await self._reply(stream, Status.MALFORMED_MESSAGE)
            return
        access = self.access(stream.remote_peer)
        if not access.is_allowed:
            log.info("relay refused %s: %s", stream.remote_peer, access.reason)
            await self._reply(stream, Status.PERMISSION_DENIED)
            return
        if msg.type is relay_v2.HopType.RESERVE:
            await self._reserve(stream)
        elif msg.type is relay_v2.HopType.CONNECT and msg.peer is not None:
            await self._connect(stream, msg.peer.peer_id)
        else:
            await self._reply(stream, Status.UNEXPECTED_MESSAGE)

    async def _reserve(self, stream: Stream) -> None:
        peer = stream.remote_peer
        if stream.conn.is_relayed:
            await self._reply(stream, Status.PERMISSION_DENIED)
            return
        ip = _ip_of(stream.conn.remote_addr)
        result = self.book.reserve(peer, ip, self.clock())
        if result.status is not Status.OK or result.expire is None:
            log.info("reservation refused for %s: %s", peer, result.reason)
            await self._reply(stream, result.status)
            return
        voucher = relay_v2.Voucher(self.host.peer_id, peer, result.expire).seal(
            self.host.identity
        )
        rsvp = relay_v2.Reservation(
            result.expire, tuple(self.host.addrs_with_id()), voucher
        )
        await self._reply(
            stream, Status.OK, reservation=rsvp, limit=self.resources.limit
        )
        log.info(
            "reservation %s for %s (expires %d)", result.reason, peer, result.expire
        )

    async def _connect(self, src_stream: Stream, dst: PeerId) -> None:
        src = src_stream.remote_peer
        if src_stream.conn.is_relayed:
            await self._reply(src_stream, Status.PERMISSION_DENIED)
            return
        opened = self.book.open_circuit(src, dst, self.clock())
        if not opened.is_allowed:
            log.info(
                "circuit %s -> %s refused: %s", src.short(), dst.short(), opened.reason
            )
            await self._reply(src_stream, opened.status)
            return
        try:
            await self._bridge(src_stream, src, dst)
        finally:
            self.book.close_circuit(src, dst)

    async def _bridge(self, src_stream: Stream, src: PeerId, dst: PeerId) -> None:
        dst_conn = self.host.connection_to(dst)
        dst_stream = None
        if dst_conn is None:
            await self._reply(src_stream, Status.NO_RESERVATION)
            return
        limit = self.resources.limit
        try:
            async with asyncio.timeout(self.resources.connect_timeout_s):
                dst_stream = dst_conn.open_stream([relay_v2.STOP_PROTOCOL_ID])
                src_addrs = (
                    (src_stream.conn.remote_addr,)
                    if src_stream.conn.remote_addr
                    else ()
                )
                await dst_stream.write(
                    relay_v2.StopMessage(
                        relay_v2.StopType.CONNECT,
                        peer=relay_v2.Peer(src, tuple(a for a in src_addrs if a)),
                        limit=limit,
                    ).encode()
                )
                answer = relay_v2.StopMessage.decode(await read_message(dst_stream))
        except (Error, TimeoutError) as exc:
            log.info(
                "circuit %s -> %s: target failed: %s", src.short(), dst.short(), exc
            )
            if dst_stream is not None:
                dst_stream.reset()
            await self._reply(src_stream, Status.CONNECTION_FAILED)
            return
        if answer.status is not Status.OK:
            dst_stream.reset()
            # The target's own refusal (its allowlist) is passed on, so the dialer can
            # tell "not allowed" from "unreachable"; anything else is a failure.
            refused = answer.status is Status.PERMISSION_DENIED
            await self._reply(
                src_stream,
                Status.PERMISSION_DENIED if refused else Status.CONNECTION_FAILED,
            )
            return
        await self._reply(src_stream, Status.OK, limit=limit)
        self.total_circuits += 1
        log.info("circuit %s -> %s opened", src.short(), dst.short())
        result = await StreamSplice(
            src_stream,
            dst_stream,
            data_limit=self.resources.circuit_data_bytes or None,
            duration_limit_s=float(self.resources.circuit_duration_s) or None,
        ).done
        log.info(
            "circuit %s -> %s closed after %.1fs (%s): %d bytes out, %d back",
            src.short(),
            dst.short(),
            result.duration_s,
            result.ended_by,
            result.a_to_b_bytes,
            result.b_to_a_bytes,
        )


def _ip_of(addr: Multiaddr | None) -> str | None:
    if addr is None:
        return None
    for proto in ("ip4", "ip6"):
        value = addr.value_for(proto)
        if value is not None:
            return str(ipaddress.ip_address(value))
    return None
