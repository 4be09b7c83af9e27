"""Signed envelopes (libp2p RFC 0002), used for the relay reservation voucher.

Spec: libp2p/specs RFC/0002-signed-envelopes.md. Wire form::

    Envelope { PublicKey public_key = 1; bytes payload_type = 2;
               bytes payload = 3; bytes signature = 5; }

The signature covers ``varint(len(domain)) domain varint(len(type)) type
varint(len(payload)) payload``; the domain is never sent, each use fixes its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from peerup.core import pb, varint
from peerup.core.errors import RemoteProtocolError, SecurityError
from peerup.core.keys import Ed25519PrivateKey, PublicKey


def _signed_bytes(domain: str, payload_type: bytes, payload: bytes) -> bytes:
    d = domain.encode()
    return b"".join(
        (varint.prefixed(d), varint.prefixed(payload_type), varint.prefixed(payload))
    )


@dataclass(frozen=True, slots=True)
class Envelope:
    """A payload signed by ``public_key`` for one domain."""

    public_key: PublicKey
    payload_type: bytes
    payload: bytes
    signature: bytes

    @classmethod
    def seal(
        cls, key: Ed25519PrivateKey, domain: str, payload_type: bytes, payload: bytes
    ) -> Envelope:
        """Sign ``payload`` for ``domain``."""
        sig = key.sign(_signed_bytes(domain, payload_type, payload))
        return cls(key.public_key, payload_type, payload, sig)

    def encode(self) -> bytes:
        return b"".join(
            (
                pb.encode_bytes_field(1, self.public_key.to_protobuf()),
                pb.encode_bytes_field(2, self.payload_type),
                pb.encode_bytes_field(3, self.payload),
                pb.encode_bytes_field(5, self.signature),
            )
        )

    @classmethod
    def decode(cls, raw: bytes) -> Envelope:
        """Decode without checking the signature (see :meth:`open`).

        Raises:
            RemoteProtocolError: malformed.
        """
        msg = pb.Reader(raw, "Envelope")
        key, ptype = msg.bytes_(1), msg.bytes_(2)
        payload, sig = msg.bytes_(3), msg.bytes_(5)
        if key is None or ptype is None or payload is None or sig is None:
            raise RemoteProtocolError("Envelope: missing field")
        return cls(PublicKey.from_protobuf(key), ptype, payload, sig)

    def open(self, domain: str, payload_type: bytes) -> bytes:
        """The payload, once the type and signature check out for ``domain``.

        Raises:
            SecurityError: wrong payload type or bad signature.
        """
        if self.payload_type != payload_type:
            raise SecurityError("envelope: unexpected payload type")
        if not self.public_key.verify(
            self.signature, _signed_bytes(domain, self.payload_type, self.payload)
        ):
            raise SecurityError(f"envelope: signature does not verify for {domain}")
        return self.payload
