"""proto.noise: the libp2p Noise handshake and transport framing, in memory."""

from __future__ import annotations

import hashlib
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st

from peerup.core.errors import (
    LocalProtocolError,
    PeerIdMismatch,
    RemoteProtocolError,
    SecurityError,
)
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.peer_id import PeerId
from peerup.proto import noise
from peerup.proto.noise import HandshakeRole, NoiseHandshake, NoiseTransport

ALICE = Ed25519PrivateKey.from_seed(b"\xa1" * 32)
BOB = Ed25519PrivateKey.from_seed(b"\xb0" * 32)
MALLORY = Ed25519PrivateKey.from_seed(b"\x66" * 32)
YAMUX = "/yamux/1.0.0"
MPLEX = "/mplex/6.7.0"


def x(seed: int) -> x25519.X25519PrivateKey:
    return x25519.X25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


def handshakes(
    initiator: Ed25519PrivateKey = ALICE,
    responder: Ed25519PrivateKey = BOB,
    *,
    init_muxers: tuple[str, ...] = (),
    resp_muxers: tuple[str, ...] = (),
    expected_peer: PeerId | None = None,
) -> tuple[NoiseHandshake, NoiseHandshake]:
    """A pair with fixed static and ephemeral keys: the bytes are deterministic."""
    init = NoiseHandshake(
        HandshakeRole.INITIATOR,
        initiator,
        muxers=init_muxers,
        expected_peer=expected_peer,
        static_key=x(1),
        ephemeral_key=x(2),
    )
    resp = NoiseHandshake(
        HandshakeRole.RESPONDER,
        responder,
        muxers=resp_muxers,
        static_key=x(3),
        ephemeral_key=x(4),
    )
    return init, resp


def run(
    init: NoiseHandshake, resp: NoiseHandshake
) -> tuple[noise.HandshakeCompleted, noise.HandshakeCompleted, list[bytes]]:
    """Drive the three messages; returns both results and the wire messages."""
    msg1 = init.data_to_send()
    assert resp.receive_data(msg1) == []
    msg2 = resp.data_to_send()
    [init_done] = init.receive_data(msg2)
    msg3 = init.data_to_send()
    [resp_done] = resp.receive_data(msg3)
    return init_done, resp_done, [msg1, msg2, msg3]


def test_handshake_authenticates_both_peers() -> None:
    init_done, resp_done, _ = run(*handshakes())
    assert init_done.remote_peer == PeerId.from_public_key(BOB.public_key)
    assert resp_done.remote_peer == PeerId.from_public_key(ALICE.public_key)
    assert init_done.remote_key == BOB.public_key
    assert init_done.muxer is resp_done.muxer is None
    assert init_done.leftover == resp_done.leftover == b""


def test_roles_can_be_swapped() -> None:
    init_done, resp_done, _ = run(*handshakes(BOB, ALICE))
    assert init_done.remote_peer == PeerId.from_public_key(ALICE.public_key)
    assert resp_done.remote_peer == PeerId.from_public_key(BOB.public_key)


def test_fixed_keys_give_deterministic_bytes() -> None:
    _, _, first = run(*handshakes(init_muxers=(YAMUX,), resp_muxers=(YAMUX,)))
    _, _, second = run(*handshakes(init_muxers=(YAMUX,), resp_muxers=(YAMUX,)))
    assert first == second
    msg1, msg2, msg3 = first
    assert msg1 == b"\x00\x20" + x(2).public_key().public_bytes_raw()
    (len2,) = struct.unpack_from(">H", msg2)
    assert len2 == len(msg2) - 2
    # e (32) + encrypted s (48) + encrypted payload (payload + 16)
    assert len2 > 32 + 48 + 16
    # encrypted s (48) + encrypted payload
    assert struct.unpack_from(">H", msg3)[0] == len(msg3) - 2


def test_fixed_keys_transcript_snapshot() -> None:
    """Regression pin of our own bytes; the external check is test_noise_vectors."""
    _, _, transcript = run(*handshakes(init_muxers=(YAMUX,), resp_muxers=(YAMUX,)))
    digest = hashlib.sha256(b"".join(transcript)).hexdigest()
    assert digest == SNAPSHOT


SNAPSHOT = "fb10a5bb41d6c0b129af1882f53fda79f37b14a50205a280fba6f85a4aca199a"


def test_transport_ciphers_pair_up() -> None:
    init, resp = handshakes()
    run(init, resp)
    a, b = init.transport(), resp.transport()
    assert b.receive_data(a.encrypt(b"ping")) == b"ping"
    assert a.receive_data(b.encrypt(b"pong")) == b"pong"
    assert b.receive_data(a.encrypt(b"")) == b""


def test_transport_before_completion_is_local_error() -> None:
    init, _ = handshakes()
    with pytest.raises(LocalProtocolError):
        init.transport()


def test_receive_after_completion_is_local_error() -> None:
    init, resp = handshakes()
    run(init, resp)
    with pytest.raises(LocalProtocolError):
        resp.receive_data(b"\x00\x00")


def test_early_muxer_is_initiators_first_choice_the_responder_supports() -> None:
    init_done, resp_done, _ = run(
        *handshakes(init_muxers=("/a/1", YAMUX, MPLEX), resp_muxers=(MPLEX, YAMUX))
    )
    assert init_done.muxer == resp_done.muxer == YAMUX


def test_no_common_muxer_is_a_security_error_on_both_sides() -> None:
    init, resp = handshakes(init_muxers=(YAMUX,), resp_muxers=(MPLEX,))
    resp.receive_data(init.data_to_send())
    with pytest.raises(SecurityError, match="muxer"):
        init.receive_data(resp.data_to_send())
    with pytest.raises(SecurityError, match="muxer"):
        resp.receive_data(init.data_to_send())


@pytest.mark.parametrize(
    ("init_muxers", "resp_muxers"),
    [((YAMUX,), ()), ((), (YAMUX,))],
    ids=["resp-none", "init-none"],
)
def test_one_side_without_muxers_leaves_muxer_to_multistream(
    init_muxers: tuple[str, ...], resp_muxers: tuple[str, ...]
) -> None:
    init_done, resp_done, _ = run(
        *handshakes(init_muxers=init_muxers, resp_muxers=resp_muxers)
    )
    assert init_done.muxer is None and resp_done.muxer is None


def test_expected_peer_matches() -> None:
    bob = PeerId.from_public_key(BOB.public_key)
    init_done, _, _ = run(*handshakes(expected_peer=bob))
    assert init_done.remote_peer == bob


def test_expected_peer_mismatch_raises() -> None:
    init, resp = handshakes(expected_peer=PeerId.from_public_key(MALLORY.public_key))
    resp.receive_data(init.data_to_send())
    with pytest.raises(PeerIdMismatch):
        init.receive_data(resp.data_to_send())


def test_responder_expected_peer_mismatch_raises() -> None:
    init = NoiseHandshake(HandshakeRole.INITIATOR, ALICE)
    resp = NoiseHandshake(
        HandshakeRole.RESPONDER,
        BOB,
        expected_peer=PeerId.from_public_key(MALLORY.public_key),
    )
    resp.receive_data(init.data_to_send())
    init.receive_data(resp.data_to_send())
    with pytest.raises(PeerIdMismatch):
        resp.receive_data(init.data_to_send())


def _tamper_each_byte(message: bytes) -> list[bytes]:
    # Leave the 2-byte length alone: changing it only makes the reader wait.
    return [
        message[:i] + bytes([message[i] ^ 0x01]) + message[i + 1 :]
        for i in range(2, len(message))
    ]


def test_tampered_second_message_is_refused() -> None:
    _, _, (msg1, msg2, _) = run(*handshakes())
    for bad in _tamper_each_byte(msg2):
        init, resp = handshakes()
        resp.receive_data(init.data_to_send())
        resp.data_to_send()
        with pytest.raises((RemoteProtocolError, SecurityError)):
            init.receive_data(bad)


def test_tampered_third_message_is_refused() -> None:
    _, _, (_, _, msg3) = run(*handshakes())
    for bad in _tamper_each_byte(msg3):
        init, resp = handshakes()
        resp.receive_data(init.data_to_send())
        init.receive_data(resp.data_to_send())
        init.data_to_send()
        with pytest.raises((RemoteProtocolError, SecurityError)):
            resp.receive_data(bad)


def test_tampered_first_message_breaks_the_second() -> None:
    _, _, (msg1, _, _) = run(*handshakes())
    for bad in _tamper_each_byte(msg1):
        init, resp = handshakes()
        init.data_to_send()
        try:
            resp.receive_data(bad)
        except RemoteProtocolError:
            continue  # a low-order point is refused at once
        with pytest.raises((RemoteProtocolError, SecurityError)):
            init.receive_data(resp.data_to_send())


def test_short_first_message_is_refused() -> None:
    resp = NoiseHandshake(HandshakeRole.RESPONDER, BOB)
    with pytest.raises(RemoteProtocolError, match="too short"):
        resp.receive_data(b"\x00\x1f" + b"\x09" * 31)


def test_all_zero_ephemeral_key_is_refused() -> None:
    init = NoiseHandshake(HandshakeRole.INITIATOR, ALICE)
    with pytest.raises(RemoteProtocolError):
        init.receive_data(b"\x00\x70" + b"\x00" * 0x70)


def test_handshake_survives_any_chunking() -> None:
    _, _, (msg1, msg2, msg3) = run(*handshakes())
    for cut in range(len(msg2) + 1):
        init, resp = handshakes()
        resp.receive_data(init.data_to_send())
        resp.data_to_send()
        events = init.receive_data(msg2[:cut])
        if cut < len(msg2):
            assert events == []
            events = init.receive_data(msg2[cut:])
        [done] = events
        assert done.remote_peer == PeerId.from_public_key(BOB.public_key)


def test_bytes_after_last_message_are_leftover_transport_frames() -> None:
    init, resp = handshakes()
    resp.receive_data(init.data_to_send())
    init.receive_data(resp.data_to_send())
    wire = init.data_to_send() + init.transport().encrypt(b"first frame")
    [done] = resp.receive_data(wire)
    assert resp.transport().receive_data(done.leftover) == b"first frame"


def test_responder_leftover_after_second_message() -> None:
    init, resp = handshakes()
    resp.receive_data(init.data_to_send())
    wire = resp.data_to_send()
    [done] = init.receive_data(wire + b"\x00")
    assert done.leftover == b"\x00"


# --- transport ---------------------------------------------------------------


def transports() -> tuple[NoiseTransport, NoiseTransport]:
    init, resp = handshakes()
    run(init, resp)
    return init.transport(), resp.transport()


def _frames(wire: bytes) -> list[int]:
    lengths = []
    pos = 0
    while pos < len(wire):
        (n,) = struct.unpack_from(">H", wire, pos)
        lengths.append(n)
        pos += 2 + n
    assert pos == len(wire)
    return lengths


def test_large_write_is_split_into_max_size_frames() -> None:
    a, b = transports()
    data = bytes(range(256)) * 600  # 153600 bytes
    wire = a.encrypt(data)
    assert _frames(wire) == [65535, 65535, len(data) - 2 * 65519 + 16]
    assert b.receive_data(wire) == data


def test_exactly_max_plaintext_is_one_frame() -> None:
    a, b = transports()
    wire = a.encrypt(b"\x01" * noise.MAX_PLAINTEXT_BYTES)
    assert _frames(wire) == [noise.MAX_FRAME_BYTES]
    assert _frames(a.encrypt(b"\x01" * (noise.MAX_PLAINTEXT_BYTES + 1))) == [65535, 17]


def test_encrypt_accepts_memoryview_and_bytearray() -> None:
    a, b = transports()
    assert b.receive_data(a.encrypt(memoryview(b"mv"))) == b"mv"
    assert b.receive_data(a.encrypt(bytearray(b"ba"))) == b"ba"


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=400), min_size=1, max_size=8), st.data()
)
def test_chunked_delivery_at_arbitrary_offsets(
    sizes: list[int], data: st.DataObject
) -> None:
    a, b = transports()
    plain = b"".join(bytes([i % 256]) * n for i, n in enumerate(sizes))
    wire = b"".join(a.encrypt(bytes([i % 256]) * n) for i, n in enumerate(sizes))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=10)))
    got = b""
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        got += b.receive_data(wire[start:end])
    assert got == plain


def test_every_split_of_two_frames() -> None:
    a0, _ = transports()
    wire = a0.encrypt(b"hello") + a0.encrypt(b"world")
    for cut in range(len(wire) + 1):
        _, b = transports()
        assert b.receive_data(wire[:cut]) + b.receive_data(wire[cut:]) == b"helloworld"


def test_tampered_frame_is_refused() -> None:
    a0, _ = transports()
    wire = a0.encrypt(b"secret")
    for i in range(2, len(wire)):
        _, b = transports()
        bad = wire[:i] + bytes([wire[i] ^ 0x80]) + wire[i + 1 :]
        with pytest.raises(RemoteProtocolError):
            b.receive_data(bad)


def test_replayed_frame_is_refused() -> None:
    a, b = transports()
    frame = a.encrypt(b"once")
    assert b.receive_data(frame) == b"once"
    with pytest.raises(RemoteProtocolError):
        b.receive_data(frame)


def test_frame_shorter_than_tag_is_refused() -> None:
    _, b = transports()
    with pytest.raises(RemoteProtocolError, match="tag"):
        b.receive_data(b"\x00\x05hello")
    _, b = transports()
    with pytest.raises(RemoteProtocolError):
        b.receive_data(b"\x00\x00")


def test_payload_codec_round_trip() -> None:
    payload = noise.HandshakePayload(b"key", b"sig", (YAMUX, MPLEX))
    assert noise.HandshakePayload.decode(payload.encode()) == payload
    bare = noise.HandshakePayload(b"key", b"sig")
    assert bare.encode() == b"\x0a\x03key\x12\x03sig"
    assert noise.HandshakePayload.decode(bare.encode()) == bare


@pytest.mark.parametrize(
    "raw", [b"", b"\x0a\x03key", b"\x12\x03sig", b"\x0a\x00\x12\x03sig"]
)
def test_payload_without_key_or_signature_is_refused(raw: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        noise.HandshakePayload.decode(raw)


@pytest.mark.parametrize("size", [0, 1, 1024, 1025, 60_000])
def test_frames_of_any_size_are_length_then_chacha20poly1305_with_counter_nonces(
    size: int,
) -> None:
    """Small frames take a short path on both sides; the bytes are the same."""
    key = bytes(range(32))
    sender = NoiseTransport(noise.CipherState(key), noise.CipherState(key))
    receiver = NoiseTransport(noise.CipherState(key), noise.CipherState(key))
    aead = ChaCha20Poly1305(key)
    for n in range(3):
        plain = bytes([n]) * size
        wire = bytes(sender.encrypt_chunks([plain]))
        nonce = b"\0" * 4 + n.to_bytes(8, "little")
        expected = aead.encrypt(nonce, plain, None)
        assert wire == struct.pack(">H", len(expected)) + expected
        assert receiver.receive_frames(wire) == [plain]
