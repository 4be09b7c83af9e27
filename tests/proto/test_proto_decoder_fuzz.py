"""Fuzz: every proto decoder fails only with our error types on hostile input.

Random and mutated bytes must raise RemoteProtocolError (noise may also raise a
SecurityError when a signature or identity check fails), never IndexError,
struct.error, UnicodeDecodeError, AssertionError or anything from cryptography.
"""

from __future__ import annotations

import struct

from cryptography.hazmat.primitives.asymmetric import x25519
from hypothesis import given, settings
from hypothesis import strategies as st

from peerup.core import pb
from peerup.core.errors import RemoteProtocolError, SecurityError
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.multiaddr import Multiaddr
from peerup.proto import multistream as ms
from peerup.proto import noise, yamux
from peerup.proto.identify import Identify, decode_stream

FUZZ = settings(max_examples=300, deadline=None)

ALICE = Ed25519PrivateKey.from_seed(b"\xa1" * 32)
BOB = Ed25519PrivateKey.from_seed(b"\xb0" * 32)


def xkey(seed: int) -> x25519.X25519PrivateKey:
    return x25519.X25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A valid encoding with a few bytes flipped, inserted, deleted or cut."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if op == "insert" or not data:
            data.insert(draw(st.integers(0, len(data))), draw(st.integers(0, 255)))
        elif op == "flip":
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= draw(st.integers(1, 255))
        elif op == "delete":
            del data[draw(st.integers(0, len(data) - 1))]
        else:
            del data[draw(st.integers(0, len(data) - 1)) :]
    return bytes(data)


def hostile(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=300), mutated(seeds))


# --- multistream ---------------------------------------------------------------

MS_SEEDS = [
    ms.encode_message(ms.PROTOCOL_ID) + ms.encode_message("/yamux/1.0.0") + b"data",
    ms.encode_message(ms.PROTOCOL_ID)
    + ms.encode_message("na")
    + ms.encode_message("/x"),
]


@FUZZ
@given(hostile(MS_SEEDS), st.sampled_from(list(ms.Role)))
def test_multistream_receive_data(data: bytes, role: ms.Role) -> None:
    neg = ms.MultistreamNegotiator(role, ["/yamux/1.0.0", "/x"])
    try:
        neg.receive_data(data)
    except RemoteProtocolError:
        pass


# --- noise -----------------------------------------------------------------------


def _noise_pair() -> tuple[noise.NoiseHandshake, noise.NoiseHandshake]:
    init = noise.NoiseHandshake(
        noise.HandshakeRole.INITIATOR,
        ALICE,
        muxers=("/yamux/1.0.0",),
        static_key=xkey(1),
        ephemeral_key=xkey(2),
    )
    resp = noise.NoiseHandshake(
        noise.HandshakeRole.RESPONDER,
        BOB,
        muxers=("/yamux/1.0.0",),
        static_key=xkey(3),
        ephemeral_key=xkey(4),
    )
    return init, resp


def _valid_messages() -> tuple[bytes, bytes, bytes, bytes]:
    init, resp = _noise_pair()
    msg1 = init.data_to_send()
    resp.receive_data(msg1)
    msg2 = resp.data_to_send()
    init.receive_data(msg2)
    msg3 = init.data_to_send()
    resp.receive_data(msg3)
    return msg1, msg2, msg3, init.transport().encrypt(b"transport data")


MSG1, MSG2, MSG3, FRAME = _valid_messages()


def framed(body: bytes) -> bytes:
    return struct.pack(">H", len(body)) + body


NOISE_HOSTILE = st.one_of(
    st.binary(max_size=300), st.binary(max_size=300).map(framed), mutated([MSG2, MSG3])
)


@FUZZ
@given(NOISE_HOSTILE)
def test_noise_initiator_receive_data(data: bytes) -> None:
    init, _ = _noise_pair()
    init.data_to_send()
    try:
        init.receive_data(data)
    except (RemoteProtocolError, SecurityError):
        pass


@FUZZ
@given(NOISE_HOSTILE)
def test_noise_responder_receive_data(data: bytes) -> None:
    _, resp = _noise_pair()
    try:
        resp.receive_data(MSG1)
        resp.receive_data(data)
    except (RemoteProtocolError, SecurityError):
        pass


@FUZZ
@given(st.binary(max_size=300).map(framed) | st.binary(max_size=300))
def test_noise_responder_first_message(data: bytes) -> None:
    _, resp = _noise_pair()
    try:
        resp.receive_data(data)
    except RemoteProtocolError:
        pass


def _valid_payload() -> bytes:
    static = xkey(3).public_key().public_bytes_raw()
    return noise.HandshakePayload(
        BOB.public_key.to_protobuf(),
        BOB.sign(noise.SIGNATURE_PREFIX + static),
        ("/yamux/1.0.0",),
    ).encode()


PAYLOAD = _valid_payload()
PAYLOAD_SEEDS = [
    PAYLOAD,
    PAYLOAD + pb.encode_bytes_field(4, pb.encode_bytes_field(2, b"\xff")),
]


@FUZZ
@given(hostile(PAYLOAD_SEEDS))
def test_noise_hostile_payload_inside_a_valid_handshake(payload: bytes) -> None:
    """A rogue responder speaking correct Noise with a payload of its choosing."""
    init = noise.NoiseHandshake(
        noise.HandshakeRole.INITIATOR, ALICE, static_key=xkey(1), ephemeral_key=xkey(2)
    )
    rogue = noise.XXHandshakeState(False, xkey(3), xkey(4))
    rogue.read_message(init.data_to_send()[2:])
    try:
        init.receive_data(framed(rogue.write_message(payload)))
    except (RemoteProtocolError, SecurityError):
        pass


@FUZZ
@given(hostile([FRAME, FRAME + FRAME]))
def test_noise_transport_receive_data(data: bytes) -> None:
    init, resp = _noise_pair()
    resp.receive_data(init.data_to_send())
    init.receive_data(resp.data_to_send())
    resp.receive_data(init.data_to_send())
    try:
        resp.transport().receive_data(data)
    except RemoteProtocolError:
        pass


# --- yamux -----------------------------------------------------------------------


def _yamux_wire() -> bytes:
    client = yamux.YamuxSession(True)
    a = client.open_stream()
    client.send_data(a, b"hello")
    client.close_stream(a)
    b = client.open_stream()
    client.reset_stream(b)
    client.ping(now=0.0)
    client.go_away()
    return client.data_to_send()


YAMUX_WIRE = _yamux_wire()


@FUZZ
@given(hostile([YAMUX_WIRE]), st.booleans(), st.integers(1, 50))
def test_yamux_receive_data(data: bytes, is_client: bool, chunk: int) -> None:
    session = yamux.YamuxSession(is_client)
    try:
        for pos in range(0, len(data), chunk):
            session.receive_data(data[pos : pos + chunk], now=1.0)
        session.handle_timeout(100.0)
    except RemoteProtocolError:
        pass


# --- identify ----------------------------------------------------------------------

IDENTIFY = Identify(
    public_key=ALICE.public_key.to_protobuf(),
    listen_addrs=(Multiaddr.parse("/ip4/127.0.0.1/tcp/4001"),),
    protocols=("/ipfs/id/1.0.0",),
    observed_addr=Multiaddr.parse("/ip6/::1/udp/1/quic-v1"),
    protocol_version="ipfs/0.1.0",
    agent_version="peerup",
).encode()


@FUZZ
@given(hostile([IDENTIFY]))
def test_identify_decode(data: bytes) -> None:
    try:
        Identify.decode(data)
    except RemoteProtocolError:
        pass
    try:
        decode_stream(data)
    except RemoteProtocolError:
        pass
