"""proto.identify: the Identify message codec."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerup.core import pb, varint
from peerup.core.errors import RemoteProtocolError
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.multiaddr import Multiaddr
from peerup.proto.identify import Identify, decode_stream

KEY = Ed25519PrivateKey.from_seed(b"\x11" * 32).public_key.to_protobuf()
LOCAL = Multiaddr.parse("/ip4/127.0.0.1/tcp/4001")
OBSERVED = Multiaddr.parse("/ip4/1.2.3.4/udp/5/quic-v1")
FULL = Identify(
    public_key=KEY,
    listen_addrs=(LOCAL, OBSERVED),
    protocols=("/ipfs/id/1.0.0", "/ipfs/ping/1.0.0"),
    observed_addr=OBSERVED,
    protocol_version="ipfs/0.1.0",
    agent_version="peerup/0.1.0",
    signed_peer_record=b"\x01\x02",
)


def test_small_message_known_bytes() -> None:
    msg = Identify(listen_addrs=(LOCAL,), protocols=("/a",), agent_version="x")
    assert msg.encode().hex() == "3201781208047f000001060fa11a022f61"
    assert msg.encode_prefixed().hex() == "11" + msg.encode().hex()


def test_empty_message_is_empty() -> None:
    assert Identify().encode() == b""
    assert Identify.decode(b"") == Identify()


def test_round_trip_all_fields() -> None:
    assert Identify.decode(FULL.encode()) == FULL
    assert decode_stream(FULL.encode_prefixed()) == FULL


def test_unknown_addresses_are_skipped() -> None:
    raw = pb.encode_bytes_field(2, b"\xd2\x0f") + pb.encode_bytes_field(
        2, LOCAL.to_bytes()
    )
    raw += pb.encode_bytes_field(4, b"\xff")
    msg = Identify.decode(raw)
    assert msg.listen_addrs == (LOCAL,)
    assert msg.observed_addr is None


def test_split_stream_parts_are_merged() -> None:
    first = Identify(protocols=("/a",), agent_version="old").encode()
    second = Identify(protocols=("/b",), agent_version="new").encode()
    merged = decode_stream(varint.prefixed(first) + varint.prefixed(second))
    assert merged.protocols == ("/a", "/b")
    assert merged.agent_version == "new"


@pytest.mark.parametrize("raw", [b"\x05abc", b"\x80", varint.encode(70_000) + b"x"])
def test_bad_stream_framing_is_refused(raw: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_stream(raw)


@pytest.mark.parametrize(
    "raw",
    [
        pb.encode_bytes_field(3, b"\xff"),  # protocol not UTF-8
        pb.encode_varint_field(6, 1),  # string field with varint wire type
        b"\x0a\x05ab",  # overrun
    ],
)
def test_malformed_message_is_refused(raw: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        Identify.decode(raw)


@given(
    st.lists(st.text(max_size=20), max_size=5),
    st.none() | st.text(max_size=20),
    st.none() | st.binary(max_size=40),
)
def test_round_trip_property(
    protocols: list[str], agent: str | None, key: bytes | None
) -> None:
    msg = Identify(public_key=key, protocols=tuple(protocols), agent_version=agent)
    assert Identify.decode(msg.encode()) == msg
