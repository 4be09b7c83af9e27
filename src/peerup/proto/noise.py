"""Noise_XX_25519_ChaChaPoly_SHA256 with the libp2p handshake payload and framing.

Spec: the Noise Protocol Framework rev 34 (sections 5 and 7.5, pattern XX) and
libp2p/specs noise/README.md. Message flow::

    -> e                                  (empty payload)
    <- e, ee, s, es   + payload(responder identity key, signature, muxers)
    -> s, se          + payload(initiator identity key, signature, muxers)

The payload signs ``"noise-libp2p-static-key:" + static public key`` with the identity
key, which binds the Noise static key to the PeerId. Early muxer negotiation
(connections/inlined-muxer-negotiation.md): when both payloads list stream muxers, the
first in the initiator's list that the responder supports is used and the multistream
round for the muxer is skipped. Every handshake and transport message is prefixed by a
2-byte big-endian length; a frame holds at most 65535 bytes (65519 of plaintext).
Not supported: other Noise patterns, the prologue (libp2p uses none), WebTransport
certhashes (ignored on read), rekeying (libp2p does not use it; a session ends before
2^64 nonces).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from peerup.core import pb
from peerup.core.errors import (
    LocalProtocolError,
    PeerIdMismatch,
    RemoteProtocolError,
    SecurityError,
)
from peerup.core.keys import Ed25519PrivateKey, PublicKey
from peerup.core.peer_id import PeerId

PROTOCOL_ID: Final = "/noise"
PROTOCOL_NAME: Final = b"Noise_XX_25519_ChaChaPoly_SHA256"
SIGNATURE_PREFIX: Final = b"noise-libp2p-static-key:"
MAX_FRAME_BYTES: Final = 65535
TAG_BYTES: Final = 16
MAX_PLAINTEXT_BYTES: Final = MAX_FRAME_BYTES - TAG_BYTES
DH_BYTES: Final = 32
_LEN = struct.Struct(">H")


def _raw(pub: x25519.X25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _nonce(n: int) -> bytes:
    return b"\0\0\0\0" + n.to_bytes(8, "little")


class CipherState:
    """Noise CipherState: a ChaCha20-Poly1305 key and a counting nonce."""

    __slots__ = ("_aead", "n")

    def __init__(self, key: bytes | None = None) -> None:
        self._aead = ChaCha20Poly1305(key) if key is not None else None
        self.n = 0

    @property
    def has_key(self) -> bool:
        return self._aead is not None

    def encrypt(self, ad: bytes, plaintext: bytes | memoryview) -> bytes:
        if self._aead is None:
            return bytes(plaintext)
        out = self._aead.encrypt(_nonce(self.n), plaintext, ad or None)
        self.n += 1
        return out

    def encrypt_into(self, plaintext: bytes | memoryview, out: memoryview) -> None:
        """Encrypt with no associated data straight into ``out`` (len + 16 bytes)."""
        assert self._aead is not None
        self._aead.encrypt_into(_nonce(self.n), plaintext, None, out)
        self.n += 1

    def decrypt(self, ad: bytes, ciphertext: bytes | memoryview) -> bytes:
        if self._aead is None:
            return bytes(ciphertext)
        try:
            out = self._aead.decrypt(_nonce(self.n), ciphertext, ad or None)
        except InvalidTag:
            raise RemoteProtocolError("noise: message authentication failed") from None
        self.n += 1
        return out


def _hkdf(chaining_key: bytes, ikm: bytes, outputs: int) -> list[bytes]:
    temp = hmac.digest(chaining_key, ikm, "sha256")
    out1 = hmac.digest(temp, b"\x01", "sha256")
    if outputs == 2:
        return [out1, hmac.digest(temp, out1 + b"\x02", "sha256")]
    out2 = hmac.digest(temp, out1 + b"\x02", "sha256")
    return [out1, out2, hmac.digest(temp, out2 + b"\x03", "sha256")]


class XXHandshakeState:
    """The bare Noise XX handshake (no libp2p payload rules), for vectors and reuse.

    Args:
        initiator: which side this is.
        static: our static X25519 key.
        ephemeral: our ephemeral key; fixed only in tests, fresh otherwise.
        prologue: Noise prologue (empty for libp2p).
    """

    def __init__(
        self,
        initiator: bool,
        static: x25519.X25519PrivateKey,
        ephemeral: x25519.X25519PrivateKey | None = None,
        prologue: bytes = b"",
    ) -> None:
        self.initiator = initiator
        self.s = static
        self.e = ephemeral
        self.re: bytes | None = None
        self.rs: bytes | None = None
        self.h = PROTOCOL_NAME  # exactly HASHLEN bytes, so used as is
        self.ck = self.h
        self.cipher = CipherState()
        self.step = 0
        self._mix_hash(prologue)

    def _mix_hash(self, data: bytes) -> None:
        self.h = hashlib.sha256(self.h + data).digest()

    def _mix_key(self, ikm: bytes) -> None:
        self.ck, key = _hkdf(self.ck, ikm, 2)
        self.cipher = CipherState(key)

    def _encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ct = self.cipher.encrypt(self.h, plaintext)
        self._mix_hash(ct)
        return ct

    def _decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        pt = self.cipher.decrypt(self.h, ciphertext)
        self._mix_hash(ciphertext)
        return pt

    def _dh(self, ours: x25519.X25519PrivateKey, theirs: bytes) -> bytes:
        try:
            return ours.exchange(x25519.X25519PublicKey.from_public_bytes(theirs))
        except ValueError:
            raise RemoteProtocolError("noise: invalid X25519 public key") from None

    @property
    def is_my_turn(self) -> bool:
        return (self.step % 2 == 0) == self.initiator

    def write_message(self, payload: bytes) -> bytes:
        """Produce the next handshake message carrying ``payload``."""
        if not self.is_my_turn or self.step > 2:
            raise LocalProtocolError("noise: not our turn to write")
        out = bytearray()
        assert self.re is not None or self.step == 0
        if self.step == 0:
            self.e = self.e or x25519.X25519PrivateKey.generate()
            epub = _raw(self.e.public_key())
            out += epub
            self._mix_hash(epub)
        elif self.step == 1:
            assert self.re is not None
            self.e = self.e or x25519.X25519PrivateKey.generate()
            epub = _raw(self.e.public_key())
            out += epub
            self._mix_hash(epub)
            self._mix_key(self._dh(self.e, self.re))  # ee
            out += self._encrypt_and_hash(_raw(self.s.public_key()))
            self._mix_key(self._dh(self.s, self.re))  # es (responder side)
        else:
            assert self.re is not None
            out += self._encrypt_and_hash(_raw(self.s.public_key()))
            self._mix_key(self._dh(self.s, self.re))  # se (initiator side)
        out += self._encrypt_and_hash(payload)
        self.step += 1
        return bytes(out)

    def read_message(self, message: bytes) -> bytes:
        """Consume the peer's next handshake message; returns its payload.

        Raises:
            RemoteProtocolError: short message, bad key, or failed decryption.
        """
        if self.is_my_turn or self.step > 2:
            raise LocalProtocolError("noise: not our turn to read")
        pos = 0
        if self.step in (0, 1):
            if len(message) < DH_BYTES:
                raise RemoteProtocolError("noise: handshake message too short")
            self.re = message[:DH_BYTES]
            self._mix_hash(self.re)
            pos = DH_BYTES
        if self.step == 1:
            assert self.e is not None and self.re is not None
            self._mix_key(self._dh(self.e, self.re))  # ee
            if len(message) < pos + DH_BYTES + TAG_BYTES:
                raise RemoteProtocolError("noise: handshake message too short")
            self.rs = self._decrypt_and_hash(message[pos : pos + DH_BYTES + TAG_BYTES])
            pos += DH_BYTES + TAG_BYTES
            self._mix_key(self._dh(self.e, self.rs))  # es (initiator side)
        elif self.step == 2:
            assert self.e is not None
            if len(message) < DH_BYTES + TAG_BYTES:
                raise RemoteProtocolError("noise: handshake message too short")
            self.rs = self._decrypt_and_hash(message[: DH_BYTES + TAG_BYTES])
            pos = DH_BYTES + TAG_BYTES
            self._mix_key(self._dh(self.e, self.rs))  # se (responder side)
        payload = self._decrypt_and_hash(message[pos:])
        self.step += 1
        return payload

    def split(self) -> tuple[CipherState, CipherState]:
        """``(initiator→responder, responder→initiator)`` cipher states."""
        k1, k2 = _hkdf(self.ck, b"", 2)
        return CipherState(k1), CipherState(k2)


@dataclass(frozen=True, slots=True)
class HandshakePayload:
    """The libp2p Noise handshake payload."""

    identity_key: bytes
    identity_sig: bytes
    stream_muxers: tuple[str, ...] = ()

    def encode(self) -> bytes:
        ext = b"".join(pb.encode_str_field(2, m) for m in self.stream_muxers)
        parts = [
            pb.encode_bytes_field(1, self.identity_key),
            pb.encode_bytes_field(2, self.identity_sig),
        ]
        if ext:
            parts.append(pb.encode_bytes_field(4, ext))
        return b"".join(parts)

    @classmethod
    def decode(cls, raw: bytes) -> HandshakePayload:
        msg = pb.Reader(raw, "NoiseHandshakePayload")
        key = msg.bytes_(1)
        sig = msg.bytes_(2)
        if not key or not sig:
            raise RemoteProtocolError("noise payload without identity key or signature")
        ext = msg.bytes_(4)
        muxers = tuple(pb.Reader(ext, "NoiseExtensions").repeated_str(2)) if ext else ()
        return cls(key, sig, muxers)


class HandshakeRole(enum.Enum):
    INITIATOR = "initiator"
    RESPONDER = "responder"


@dataclass(frozen=True, slots=True)
class HandshakeCompleted:
    """The peer is authenticated.

    Attributes:
        remote_peer: the proven PeerId.
        muxer: the early-negotiated muxer, or None to negotiate with multistream.
        leftover: bytes received after the last handshake message (transport frames).
    """

    remote_peer: PeerId
    remote_key: PublicKey
    muxer: str | None
    leftover: bytes


class NoiseHandshake:
    """The libp2p Noise handshake, sans-IO.

    Args:
        role: who sends first.
        identity: our libp2p identity key, which signs the Noise static key.
        muxers: stream muxers to offer in the handshake's early data (in preference
            order); empty to leave muxer choice to multistream.
        expected_peer: for a dial to ``/p2p/X``: refuse any other peer.
        static_key, ephemeral_key: fixed keys for tests; fresh when None.
    """

    def __init__(
        self,
        role: HandshakeRole,
        identity: Ed25519PrivateKey,
        *,
        muxers: Sequence[str] = (),
        expected_peer: PeerId | None = None,
        static_key: x25519.X25519PrivateKey | None = None,
        ephemeral_key: x25519.X25519PrivateKey | None = None,
    ) -> None:
        self.role = role
        self.identity = identity
        self.muxers = tuple(muxers)
        self.expected_peer = expected_peer
        static = static_key or x25519.X25519PrivateKey.generate()
        self._state = XXHandshakeState(
            role is HandshakeRole.INITIATOR, static, ephemeral_key
        )
        self._payload = HandshakePayload(
            identity.public_key.to_protobuf(),
            identity.sign(SIGNATURE_PREFIX + _raw(static.public_key())),
            self.muxers,
        ).encode()
        self._buf = bytearray()
        self._out = bytearray()
        self._remote: HandshakePayload | None = None
        self.result: HandshakeCompleted | None = None
        self._transport: NoiseTransport | None = None
        if role is HandshakeRole.INITIATOR:
            self._send(self._state.write_message(b""))

    def _send(self, message: bytes) -> None:
        self._out += _LEN.pack(len(message)) + message

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def transport(self) -> NoiseTransport:
        """The transport cipher pair; only after completion."""
        if self._transport is None:
            raise LocalProtocolError("noise: handshake not complete")
        return self._transport

    def receive_data(self, data: bytes) -> list[HandshakeCompleted]:
        """Feed bytes; returns ``[HandshakeCompleted]`` once the peer is proven.

        Raises:
            RemoteProtocolError: malformed or undecryptable messages.
            SecurityError: bad signature, or not the expected peer.
        """
        if self.result is not None:
            raise LocalProtocolError("noise: handshake already complete")
        self._buf += data
        while len(self._buf) >= 2:
            (length,) = _LEN.unpack_from(self._buf)
            if len(self._buf) < 2 + length:
                break
            message = bytes(self._buf[2 : 2 + length])
            del self._buf[: 2 + length]
            done = self._on_message(message)
            if done is not None:
                return [done]
        return []

    def _on_message(self, message: bytes) -> HandshakeCompleted | None:
        payload = self._state.read_message(message)
        step = self._state.step
        initiator = self.role is HandshakeRole.INITIATOR
        if initiator and step == 2:
            self._remote = self._verify(payload)
            self._send(self._state.write_message(self._payload))
            return self._complete()
        if not initiator and step == 1:
            self._send(self._state.write_message(self._payload))
        elif not initiator and step == 3:
            self._remote = self._verify(payload)
            return self._complete()
        return None

    def _verify(self, raw: bytes) -> HandshakePayload:
        payload = HandshakePayload.decode(raw)
        key = PublicKey.from_protobuf(payload.identity_key)
        assert self._state.rs is not None
        if not key.verify(payload.identity_sig, SIGNATURE_PREFIX + self._state.rs):
            raise SecurityError("noise: identity signature does not verify")
        peer = PeerId.from_public_key(key)
        if self.expected_peer is not None and peer != self.expected_peer:
            raise PeerIdMismatch(
                f"peer ID mismatch: dialed {self.expected_peer}, reached {peer}"
            )
        return payload

    def _complete(self) -> HandshakeCompleted:
        assert self._remote is not None
        key = PublicKey.from_protobuf(self._remote.identity_key)
        ours, theirs = self.muxers, self._remote.stream_muxers
        initiator = self.role is HandshakeRole.INITIATOR
        muxer: str | None = None
        if ours and theirs:
            init_list, resp_list = (ours, theirs) if initiator else (theirs, ours)
            common = [m for m in init_list if m in resp_list]
            if not common:
                raise SecurityError("noise: no stream muxer in common")
            muxer = common[0]
        c1, c2 = self._state.split()
        send, recv = (c1, c2) if initiator else (c2, c1)
        self._transport = NoiseTransport(send, recv)
        leftover = bytes(self._buf)
        self._buf.clear()
        self.result = HandshakeCompleted(
            PeerId.from_public_key(key), key, muxer, leftover
        )
        return self.result


_SMALL_FRAME_BYTES: Final = 1024
"""Up to this size a frame is encrypted or decrypted by the short path (one copy of
a small buffer is cheaper than the bookkeeping that avoids it)."""


class NoiseTransport:
    """Post-handshake framing: encrypt outgoing bytes, decrypt incoming frames.

    The data path avoids copies: outgoing chunks are encrypted in place into one
    buffer (``encrypt_into``), incoming frames are decrypted from memoryview slices.
    """

    __slots__ = ("_send", "_recv", "_buf")

    def __init__(self, send: CipherState, recv: CipherState) -> None:
        self._send = send
        self._recv = recv
        self._buf = bytearray()

    def encrypt(self, data: bytes | bytearray | memoryview) -> bytes:
        """Frame and encrypt ``data`` (split into frames of at most 65519 bytes)."""
        view = memoryview(data)
        return bytes(
            self.encrypt_chunks(
                [
                    view[i : i + MAX_PLAINTEXT_BYTES]
                    for i in range(0, len(view), MAX_PLAINTEXT_BYTES)
                ]
            )
        )

    def encrypt_chunks(
        self, chunks: list[bytes] | list[memoryview] | list[bytes | memoryview]
    ) -> bytes | bytearray:
        """Encrypt each chunk (at most 65519 bytes) as one frame, all into one buffer."""
        if len(chunks) == 1 and len(chunks[0]) <= _SMALL_FRAME_BYTES:
            # One small frame (a new stream, a reply, a FIN): fewer steps than below.
            ciphertext = self._send.encrypt(b"", chunks[0])
            return _LEN.pack(len(ciphertext)) + ciphertext
        total = 0
        for chunk in chunks:
            total += len(chunk)
        total += len(chunks) * (2 + TAG_BYTES)
        out = bytearray(total)
        view = memoryview(out)
        pos = 0
        send = self._send
        for chunk in chunks:
            size = len(chunk) + TAG_BYTES
            _LEN.pack_into(out, pos, size)
            send.encrypt_into(chunk, view[pos + 2 : pos + 2 + size])
            pos += 2 + size
        view.release()
        return out

    def receive_frames(self, data: bytes) -> list[bytes]:
        """Decrypt every complete frame received so far; one plaintext per frame.

        Raises:
            RemoteProtocolError: a frame failed authentication (connection is dead).
        """
        buf = self._buf
        if buf:
            buf += data
            src: bytes | bytearray = buf
        else:
            if len(data) <= _SMALL_FRAME_BYTES and len(data) >= 2 + TAG_BYTES:
                (length,) = _LEN.unpack_from(data)
                if length == len(data) - 2:
                    # Exactly one small frame (the common case for short messages).
                    return [self._recv.decrypt(b"", data[2:])]
            src = data
        out: list[bytes] = []
        view = memoryview(src)
        pos = 0
        end = len(src)
        try:
            while end - pos >= 2:
                (length,) = _LEN.unpack_from(src, pos)
                if end - pos - 2 < length:
                    break
                if length < TAG_BYTES:
                    raise RemoteProtocolError("noise: frame shorter than its tag")
                out.append(self._recv.decrypt(b"", view[pos + 2 : pos + 2 + length]))
                pos += 2 + length
        finally:
            view.release()
        if src is buf:
            del buf[:pos]
        elif pos < end:
            buf += data[pos:]
        return out

    def receive_data(self, data: bytes) -> bytes:
        """Like :meth:`receive_frames`, joined into one bytes object."""
        frames = self.receive_frames(data)
        return frames[0] if len(frames) == 1 else b"".join(frames)
