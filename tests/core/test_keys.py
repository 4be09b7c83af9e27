"""core.keys: Ed25519 identity and the libp2p PublicKey/PrivateKey protobufs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from peerup.core import pb
from peerup.core.errors import RemoteProtocolError
from peerup.core.keys import Ed25519PrivateKey, KeyType, PublicKey, fingerprint

VECTORS = json.loads(
    (Path(__file__).parents[1] / "vectors" / "peer_ids.json").read_text()
)["keys"]
SPEC_ED25519 = VECTORS[0]

# RFC 8032 section 7.1, TEST 1: secret key, public key, signature of the empty message.
RFC_SEED = bytes.fromhex(
    "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
)
RFC_PUBLIC = bytes.fromhex(
    "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
)
RFC_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33"
    "bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)


def private_protobuf(data: bytes, key_type: int = 1) -> bytes:
    return pb.encode_varint_field(1, key_type) + pb.encode_bytes_field(2, data)


def test_fixed_seed_public_key_protobuf_known_answer() -> None:
    key = Ed25519PrivateKey.from_seed(RFC_SEED)
    assert key.public_key == PublicKey(KeyType.ED25519, RFC_PUBLIC)
    assert key.public_key.to_protobuf() == bytes.fromhex("08011220") + RFC_PUBLIC


def test_fixed_seed_private_key_protobuf_is_seed_then_public() -> None:
    key = Ed25519PrivateKey.from_seed(RFC_SEED)
    assert key.to_protobuf() == bytes.fromhex("08011240") + RFC_SEED + RFC_PUBLIC
    assert key.seed == RFC_SEED


def test_signature_matches_rfc8032() -> None:
    key = Ed25519PrivateKey.from_seed(RFC_SEED)
    assert key.sign(b"") == RFC_SIGNATURE
    assert key.public_key.verify(RFC_SIGNATURE, b"")


def test_spec_private_key_vector_round_trips() -> None:
    raw = bytes.fromhex(SPEC_ED25519["private_key"])
    key = Ed25519PrivateKey.from_protobuf(raw)
    assert key.to_protobuf() == raw
    assert key.public_key.to_protobuf().hex() == SPEC_ED25519["public_key"]


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["name"])
def test_spec_public_key_vectors_decode_and_re_encode(vector: dict[str, str]) -> None:
    raw = bytes.fromhex(vector["public_key"])
    key = PublicKey.from_protobuf(raw)
    assert key.key_type.name.lower() == vector["name"]
    assert key.to_protobuf() == raw


def test_private_key_accepts_32_byte_seed_form() -> None:
    key = Ed25519PrivateKey.from_protobuf(private_protobuf(RFC_SEED))
    assert key.public_key.data == RFC_PUBLIC


def test_private_key_accepts_64_byte_form() -> None:
    key = Ed25519PrivateKey.from_protobuf(private_protobuf(RFC_SEED + RFC_PUBLIC))
    assert key.seed == RFC_SEED


def test_private_key_accepts_legacy_96_byte_form() -> None:
    data = RFC_SEED + RFC_PUBLIC + RFC_PUBLIC
    key = Ed25519PrivateKey.from_protobuf(private_protobuf(data))
    assert key.seed == RFC_SEED


@pytest.mark.parametrize("length", [64, 96])
def test_private_key_with_mismatched_public_half_is_refused(length: int) -> None:
    other = Ed25519PrivateKey.from_seed(b"\x01" * 32).public_key.data
    data = (RFC_SEED + other + other)[:length]
    with pytest.raises(RemoteProtocolError, match="does not match"):
        Ed25519PrivateKey.from_protobuf(private_protobuf(data))


def test_legacy_96_byte_form_with_mismatched_redundant_copy_is_refused() -> None:
    other = Ed25519PrivateKey.from_seed(b"\x01" * 32).public_key.data
    data = RFC_SEED + RFC_PUBLIC + other
    with pytest.raises(RemoteProtocolError):
        Ed25519PrivateKey.from_protobuf(private_protobuf(data))


@pytest.mark.parametrize("length", [0, 31, 33, 63, 65, 95, 97, 128])
def test_private_key_with_bad_length_is_refused(length: int) -> None:
    with pytest.raises(RemoteProtocolError, match="length"):
        Ed25519PrivateKey.from_protobuf(private_protobuf(b"\x07" * length))


@pytest.mark.parametrize("key_type", [0, 2, 3, 9])
def test_private_key_of_other_type_is_refused(key_type: int) -> None:
    with pytest.raises(RemoteProtocolError, match="Ed25519"):
        Ed25519PrivateKey.from_protobuf(private_protobuf(RFC_SEED, key_type))


def test_private_key_without_data_is_refused() -> None:
    with pytest.raises(RemoteProtocolError):
        Ed25519PrivateKey.from_protobuf(pb.encode_varint_field(1, 1))


def test_public_key_with_wrong_ed25519_length_is_refused() -> None:
    raw = pb.encode_varint_field(1, 1) + pb.encode_bytes_field(2, b"\x01" * 31)
    with pytest.raises(RemoteProtocolError, match="32 bytes"):
        PublicKey.from_protobuf(raw)


def test_public_key_of_unknown_type_is_refused() -> None:
    raw = pb.encode_varint_field(1, 4) + pb.encode_bytes_field(2, b"\x01" * 32)
    with pytest.raises(RemoteProtocolError, match="unknown key type"):
        PublicKey.from_protobuf(raw)


@pytest.mark.parametrize(
    "raw",
    [b"", pb.encode_varint_field(1, 1), pb.encode_bytes_field(2, b"\x01" * 32)],
    ids=["empty", "no-data", "no-type"],
)
def test_public_key_with_missing_field_is_refused(raw: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="missing"):
        PublicKey.from_protobuf(raw)


def test_public_key_field_with_wrong_wire_type_is_refused() -> None:
    raw = pb.encode_bytes_field(1, b"\x01") + pb.encode_bytes_field(2, b"\x01" * 32)
    with pytest.raises(RemoteProtocolError):
        PublicKey.from_protobuf(raw)


def test_ed25519_verify_rejects_wrong_message_and_signature() -> None:
    key = Ed25519PrivateKey.from_seed(RFC_SEED)
    sig = key.sign(b"hello")
    assert key.public_key.verify(sig, b"hello")
    assert not key.public_key.verify(sig, b"hellO")
    assert not key.public_key.verify(sig[:-1] + bytes([sig[-1] ^ 1]), b"hello")
    assert not key.public_key.verify(b"short", b"hello")


def test_secp256k1_verify() -> None:
    priv = ec.generate_private_key(ec.SECP256K1())
    data = priv.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    sig = priv.sign(b"msg", ec.ECDSA(hashes.SHA256()))
    key = PublicKey(KeyType.SECP256K1, data)
    assert key.verify(sig, b"msg")
    assert not key.verify(sig, b"other")


def test_ecdsa_verify() -> None:
    priv = ec.generate_private_key(ec.SECP256R1())
    data = priv.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    sig = priv.sign(b"msg", ec.ECDSA(hashes.SHA256()))
    key = PublicKey(KeyType.ECDSA, data)
    assert key.verify(sig, b"msg")
    assert not key.verify(sig, b"other")


def test_rsa_verify() -> None:
    priv = rsa.generate_private_key(65537, 1024)
    data = priv.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    sig = priv.sign(b"msg", padding.PKCS1v15(), hashes.SHA256())
    key = PublicKey(KeyType.RSA, data)
    assert key.verify(sig, b"msg")
    assert not key.verify(sig, b"other")


@pytest.mark.parametrize("key_type", list(KeyType))
def test_verify_with_garbage_key_data_is_false(key_type: KeyType) -> None:
    assert not PublicKey(key_type, b"\x02" + b"\xff" * 32).verify(b"s" * 64, b"m")


def test_verify_with_key_of_wrong_algorithm_is_false() -> None:
    ecdsa_der = bytes.fromhex(VECTORS[2]["public_key"])[4:]
    assert not PublicKey(KeyType.RSA, ecdsa_der).verify(b"s" * 64, b"m")


def test_verify_with_unsupported_curve_is_false() -> None:
    # The spec's P-256 key with its curve OID swapped for prime192v2
    # (1.2.840.10045.3.1.2), which cryptography does not support.
    der = bytes.fromhex(VECTORS[2]["public_key"])[4:]
    der = der.replace(
        bytes.fromhex("2a8648ce3d030107"), bytes.fromhex("2a8648ce3d030102")
    )
    assert PublicKey(KeyType.ECDSA, der).verify(b"s" * 64, b"m") is False


def test_fingerprint_is_short_and_stable() -> None:
    key = Ed25519PrivateKey.from_seed(RFC_SEED).public_key
    assert fingerprint(key) == fingerprint(PublicKey(KeyType.ED25519, RFC_PUBLIC))
    assert len(fingerprint(key)) == 16
    assert fingerprint(key) != fingerprint(
        Ed25519PrivateKey.from_seed(b"\1" * 32).public_key
    )


def test_generated_keys_differ_and_round_trip() -> None:
    a, b = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    assert a.public_key != b.public_key
    assert Ed25519PrivateKey.from_protobuf(a.to_protobuf()).seed == a.seed
