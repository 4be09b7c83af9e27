"""libp2p identity keys: Ed25519 private keys and the libp2p PublicKey/PrivateKey encoding.

Spec: libp2p/specs peer-ids/peer-ids.md, "Keys". A key is serialized as the protobuf
``{KeyType Type = 1; bytes Data = 2;}``. Ed25519 private key data is the 64 bytes
seed||public that go-libp2p and js-libp2p write (32 and 96 byte forms are accepted on
read). We sign only with Ed25519; for verifying we also accept the other three key types
(RSA PKIX, Secp256k1 compressed, ECDSA PKIX), since remote peers may use them.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from peerup.core import pb
from peerup.core.errors import RemoteProtocolError


class KeyType(enum.IntEnum):
    """libp2p ``KeyType`` enum values."""

    RSA = 0
    ED25519 = 1
    SECP256K1 = 2
    ECDSA = 3


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A libp2p public key of any supported type."""

    key_type: KeyType
    data: bytes

    def to_protobuf(self) -> bytes:
        """The libp2p ``PublicKey`` protobuf encoding (deterministic field order)."""
        return pb.encode_varint_field(1, int(self.key_type)) + pb.encode_bytes_field(
            2, self.data
        )

    @classmethod
    def from_protobuf(cls, raw: bytes) -> PublicKey:
        """Decode a ``PublicKey`` protobuf.

        Raises:
            RemoteProtocolError: malformed message or unsupported key.
        """
        msg = pb.Reader(raw, "PublicKey")
        kind = msg.uint(1)
        data = msg.bytes_(2)
        if kind is None or data is None:
            raise RemoteProtocolError("PublicKey: missing Type or Data")
        try:
            key_type = KeyType(kind)
        except ValueError:
            raise RemoteProtocolError(f"PublicKey: unknown key type {kind}") from None
        if key_type == KeyType.ED25519 and len(data) != 32:
            raise RemoteProtocolError("PublicKey: Ed25519 key must be 32 bytes")
        return cls(key_type, data)

    def verify(self, signature: bytes, message: bytes) -> bool:
        """Check ``signature`` over ``message``; False for any invalid signature."""
        try:
            if self.key_type == KeyType.ED25519:
                ed25519.Ed25519PublicKey.from_public_bytes(self.data).verify(
                    signature, message
                )
            elif self.key_type == KeyType.SECP256K1:
                ec.EllipticCurvePublicKey.from_encoded_point(
                    ec.SECP256K1(), self.data
                ).verify(signature, message, ec.ECDSA(hashes.SHA256()))
            elif self.key_type == KeyType.ECDSA:
                key = serialization.load_der_public_key(self.data)
                if not isinstance(key, ec.EllipticCurvePublicKey):
                    return False
                key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
            else:
                rsa_key = serialization.load_der_public_key(self.data)
                if not isinstance(rsa_key, rsa.RSAPublicKey):
                    return False
                rsa_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
            return False
        return True


class Ed25519PrivateKey:
    """Our own identity: an Ed25519 signing key."""

    __slots__ = ("_key", "public_key")

    def __init__(self, key: ed25519.Ed25519PrivateKey) -> None:
        self._key = key
        raw_pub = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public_key = PublicKey(KeyType.ED25519, raw_pub)

    @classmethod
    def generate(cls) -> Ed25519PrivateKey:
        """A fresh random key."""
        return cls(ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Ed25519PrivateKey:
        """The key for a 32-byte seed (deterministic; for tests and vectors)."""
        return cls(ed25519.Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def seed(self) -> bytes:
        """The 32-byte private seed."""
        return self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def sign(self, message: bytes) -> bytes:
        """An Ed25519 signature over ``message``."""
        return self._key.sign(message)

    def to_protobuf(self) -> bytes:
        """The libp2p ``PrivateKey`` protobuf, Data = seed || public (as go writes it)."""
        return pb.encode_varint_field(1, int(KeyType.ED25519)) + pb.encode_bytes_field(
            2, self.seed + self.public_key.data
        )

    @classmethod
    def from_protobuf(cls, raw: bytes) -> Ed25519PrivateKey:
        """Decode a libp2p ``PrivateKey`` protobuf holding an Ed25519 key.

        Raises:
            RemoteProtocolError: malformed, not Ed25519, or seed and public part disagree.
        """
        msg = pb.Reader(raw, "PrivateKey")
        kind = msg.uint(1)
        data = msg.bytes_(2)
        if kind != KeyType.ED25519 or data is None:
            raise RemoteProtocolError("PrivateKey: only Ed25519 keys are supported")
        if len(data) not in (32, 64, 96):
            raise RemoteProtocolError(f"PrivateKey: bad Ed25519 length {len(data)}")
        key = cls.from_seed(data[:32])
        if len(data) >= 64 and data[32:64] != key.public_key.data:
            raise RemoteProtocolError("PrivateKey: public half does not match the seed")
        if len(data) == 96 and data[64:] != data[32:64]:
            raise RemoteProtocolError("PrivateKey: redundant public key copies differ")
        return key


def fingerprint(public_key: PublicKey) -> str:
    """A short SHA-256 fingerprint for display."""
    return hashlib.sha256(public_key.to_protobuf()).hexdigest()[:16]
