"""The fuzz targets: one function per decoder, fed bytes, silent unless it finds a bug.

Each target takes arbitrary bytes, as a peer could send them, and runs one decoder or
protocol object over them. Bad input must end in a returned value or one of the errors
the decoder documents (``RemoteProtocolError``; ``SecurityError`` where a signature or
identity is checked; ``ValueError`` for peer IDs from bytes and for text parsers), as
tests/core/test_core_decoder_fuzz.py and tests/proto/test_proto_decoder_fuzz.py require.
Anything else escaping is a finding. So is a broken invariant, checked with a plain
``raise AssertionError`` (``assert`` would vanish under ``-O``): a value that does not
survive re-encoding, or a state machine that answers differently when the same bytes
arrive in other chunks (STYLE.md 3.1: "the same events however the bytes are chunked").

The targets know nothing of atheris: fuzz/fuzz.py runs one under libFuzzer, and
tests/fuzz/test_fuzz_targets.py replays the corpus through them in plain Python.
:func:`seeds` gives each target's valid inputs, made with our own encoders.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import x25519

from peerup.core import pb, varint
from peerup.core.errors import LocalProtocolError, RemoteProtocolError, SecurityError
from peerup.core.keys import Ed25519PrivateKey, KeyType, PublicKey
from peerup.core.multiaddr import Multiaddr
from peerup.core.peer_id import PeerId
from peerup.proto import (
    dcutr,
    identify,
    invite_code,
    libp2p_tls,
    natpmp,
    noise,
    pairing,
    pcp,
    ping,
    portmap,
    relay_delegate,
    relay_group,
    relay_v2,
    yamux,
)
from peerup.proto import multistream as ms
from peerup.proto.envelope import Envelope


@dataclass(frozen=True)
class Target:
    """One fuzz target: ``run`` raises only on a finding; ``seeds`` are valid inputs."""

    name: str
    run: Callable[[bytes], None]
    seeds: Callable[[], list[bytes]]
    doc: str


TARGETS: dict[str, Target] = {}


def target(
    seeds: Callable[[], list[bytes]],
) -> Callable[[Callable[[bytes], None]], Callable[[bytes], None]]:
    """Register a target under its function name without the ``fuzz_`` prefix."""

    def register(run: Callable[[bytes], None]) -> Callable[[bytes], None]:
        name = run.__name__.removeprefix("fuzz_")
        doc = (run.__doc__ or "").strip().splitlines()[0]
        TARGETS[name] = Target(name, run, seeds, doc)
        return run

    return register


def check(condition: bool, message: str) -> None:
    """An invariant of the decoder under test (kept under ``python -O``)."""
    if not condition:
        raise AssertionError(message)


def chunks(data: bytes) -> Iterator[bytes]:
    """``data`` cut into pieces of 1, 2, 3, 5, 8, ... bytes, repeating: every small
    split position is met without feeding a byte at a time."""
    sizes = (1, 2, 3, 5, 8, 13, 21, 34)
    pos = 0
    i = 0
    while pos < len(data):
        size = sizes[i % len(sizes)]
        yield data[pos : pos + size]
        pos += size
        i += 1


# --- fixed identities, so every run is deterministic -----------------------------

ALICE = Ed25519PrivateKey.from_seed(b"\xa1" * 32)
BOB = Ed25519PrivateKey.from_seed(b"\xb0" * 32)
ALICE_ID = PeerId.from_public_key(ALICE.public_key)
BOB_ID = PeerId.from_public_key(BOB.public_key)
MUXERS = ("/yamux/1.0.0", "/mplex/6.7.0")


def xkey(seed: int) -> x25519.X25519PrivateKey:
    return x25519.X25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


def framed(message: bytes) -> bytes:
    """A Noise handshake or transport frame: 2-byte big-endian length + message."""
    return struct.pack(">H", len(message)) + message


def addrs() -> list[Multiaddr]:
    return [
        Multiaddr.parse(
            f"/ip4/10.0.0.1/tcp/4001/p2p/{BOB_ID}/p2p-circuit/p2p/{ALICE_ID}"
        ),
        Multiaddr.parse("/ip6/::1/udp/443/quic-v1/webtransport/certhash/uEiAkH5"),
        Multiaddr.parse("/dns4/example.com/tcp/443/wss"),
        Multiaddr.parse("/ip6zone/eth0/ip6/fe80::1/tcp/1/tls/ws"),
        Multiaddr.parse("/dnsaddr/bootstrap.libp2p.io/p2p/" + str(ALICE_ID)),
        Multiaddr.parse("/memory/42"),
        Multiaddr.parse("/unix/run/peerup.sock"),
    ]


# --- core ------------------------------------------------------------------------


def _varint_seeds() -> list[bytes]:
    values = (0, 1, 127, 128, 300, 16383, 16384, 1 << 32, (1 << 63) - 1)
    return [b"\x00" + varint.encode(v) for v in values] + [
        b"\x02\xff\xff" + varint.encode(1 << 40) + b"rest",
        b"\x00\x80\x00",
        b"\x00" + b"\xff" * 9 + b"\x01",
    ]


@target(_varint_seeds)
def fuzz_varint(data: bytes) -> None:
    """core.varint decode/try_decode/try_read_prefixed; the first byte picks the offset."""
    if not data:
        return
    offset, rest = data[0] % 16, data[1:]
    try:
        value, pos = varint.decode(rest, offset)
    except RemoteProtocolError:
        pass
    else:
        check(varint.encode(value) == rest[offset:pos], "varint does not re-encode")
    try:
        varint.try_decode(memoryview(rest), offset)
    except RemoteProtocolError:
        pass
    try:
        varint.try_read_prefixed(bytearray(rest), data[0] * 4, offset)
    except RemoteProtocolError:
        pass


def _encode_field(number: int, wire: int, value: int | bytes) -> bytes:
    key = varint.encode(number << 3 | wire)
    if wire == pb.VARINT:
        assert isinstance(value, int)
        return key + varint.encode(value)
    if wire == pb.LEN:
        assert isinstance(value, bytes)
        return key + varint.encode(len(value)) + value
    assert isinstance(value, int)
    return key + value.to_bytes(8 if wire == pb.FIXED64 else 4, "little")


def _pb_seeds() -> list[bytes]:
    return [
        ALICE.public_key.to_protobuf(),
        ALICE.to_protobuf(),
        pb.encode_varint_field(3, 1 << 40) + pb.encode_str_field(15, "hello"),
        _encode_field(1, pb.FIXED64, 1 << 60) + _encode_field(2, pb.FIXED32, 7),
        pb.encode_bytes_field(536870911, b"\xff") + pb.encode_varint_field(1, 0),
    ]


@target(_pb_seeds)
def fuzz_pb(data: bytes) -> None:
    """core.pb.decode_fields and every Reader accessor; what decodes re-encodes exactly."""
    try:
        fields = pb.decode_fields(data)
    except RemoteProtocolError:
        return
    again = b"".join(_encode_field(n, w, v) for n, w, v in fields)
    check(again == data, "protobuf fields do not re-encode to the same bytes")
    reader = pb.Reader(data, "Fuzz")
    for number in {n for n, _, _ in fields}:
        for access in (
            reader.uint,
            reader.bytes_,
            reader.str_,
            reader.repeated_bytes,
            reader.repeated_str,
        ):
            try:
                access(number)
            except RemoteProtocolError:
                pass


@target(lambda: [a.to_bytes() for a in addrs()])
def fuzz_multiaddr_bytes(data: bytes) -> None:
    """core.multiaddr.Multiaddr.from_bytes; a decoded address re-encodes to itself."""
    try:
        addr = Multiaddr.from_bytes(data)
    except RemoteProtocolError:
        return
    check(
        Multiaddr.from_bytes(addr.to_bytes()) == addr, "multiaddr changes on re-encode"
    )
    str(addr)
    addr.peer_id  # noqa: B018 - parses the /p2p/ value again
    addr.split_circuit()
    addr.tcp_endpoint()


@target(lambda: [str(a).encode() for a in addrs()] + [b"/ipfs/" + str(BOB_ID).encode()])
def fuzz_multiaddr_text(data: bytes) -> None:
    """core.multiaddr.Multiaddr.parse of any text (ValueError only); parses back."""
    text = data.decode("utf-8", "surrogateescape")
    try:
        addr = Multiaddr.parse(text)
    except ValueError:
        return
    check(Multiaddr.from_bytes(addr.to_bytes()) == addr, "parsed multiaddr re-encodes")


def _key_seeds() -> list[bytes]:
    return [
        ALICE.public_key.to_protobuf(),
        BOB.to_protobuf(),
        pb.encode_varint_field(1, KeyType.SECP256K1)
        + pb.encode_bytes_field(2, b"\x02" * 33),
        pb.encode_varint_field(1, KeyType.ECDSA)
        + pb.encode_bytes_field(2, b"\x30\x59"),
        pb.encode_varint_field(1, KeyType.RSA)
        + pb.encode_bytes_field(2, b"\x30\x82\x01"),
    ]


@target(_key_seeds)
def fuzz_keys(data: bytes) -> None:
    """core.keys PublicKey/Ed25519PrivateKey.from_protobuf, verify, PeerId.from_public_key."""
    try:
        key = PublicKey.from_protobuf(data)
    except RemoteProtocolError:
        pass
    else:
        key.verify(b"\x00" * 64, b"message")  # False for a bad signature, never raises
        peer = PeerId.from_public_key(key)
        check(peer.matches(key), "peer ID does not match its own key")
        check(PublicKey.from_protobuf(key.to_protobuf()) == key, "key re-encodes")
    try:
        Ed25519PrivateKey.from_protobuf(data)
    except RemoteProtocolError:
        pass


def _peer_id_seeds() -> list[bytes]:
    sha = PeerId(b"\x12\x20" + bytes(range(32)))
    return [ALICE_ID.multihash, BOB_ID.multihash, sha.multihash, b"\x00\x00"]


@target(_peer_id_seeds)
def fuzz_peer_id_bytes(data: bytes) -> None:
    """core.peer_id.PeerId(multihash bytes), ValueError only; text forms parse back."""
    try:
        peer = PeerId(data)
    except ValueError:
        return
    check(PeerId.from_string(peer.to_base58()) == peer, "base58 peer ID round trip")
    check(PeerId.from_string(peer.to_cid()) == peer, "CID peer ID round trip")
    try:
        peer.extract_public_key()
    except RemoteProtocolError:
        pass


@target(
    lambda: [
        str(ALICE_ID).encode(),
        ALICE_ID.to_cid().encode(),
        b"z" + PeerId(b"\x12\x20" + bytes(32)).to_cid().encode()[1:],
        b"QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N",
    ]
)
def fuzz_peer_id_text(data: bytes) -> None:
    """core.peer_id.PeerId.from_string of any text (base58, CID b/z), ValueError only."""
    try:
        peer = PeerId.from_string(data.decode("utf-8", "surrogateescape"))
    except ValueError:
        return
    check(PeerId.from_string(peer.to_cid()) == peer, "CID peer ID round trip")


# --- multistream -------------------------------------------------------------------

MS_SUPPORTED = ("/yamux/1.0.0", "/noise", ping.PROTOCOL_ID)


def _ms_seeds() -> list[bytes]:
    header = ms.encode_message(ms.PROTOCOL_ID)
    return [
        ms.opening_message("/yamux/1.0.0") + b"data",
        header + ms.encode_message(ms.NA) + ms.encode_message("/mplex/6.7.0") + b"x",
        header + ms.encode_message("ls") + ms.encode_message("/noise"),
        header + ms.encode_message("/x" * 300),
        header[:3],
    ]


def _ms_outcome(neg: ms.MultistreamNegotiator, data: bytes, whole: bool) -> object:
    """Feed ``data`` whole or in chunks; what the peer would see: the events (with
    the bytes after a selected protocol as its leftover), the answer, or the error."""
    events: list[object] = []
    pieces = [data] if whole else list(chunks(data))
    for i, piece in enumerate(pieces):
        try:
            got = neg.receive_data(piece)
        except RemoteProtocolError:
            return ("error", neg.data_to_send())
        for event in got:
            if isinstance(event, ms.ProtocolSelected):
                rest = b"".join(pieces[i + 1 :])
                event = ms.ProtocolSelected(event.protocol, event.leftover + rest)
            events.append(event)
        if neg.state in (ms.NegotiationState.DONE, ms.NegotiationState.FAILED):
            break
    return (events, neg.data_to_send(), neg.state, neg.selected)


def _ms_negotiators() -> list[Callable[[], ms.MultistreamNegotiator]]:
    return [
        lambda: ms.MultistreamNegotiator(ms.Role.INITIATOR, list(MUXERS)),
        lambda: ms.MultistreamNegotiator(
            ms.Role.INITIATOR, ["/noise"], optimistic=True
        ),
    ]


@target(_ms_seeds)
def fuzz_multistream_initiator(data: bytes) -> None:
    """proto.multistream initiator (plain and optimistic) receive_data, any chunking."""
    for make in _ms_negotiators():
        whole = _ms_outcome(make(), data, whole=True)
        check(
            whole == _ms_outcome(make(), data, whole=False), "chunking changes outcome"
        )


@target(_ms_seeds)
def fuzz_multistream_responder(data: bytes) -> None:
    """proto.multistream responder receive_data; the same outcome in any chunking."""

    def make() -> ms.MultistreamNegotiator:
        return ms.MultistreamNegotiator(ms.Role.RESPONDER, MS_SUPPORTED)

    whole = _ms_outcome(make(), data, whole=True)
    check(whole == _ms_outcome(make(), data, whole=False), "chunking changes outcome")


# --- noise -------------------------------------------------------------------------


def _handshake(role: noise.HandshakeRole) -> noise.NoiseHandshake:
    if role is noise.HandshakeRole.INITIATOR:
        return noise.NoiseHandshake(
            role, ALICE, muxers=MUXERS, static_key=xkey(1), ephemeral_key=xkey(2)
        )
    return noise.NoiseHandshake(
        role, BOB, muxers=MUXERS[:1], static_key=xkey(3), ephemeral_key=xkey(4)
    )


def _payload(
    identity: Ed25519PrivateKey, static: int, muxers: tuple[str, ...]
) -> bytes:
    raw_static = xkey(static).public_key().public_bytes_raw()
    return noise.HandshakePayload(
        identity.public_key.to_protobuf(),
        identity.sign(noise.SIGNATURE_PREFIX + raw_static),
        muxers,
    ).encode()


def _noise_messages() -> tuple[bytes, bytes, bytes]:
    init = _handshake(noise.HandshakeRole.INITIATOR)
    resp = _handshake(noise.HandshakeRole.RESPONDER)
    msg1 = init.data_to_send()
    resp.receive_data(msg1)
    msg2 = resp.data_to_send()
    init.receive_data(msg2)
    msg3 = init.data_to_send()
    return msg1, msg2, msg3


def _payload_seeds() -> list[bytes]:
    return [
        _payload(BOB, 3, MUXERS[:1]),
        _payload(ALICE, 1, ()),
        _payload(BOB, 3, ("/mplex/6.7.0", "/yamux/1.0.0"))
        + pb.encode_bytes_field(4, pb.encode_bytes_field(1, b"certhash")),
    ]


@target(_payload_seeds)
def fuzz_noise_payload(data: bytes) -> None:
    """proto.noise.HandshakePayload.decode."""
    try:
        noise.HandshakePayload.decode(data)
    except RemoteProtocolError:
        pass


def _noise_outcome(hs: noise.NoiseHandshake, data: bytes, whole: bool) -> object:
    """Feed ``data`` whole or in chunks: the completion (with every byte after the
    last handshake message as its leftover), what we sent, or the error."""
    events: list[object] = []
    pieces = [data] if whole else list(chunks(data))
    for i, piece in enumerate(pieces):
        try:
            got = hs.receive_data(piece)
        except (RemoteProtocolError, SecurityError) as exc:
            return (type(exc), hs.data_to_send())
        for done in got:
            rest = b"".join(pieces[i + 1 :])
            events.append(
                noise.HandshakeCompleted(
                    done.remote_peer, done.remote_key, done.muxer, done.leftover + rest
                )
            )
        if hs.result is not None:
            break
    return (events, hs.data_to_send())


@target(
    lambda: [b"".join(_noise_messages()[::2]), _noise_messages()[0][:7], b"\x00\x00"]
)
def fuzz_noise_responder(data: bytes) -> None:
    """proto.noise.NoiseHandshake responder fed arbitrary bytes; any chunking."""
    whole = _noise_outcome(_handshake(noise.HandshakeRole.RESPONDER), data, True)
    split = _noise_outcome(_handshake(noise.HandshakeRole.RESPONDER), data, False)
    check(whole == split, "chunking changes the handshake outcome")


@target(lambda: [_noise_messages()[1], _noise_messages()[1][:40]])
def fuzz_noise_initiator(data: bytes) -> None:
    """proto.noise.NoiseHandshake initiator, after its first message, fed arbitrary bytes."""
    hs = _handshake(noise.HandshakeRole.INITIATOR)
    hs.data_to_send()
    try:
        hs.receive_data(data)
    except (RemoteProtocolError, SecurityError):
        pass


@target(_payload_seeds)
def fuzz_noise_rogue_responder(data: bytes) -> None:
    """A responder speaking valid Noise with a payload of its choosing: the initiator's
    payload checks (identity key, signature, muxer choice) on hostile plaintext."""
    init = _handshake(noise.HandshakeRole.INITIATOR)
    rogue = noise.XXHandshakeState(False, xkey(3), xkey(4))
    rogue.read_message(init.data_to_send()[2:])
    message = rogue.write_message(data[: noise.MAX_PLAINTEXT_BYTES - 64])
    try:
        done = init.receive_data(framed(message))
    except (RemoteProtocolError, SecurityError):
        return
    check(len(done) == 1 and done[0].remote_peer == BOB_ID, "rogue proved another peer")


@target(lambda: [_payload(ALICE, 1, MUXERS), _payload(ALICE, 1, ())])
def fuzz_noise_rogue_initiator(data: bytes) -> None:
    """An initiator speaking valid Noise whose third message carries hostile plaintext."""
    resp = _handshake(noise.HandshakeRole.RESPONDER)
    rogue = noise.XXHandshakeState(True, xkey(1), xkey(2))
    resp.receive_data(framed(rogue.write_message(b"")))
    rogue.read_message(resp.data_to_send()[2:])
    message = rogue.write_message(data[: noise.MAX_PLAINTEXT_BYTES - 64])
    try:
        done = resp.receive_data(framed(message) + b"after")
    except (RemoteProtocolError, SecurityError):
        return
    check(len(done) == 1 and done[0].leftover == b"after", "leftover lost")


TRANSPORT_KEY = bytes(range(32))


def _transport_seeds() -> list[bytes]:
    send = noise.NoiseTransport(noise.CipherState(TRANSPORT_KEY), noise.CipherState())
    return [
        send.encrypt(b"hello") + send.encrypt(b""),
        send.encrypt(b"x" * 2000)[:1500],
    ]


@target(_transport_seeds)
def fuzz_noise_transport(data: bytes) -> None:
    """proto.noise.NoiseTransport.receive_frames (framing, tags); any chunking."""
    outcomes = []
    for whole in (True, False):
        recv = noise.NoiseTransport(
            noise.CipherState(), noise.CipherState(TRANSPORT_KEY)
        )
        frames: list[bytes] = []
        try:
            for piece in [data] if whole else chunks(data):
                frames += recv.receive_frames(piece)
        except RemoteProtocolError:
            frames = [b"error"]  # frames before it are lost to a caller of the whole
        outcomes.append(frames)
    check(outcomes[0] == outcomes[1], "chunking changes the decrypted frames")


# --- yamux -------------------------------------------------------------------------


def _yamux_wire(is_client: bool) -> bytes:
    s = yamux.YamuxSession(is_client)
    a = s.open_stream()
    s.send_data(a, b"hello")
    s.close_stream(a)
    b = s.open_stream()
    s.reset_stream(b)
    s.ping(now=0.0)
    s.go_away()
    return s.data_to_send()


def _normal(events: list[yamux.Event]) -> list[object]:
    return [
        yamux.DataReceived(e.stream_id, bytes(e.data))
        if isinstance(e, yamux.DataReceived)
        else e
        for e in events
    ]


def _yamux_outcome(session: yamux.YamuxSession, data: bytes, whole: bool) -> object:
    events: list[yamux.Event] = []
    error = False
    try:
        for piece in [data] if whole else chunks(data):
            events += session.receive_data(piece, now=1.0)
        events += session.handle_timeout(100.0)
    except RemoteProtocolError:
        error = True
    out = session.data_to_send()
    # Events before the error are lost to a caller of the whole input; compare the rest.
    return (error, [] if error else _normal(events), out, session.stream_count)


def _yamux_check(prefix: bytes, is_client: bool, data: bytes) -> None:
    results = []
    for whole in (True, False):
        session = yamux.YamuxSession(is_client)
        if not is_client:
            session.receive_data(prefix, now=0.0)
        else:
            session.open_stream()
            session.receive_data(prefix, now=0.0)
        session.data_to_send()
        results.append(_yamux_outcome(session, data, whole))
    check(results[0] == results[1], "chunking changes the yamux session's answer")


@target(lambda: [_yamux_wire(True), _yamux_wire(False)])
def fuzz_yamux(data: bytes) -> None:
    """proto.yamux.YamuxSession.receive_data on a fresh session, both roles; chunking."""
    for is_client in (True, False):
        results = [
            _yamux_outcome(yamux.YamuxSession(is_client), data, whole)
            for whole in (True, False)
        ]
        check(results[0] == results[1], "chunking changes the yamux session's answer")


# A valid prefix: the peer opened stream 1 (server side) or acknowledged our stream 1
# (client side), so the fuzzed bytes meet an established stream.
_SYN_1 = yamux.encode_header(yamux.TYPE_WINDOW_UPDATE, yamux.FLAG_SYN, 1, 0)
_ACK_1 = yamux.encode_header(yamux.TYPE_WINDOW_UPDATE, yamux.FLAG_ACK, 1, 1 << 20)


def _established_seeds() -> list[bytes]:
    h = yamux.encode_header
    return [
        h(yamux.TYPE_DATA, 0, 1, 5)
        + b"hello"
        + h(yamux.TYPE_DATA, yamux.FLAG_FIN, 1, 0),
        h(yamux.TYPE_WINDOW_UPDATE, 0, 1, 65536)
        + h(yamux.TYPE_PING, yamux.FLAG_SYN, 0, 9),
        h(yamux.TYPE_DATA, yamux.FLAG_RST, 1, 0) + h(yamux.TYPE_GO_AWAY, 0, 0, 2),
        h(yamux.TYPE_DATA, 0, 1, 1 << 20) + b"partial body",
    ]


@target(_established_seeds)
def fuzz_yamux_established(data: bytes) -> None:
    """proto.yamux: arbitrary bytes after a valid prefix that opened stream 1."""
    _yamux_check(_SYN_1, False, data)
    _yamux_check(_ACK_1, True, data)


def _small_limits() -> dict[str, Any]:
    """Limits low enough for a short script to reach every one of them."""
    return {
        "max_stream_window_bytes": yamux.INITIAL_WINDOW_BYTES,
        "max_session_window_bytes": 1 << 20,
        "max_inbound_streams": 3,
        "max_refused_streams": 5,
        "keepalive_interval_s": 10.0,
        "keepalive_timeout_s": 5.0,
        "max_frame_payload_bytes": 64,
    }


def _yamux_ops_seeds() -> list[bytes]:
    return [
        bytes([0, 6, 7, 1, 40, 0, 2, 1, 1, 0, 0, 0, 3, 14, 11, 13, 20, 13, 20]),
        bytes([1, 1, 1, 2, 0, 1, 0, 8, 1, 2, 10, 1, 10, 1, 20, 5, 14, 8, 2]),
        bytes([3, 1, 1, 2, 1, 1, 4, 1, 1, 6, 1, 1, 8, 5, 15, 2, 0, 0, 3, 7, 9, 4]),
        bytes([5, 6, 6, 6, 6, 12, 6, 2, 1, 0, 0, 0, 1, 4, 12, 0, 0, 0, 0, 0, 1, 0, 0]),
    ]


@target(_yamux_ops_seeds)
def fuzz_yamux_ops(data: bytes) -> None:
    """proto.yamux driven by a script of peer frames and local commands.

    Byte 0 picks the role, deferred ACKs and small limits; then each op is a byte
    (low 4 bits) followed by its arguments. Ops 0-3: a well-formed frame of that type
    (flags, stream, then 1 length byte + body for DATA or 4 bytes of window/opaque/
    code). 4: raw bytes (1 length byte). 5: deliver what is queued. 6-15: local
    commands, which may raise LocalProtocolError. Our own output must be well-formed.
    """
    if not data:
        return
    mode = data[0]
    # Keywords, not dataclasses.replace, which compiled (mypyc) dataclasses may lack.
    limits = _small_limits() if mode & 4 else {}
    config = yamux.YamuxConfig(**limits, defer_accept_ack=bool(mode & 2))
    session = yamux.YamuxSession(bool(mode & 1), config, now=0.0)
    ours = 1 if mode & 1 else 2
    now = 0.0
    wire = bytearray()
    pos = 1

    def take(n: int) -> bytes:
        nonlocal pos
        got = data[pos : pos + n]
        pos += n
        return got

    def stream(byte: int) -> int:
        # Small IDs of both parities, 0, and a few near the 32-bit edge.
        return byte if byte < 0xF8 else 0xFFFFFFFF - (byte - 0xF8)

    def deliver() -> bool:
        try:
            session.receive_data(bytes(wire), now=now)
        except RemoteProtocolError:
            return False
        finally:
            wire.clear()
        return True

    while pos < len(data):
        op = data[pos] & 0x0F
        pos += 1
        args = take(2) if op <= 3 else b""
        flags, sid = (args[0] & 0x0F, stream(args[1])) if len(args) == 2 else (0, 1)
        try:
            if op == yamux.TYPE_DATA:
                body = take(take(1)[0] if pos < len(data) else 0)
                wire += yamux.encode_header(op, flags, sid, len(body)) + body
            elif op <= 3:
                raw = take(4).ljust(4, b"\0")
                wire += yamux.encode_header(op, flags, sid, int.from_bytes(raw, "big"))
            elif op == 4:
                wire += take(take(1)[0] if pos < len(data) else 0)
            elif op == 5:
                if not deliver():
                    break
            elif op == 6:
                ours = session.open_stream()
            elif op == 7:
                session.send_data(ours, bytes(take(1)[0] * 4 if pos < len(data) else 1))
            elif op == 8:
                session.close_stream(ours)
            elif op == 9:
                session.reset_stream(ours)
            elif op == 10:
                session.acknowledge_received_data(ours, 1 << 17)
            elif op == 11:
                session.ping(now)
            elif op == 12:
                session.go_away()
            elif op == 13:
                now += take(1)[0] if pos < len(data) else 1
                session.handle_timeout(now)
            elif op == 14:
                _check_frames(session.data_to_send())
            else:
                session.send_ack(ours - 1 if ours > 1 else ours + 1)
        except LocalProtocolError:
            pass
        check(session.send_window(ours) >= 0, "negative send window")
    if wire:
        deliver()
    _check_frames(session.data_to_send())


def _check_frames(out: bytes) -> None:
    """Our output parses as whole, valid yamux frames."""
    pos = 0
    while pos < len(out):
        check(len(out) - pos >= yamux.HEADER_BYTES, "truncated frame header in output")
        version, kind, _, _, length = struct.unpack_from(">BBHII", out, pos)
        check(version == 0 and kind <= 3, "bad frame in output")
        pos += yamux.HEADER_BYTES + (length if kind == yamux.TYPE_DATA else 0)
    check(pos == len(out), "DATA frame in output longer than the output")


# --- identify ----------------------------------------------------------------------


def _identify_seeds() -> list[bytes]:
    full = identify.Identify(
        public_key=ALICE.public_key.to_protobuf(),
        listen_addrs=tuple(addrs()[:3]),
        protocols=(identify.PROTOCOL_ID, ping.PROTOCOL_ID, "/ipfs/kad/1.0.0"),
        observed_addr=Multiaddr.parse("/ip6/::1/udp/1/quic-v1"),
        protocol_version=identify.PROTOCOL_VERSION,
        agent_version="peerup/0.1.0",
        signed_peer_record=b"\x0a\x03abc",
    ).encode_prefixed()
    return [full, full[:40] + b"\x00", identify.Identify().encode_prefixed()]


@target(_identify_seeds)
def fuzz_identify(data: bytes) -> None:
    """proto.identify.decode_stream and Identify.decode; a decoded message re-encodes."""
    for decode in (identify.decode_stream, identify.Identify.decode):
        try:
            msg = decode(data)
        except RemoteProtocolError:
            continue
        check(identify.Identify.decode(msg.encode()) == msg, "identify re-encodes")


# --- circuit relay v2 and signed envelopes ----------------------------------------


def _body(prefixed: bytes) -> bytes:
    length, pos = varint.decode(prefixed)
    return prefixed[pos : pos + length]


def _hop_seeds() -> list[bytes]:
    r = relay_v2
    voucher = r.Voucher(BOB_ID, ALICE_ID, 1_800_000_000).seal(BOB)
    msgs = [
        r.HopMessage(r.HopType.RESERVE),
        r.HopMessage(r.HopType.CONNECT, peer=r.Peer(ALICE_ID, tuple(addrs()[:2]))),
        r.HopMessage(
            r.HopType.STATUS,
            reservation=r.Reservation(1_800_000_000, tuple(addrs()[:1]), voucher),
            limit=r.Limit(120, 1 << 17),
            status=r.Status.OK,
        ),
        r.HopMessage(r.HopType.STATUS, status=r.Status.RESERVATION_REFUSED),
    ]
    return [_body(m.encode()) for m in msgs]


def _stop_seeds() -> list[bytes]:
    r = relay_v2
    msgs = [
        r.StopMessage(
            r.StopType.CONNECT, peer=r.Peer(ALICE_ID), limit=r.Limit(60, None)
        ),
        r.StopMessage(r.StopType.STATUS, status=r.Status.OK),
        r.StopMessage(r.StopType.STATUS, status=r.Status.CONNECTION_FAILED),
    ]
    return [_body(m.encode()) for m in msgs]


@target(_hop_seeds)
def fuzz_relay_hop(data: bytes) -> None:
    """proto.relay_v2.HopMessage.decode; what decodes re-encodes and decodes again."""
    try:
        msg = relay_v2.HopMessage.decode(data)
    except RemoteProtocolError:
        return
    again = relay_v2.HopMessage.decode(_body(msg.encode()))
    check(again.type == msg.type and again.status == msg.status, "hop re-encodes")
    if msg.reservation is not None and msg.reservation.voucher is not None:
        try:
            relay_v2.Voucher.open(msg.reservation.voucher)
        except (RemoteProtocolError, SecurityError):
            pass


@target(_stop_seeds)
def fuzz_relay_stop(data: bytes) -> None:
    """proto.relay_v2.StopMessage.decode; what decodes re-encodes and decodes again."""
    try:
        msg = relay_v2.StopMessage.decode(data)
    except RemoteProtocolError:
        return
    again = relay_v2.StopMessage.decode(_body(msg.encode()))
    check(again.type == msg.type and again.peer == msg.peer, "stop re-encodes")


def _envelope_seeds() -> list[bytes]:
    voucher = relay_v2.Voucher(BOB_ID, ALICE_ID, 1_800_000_000)
    return [
        voucher.seal(BOB),
        Envelope.seal(ALICE, "other-domain", b"\x03\x01", b"payload").encode(),
        relay_v2.Voucher(BOB_ID, ALICE_ID, 0).encode(),
    ]


@target(_envelope_seeds)
def fuzz_envelope(data: bytes) -> None:
    """proto.envelope.Envelope decode/open and relay_v2.Voucher decode/open."""
    try:
        env = Envelope.decode(data)
    except RemoteProtocolError:
        pass
    else:
        try:
            env.open(relay_v2.VOUCHER_DOMAIN, relay_v2.VOUCHER_PAYLOAD_TYPE)
        except SecurityError:
            pass
    try:
        relay_v2.Voucher.open(data)
    except (RemoteProtocolError, SecurityError):
        pass
    try:
        relay_v2.Voucher.decode(data)
    except RemoteProtocolError:
        pass


# --- ping --------------------------------------------------------------------------

PING_PAYLOAD = bytes(range(32))


@target(lambda: [PING_PAYLOAD, PING_PAYLOAD + PING_PAYLOAD[:5], PING_PAYLOAD[:31]])
def fuzz_ping(data: bytes) -> None:
    """proto.ping.PingChecker.receive_data on echoes, whole and in chunks."""
    outcomes = []
    for pieces in ([data], list(chunks(data))):
        checker = ping.PingChecker()
        checker.start(PING_PAYLOAD, now=0.0)
        results: list[object] = []
        try:
            for piece in pieces:
                results.append(checker.receive_data(piece, now=1.0))
        except RemoteProtocolError:
            results = ["error"]  # what came before is lost to a caller of the whole
        outcomes.append([r for r in results if r is not None])
    check(outcomes[0] == outcomes[1], "chunking changes the ping result")


# --- DCUtR, invite codes, pairing, relay groups -------------------------------------


def _dcutr_seeds() -> list[bytes]:
    connect = dcutr.HolePunch(dcutr.MessageType.CONNECT, tuple(addrs()[:3]))
    sync = dcutr.HolePunch(dcutr.MessageType.SYNC)
    return [
        connect.encode_prefixed() + sync.encode_prefixed(),
        connect.encode_prefixed(),
        sync.encode_prefixed() + connect.encode_prefixed()[:7],
    ]


@target(_dcutr_seeds)
def fuzz_dcutr(data: bytes) -> None:
    """proto.dcutr HolePunch.decode (re-encodes) and DcutrSession in both roles,
    whole and in chunks: the same events and state."""
    try:
        msg = dcutr.HolePunch.decode(data)
    except RemoteProtocolError:
        pass
    else:
        check(dcutr.HolePunch.decode(msg.encode()) == msg, "HolePunch re-encodes")
    for role in (dcutr.Role.INITIATOR, dcutr.Role.RESPONDER):
        outcomes = []
        for pieces in ([data], list(chunks(data))):
            session = dcutr.DcutrSession(role, addrs()[:2])
            if role is dcutr.Role.INITIATOR:
                session.start(now=0.0)
            events: list[object] = []
            try:
                for piece in pieces:
                    events += session.receive_data(piece, now=0.05)
            except RemoteProtocolError:
                events.append("error")
            outcomes.append((repr(events), session.state))
        check(outcomes[0] == outcomes[1], f"chunking changes DCUtR ({role.name})")


def _invite() -> invite_code.InviteCode:
    return invite_code.InviteCode(
        invite_id=bytes(range(invite_code.INVITE_ID_BYTES)),
        secret=bytes(range(100, 100 + invite_code.SECRET_BYTES)),
        expires_at=1_800_000_000,
        inviter=ALICE_ID,
        relays=(Multiaddr.parse("/ip4/203.0.113.10/tcp/7777").with_peer_id(BOB_ID),),
        network_name="home",
    )


def _invite_seeds() -> list[bytes]:
    code = _invite()
    enrolling = invite_code.InviteCode(
        code.invite_id, code.secret, code.expires_at, code.inviter, code.relays,
        enrollment=invite_code.Enrollment(b"\3" * 4, b"\4" * 10, 1_800_000_000),
    )  # fmt: skip
    return [
        code.to_bytes(), code.to_text().encode(), code.uri().encode(),
        enrolling.to_bytes(), enrolling.to_text().encode(),
    ]  # fmt: skip


@target(_invite_seeds)
def fuzz_invite_code(data: bytes) -> None:
    """proto.invite_code: binary payload, text and URI forms (CodeError only); what
    parses prints and parses back to itself."""
    for parse in (
        lambda: invite_code.InviteCode.from_payload(data),
        lambda: invite_code.InviteCode.parse(data.decode("utf-8", "replace")),
    ):
        try:
            code = parse()
        except invite_code.CodeError:
            continue
        check(invite_code.InviteCode.parse(code.to_text()) == code, "code round trip")


def _pairing_seeds() -> list[bytes]:
    pm = pairing.PairingMessage
    card = pairing.PeerCard(
        "laptop",
        ("ssh",),
        "home",
        relay_group.GroupList((relay_group.Introduction(BOB_ID, "bob"),), "home"),
    )
    msgs = [
        pm(pairing.MessageType.HELLO, version=2, invite_id=b"\x01" * 8, spake=b"s" * 33),
        pm(pairing.MessageType.CHALLENGE, spake=b"t" * 33, mac=b"m" * 32),
        pm(pairing.MessageType.CONFIRM, card=card, mac=b"m" * 32),
    ]
    return [varint.prefixed(m.encode()) for m in msgs]


def _fixed_rng(n: int) -> bytes:
    return b"\x42" * n


@target(_pairing_seeds)
def fuzz_pairing(data: bytes) -> None:
    """proto.pairing PairingMessage.decode (re-encodes) and an inviter's handshake fed
    the bytes, whole and in chunks: the same events and state."""
    try:
        msg = pairing.PairingMessage.decode(data)
    except RemoteProtocolError:
        pass
    else:
        again = pairing.PairingMessage.decode(msg.encode())
        check(again == msg, "PairingMessage re-encodes")
    outcomes = []
    for pieces in ([data], list(chunks(data))):
        hs = pairing.PairingHandshake.inviter(ALICE_ID, BOB_ID, rng=_fixed_rng, now=0.0)
        events: list[object] = []
        for piece in pieces:
            events += hs.receive_data(piece)
        if hs.state is pairing.PairingState.WAIT_SECRET:
            events += hs.accept(b"\x07" * invite_code.SECRET_BYTES)
        outcomes.append((repr(events), hs.state, hs.data_to_send()))
    check(outcomes[0] == outcomes[1], "chunking changes the pairing handshake")


def _group_seeds() -> list[bytes]:
    group = relay_group.GroupList(
        (relay_group.Introduction(ALICE_ID, "alice"), relay_group.Introduction(BOB_ID)),
        "home",
    )
    return [group.encode(), relay_group.Introduction(BOB_ID, "bob").encode()]


@target(_group_seeds)
def fuzz_relay_group(data: bytes) -> None:
    """proto.relay_group GroupList and Introduction decode; what decodes re-encodes."""
    for cls in (relay_group.GroupList, relay_group.Introduction):
        try:
            value = cls.decode(data)
        except RemoteProtocolError:
            continue
        check(cls.decode(value.encode()) == value, f"{cls.__name__} re-encodes")


def _delegate_seeds() -> list[bytes]:
    rd = relay_delegate
    return [
        rd.DelegateRequest(600).encode(),
        rd.DelegateResponse(rd.Status.OK, b"\1" * 4, b"\2" * 10, 1_800_000_000, 2).encode(),
        rd.DelegateResponse(rd.Status.NOT_ALLOWED, detail="no").encode(),
    ]


@target(_delegate_seeds)
def fuzz_relay_delegate(data: bytes) -> None:
    """proto.relay_delegate request and response decode; what decodes re-encodes."""
    for cls in (relay_delegate.DelegateRequest, relay_delegate.DelegateResponse):
        try:
            value = cls.decode(data)
        except RemoteProtocolError:
            continue
        check(cls.decode(value.encode()) == value, f"{cls.__name__} re-encodes")


def _tls_seeds() -> list[bytes]:
    cert = libp2p_tls.make_certificate(ALICE, 1_800_000_000.0)
    ext = cert.x509_cert.extensions.get_extension_for_oid(libp2p_tls.EXTENSION_OID)
    raw = ext.value.public_bytes()
    return [raw, cert.der]


@target(_tls_seeds)
def fuzz_libp2p_tls(data: bytes) -> None:
    """proto.libp2p_tls: the SignedKey extension decoder (re-encodes) and the whole
    certificate check, which returns a refusal for anything wrong, never raises."""
    try:
        key, sig = libp2p_tls.decode_signed_key(data)
    except RemoteProtocolError:
        pass
    else:
        check(libp2p_tls.encode_signed_key(key, sig) == data, "SignedKey re-encodes")
    checked = libp2p_tls.check_certificate(data, 1_800_000_000.0)
    check(checked.ok == (checked.peer is not None), "a checked certificate has a peer")


def _natpmp_seeds() -> list[bytes]:
    return [
        natpmp.ExternalAddressResponse(0, 3600, "198.51.100.10").encode(),
        natpmp.MapResponse(0, 3600, "tcp", 4001, 41234, 7200).encode(),
        natpmp.MapResponse(2, 5, "udp", 0, 0, 0).encode()[:8],
    ]


@target(_natpmp_seeds)
def fuzz_natpmp(data: bytes) -> None:
    """proto.natpmp.decode_response; what decodes re-encodes to the same value; a
    PortMapSession on NAT-PMP fed it raises only RemoteProtocolError."""
    try:
        reply = natpmp.decode_response(data)
    except RemoteProtocolError:
        pass
    else:
        again = natpmp.decode_response(reply.encode())
        check(again == reply, "NAT-PMP response re-encodes")
    session = portmap.PortMapSession(
        "tcp", 4001, "10.1.0.2", b"n" * 12, methods=(portmap.Method.NATPMP,)
    )
    session.start(0.0)
    try:
        session.receive_datagram(data, 0.1)
    except RemoteProtocolError:
        pass


def _pcp_seeds() -> list[bytes]:
    ok = pcp.MapResponse(0, 3600, 7, b"n" * 12, "tcp", 4001, 41234, "198.51.100.10")
    return [ok.encode(), pcp.MapResponse(2, 30, 7).encode()]


@target(_pcp_seeds)
def fuzz_pcp(data: bytes) -> None:
    """proto.pcp.decode_response; what decodes re-encodes to the same value; a
    PortMapSession on PCP (with NAT-PMP fallback) fed it raises only
    RemoteProtocolError, and a grant it reports carries what the answer said."""
    try:
        reply = pcp.decode_response(data)
    except RemoteProtocolError:
        pass
    else:
        check(pcp.decode_response(reply.encode()) == reply, "PCP response re-encodes")
    session = portmap.PortMapSession("tcp", 4001, "10.1.0.2", b"n" * 12)
    session.start(0.0)
    try:
        events = session.receive_datagram(data, 0.1)
    except RemoteProtocolError:
        return
    for event in events:
        if isinstance(event, portmap.MappingGranted):
            check(session.state is portmap.SessionState.MAPPED, "granted means mapped")
            check(session.next_deadline() is not None or event.lifetime_s == 0,
                  "a lease is renewed")  # fmt: skip
