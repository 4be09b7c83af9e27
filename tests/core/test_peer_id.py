"""core.peer_id: PeerId from keys, base58 and CIDv1 text forms."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerup.core import base58
from peerup.core.keys import Ed25519PrivateKey, KeyType, PublicKey
from peerup.core.peer_id import PeerId

SPEC = json.loads((Path(__file__).parents[1] / "vectors" / "peer_ids.json").read_text())
KEYS = SPEC["keys"]


@pytest.mark.parametrize("vector", KEYS, ids=lambda v: v["name"])
def test_spec_key_gives_known_peer_id(vector: dict[str, str]) -> None:
    key = PublicKey.from_protobuf(bytes.fromhex(vector["public_key"]))
    peer = PeerId.from_public_key(key)
    assert peer.to_base58() == vector["peer_id"]
    assert str(peer) == vector["peer_id"]
    assert peer.to_cid() == vector["cid"]


@pytest.mark.parametrize("vector", KEYS, ids=lambda v: v["name"])
def test_both_text_forms_parse_to_the_same_peer(vector: dict[str, str]) -> None:
    assert PeerId.from_string(vector["peer_id"]) == PeerId.from_string(vector["cid"])


@pytest.mark.parametrize("pair", SPEC["same_peer_text_forms"])
def test_spec_example_strings_are_the_same_peer(pair: list[str]) -> None:
    legacy, cid = pair
    assert PeerId.from_string(legacy) == PeerId.from_string(cid)
    assert PeerId.from_string(legacy).to_cid() == cid
    assert PeerId.from_string(cid).to_base58() == legacy


def test_ed25519_peer_id_uses_identity_multihash() -> None:
    key = Ed25519PrivateKey.from_seed(b"\x00" * 32).public_key
    peer = PeerId.from_public_key(key)
    assert peer.multihash == b"\x00\x24" + key.to_protobuf()
    assert peer.to_base58().startswith("12D3KooW")
    assert peer.to_cid().startswith("bafzaa")
    assert peer.extract_public_key() == key


def test_spec_ed25519_example_parses_to_an_inlined_key() -> None:
    text = SPEC["valid_ed25519_examples"][0]
    peer = PeerId.from_string(text)
    key = peer.extract_public_key()
    assert key is not None and key.key_type is KeyType.ED25519
    assert peer.matches(key)


def test_long_key_uses_sha256_multihash() -> None:
    vector = KEYS[2]  # ECDSA: 93 bytes encoded, over the 42-byte inline limit
    raw = bytes.fromhex(vector["public_key"])
    peer = PeerId.from_public_key(PublicKey.from_protobuf(raw))
    assert len(raw) > 42
    assert peer.multihash == b"\x12\x20" + hashlib.sha256(raw).digest()
    assert peer.to_base58().startswith("Qm")
    assert peer.extract_public_key() is None


def test_key_of_exactly_42_bytes_is_inlined() -> None:
    key = PublicKey(KeyType.SECP256K1, b"\x02" * 38)
    assert len(key.to_protobuf()) == 42
    assert PeerId.from_public_key(key).multihash[0] == 0x00
    longer = PublicKey(KeyType.SECP256K1, b"\x02" * 39)
    assert PeerId.from_public_key(longer).multihash[0] == 0x12


def test_z_base58_cid_form_is_accepted() -> None:
    peer = PeerId.from_string(KEYS[0]["peer_id"])
    raw_cid = b"\x01\x72" + peer.multihash
    assert PeerId.from_string("z" + base58.encode(raw_cid)) == peer


def test_surrounding_whitespace_is_ignored() -> None:
    text = KEYS[0]["peer_id"]
    assert PeerId.from_string(f"  {text}\n") == PeerId.from_string(text)


def test_matches_only_its_own_key() -> None:
    a = Ed25519PrivateKey.from_seed(b"\x01" * 32).public_key
    b = Ed25519PrivateKey.from_seed(b"\x02" * 32).public_key
    assert PeerId.from_public_key(a).matches(a)
    assert not PeerId.from_public_key(a).matches(b)


def test_short_repr_and_ordering() -> None:
    peer = PeerId.from_string(KEYS[0]["peer_id"])
    assert peer.short() == KEYS[0]["peer_id"][-8:]
    assert repr(peer) == f"PeerId({KEYS[0]['peer_id']})"
    other = PeerId.from_string(KEYS[1]["peer_id"])
    assert sorted([other, peer]) == sorted([peer, other])
    assert len({peer, PeerId.from_string(KEYS[0]["cid"])}) == 1


def _cid_text(codec: int, multihash: bytes) -> str:
    raw = bytes((0x01, codec)) + multihash
    return "b" + base64.b32encode(raw).decode().lower().rstrip("=")


ED_MH = PeerId.from_string(KEYS[0]["peer_id"]).multihash

INVALID_TEXT = [
    "",
    "   ",
    "Qm",
    "1",
    "12D3KooW",
    KEYS[0]["peer_id"][:-1],
    KEYS[0]["peer_id"] + "1",
    "12D3KooW0OIl",
    "12D3Koo\u00e9",
    "b",
    "b!!!!",
    "b\u00e9\u00e9",
    "z0OIl",
    "z",
    _cid_text(0x70, ED_MH),  # dag-pb, not libp2p-key
    "b" + base64.b32encode(b"\x00\x72" + ED_MH).decode().lower().rstrip("="),
    "x" + KEYS[0]["peer_id"],
    base58.encode(b"\x11\x14" + b"\x00" * 20),  # sha1 multihash: unsupported
    base58.encode(b"\x12\x10" + b"\x00" * 16),  # sha2-256 with a 16-byte digest
    base58.encode(b"\x00\x2b" + b"\x00" * 43),  # identity longer than 42
]


@pytest.mark.parametrize("text", INVALID_TEXT)
def test_invalid_text_raises_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        PeerId.from_string(text)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00",
        b"\x00\x05abc",
        b"\x12\x20" + b"\x00" * 31,
        b"\x80",
        b"\x99\x01\x00",
    ],
)
def test_invalid_multihash_bytes_raise_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        PeerId(raw)


@given(st.binary(min_size=32, max_size=32))
def test_text_forms_round_trip(seed: bytes) -> None:
    peer = PeerId.from_public_key(Ed25519PrivateKey.from_seed(seed).public_key)
    assert PeerId.from_string(peer.to_base58()) == peer
    assert PeerId.from_string(peer.to_cid()) == peer
    assert PeerId(peer.multihash) == peer
