"""Circuit relay v2 messages: Hop, Stop, Reservation, Limit, Status, and the voucher.

Spec: libp2p/specs relay/circuit-v2.md. Each message is varint-length-prefixed on its
stream. Message flow::

    reserve:  client -> relay  (hop)   HopMessage{RESERVE}
              relay  -> client         HopMessage{STATUS, OK, reservation, limit}
    connect:  src    -> relay  (hop)   HopMessage{CONNECT, peer=target}
              relay  -> target (stop)  StopMessage{CONNECT, peer=src, limit}
              target -> relay          StopMessage{STATUS, OK}
              relay  -> src            HopMessage{STATUS, OK, limit}
              ... then both streams carry the relayed connection's raw bytes.

The reservation voucher is a signed envelope (domain ``libp2p-relay-rsvp``, payload
type 0x0302) over ``ReservationVoucher{relay, peer, expiration}``. A ``Limit`` that is
absent, or a field that is absent or 0, means no limit of that kind.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from peerup.core import pb, varint
from peerup.core.errors import RemoteProtocolError
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.multiaddr import Multiaddr
from peerup.core.peer_id import PeerId
from peerup.proto.envelope import Envelope

HOP_PROTOCOL_ID: Final = "/libp2p/circuit/relay/0.2.0/hop"
STOP_PROTOCOL_ID: Final = "/libp2p/circuit/relay/0.2.0/stop"
MAX_MESSAGE_BYTES: Final = 4096
VOUCHER_DOMAIN: Final = "libp2p-relay-rsvp"
VOUCHER_PAYLOAD_TYPE: Final = (
    b"\x03\x02"  # the multicodec 0x0302 as two raw bytes, as go writes it
)


class Status(enum.IntEnum):
    """Circuit v2 status codes."""

    UNUSED = 0
    OK = 100
    RESERVATION_REFUSED = 200
    RESOURCE_LIMIT_EXCEEDED = 201
    PERMISSION_DENIED = 202
    CONNECTION_FAILED = 203
    NO_RESERVATION = 204
    MALFORMED_MESSAGE = 400
    UNEXPECTED_MESSAGE = 401


class HopType(enum.IntEnum):
    RESERVE = 0
    CONNECT = 1
    STATUS = 2


class StopType(enum.IntEnum):
    CONNECT = 0
    STATUS = 1


@dataclass(frozen=True, slots=True)
class Peer:
    peer_id: PeerId
    addrs: tuple[Multiaddr, ...] = ()

    def encode(self) -> bytes:
        parts = [pb.encode_bytes_field(1, self.peer_id.multihash)]
        parts += [pb.encode_bytes_field(2, a.to_bytes()) for a in self.addrs]
        return b"".join(parts)

    @classmethod
    def decode(cls, raw: bytes) -> Peer:
        msg = pb.Reader(raw, "Peer")
        pid = msg.bytes_(1)
        if pid is None:
            raise RemoteProtocolError("Peer: missing id")
        try:
            peer_id = PeerId(pid)
        except ValueError as exc:
            raise RemoteProtocolError(f"Peer: {exc}") from None
        return cls(peer_id, _addrs(msg.repeated_bytes(2)))


@dataclass(frozen=True, slots=True)
class Limit:
    """Per-circuit limits; None means unlimited."""

    duration_s: int | None = None
    data_bytes: int | None = None

    @property
    def is_unlimited(self) -> bool:
        return not self.duration_s and not self.data_bytes

    def encode(self) -> bytes:
        parts = []
        if self.duration_s:
            parts.append(pb.encode_varint_field(1, min(self.duration_s, 0xFFFFFFFF)))
        if self.data_bytes:
            parts.append(pb.encode_varint_field(2, self.data_bytes))
        return b"".join(parts)

    @classmethod
    def decode(cls, raw: bytes) -> Limit:
        msg = pb.Reader(raw, "Limit")
        return cls(msg.uint(1) or None, msg.uint(2) or None)


@dataclass(frozen=True, slots=True)
class Reservation:
    expire: int
    """Unix time (seconds, UTC) when the reservation ends."""
    addrs: tuple[Multiaddr, ...] = ()
    voucher: bytes | None = None

    def encode(self) -> bytes:
        parts = [pb.encode_varint_field(1, self.expire)]
        parts += [pb.encode_bytes_field(2, a.to_bytes()) for a in self.addrs]
        if self.voucher is not None:
            parts.append(pb.encode_bytes_field(3, self.voucher))
        return b"".join(parts)

    @classmethod
    def decode(cls, raw: bytes) -> Reservation:
        msg = pb.Reader(raw, "Reservation")
        expire = msg.uint(1)
        if expire is None:
            raise RemoteProtocolError("Reservation: missing expire")
        return cls(expire, _addrs(msg.repeated_bytes(2)), msg.bytes_(3))


@dataclass(frozen=True, slots=True)
class HopMessage:
    type: HopType
    peer: Peer | None = None
    reservation: Reservation | None = None
    limit: Limit | None = None
    status: Status | None = None

    def encode(self) -> bytes:
        parts = [pb.encode_varint_field(1, int(self.type))]
        if self.peer is not None:
            parts.append(pb.encode_bytes_field(2, self.peer.encode()))
        if self.reservation is not None:
            parts.append(pb.encode_bytes_field(3, self.reservation.encode()))
        if self.limit is not None and not self.limit.is_unlimited:
            parts.append(pb.encode_bytes_field(4, self.limit.encode()))
        if self.status is not None:
            parts.append(pb.encode_varint_field(5, int(self.status)))
        return varint.prefixed(b"".join(parts))

    @classmethod
    def decode(cls, raw: bytes) -> HopMessage:
        msg = pb.Reader(raw, "HopMessage")
        kind = _hop_type(msg.uint(1))
        peer = msg.bytes_(2)
        rsvp = msg.bytes_(3)
        limit = msg.bytes_(4)
        status = msg.uint(5)
        return cls(
            kind,
            Peer.decode(peer) if peer is not None else None,
            Reservation.decode(rsvp) if rsvp is not None else None,
            Limit.decode(limit) if limit is not None else None,
            _status(status),
        )


@dataclass(frozen=True, slots=True)
class StopMessage:
    type: StopType
    peer: Peer | None = None
    limit: Limit | None = None
    status: Status | None = None

    def encode(self) -> bytes:
        parts = [pb.encode_varint_field(1, int(self.type))]
        if self.peer is not None:
            parts.append(pb.encode_bytes_field(2, self.peer.encode()))
        if self.limit is not None and not self.limit.is_unlimited:
            parts.append(pb.encode_bytes_field(3, self.limit.encode()))
        if self.status is not None:
            parts.append(pb.encode_varint_field(4, int(self.status)))
        return varint.prefixed(b"".join(parts))

    @classmethod
    def decode(cls, raw: bytes) -> StopMessage:
        msg = pb.Reader(raw, "StopMessage")
        kind = _stop_type(msg.uint(1))
        peer = msg.bytes_(2)
        limit = msg.bytes_(3)
        return cls(
            kind,
            Peer.decode(peer) if peer is not None else None,
            Limit.decode(limit) if limit is not None else None,
            _status(msg.uint(4)),
        )


@dataclass(frozen=True, slots=True)
class Voucher:
    """The relay's signed promise that ``peer`` holds a reservation until ``expiration``."""

    relay: PeerId
    peer: PeerId
    expiration: int

    def encode(self) -> bytes:
        return b"".join(
            (
                pb.encode_bytes_field(1, self.relay.multihash),
                pb.encode_bytes_field(2, self.peer.multihash),
                pb.encode_varint_field(3, self.expiration),
            )
        )

    @classmethod
    def decode(cls, raw: bytes) -> Voucher:
        msg = pb.Reader(raw, "ReservationVoucher")
        relay, peer, exp = msg.bytes_(1), msg.bytes_(2), msg.uint(3)
        if relay is None or peer is None or exp is None:
            raise RemoteProtocolError("ReservationVoucher: missing field")
        try:
            return cls(PeerId(relay), PeerId(peer), exp)
        except ValueError as exc:
            raise RemoteProtocolError(f"ReservationVoucher: {exc}") from None

    def seal(self, key: Ed25519PrivateKey) -> bytes:
        """The voucher as a signed envelope."""
        return Envelope.seal(
            key, VOUCHER_DOMAIN, VOUCHER_PAYLOAD_TYPE, self.encode()
        ).encode()

    @classmethod
    def open(cls, raw: bytes) -> tuple[Voucher, PeerId]:
        """Verify a voucher envelope; returns it and the signer's peer ID.

        Raises:
            RemoteProtocolError: malformed. SecurityError: bad signature.
        """
        env = Envelope.decode(raw)
        voucher = cls.decode(env.open(VOUCHER_DOMAIN, VOUCHER_PAYLOAD_TYPE))
        return voucher, PeerId.from_public_key(env.public_key)


def _addrs(raw: list[bytes]) -> tuple[Multiaddr, ...]:
    out = []
    for blob in raw:
        try:
            out.append(Multiaddr.from_bytes(blob))
        except RemoteProtocolError:
            continue
    return tuple(out)


def _hop_type(value: int | None) -> HopType:
    try:
        return HopType(_required(value, "HopMessage.type"))
    except ValueError:
        raise RemoteProtocolError(f"HopMessage.type: unknown value {value}") from None


def _stop_type(value: int | None) -> StopType:
    try:
        return StopType(_required(value, "StopMessage.type"))
    except ValueError:
        raise RemoteProtocolError(f"StopMessage.type: unknown value {value}") from None


def _required(value: int | None, what: str) -> int:
    if value is None:
        raise RemoteProtocolError(f"{what} missing")
    return value


def _status(value: int | None) -> Status | None:
    if value is None:
        return None
    try:
        return Status(value)
    except ValueError:
        raise RemoteProtocolError(f"unknown relay status {value}") from None
