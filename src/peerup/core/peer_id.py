"""PeerId: the multihash of a libp2p public key, and its text forms.

Spec: libp2p/specs peer-ids/peer-ids.md, "Peer Ids" and "String representation".
Keys whose protobuf encoding is at most 42 bytes (Ed25519, Secp256k1) use the identity
multihash; larger keys use SHA-256. Text is base58btc (``12D3KooW…``, ``Qm…``) or a
CIDv1 with the ``libp2p-key`` codec in multibase (``bafz…``, base32; other multibases
than base32 and base58btc are not accepted).
"""

from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass
from typing import Final

from peerup.core import base58, varint
from peerup.core.errors import RemoteProtocolError
from peerup.core.keys import PublicKey

IDENTITY: Final = 0x00
SHA2_256: Final = 0x12
LIBP2P_KEY_CODEC: Final = 0x72
CID_V1: Final = 0x01
MAX_INLINE_KEY_LENGTH: Final = 42


@dataclass(frozen=True, slots=True, order=True)
class PeerId:
    """A peer's identity: the multihash bytes of its public key."""

    multihash: bytes

    def __post_init__(self) -> None:
        _check_multihash(self.multihash)

    @classmethod
    def from_public_key(cls, key: PublicKey) -> PeerId:
        """The peer ID of ``key``."""
        encoded = key.to_protobuf()
        if len(encoded) <= MAX_INLINE_KEY_LENGTH:
            return cls(bytes((IDENTITY, len(encoded))) + encoded)
        return cls(bytes((SHA2_256, 32)) + hashlib.sha256(encoded).digest())

    @classmethod
    def from_string(cls, text: str) -> PeerId:
        """Parse base58btc multihash text or a CIDv1 (``b…`` base32 / ``z…`` base58).

        Raises:
            ValueError: not a valid peer ID.
        """
        text = text.strip()
        if not text:
            raise ValueError("empty peer ID")
        try:
            if text.startswith(("Qm", "1")):
                return cls(base58.decode(text))
            if text[0] == "b":
                pad = "=" * (-(len(text) - 1) % 8)
                return cls._from_cid(base64.b32decode(text[1:].upper() + pad))
            if text[0] == "z":
                return cls._from_cid(base58.decode(text[1:]))
            return cls(base58.decode(text))
        except (ValueError, RemoteProtocolError) as exc:
            raise ValueError(f"invalid peer ID {text[:60]!r}: {exc}") from None

    @classmethod
    def _from_cid(cls, raw: bytes) -> PeerId:
        version, pos = varint.decode(raw)
        codec, pos = varint.decode(raw, pos)
        if version != CID_V1 or codec != LIBP2P_KEY_CODEC:
            raise ValueError("CID is not a CIDv1 libp2p-key")
        return cls(raw[pos:])

    def to_base58(self) -> str:
        """The canonical text form (``12D3KooW…`` for Ed25519)."""
        return _text(self.multihash)

    def to_cid(self) -> str:
        """CIDv1 text in base32 (``bafz…``)."""
        raw = varint.encode(CID_V1) + varint.encode(LIBP2P_KEY_CODEC) + self.multihash
        return "b" + base64.b32encode(raw).decode().lower().rstrip("=")

    def extract_public_key(self) -> PublicKey | None:
        """The public key inlined in an identity multihash, if any."""
        if self.multihash[0] != IDENTITY:
            return None
        return PublicKey.from_protobuf(self.multihash[2:])

    def matches(self, key: PublicKey) -> bool:
        """Whether ``key`` is the key this ID was made from."""
        return PeerId.from_public_key(key) == self

    def short(self) -> str:
        """A short form for logs: the last 8 characters of the text form."""
        return self.to_base58()[-8:]

    def __str__(self) -> str:
        return self.to_base58()

    def __repr__(self) -> str:
        return f"PeerId({self.to_base58()})"


def _check_multihash(raw: bytes) -> None:
    try:
        code, pos = varint.decode(raw)
        length, pos = varint.decode(raw, pos)
    except RemoteProtocolError as exc:
        raise ValueError(f"bad multihash: {exc}") from None
    if code not in (IDENTITY, SHA2_256):
        raise ValueError(f"unsupported multihash code {code:#x}")
    if len(raw) - pos != length:
        raise ValueError("multihash length does not match its digest")
    if code == SHA2_256 and length != 32:
        raise ValueError("sha2-256 multihash must be 32 bytes")
    if code == IDENTITY and length > MAX_INLINE_KEY_LENGTH:
        raise ValueError("identity multihash too long")


@functools.lru_cache(maxsize=4096)
def _text(multihash: bytes) -> str:
    # Peer IDs are printed and compared as text often (logs, addresses, config); the
    # base58 conversion is pure Python, so the few IDs a node meets are cached.
    return base58.encode(multihash)
