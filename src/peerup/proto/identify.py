"""Identify ``/ipfs/id/1.0.0`` and identify push ``/ipfs/id/push/1.0.0``: the message codec.

Spec: libp2p/specs identify/README.md. The answering side writes one varint-length-
prefixed ``Identify`` protobuf and closes the stream; push is the same message sent
unasked. Fields: publicKey(1), listenAddrs(2), protocols(3), observedAddr(4),
protocolVersion(5), agentVersion(6), signedPeerRecord(8).
Not supported: producing ``signedPeerRecord`` (peers fall back to ``listenAddrs``); a
received record is kept as opaque bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from peerup.core import pb, varint
from peerup.core.errors import RemoteProtocolError
from peerup.core.multiaddr import Multiaddr

PROTOCOL_ID: Final = "/ipfs/id/1.0.0"
PUSH_PROTOCOL_ID: Final = "/ipfs/id/push/1.0.0"
PROTOCOL_VERSION: Final = "ipfs/0.1.0"
MAX_MESSAGE_BYTES: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class Identify:
    """One identify message; every field is optional on the wire."""

    public_key: bytes | None = None
    listen_addrs: tuple[Multiaddr, ...] = ()
    protocols: tuple[str, ...] = ()
    observed_addr: Multiaddr | None = None
    protocol_version: str | None = None
    agent_version: str | None = None
    signed_peer_record: bytes | None = None

    def encode(self) -> bytes:
        """The protobuf body (without the length prefix)."""
        parts: list[bytes] = []
        if self.protocol_version is not None:
            parts.append(pb.encode_str_field(5, self.protocol_version))
        if self.agent_version is not None:
            parts.append(pb.encode_str_field(6, self.agent_version))
        if self.public_key is not None:
            parts.append(pb.encode_bytes_field(1, self.public_key))
        parts += [pb.encode_bytes_field(2, a.to_bytes()) for a in self.listen_addrs]
        if self.observed_addr is not None:
            parts.append(pb.encode_bytes_field(4, self.observed_addr.to_bytes()))
        parts += [pb.encode_str_field(3, p) for p in self.protocols]
        if self.signed_peer_record is not None:
            parts.append(pb.encode_bytes_field(8, self.signed_peer_record))
        return b"".join(parts)

    def encode_prefixed(self) -> bytes:
        """The message as sent on the stream."""
        return varint.prefixed(self.encode())

    @classmethod
    def decode(cls, raw: bytes) -> Identify:
        """Decode a protobuf body. Unparseable addresses are skipped, not fatal,
        since peers may list transports we do not know.

        Raises:
            RemoteProtocolError: malformed protobuf.
        """
        msg = pb.Reader(raw, "Identify")
        addrs = []
        for blob in msg.repeated_bytes(2):
            try:
                addrs.append(Multiaddr.from_bytes(blob))
            except RemoteProtocolError:
                continue
        observed = None
        raw_observed = msg.bytes_(4)
        if raw_observed:
            try:
                observed = Multiaddr.from_bytes(raw_observed)
            except RemoteProtocolError:
                observed = None
        return cls(
            public_key=msg.bytes_(1),
            listen_addrs=tuple(addrs),
            protocols=tuple(msg.repeated_str(3)),
            observed_addr=observed,
            protocol_version=msg.str_(5),
            agent_version=msg.str_(6),
            signed_peer_record=msg.bytes_(8),
        )


def decode_stream(data: bytes) -> Identify:
    """Decode everything read from an identify stream until EOF.

    Some implementations split the message into several length-prefixed parts; they
    are merged as protobuf allows (repeated fields append, scalars take the last).

    Raises:
        RemoteProtocolError: malformed framing or message.
    """
    pos = 0
    body = bytearray()
    while pos < len(data):
        got = varint.try_read_prefixed(data, MAX_MESSAGE_BYTES, pos)
        if got is None:
            raise RemoteProtocolError("identify: truncated message")
        part, pos = got
        body += part
    return Identify.decode(bytes(body))
