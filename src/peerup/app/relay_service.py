"""The circuit relay v2 server (hop): reservations, circuits, limits, access.

Spec: libp2p/specs relay/circuit-v2.md "Hop protocol" and "Stop protocol". Split as
STYLE.md 3.4 asks: ``ReservationBook`` is pure policy (caps on reservations in total,
per peer and per IP; circuits in total, per source, per destination and per
source-destination pair; TTL) testable without a network; ``RelayService`` only
decodes, asks the book, encodes, and splices the two streams.
Circuit caps: a circuit counts once toward ``max_circuits``, against its source for
``max_circuits_per_peer`` (the peer that opens circuits is the one that can flood),
and against its destination for ``max_circuits_per_destination``; one source may hold
at most ``max_circuits_per_pair`` of a destination's circuits, its fair share, so one
peer cannot take every relayed path to a home. Deliberately not done: pre-empting a
greedy source's circuits when a destination is full (the pair cap bounds it instead).
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
from typing import TypeVar

from peerup.core.access import Access
from peerup.core.errors import Error, RemoteProtocolError
from peerup.core.multiaddr import Multiaddr
from peerup.core.peer_id import PeerId
from peerup.net.host import Host
from peerup.net.relay_client import read_message
from peerup.net.stream import Stream
from peerup.net.stream_splice import StreamSplice, StreamSpliceResult
from peerup.proto import relay_v2

log = logging.getLogger(__name__)
Status = relay_v2.Status
_K = TypeVar("_K")


@dataclass(frozen=True, slots=True)
class RelayResources:
    """Caps and limits of a relay. 0 means unlimited for every field."""

    max_reservations: int = 1024
    max_reservations_per_ip: int = 64
    reservation_ttl_s: int = 3600
    max_circuits: int = 4096
    """Circuits open at once, all peers together."""
    max_circuits_per_peer: int = 1024
    """Circuits one peer may have opened (counted against the source)."""
    max_circuits_per_destination: int = 1024
    """Circuits to one reserved peer, from all sources together."""
    max_circuits_per_pair: int = 256
    """Circuits one source may have open to one destination: its fair share of the
    destination's ``max_circuits_per_destination`` (a quarter by default)."""
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
                max_circuits_per_destination=0,
                max_circuits_per_pair=0,
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
    by_source: dict[PeerId, int] = field(default_factory=dict)
    """Open circuits per source peer (the one that sent CONNECT)."""
    by_destination: dict[PeerId, int] = field(default_factory=dict)
    """Open circuits per destination (the reserved peer)."""
    by_pair: dict[tuple[PeerId, PeerId], int] = field(default_factory=dict)
    """Open circuits per (source, destination)."""
    circuit_count: int = 0
    """Circuits open now (each counted once)."""

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
        refused = Status.RESOURCE_LIMIT_EXCEEDED
        if r.max_circuits and self.circuit_count >= r.max_circuits:
            return CircuitDecision(
                refused, f"relay circuit limit reached ({r.max_circuits})"
            )
        from_src = self.by_source.get(src, 0)
        if r.max_circuits_per_peer and from_src >= r.max_circuits_per_peer:
            return CircuitDecision(
                refused,
                f"circuit limit reached for {src} ({from_src} open, "
                f"max_circuits_per_peer {r.max_circuits_per_peer})",
            )
        to_dst = self.by_destination.get(dst, 0)
        if r.max_circuits_per_destination and to_dst >= r.max_circuits_per_destination:
            return CircuitDecision(
                refused,
                f"circuit limit reached for destination {dst} ({to_dst} open, "
                f"max_circuits_per_destination {r.max_circuits_per_destination})",
            )
        pair = (src, dst)
        between = self.by_pair.get(pair, 0)
        if r.max_circuits_per_pair and between >= r.max_circuits_per_pair:
            return CircuitDecision(
                refused,
                f"{src} holds its share of circuits to {dst} ({between} open, "
                f"max_circuits_per_pair {r.max_circuits_per_pair})",
            )
        self.by_source[src] = from_src + 1
        self.by_destination[dst] = to_dst + 1
        self.by_pair[pair] = between + 1
        self.circuit_count += 1
        return CircuitDecision(Status.OK, "circuit opened")

    def close_circuit(self, src: PeerId, dst: PeerId) -> None:
        """Forget one circuit that :meth:`open_circuit` counted."""
        pair = (src, dst)
        if pair not in self.by_pair:
            return
        _decrement(self.by_pair, pair)
        _decrement(self.by_source, src)
        _decrement(self.by_destination, dst)
        self.circuit_count -= 1


def _decrement(counts: dict[_K, int], key: _K) -> None:
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


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
        self.refused: dict[str, int] = {}
        """Requests answered with a status other than OK, by status name (metrics)."""
        self.limits_hit: dict[str, int] = {"data": 0, "duration": 0}
        """Circuits ended by a limit, by which (metrics)."""
        self.circuit_bytes = 0
        """Bytes carried by finished circuits, both directions (metrics)."""

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
        if status is not Status.OK:
            self.refused[status.name] = self.refused.get(status.name, 0) + 1
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
            "reservation %s for %s (expires %s)",
            result.reason,
            peer,
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(result.expire)),
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
        self.circuit_bytes += result.a_to_b_bytes + result.b_to_a_bytes
        if result.ended_by in ("data limit", "duration limit"):
            which = result.ended_by.split()[0]
            self.limits_hit[which] += 1
        log.info(
            "circuit %s -> %s closed after %.1fs (%s): %d bytes out, %d back",
            src.short(),
            dst.short(),
            result.duration_s,
            self._why_ended(result),
            result.a_to_b_bytes,
            result.b_to_a_bytes,
        )

    def _why_ended(self, result: StreamSpliceResult) -> str:
        """How a circuit ended, in words; a limit's cut says which and when (both
        ends see only a reset, so this line is where it is told)."""
        r = self.resources
        if result.ended_by == "data limit":
            carried = max(result.a_to_b_bytes, result.b_to_a_bytes)
            return (
                f"relay data limit reached after {carried / 1e6:.1f} MB, "
                f"circuit_data_bytes {r.circuit_data_bytes} per direction; "
                "both ends reset"
            )
        if result.ended_by == "duration limit":
            return (
                f"relay time limit reached after {result.duration_s:.0f} s, "
                f"circuit_duration_s {r.circuit_duration_s}; both ends reset"
            )
        return result.ended_by


def _ip_of(addr: Multiaddr | None) -> str | None:
    if addr is None:
        return None
    for proto in ("ip4", "ip6"):
        value = addr.value_for(proto)
        if value is not None:
            return str(ipaddress.ip_address(value))
    return None
