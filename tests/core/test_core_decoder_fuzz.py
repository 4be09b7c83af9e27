"""Fuzz: every core decoder fails only with our error types on hostile input.

Bytes from the wire must raise RemoteProtocolError; text parsers raise ValueError.
Never IndexError, struct.error, UnicodeDecodeError, AssertionError or friends.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerup.core import pb, varint
from peerup.core.errors import RemoteProtocolError
from peerup.core.keys import Ed25519PrivateKey, PublicKey
from peerup.core.multiaddr import Multiaddr
from peerup.core.peer_id import PeerId

FUZZ = settings(max_examples=300, deadline=None)

KEY = Ed25519PrivateKey.from_seed(b"\x07" * 32)
PEER = PeerId.from_public_key(KEY.public_key)
ADDRS = [
    Multiaddr.parse(f"/ip4/10.0.0.1/tcp/4001/p2p/{PEER}/p2p-circuit/p2p/{PEER}"),
    Multiaddr.parse("/ip6/::1/udp/443/quic-v1"),
    Multiaddr.parse("/dns4/example.com/tcp/443/wss"),
]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A valid encoding with a few bytes flipped, inserted, deleted or cut."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if op == "insert" or not data:
            data.insert(draw(st.integers(0, len(data))), draw(st.integers(0, 255)))
        elif op == "flip":
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= draw(st.integers(1, 255))
        elif op == "delete":
            del data[draw(st.integers(0, len(data) - 1))]
        else:
            del data[draw(st.integers(0, len(data) - 1)) :]
    return bytes(data)


def hostile(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=200), mutated(seeds))


@FUZZ
@given(st.binary(max_size=12), st.integers(0, 12))
def test_varint_decode(data: bytes, offset: int) -> None:
    try:
        value, pos = varint.decode(data, offset)
    except RemoteProtocolError:
        return
    assert varint.encode(value) == data[offset:pos]


PB_SEEDS = [
    KEY.public_key.to_protobuf(),
    KEY.to_protobuf(),
    pb.encode_varint_field(3, 1 << 40) + pb.encode_str_field(15, "hello"),
]


@FUZZ
@given(hostile(PB_SEEDS))
def test_pb_decode_fields(data: bytes) -> None:
    try:
        pb.decode_fields(data)
    except RemoteProtocolError:
        pass


@FUZZ
@given(hostile(PB_SEEDS))
def test_public_key_from_protobuf(data: bytes) -> None:
    try:
        key = PublicKey.from_protobuf(data)
    except RemoteProtocolError:
        return
    key.verify(b"\x00" * 64, b"message")  # must not raise either


@FUZZ
@given(hostile(PB_SEEDS))
def test_private_key_from_protobuf(data: bytes) -> None:
    try:
        Ed25519PrivateKey.from_protobuf(data)
    except RemoteProtocolError:
        pass


@FUZZ
@given(hostile([PEER.multihash, b"\x12\x20" + b"\x01" * 32]))
def test_peer_id_from_bytes(data: bytes) -> None:
    try:
        PeerId(data)
    except ValueError:
        pass


PEER_TEXT = st.one_of(
    st.text(max_size=80),
    st.text(
        alphabet="123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz0Il=",
        max_size=80,
    ),
    st.builds(
        lambda prefix, body: prefix + body,
        st.sampled_from(["", "1", "Qm", "12D3KooW", "b", "bafz", "z", "f"]),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz234567=!", max_size=70),
    ),
    mutated([PEER.to_base58().encode(), PEER.to_cid().encode()]).map(
        lambda b: b.decode("latin-1")
    ),
)


@FUZZ
@given(PEER_TEXT)
def test_peer_id_from_string(text: str) -> None:
    try:
        peer = PeerId.from_string(text)
    except ValueError:
        return
    assert PeerId.from_string(peer.to_cid()) == peer


@FUZZ
@given(hostile([a.to_bytes() for a in ADDRS]))
def test_multiaddr_from_bytes(data: bytes) -> None:
    try:
        Multiaddr.from_bytes(data)
    except RemoteProtocolError:
        pass


TOKENS = [
    "ip4",
    "ip6",
    "dns",
    "dns4",
    "tcp",
    "udp",
    "quic-v1",
    "ws",
    "p2p",
    "ipfs",
    "p2p-circuit",
    "unix",
    "memory",
    "certhash",
    "1.2.3.4",
    "::1",
    "80",
    "99999",
    "-1",
    str(PEER),
    PEER.to_cid(),
    "",
    "\udc80",
    "é",
    "x" * 5000,
]


@FUZZ
@given(
    st.one_of(
        st.text(max_size=60),
        st.lists(
            st.one_of(st.sampled_from(TOKENS), st.text(max_size=8)), max_size=8
        ).map(lambda parts: "/" + "/".join(parts)),
    )
)
def test_multiaddr_parse(text: str) -> None:
    try:
        Multiaddr.parse(text)
    except ValueError:
        pass


@pytest.mark.parametrize("addr", ADDRS, ids=str)
def test_fuzz_seeds_are_valid(addr: Multiaddr) -> None:
    assert Multiaddr.from_bytes(addr.to_bytes()) == addr
