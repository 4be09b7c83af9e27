"""proto.noise.XXHandshakeState against the cacophony Noise_XX_25519_ChaChaPoly_SHA256
vector (tests/vectors/noise_xx_25519_chachapoly_sha256.json), message by message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519

from peerup.core.errors import LocalProtocolError
from peerup.proto.noise import PROTOCOL_NAME, XXHandshakeState

VECTOR: dict[str, Any] = json.loads(
    (
        Path(__file__).parents[1] / "vectors" / "noise_xx_25519_chachapoly_sha256.json"
    ).read_text()
)
MESSAGES = [
    (bytes.fromhex(m["payload"]), bytes.fromhex(m["ciphertext"]))
    for m in VECTOR["messages"]
]


def _key(name: str) -> x25519.X25519PrivateKey:
    return x25519.X25519PrivateKey.from_private_bytes(bytes.fromhex(VECTOR[name]))


def _states() -> tuple[XXHandshakeState, XXHandshakeState]:
    init = XXHandshakeState(
        True,
        _key("init_static"),
        _key("init_ephemeral"),
        bytes.fromhex(VECTOR["init_prologue"]),
    )
    resp = XXHandshakeState(
        False,
        _key("resp_static"),
        _key("resp_ephemeral"),
        bytes.fromhex(VECTOR["resp_prologue"]),
    )
    return init, resp


def test_vector_is_for_our_protocol() -> None:
    assert VECTOR["protocol_name"].encode() == PROTOCOL_NAME


@pytest.mark.parametrize("index", range(3))
def test_handshake_message_matches_vector(index: int) -> None:
    init, resp = _states()
    for i, (payload, ciphertext) in enumerate(MESSAGES[: index + 1]):
        writer, reader = (init, resp) if i % 2 == 0 else (resp, init)
        written = writer.write_message(payload)
        if i == index:
            assert written.hex() == ciphertext.hex()
        assert reader.read_message(ciphertext) == payload


def test_handshake_hash_matches_vector() -> None:
    init, resp = _states()
    for i, (payload, _) in enumerate(MESSAGES[:3]):
        writer, reader = (init, resp) if i % 2 == 0 else (resp, init)
        reader.read_message(writer.write_message(payload))
    assert init.h.hex() == VECTOR["handshake_hash"]
    assert resp.h.hex() == VECTOR["handshake_hash"]
    assert init.rs is not None and resp.rs is not None


def test_transport_messages_after_split_match_vector() -> None:
    init, resp = _states()
    for i, (payload, _) in enumerate(MESSAGES[:3]):
        writer, reader = (init, resp) if i % 2 == 0 else (resp, init)
        reader.read_message(writer.write_message(payload))
    i_to_r_send, r_to_i_send = init.split()
    i_to_r_recv, r_to_i_recv = resp.split()
    for i, (payload, ciphertext) in enumerate(MESSAGES[3:], start=3):
        # cacophony alternates senders after the handshake too: 3 is the responder's.
        send, recv = (
            (i_to_r_send, i_to_r_recv) if i % 2 == 0 else (r_to_i_send, r_to_i_recv)
        )
        assert send.encrypt(b"", payload).hex() == ciphertext.hex()
        assert recv.decrypt(b"", ciphertext) == payload


def test_responder_reads_vector_ciphertexts_without_writing_first() -> None:
    _, resp = _states()
    assert resp.read_message(MESSAGES[0][1]) == MESSAGES[0][0]


def test_out_of_turn_use_is_a_local_error() -> None:
    init, resp = _states()
    with pytest.raises(LocalProtocolError):
        init.read_message(MESSAGES[1][1])
    with pytest.raises(LocalProtocolError):
        resp.write_message(b"")
