"""NAT-PMP (RFC 6886) messages: asking the home router for a port mapping.

Spec: RFC 6886 sections 3.2 (external address), 3.3 (mapping requests), 3.5 (result
codes). The client sends UDP datagrams to its default gateway's port 5351; every
message starts with the version (0) and an opcode, and a response's opcode is the
request's plus 128. Written by hand, not taken from a library: NAT-PMP is four fixed
layouts of at most 16 bytes, and the Python packages that speak it (``nat-pmp``,
``py-natpmp``) send and wait on a blocking socket themselves, which neither the
sans-IO rule (STYLE.md 3.1) nor the asyncio daemon can use; neither speaks PCP, its
successor (proto/pcp.py), which the same gateway port answers.

Message flow (proto/portmap.py drives it):

- client -> gateway: ``ExternalAddressRequest`` and ``MapRequest`` (TCP or UDP,
  internal port, suggested external port, lifetime in seconds; lifetime 0 deletes);
- gateway -> client: ``ExternalAddressResponse`` (its public IPv4 address) and
  ``MapResponse`` (the external port and lifetime it granted), each with a result code
  and the gateway's seconds since its mappings were last reset (the epoch).

Not supported: the gateway's unsolicited address-change announcements to 224.0.0.1
(section 3.2.1; the client renews its mapping instead, which carries the same news).
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass
from typing import Final, Literal

from peerup.core.errors import LocalProtocolError, RemoteProtocolError

PORT: Final = 5351
"""The gateway's NAT-PMP (and PCP) server port."""
VERSION: Final = 0
OP_EXTERNAL_ADDRESS: Final = 0
OP_MAP_UDP: Final = 1
OP_MAP_TCP: Final = 2
RESPONSE_BIT: Final = 128

Protocol = Literal["tcp", "udp"]


class ResultCode(enum.IntEnum):
    """RFC 6886 section 3.5."""

    SUCCESS = 0
    UNSUPPORTED_VERSION = 1
    NOT_AUTHORIZED = 2
    """Mappings are turned off on the router (a setting in its admin page)."""
    NETWORK_FAILURE = 3
    """The router has no public address itself yet (its uplink is down)."""
    OUT_OF_RESOURCES = 4
    UNSUPPORTED_OPCODE = 5


RESULT_TEXT: Final = {
    ResultCode.SUCCESS: "success",
    ResultCode.UNSUPPORTED_VERSION: "unsupported version",
    ResultCode.NOT_AUTHORIZED: "not authorized (mappings are disabled on the router)",
    ResultCode.NETWORK_FAILURE: "network failure (the router has no public address)",
    ResultCode.OUT_OF_RESOURCES: "out of resources (the router's mapping table is full)",
    ResultCode.UNSUPPORTED_OPCODE: "unsupported opcode",
}


def describe(code: int) -> str:
    """Text for a result code, known or not."""
    try:
        return RESULT_TEXT[ResultCode(code)]
    except ValueError:
        return f"result code {code}"


@dataclass(frozen=True, slots=True)
class ExternalAddressRequest:
    """Opcode 0: what is your public address?"""

    def encode(self) -> bytes:
        return bytes((VERSION, OP_EXTERNAL_ADDRESS))


@dataclass(frozen=True, slots=True)
class MapRequest:
    """Opcodes 1 (UDP) and 2 (TCP): map ``internal_port`` for ``lifetime_s`` seconds."""

    protocol: Protocol
    internal_port: int
    suggested_external_port: int
    lifetime_s: int
    """0 deletes the mapping (then the suggested external port must be 0 too)."""

    def encode(self) -> bytes:
        if not 0 < self.internal_port < 65536:
            raise LocalProtocolError(f"internal port {self.internal_port} out of range")
        if not 0 <= self.suggested_external_port < 65536:
            raise LocalProtocolError("suggested external port out of range")
        if not 0 <= self.lifetime_s < 2**32:
            raise LocalProtocolError("lifetime out of range")
        op = OP_MAP_TCP if self.protocol == "tcp" else OP_MAP_UDP
        return struct.pack(
            "!BBHHHI",
            VERSION,
            op,
            0,
            self.internal_port,
            self.suggested_external_port,
            self.lifetime_s,
        )


@dataclass(frozen=True, slots=True)
class ExternalAddressResponse:
    result: int
    epoch_s: int
    address: str | None
    """The router's public IPv4 address; None in an error response."""

    def encode(self) -> bytes:
        head = struct.pack(
            "!BBHI",
            VERSION,
            RESPONSE_BIT + OP_EXTERNAL_ADDRESS,
            self.result,
            self.epoch_s,
        )
        if self.address is None:
            return head
        return head + ipaddress.IPv4Address(self.address).packed


@dataclass(frozen=True, slots=True)
class MapResponse:
    result: int
    epoch_s: int
    protocol: Protocol
    internal_port: int
    external_port: int
    lifetime_s: int

    def encode(self) -> bytes:
        op = RESPONSE_BIT + (OP_MAP_TCP if self.protocol == "tcp" else OP_MAP_UDP)
        return struct.pack(
            "!BBHIHHI",
            VERSION,
            op,
            self.result,
            self.epoch_s,
            self.internal_port,
            self.external_port,
            self.lifetime_s,
        )


Response = ExternalAddressResponse | MapResponse


def decode_response(data: bytes) -> Response:
    """One NAT-PMP response datagram.

    An error response may stop after the epoch (8 bytes: RFC 6886 section 3.5 lets a
    gateway that does not understand the request send just that much); a successful
    one has its full length. Bytes past the layout are ignored, as section 3.3 asks
    of future extensions.

    Raises:
        RemoteProtocolError: not a NAT-PMP response (wrong version, a request, an
            unknown opcode, too short).
    """
    if len(data) < 8:
        raise RemoteProtocolError(f"NAT-PMP response of {len(data)} bytes (at least 8)")
    version, op, result, epoch = struct.unpack_from("!BBHI", data)
    if version != VERSION:
        raise RemoteProtocolError(f"NAT-PMP response with version {version}")
    if op < RESPONSE_BIT:
        raise RemoteProtocolError(
            f"NAT-PMP request (opcode {op}) where a response was due"
        )
    op -= RESPONSE_BIT
    if op == OP_EXTERNAL_ADDRESS:
        if len(data) < 12:
            if result == ResultCode.SUCCESS:
                raise RemoteProtocolError(
                    "NAT-PMP address response without the address"
                )
            return ExternalAddressResponse(result, epoch, None)
        address = str(ipaddress.IPv4Address(data[8:12]))
        return ExternalAddressResponse(result, epoch, address)
    if op in (OP_MAP_UDP, OP_MAP_TCP):
        protocol: Protocol = "tcp" if op == OP_MAP_TCP else "udp"
        if len(data) < 16:
            if result == ResultCode.SUCCESS:
                raise RemoteProtocolError(
                    f"NAT-PMP mapping response of {len(data)} bytes (16)"
                )
            return MapResponse(result, epoch, protocol, 0, 0, 0)
        internal, external, lifetime = struct.unpack_from("!HHI", data, 8)
        return MapResponse(result, epoch, protocol, internal, external, lifetime)
    raise RemoteProtocolError(f"NAT-PMP response to unknown opcode {op}")
