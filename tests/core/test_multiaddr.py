"""core.multiaddr: text <-> bytes for the protocols peer-up uses."""

from __future__ import annotations

import pytest

from peerup.core import varint
from peerup.core.errors import RemoteProtocolError
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.multiaddr import Multiaddr
from peerup.core.peer_id import PeerId

RELAY = PeerId.from_string("12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq")
TARGET = PeerId.from_public_key(Ed25519PrivateKey.from_seed(b"\x05" * 32).public_key)
P2P_RELAY = "a503" + "26" + RELAY.multihash.hex()  # code 421, length 38

# Binary forms worked out from multiformats/multiaddr protocols.csv codes.
KNOWN = [
    ("/ip4/127.0.0.1/tcp/4001", "047f000001060fa1"),
    ("/ip4/1.2.3.4/udp/1234/quic-v1", "0401020304910204d2cd03"),
    ("/ip6/::1/tcp/80", "29" + "00" * 15 + "01" + "060050"),
    ("/ip6/2001:db8::1/udp/443/quic-v1", "2920010db8" + "00" * 10 + "0001910201bbcd03"),
    ("/dns4/example.com/tcp/443/ws", "360b" + b"example.com".hex() + "0601bb" + "dd03"),
    (
        "/dns/relay.example/tcp/443/wss",
        "350d" + b"relay.example".hex() + "0601bb" + "de03",
    ),
    ("/dns6/h/tcp/1", "3701" + b"h".hex() + "060001"),
    (f"/p2p/{RELAY}", P2P_RELAY),
    ("/p2p-circuit", "a202"),
    (
        f"/ip4/10.0.0.1/tcp/4001/p2p/{RELAY}/p2p-circuit/p2p/{TARGET}",
        "040a000001060fa1" + P2P_RELAY + "a202" + "a50326" + TARGET.multihash.hex(),
    ),
    ("/memory/abc", "890603" + b"abc".hex()),
]


@pytest.mark.parametrize(("text", "hex_"), KNOWN, ids=[t for t, _ in KNOWN])
def test_text_to_bytes_known_answer(text: str, hex_: str) -> None:
    assert Multiaddr.parse(text).to_bytes().hex() == hex_


@pytest.mark.parametrize(("text", "hex_"), KNOWN, ids=[t for t, _ in KNOWN])
def test_bytes_to_text_known_answer(text: str, hex_: str) -> None:
    addr = Multiaddr.from_bytes(bytes.fromhex(hex_))
    assert str(addr) == text
    assert addr == Multiaddr.parse(text)


def test_ipfs_is_an_alias_for_p2p() -> None:
    assert str(Multiaddr.parse(f"/ipfs/{RELAY}")) == f"/p2p/{RELAY}"


def test_p2p_value_is_normalised_to_base58() -> None:
    assert str(Multiaddr.parse(f"/p2p/{RELAY.to_cid()}")) == f"/p2p/{RELAY}"


def test_ip6_value_is_normalised() -> None:
    assert str(Multiaddr.parse("/ip6/0:0:0:0:0:0:0:1/tcp/1")) == "/ip6/::1/tcp/1"


def test_trailing_slash_is_ignored() -> None:
    assert Multiaddr.parse("/ip4/1.2.3.4/tcp/1/") == Multiaddr.parse(
        "/ip4/1.2.3.4/tcp/1"
    )


def test_split_circuit_gives_relay_and_target() -> None:
    addr = Multiaddr.parse(
        f"/ip4/10.0.0.1/tcp/4001/p2p/{RELAY}/p2p-circuit/p2p/{TARGET}"
    )
    relay, target = addr.split_circuit()
    assert str(relay) == f"/ip4/10.0.0.1/tcp/4001/p2p/{RELAY}"
    assert target is not None and str(target) == f"/p2p/{TARGET}"
    assert addr.is_circuit
    assert addr.peer_id == TARGET
    assert relay.peer_id == RELAY


def test_split_circuit_without_target() -> None:
    addr = Multiaddr.parse(f"/ip4/10.0.0.1/tcp/4001/p2p/{RELAY}/p2p-circuit")
    relay, target = addr.split_circuit()
    assert relay == Multiaddr.parse(f"/ip4/10.0.0.1/tcp/4001/p2p/{RELAY}")
    assert target is None


def test_split_circuit_of_direct_address() -> None:
    addr = Multiaddr.parse("/ip4/10.0.0.1/tcp/4001")
    assert addr.split_circuit() == (addr, None)
    assert not addr.is_circuit
    assert addr.peer_id is None


def test_peer_id_helpers() -> None:
    base = Multiaddr.parse("/ip4/1.2.3.4/tcp/1")
    with_relay = base.with_peer_id(RELAY)
    assert str(with_relay) == f"/ip4/1.2.3.4/tcp/1/p2p/{RELAY}"
    assert str(with_relay.with_peer_id(TARGET)) == f"/ip4/1.2.3.4/tcp/1/p2p/{TARGET}"
    assert with_relay.without_peer_id() == base
    assert base.without_peer_id() is base
    assert base.encapsulate(Multiaddr.parse("/p2p-circuit")).is_circuit


def test_value_for_finds_first_component() -> None:
    addr = Multiaddr.parse("/ip4/1.2.3.4/udp/5/quic-v1")
    assert addr.value_for("udp") == "5"
    assert addr.value_for("quic-v1") is None
    assert addr.value_for("tcp") is None


@pytest.mark.parametrize(
    ("text", "endpoint"),
    [
        ("/ip4/1.2.3.4/tcp/80", ("1.2.3.4", 80)),
        ("/ip6/::1/tcp/80/p2p/" + str(RELAY), ("::1", 80)),
        ("/dns4/example.com/tcp/443/ws", ("example.com", 443)),
        ("/ip4/1.2.3.4/udp/80", None),
        ("/p2p-circuit", None),
        (f"/p2p/{RELAY}/p2p-circuit", None),
    ],
)
def test_tcp_endpoint(text: str, endpoint: tuple[str, int] | None) -> None:
    assert Multiaddr.parse(text).tcp_endpoint() == endpoint


def test_from_tcp() -> None:
    assert str(Multiaddr.from_tcp("127.0.0.1", 9)) == "/ip4/127.0.0.1/tcp/9"
    assert str(Multiaddr.from_tcp("fe80::1%eth0", 9)) == "/ip6/fe80::1/tcp/9"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ip4/1.2.3.4",
        "/",
        "/ip4",
        "/ip4/1.2.3",
        "/ip4/256.0.0.1",
        "/ip6/::g",
        "/tcp/65536",
        "/tcp/-1",
        "/tcp/http",
        "/udp/",
        "/foo/1",
        "//ip4/1.2.3.4",
        "/p2p/notapeerid",
        "/p2p/QmTooShort",
        "/dns4//tcp/1",
        "/ip4/1.2.3.4/tcp",
    ],
)
def test_invalid_text_raises_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        Multiaddr.parse(text)


@pytest.mark.parametrize(
    "hex_",
    [
        "",  # empty
        "047f0000",  # ip4 truncated
        "0601",  # tcp truncated
        "d20f",  # unknown code 2002
        "80",  # truncated varint
        "3605616263",  # dns4 length beyond end
        "a50300",  # p2p with empty multihash
        "a50303110100",  # p2p with sha1 multihash
        "3602ffff",  # dns4 not UTF-8
    ],
)
def test_invalid_bytes_raise_remote_protocol_error(hex_: str) -> None:
    with pytest.raises(RemoteProtocolError):
        Multiaddr.from_bytes(bytes.fromhex(hex_))


def test_unix_text_round_trips() -> None:
    addr = Multiaddr.parse("/unix/tmp/peerup.sock")
    assert str(addr) == "/unix/tmp/peerup.sock"
    assert Multiaddr.parse(str(addr)) == addr


@pytest.mark.parametrize("port", ["+1", "01", "1_0", "\u0664"])
def test_parse_normalises_or_rejects_non_canonical_port(port: str) -> None:
    text = f"/ip4/1.2.3.4/tcp/{port}"
    try:
        addr = Multiaddr.parse(text)
    except ValueError:
        return
    assert str(addr) == str(Multiaddr.from_bytes(addr.to_bytes()))


@pytest.mark.parametrize("value", [b"", b"a/b"])
def test_from_bytes_refuses_values_text_cannot_carry(value: bytes) -> None:
    raw = varint.encode(54) + varint.prefixed(value) + bytes.fromhex("060001")
    with pytest.raises(RemoteProtocolError):
        Multiaddr.from_bytes(raw)


@pytest.mark.parametrize(
    "text", ["/unix/\udcff", "/certhash//ws", "/ip6/::1%1/tcp/1"]
)
def test_parse_refuses_text_whose_bytes_would_differ(text: str) -> None:
    """Found by fuzzing (fuzz/corpus/multiaddr_text): what parse accepts, to_bytes
    writes and from_bytes reads back the same."""
    with pytest.raises(ValueError):
        Multiaddr.parse(text)
