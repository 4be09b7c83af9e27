"""The libp2p TLS certificate (proto/libp2p_tls.py, libp2p/specs tls/tls.md): made
for a host key, checked back to the peer ID; every way a certificate can be wrong is
refused with its reason."""

from __future__ import annotations

import datetime
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from peerup.core.errors import RemoteProtocolError
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.peer_id import PeerId
from peerup.proto import libp2p_tls as tls

NOW = time.time()


def identity() -> tuple[Ed25519PrivateKey, PeerId]:
    key = Ed25519PrivateKey.generate()
    return key, PeerId.from_public_key(key.public_key)


def test_a_certificate_proves_its_host_key() -> None:
    key, peer = identity()
    cert = tls.make_certificate(key, NOW)
    checked = tls.check_certificate(cert.der, NOW, expected=peer)
    assert checked.ok and checked.peer == peer
    assert checked.public_key == key.public_key
    ext = cert.x509_cert.extensions.get_extension_for_oid(tls.EXTENSION_OID)
    assert ext.critical


def test_another_peer_than_the_one_dialed_is_refused() -> None:
    key, _ = identity()
    _, other = identity()
    checked = tls.check_certificate(tls.make_certificate(key, NOW).der, NOW, other)
    assert checked.refusal is tls.CertRefusal.WRONG_PEER


def test_outside_its_validity_it_is_refused() -> None:
    key, _ = identity()
    der = tls.make_certificate(key, NOW).der
    assert tls.check_certificate(der, NOW - 7200).refusal is tls.CertRefusal.EXPIRED
    late = NOW + 101 * 365 * 86400
    assert tls.check_certificate(der, late).refusal is tls.CertRefusal.EXPIRED


def _signed_by_other_host(extension_value: bytes | None) -> bytes:
    """A certificate whose key is fresh, carrying ``extension_value`` (or none)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, "x")])
    start = datetime.datetime.fromtimestamp(NOW - 60, datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=1))
    )
    if extension_value is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(tls.EXTENSION_OID, extension_value), critical=True
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def test_an_extension_signed_for_another_certificate_key_is_refused() -> None:
    """A host signature copied from a real certificate onto a new certificate key."""
    key, _ = identity()
    real = tls.make_certificate(key, NOW).x509_cert
    copied = real.extensions.get_extension_for_oid(tls.EXTENSION_OID).value
    assert isinstance(copied, x509.UnrecognizedExtension)
    checked = tls.check_certificate(_signed_by_other_host(copied.value), NOW)
    assert checked.refusal is tls.CertRefusal.BAD_KEY_SIGNATURE


def test_no_extension_or_a_malformed_one_is_refused() -> None:
    missing = tls.check_certificate(_signed_by_other_host(None), NOW)
    assert missing.refusal is tls.CertRefusal.NO_EXTENSION
    bad = tls.check_certificate(_signed_by_other_host(b"\x30\x03\x04\x01"), NOW)
    assert bad.refusal is tls.CertRefusal.BAD_EXTENSION
    assert tls.check_certificate(b"not a certificate", NOW).refusal is (
        tls.CertRefusal.NOT_X509
    )
    # Found by fuzzing: an X.509 version cryptography does not know raises
    # InvalidVersion, which is not a ValueError.
    key, _ = identity()
    der = bytearray(tls.make_certificate(key, NOW).der)
    at = der.index(b"\xa0\x03\x02\x01\x02")  # [0] EXPLICIT INTEGER 2 (v3)
    der[at + 4] = 45
    assert tls.check_certificate(bytes(der), NOW).refusal is tls.CertRefusal.NOT_X509


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x30\x00",
        b"\x30\x02\x04\x00",  # one field
        b"\x30\x06\x04\x00\x04\x00\x04\x00",  # three fields
        b"\x30\x81\x04\x04\x00\x04\x00",  # length not minimal
        b"\x30\x04\x04\x00\x04\x00\x00",  # bytes after the SEQUENCE
        b"\x31\x04\x04\x00\x04\x00",  # a SET, not a SEQUENCE
        b"\x30\x04\x04\x05\x04\x00",  # truncated
    ],
)
def test_signed_key_decoder_is_strict(raw: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        tls.decode_signed_key(raw)


def test_signed_key_round_trip_with_long_lengths() -> None:
    body = bytes(300)
    assert tls.decode_signed_key(tls.encode_signed_key(body, b"s" * 64)) == (
        body,
        b"s" * 64,
    )
