"""NAT-PMP (RFC 6886) and PCP (RFC 6887) codecs: byte layouts, round trips, malformed
answers (each a RemoteProtocolError, never another exception)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerup.core.errors import LocalProtocolError, RemoteProtocolError
from peerup.proto import natpmp, pcp

NONCE = bytes(range(1, 13))


# --- NAT-PMP --------------------------------------------------------------------------


def test_natpmp_requests_are_the_rfc_layouts() -> None:
    assert natpmp.ExternalAddressRequest().encode() == b"\x00\x00"
    # RFC 6886 3.3: version, opcode 2 (TCP), reserved, internal, suggested, lifetime
    assert natpmp.MapRequest("tcp", 4001, 4001, 7200).encode().hex() == (
        "000200000fa10fa100001c20"
    )
    assert natpmp.MapRequest("udp", 4001, 0, 0).encode()[1] == natpmp.OP_MAP_UDP


def test_natpmp_request_checks_its_fields() -> None:
    with pytest.raises(LocalProtocolError):
        natpmp.MapRequest("tcp", 0, 1, 1).encode()
    with pytest.raises(LocalProtocolError):
        natpmp.MapRequest("tcp", 1, 70000, 1).encode()


def test_natpmp_responses_decode() -> None:
    raw = bytes.fromhex("0080 0000 00000e10 c6336414".replace(" ", ""))
    assert natpmp.decode_response(raw) == natpmp.ExternalAddressResponse(
        0, 3600, "198.51.100.20"
    )
    raw = bytes.fromhex("0082 0000 00000e10 0fa1 a0d2 00000e10".replace(" ", ""))
    assert natpmp.decode_response(raw) == natpmp.MapResponse(
        0, 3600, "tcp", 4001, 41170, 3600
    )
    # Trailing bytes (a later extension) are ignored.
    assert natpmp.decode_response(raw + b"\0\0\0\0").external_port == 41170  # type: ignore[union-attr]


def test_natpmp_short_error_responses_are_accepted() -> None:
    """Section 3.5: a gateway may answer an error with version, opcode, result,
    epoch and nothing more."""
    reply = natpmp.decode_response(struct.pack("!BBHI", 0, 130, 2, 5))
    assert isinstance(reply, natpmp.MapResponse)
    assert reply.result == natpmp.ResultCode.NOT_AUTHORIZED
    reply = natpmp.decode_response(struct.pack("!BBHI", 0, 128, 3, 5))
    assert reply == natpmp.ExternalAddressResponse(3, 5, None)
    assert "no public address" in natpmp.describe(3)
    assert natpmp.describe(99) == "result code 99"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"", "at least 8"),
        (b"\x00\x80\x00\x00\x00\x00\x00", "at least 8"),
        (struct.pack("!BBHI", 2, 128, 0, 0), "version 2"),
        (struct.pack("!BBHI", 0, 2, 0, 0), "request"),
        (struct.pack("!BBHI", 0, 131, 1, 0), "unknown opcode"),
        (struct.pack("!BBHI", 0, 128, 0, 0), "without the address"),
        (struct.pack("!BBHIH", 0, 130, 0, 0, 1), "16"),
    ],
)
def test_natpmp_malformed_responses(raw: bytes, why: str) -> None:
    with pytest.raises(RemoteProtocolError, match=why):
        natpmp.decode_response(raw)


@given(
    st.sampled_from(["tcp", "udp"]),
    st.integers(0, 65535),
    st.integers(0, 65535),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 5),
)
def test_natpmp_map_response_round_trips(
    proto: natpmp.Protocol,
    internal: int,
    external: int,
    life: int,
    epoch: int,
    code: int,
) -> None:
    reply = natpmp.MapResponse(code, epoch, proto, internal, external, life)
    assert natpmp.decode_response(reply.encode()) == reply


@given(st.binary(max_size=40))
def test_natpmp_decode_raises_only_remote_protocol_error(raw: bytes) -> None:
    try:
        reply = natpmp.decode_response(raw)
    except RemoteProtocolError:
        return
    assert natpmp.decode_response(reply.encode()) == reply


# --- PCP ------------------------------------------------------------------------------


def test_pcp_map_request_is_the_rfc_layout() -> None:
    raw = pcp.MapRequest(NONCE, "tcp", 4001, "10.1.0.2", 3600, 4001).encode()
    assert len(raw) == pcp.HEADER_BYTES + pcp.MAP_BYTES == 60
    version, op, _res, lifetime = struct.unpack_from("!BBHI", raw)
    assert (version, op, lifetime) == (2, 1, 3600)
    assert raw[8:24] == b"\0" * 10 + b"\xff\xff" + bytes([10, 1, 0, 2])  # IPv4-mapped
    assert raw[24:36] == NONCE
    assert raw[36] == 6  # IANA TCP
    assert struct.unpack_from("!HH", raw, 40) == (4001, 4001)
    assert raw[44:60] == b"\0" * 10 + b"\xff\xff" + b"\0\0\0\0"


def test_pcp_request_checks_its_fields() -> None:
    with pytest.raises(LocalProtocolError):
        pcp.MapRequest(b"short", "tcp", 4001, "10.1.0.2", 1).encode()
    with pytest.raises(LocalProtocolError):
        pcp.MapRequest(NONCE, "tcp", 0, "10.1.0.2", 1).encode()


def _pcp_reply(result: int = 0, *, proto: int = 6, options: bytes = b"") -> bytes:
    head = struct.pack("!BBBBII12x", 2, 0x81, 0, result, 3600, 77)
    body = NONCE + struct.pack("!B3xHH", proto, 4001, 41170)
    body += b"\0" * 10 + b"\xff\xff" + bytes([198, 51, 100, 20])
    return head + body + options


def test_pcp_map_response_decodes() -> None:
    reply = pcp.decode_response(_pcp_reply())
    assert reply == pcp.MapResponse(
        0, 3600, 77, NONCE, "tcp", 4001, 41170, "198.51.100.20"
    )
    # An option (code 1, 16 bytes: THIRD_PARTY) is framed and skipped.
    option = struct.pack("!BxH", 1, 16) + b"\0" * 16
    assert pcp.decode_response(_pcp_reply(options=option)) == reply
    # An error may come as the bare header.
    head_only = _pcp_reply(pcp.ResultCode.NOT_AUTHORIZED)[:24]
    assert pcp.decode_response(head_only) == pcp.MapResponse(2, 3600, 77)
    assert "disabled" in pcp.describe(2) and pcp.describe(200) == "result code 200"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"\x02\x81", "at least 24"),
        (_pcp_reply() + b"\0" * 1100, "at most 1100"),
        (b"\x01" + _pcp_reply()[1:], "version 1"),
        (_pcp_reply()[:1] + b"\x01" + _pcp_reply()[2:], "request"),
        (_pcp_reply()[:1] + b"\x82" + _pcp_reply()[2:], "opcode 2"),
        (_pcp_reply()[:30], "without the MAP fields"),
        (_pcp_reply(proto=1), "IP protocol 1"),
        (_pcp_reply(options=b"\x01\x00"), "option header cut short"),
        (_pcp_reply(options=struct.pack("!BxH", 1, 16) + b"\0" * 8), "longer"),
    ],
)
def test_pcp_malformed_responses(raw: bytes, why: str) -> None:
    with pytest.raises(RemoteProtocolError, match=why):
        pcp.decode_response(raw)


@given(st.binary(max_size=120))
def test_pcp_decode_raises_only_remote_protocol_error(raw: bytes) -> None:
    try:
        reply = pcp.decode_response(raw)
    except RemoteProtocolError:
        return
    assert pcp.decode_response(reply.encode()) == reply
