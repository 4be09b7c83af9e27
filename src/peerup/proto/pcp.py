"""PCP, the Port Control Protocol (RFC 6887): MAP requests and responses.

Spec: RFC 6887 sections 7.1 (request header), 7.2 (response header), 7.3 (options),
7.4 (result codes), 11.1 (MAP opcode), 9 (version negotiation with NAT-PMP). PCP is
NAT-PMP's successor on the same gateway port (5351): a 24-byte header, then the
opcode's fields, then options. Written by hand for the reasons given in
proto/natpmp.py: no maintained Python library speaks it without doing its own IO.

Message flow (proto/portmap.py drives it):

- client -> gateway: ``MapRequest``: "forward external TCP (or UDP) traffic to my
  ``internal_port`` for ``lifetime_s`` seconds", with a random 96-bit nonce that
  later requests for the same mapping repeat (a renewal, or lifetime 0 to delete);
- gateway -> client: ``MapResponse``: the result code, the lifetime granted, the
  gateway's epoch, and the external address and port assigned;
- a gateway that speaks only NAT-PMP answers with a NAT-PMP "unsupported version"
  response (version byte 0): the client then falls back to NAT-PMP (section 9).

Not supported: the PEER and ANNOUNCE opcodes, and sending options (THIRD_PARTY,
PREFER_FAILURE, FILTER); options in responses are checked for framing and skipped.
IPv6 mappings (no NAT there) are not requested.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass
from typing import Final, Literal

from peerup.core.errors import LocalProtocolError, RemoteProtocolError

VERSION: Final = 2
OP_MAP: Final = 1
RESPONSE_BIT: Final = 0x80
HEADER_BYTES: Final = 24
MAP_BYTES: Final = 36
NONCE_BYTES: Final = 12
MAX_MESSAGE_BYTES: Final = 1100
"""Section 7: a PCP message is at most 1100 bytes."""
IANA_TCP: Final = 6
IANA_UDP: Final = 17

Protocol = Literal["tcp", "udp"]


class ResultCode(enum.IntEnum):
    """RFC 6887 section 7.4."""

    SUCCESS = 0
    UNSUPP_VERSION = 1
    NOT_AUTHORIZED = 2
    MALFORMED_REQUEST = 3
    UNSUPP_OPCODE = 4
    UNSUPP_OPTION = 5
    MALFORMED_OPTION = 6
    NETWORK_FAILURE = 7
    NO_RESOURCES = 8
    UNSUPP_PROTOCOL = 9
    USER_EX_QUOTA = 10
    CANNOT_PROVIDE_EXTERNAL = 11
    ADDRESS_MISMATCH = 12
    EXCESSIVE_REMOTE_PEERS = 13


RESULT_TEXT: Final = {
    ResultCode.SUCCESS: "success",
    ResultCode.UNSUPP_VERSION: "unsupported version",
    ResultCode.NOT_AUTHORIZED: "not authorized (mappings are disabled on the router)",
    ResultCode.MALFORMED_REQUEST: "malformed request",
    ResultCode.UNSUPP_OPCODE: "unsupported opcode",
    ResultCode.UNSUPP_OPTION: "unsupported option",
    ResultCode.MALFORMED_OPTION: "malformed option",
    ResultCode.NETWORK_FAILURE: "network failure (the router has no public address)",
    ResultCode.NO_RESOURCES: "no resources (the router's mapping table is full)",
    ResultCode.UNSUPP_PROTOCOL: "unsupported protocol",
    ResultCode.USER_EX_QUOTA: "this machine's quota of mappings is used up",
    ResultCode.CANNOT_PROVIDE_EXTERNAL: "the external port or address asked for is taken",
    ResultCode.ADDRESS_MISMATCH: "address mismatch (a NAT between us and the router?)",
    ResultCode.EXCESSIVE_REMOTE_PEERS: "excessive remote peers",
}


def describe(code: int) -> str:
    """Text for a result code, known or not."""
    try:
        return RESULT_TEXT[ResultCode(code)]
    except ValueError:
        return f"result code {code}"


def _ip16(address: str) -> bytes:
    """An address in PCP's 16-byte field: IPv6, or IPv4 mapped (::ffff:a.b.c.d)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv4Address):
        return ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + ip.packed).packed
    return ip.packed


def _ip_text(raw: bytes) -> str:
    ip = ipaddress.IPv6Address(raw)
    return str(ip.ipv4_mapped) if ip.ipv4_mapped is not None else str(ip)


@dataclass(frozen=True, slots=True)
class MapRequest:
    """A MAP request (sections 7.1 and 11.1)."""

    nonce: bytes
    """12 random bytes naming this mapping; renewals and the delete repeat them."""
    protocol: Protocol
    internal_port: int
    client_ip: str
    """Our own address as the gateway sees it (the source of the datagram)."""
    lifetime_s: int
    """0 deletes the mapping."""
    suggested_external_port: int = 0
    suggested_external_ip: str = "0.0.0.0"

    def encode(self) -> bytes:
        if len(self.nonce) != NONCE_BYTES:
            raise LocalProtocolError("a PCP nonce is 12 bytes")
        if not 0 < self.internal_port < 65536:
            raise LocalProtocolError(f"internal port {self.internal_port} out of range")
        if not 0 <= self.suggested_external_port < 65536:
            raise LocalProtocolError("suggested external port out of range")
        if not 0 <= self.lifetime_s < 2**32:
            raise LocalProtocolError("lifetime out of range")
        proto = IANA_TCP if self.protocol == "tcp" else IANA_UDP
        return (
            struct.pack("!BBHI", VERSION, OP_MAP, 0, self.lifetime_s)
            + _ip16(self.client_ip)
            + self.nonce
            + struct.pack(
                "!B3xHH", proto, self.internal_port, self.suggested_external_port
            )
            + _ip16(self.suggested_external_ip)
        )


@dataclass(frozen=True, slots=True)
class MapResponse:
    """A MAP response: the header, and the MAP fields where the gateway sent them
    (an error response may carry only the header)."""

    result: int
    lifetime_s: int
    """Granted; in an error response, how long the error is expected to last."""
    epoch_s: int
    nonce: bytes | None = None
    protocol: Protocol | None = None
    internal_port: int = 0
    external_port: int = 0
    external_ip: str | None = None

    def encode(self) -> bytes:
        head = struct.pack(
            "!BBBBII12x",
            VERSION,
            RESPONSE_BIT | OP_MAP,
            0,
            self.result,
            self.lifetime_s,
            self.epoch_s,
        )
        if self.nonce is None:
            return head
        proto = IANA_TCP if self.protocol == "tcp" else IANA_UDP
        return (
            head
            + self.nonce
            + struct.pack("!B3xHH", proto, self.internal_port, self.external_port)
            + _ip16(self.external_ip or "0.0.0.0")
        )


def decode_response(data: bytes) -> MapResponse:
    """One PCP MAP response datagram.

    Raises:
        RemoteProtocolError: not a PCP version 2 MAP response, cut short, longer than
            1100 bytes, or with a broken option; a success without the MAP fields, or
            for a protocol other than TCP or UDP.
    """
    if len(data) < HEADER_BYTES:
        raise RemoteProtocolError(f"PCP response of {len(data)} bytes (at least 24)")
    if len(data) > MAX_MESSAGE_BYTES:
        raise RemoteProtocolError(f"PCP response of {len(data)} bytes (at most 1100)")
    version, op, _reserved, result, lifetime, epoch = struct.unpack_from(
        "!BBBBII", data
    )
    if version != VERSION:
        raise RemoteProtocolError(f"PCP response with version {version}")
    if not op & RESPONSE_BIT:
        raise RemoteProtocolError("PCP request where a response was due")
    if op & ~RESPONSE_BIT != OP_MAP:
        raise RemoteProtocolError(
            f"PCP response to opcode {op & ~RESPONSE_BIT}, not MAP"
        )
    if len(data) < HEADER_BYTES + MAP_BYTES:
        if result == ResultCode.SUCCESS:
            raise RemoteProtocolError("PCP MAP success without the MAP fields")
        return MapResponse(result, lifetime, epoch)
    body = HEADER_BYTES
    nonce = bytes(data[body : body + NONCE_BYTES])
    proto, internal, external = struct.unpack_from("!B3xHH", data, body + NONCE_BYTES)
    external_ip = _ip_text(bytes(data[body + 20 : body + MAP_BYTES]))
    _check_options(data, HEADER_BYTES + MAP_BYTES)
    if proto not in (IANA_TCP, IANA_UDP):
        if result == ResultCode.SUCCESS:
            raise RemoteProtocolError(f"PCP MAP success for IP protocol {proto}")
        return MapResponse(result, lifetime, epoch)
    protocol: Protocol = "tcp" if proto == IANA_TCP else "udp"
    return MapResponse(
        result, lifetime, epoch, nonce, protocol, internal, external, external_ip
    )


def _check_options(data: bytes, offset: int) -> None:
    """Section 7.3: each option is code, reserved, a 2-byte length, then the data
    padded to 4 bytes; they must fill the rest of the message exactly."""
    while offset < len(data):
        if len(data) - offset < 4:
            raise RemoteProtocolError("PCP option header cut short")
        (length,) = struct.unpack_from("!H", data, offset + 2)
        offset += 4 + (length + 3) // 4 * 4
        if offset > len(data):
            raise RemoteProtocolError("PCP option longer than the message")


def version_of(data: bytes) -> int | None:
    """The version byte of a datagram from port 5351 (0: NAT-PMP, 2: PCP)."""
    return data[0] if data else None
