"""The libp2p TLS certificate: a self-signed X.509 certificate carrying the host key.

Spec: libp2p/specs tls/tls.md, "Peer Authentication" and "libp2p Public Key Extension";
used by QUIC (quic/README.md, ALPN ``libp2p``). The host key never signs the certificate:
an ephemeral ECDSA P-256 key does, and the extension (OID 1.3.6.1.4.1.53594.1.1) holds

    SignedKey ::= SEQUENCE { publicKey OCTET STRING, signature OCTET STRING }

where ``publicKey`` is the libp2p ``PublicKey`` protobuf of the host key and
``signature`` is the host key's signature over ``"libp2p-tls-handshake:"`` followed by
the certificate's SubjectPublicKeyInfo (DER). A receiver checks the validity period,
the certificate's own signature, the extension, and that the signature verifies; the
peer ID is derived from the extension's key.

The two-field DER structure is encoded and decoded by hand: ``cryptography`` builds
and parses certificates but has no general ASN.1 codec, and pulling in ``pyasn1`` for
one SEQUENCE of two OCTET STRINGs is more code to trust than these few strict lines.
The decoder accepts only definite minimal lengths and exactly two OCTET STRINGs.
"""

from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from peerup.core.errors import RemoteProtocolError
from peerup.core.keys import Ed25519PrivateKey, PublicKey
from peerup.core.peer_id import PeerId

EXTENSION_OID = x509.ObjectIdentifier("1.3.6.1.4.1.53594.1.1")
SIGNATURE_PREFIX = b"libp2p-tls-handshake:"
ALPN = "libp2p"
# A certificate is made valid from an hour ago (clock skew) for a long time: it is
# bound to the host key by the extension, not by its dates, as go-libp2p does too.
_VALID_BEFORE = datetime.timedelta(hours=1)
_VALID_FOR = datetime.timedelta(days=365 * 100)
_MAX_EXTENSION = 8192


class CertRefusal(enum.Enum):
    """Why a peer's certificate was not accepted."""

    NOT_X509 = "the certificate is not valid X.509 DER"
    EXPIRED = "the certificate is expired or not yet valid"
    BAD_SELF_SIGNATURE = "the certificate's own signature does not verify"
    NO_EXTENSION = "the certificate has no libp2p public key extension"
    BAD_EXTENSION = "the libp2p public key extension is malformed"
    BAD_KEY_SIGNATURE = "the host key's signature over the certificate key does not verify"
    WRONG_PEER = "the certificate belongs to another peer than the one dialed"


@dataclass(frozen=True, slots=True)
class CertChecked:
    """The outcome of checking a peer's certificate: the peer, or why not."""

    peer: PeerId | None
    public_key: PublicKey | None
    refusal: CertRefusal | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.refusal is None

    def reason(self) -> str:
        if self.refusal is None:
            return f"certificate of {self.peer}"
        return self.refusal.value + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True, slots=True)
class Certificate:
    """Our certificate (DER and PEM) and its ephemeral ECDSA key (PEM, PKCS#8)."""

    der: bytes
    cert_pem: bytes
    key_pem: bytes
    private_key: ec.EllipticCurvePrivateKey
    x509_cert: x509.Certificate


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _der(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(body)) + body


def encode_signed_key(public_key: bytes, signature: bytes) -> bytes:
    """DER ``SignedKey``: SEQUENCE of two OCTET STRINGs."""
    return _der(0x30, _der(0x04, public_key) + _der(0x04, signature))


def _read_tlv(raw: bytes, pos: int, tag: int) -> tuple[bytes, int]:
    if pos + 2 > len(raw) or raw[pos] != tag:
        raise RemoteProtocolError(f"SignedKey: expected tag {tag:#x} at {pos}")
    first = raw[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(raw):
            raise RemoteProtocolError("SignedKey: bad length")
        length = int.from_bytes(raw[pos : pos + count], "big")
        if length < 0x80 or raw[pos] == 0:
            raise RemoteProtocolError("SignedKey: length not minimally encoded")
        pos += count
    end = pos + length
    if end > len(raw):
        raise RemoteProtocolError("SignedKey: truncated")
    return raw[pos:end], end


def decode_signed_key(raw: bytes) -> tuple[bytes, bytes]:
    """Decode a DER ``SignedKey`` into (public key protobuf, signature).

    Raises:
        RemoteProtocolError: anything but exactly SEQUENCE { OCTET STRING, OCTET STRING }.
    """
    if len(raw) > _MAX_EXTENSION:
        raise RemoteProtocolError("SignedKey: too large")
    body, end = _read_tlv(raw, 0, 0x30)
    if end != len(raw):
        raise RemoteProtocolError("SignedKey: bytes after the SEQUENCE")
    public_key, pos = _read_tlv(body, 0, 0x04)
    signature, pos = _read_tlv(body, pos, 0x04)
    if pos != len(body):
        raise RemoteProtocolError("SignedKey: more than two fields")
    return public_key, signature


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def make_certificate(identity: Ed25519PrivateKey, now: float) -> Certificate:
    """A fresh certificate for ``identity``, valid from an hour before ``now``."""
    key = ec.generate_private_key(ec.SECP256R1())
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    extension = encode_signed_key(
        identity.public_key.to_protobuf(), identity.sign(SIGNATURE_PREFIX + spki)
    )
    # The subject carries no meaning in libp2p; a random serial keeps certificates
    # distinct, as the spec leaves both free.
    name = x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, "peerup")])
    start = datetime.datetime.fromtimestamp(now, datetime.UTC) - _VALID_BEFORE
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + _VALID_FOR)
        .add_extension(x509.UnrecognizedExtension(EXTENSION_OID, extension), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Certificate(
        der=cert.public_bytes(serialization.Encoding.DER),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        private_key=key,
        x509_cert=cert,
    )


def _refuse(refusal: CertRefusal, detail: str = "") -> CertChecked:
    return CertChecked(None, None, refusal, detail)


def check_certificate(
    der: bytes, now: float, expected: PeerId | None = None
) -> CertChecked:
    """Check a peer's certificate; the peer it proves, or why it is refused."""
    try:
        cert = x509.load_der_x509_certificate(der)
        moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
        in_time = cert.not_valid_before_utc <= moment <= cert.not_valid_after_utc
    except (ValueError, x509.InvalidVersion) as exc:  # InvalidVersion: not a ValueError
        return _refuse(CertRefusal.NOT_X509, str(exc)[:80])
    if not in_time:
        return _refuse(CertRefusal.EXPIRED)
    try:
        cert.verify_directly_issued_by(cert)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        return _refuse(CertRefusal.BAD_SELF_SIGNATURE, type(exc).__name__)
    try:
        extension = cert.extensions.get_extension_for_oid(EXTENSION_OID)
    except x509.ExtensionNotFound:
        return _refuse(CertRefusal.NO_EXTENSION)
    except ValueError as exc:  # duplicate or unparsable extensions
        return _refuse(CertRefusal.BAD_EXTENSION, str(exc)[:80])
    value = extension.value
    if not isinstance(value, x509.UnrecognizedExtension):
        return _refuse(CertRefusal.BAD_EXTENSION)
    try:
        key_bytes, signature = decode_signed_key(value.value)
        public_key = PublicKey.from_protobuf(key_bytes)
    except RemoteProtocolError as exc:
        return _refuse(CertRefusal.BAD_EXTENSION, str(exc))
    try:
        spki = _spki(cert)
    except (ValueError, UnsupportedAlgorithm) as exc:
        return _refuse(CertRefusal.NOT_X509, str(exc)[:80])
    if not public_key.verify(signature, SIGNATURE_PREFIX + spki):
        return _refuse(CertRefusal.BAD_KEY_SIGNATURE)
    peer = PeerId.from_public_key(public_key)
    if expected is not None and peer != expected:
        return _refuse(CertRefusal.WRONG_PEER, f"got {peer}, dialed {expected}")
    return CertChecked(peer, public_key)
