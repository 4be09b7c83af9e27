"""Circuit relay v2 messages, the reservation voucher and signed envelopes (RFC 0002)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerup.core import varint
from peerup.core.errors import RemoteProtocolError, SecurityError
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.multiaddr import Multiaddr
from peerup.core.peer_id import PeerId
from peerup.proto import relay_v2
from peerup.proto.envelope import Envelope

RELAY_KEY = Ed25519PrivateKey.from_seed(bytes(range(32)))
PEER_KEY = Ed25519PrivateKey.from_seed(bytes(range(1, 33)))
RELAY = PeerId.from_public_key(RELAY_KEY.public_key)
PEER = PeerId.from_public_key(PEER_KEY.public_key)


def body(prefixed: bytes) -> bytes:
    length, pos = varint.decode(prefixed)
    assert len(prefixed) - pos == length
    return prefixed[pos:]


def test_reserve_is_two_bytes_on_the_wire() -> None:
    # HopMessage{type: RESERVE(0)}: field 1 varint 0, length-prefixed.
    assert relay_v2.HopMessage(relay_v2.HopType.RESERVE).encode() == b"\x02\x08\x00"


def test_status_ok_with_reservation_and_limit_round_trips() -> None:
    addr = Multiaddr.parse(f"/ip4/203.0.113.10/tcp/7777/p2p/{RELAY}")
    msg = relay_v2.HopMessage(
        relay_v2.HopType.STATUS,
        reservation=relay_v2.Reservation(1_800_000_000, (addr,), b"voucher"),
        limit=relay_v2.Limit(120, 131072),
        status=relay_v2.Status.OK,
    )
    assert relay_v2.HopMessage.decode(body(msg.encode())) == msg


def test_unlimited_limit_is_not_sent() -> None:
    msg = relay_v2.HopMessage(
        relay_v2.HopType.STATUS, limit=relay_v2.Limit(), status=relay_v2.Status.OK
    )
    decoded = relay_v2.HopMessage.decode(body(msg.encode()))
    assert decoded.limit is None


def test_stop_connect_carries_the_source_peer() -> None:
    msg = relay_v2.StopMessage(
        relay_v2.StopType.CONNECT, peer=relay_v2.Peer(PEER), limit=relay_v2.Limit(60, None)
    )
    decoded = relay_v2.StopMessage.decode(body(msg.encode()))
    assert decoded.peer is not None and decoded.peer.peer_id == PEER
    assert decoded.limit == relay_v2.Limit(60, None)


def test_unknown_status_and_type_are_remote_errors() -> None:
    with pytest.raises(RemoteProtocolError):
        relay_v2.HopMessage.decode(b"\x08\x07")  # type 7
    with pytest.raises(RemoteProtocolError):
        relay_v2.HopMessage.decode(b"\x08\x02\x28\x63")  # status 99


def test_voucher_verifies_and_names_the_signer() -> None:
    sealed = relay_v2.Voucher(RELAY, PEER, 1_800_000_000).seal(RELAY_KEY)
    voucher, signer = relay_v2.Voucher.open(sealed)
    assert (voucher.relay, voucher.peer, voucher.expiration) == (RELAY, PEER, 1_800_000_000)
    assert signer == RELAY


def test_tampered_voucher_is_refused() -> None:
    env = Envelope.decode(relay_v2.Voucher(RELAY, PEER, 1).seal(RELAY_KEY))
    forged = Envelope(env.public_key, env.payload_type, env.payload + b"\x00", env.signature)
    with pytest.raises(SecurityError):
        relay_v2.Voucher.open(forged.encode())


def test_envelope_signature_is_bound_to_its_domain() -> None:
    env = Envelope.seal(PEER_KEY, "domain-a", b"\x03\x02", b"payload")
    assert Envelope.decode(env.encode()).open("domain-a", b"\x03\x02") == b"payload"
    with pytest.raises(SecurityError):
        env.open("domain-b", b"\x03\x02")
    with pytest.raises(SecurityError):
        env.open("domain-a", b"\x03\x01")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_decoders_raise_only_remote_protocol_errors(raw: bytes) -> None:
    for decode in (
        relay_v2.HopMessage.decode,
        relay_v2.StopMessage.decode,
        relay_v2.Reservation.decode,
        relay_v2.Voucher.decode,
        Envelope.decode,
    ):
        try:
            decode(raw)
        except RemoteProtocolError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_vouchers_raise_only_our_errors(data: st.DataObject) -> None:
    sealed = bytearray(relay_v2.Voucher(RELAY, PEER, 1_800_000_000).seal(RELAY_KEY))
    i = data.draw(st.integers(0, len(sealed) - 1))
    sealed[i] ^= data.draw(st.integers(1, 255))
    try:
        relay_v2.Voucher.open(bytes(sealed))
    except (RemoteProtocolError, SecurityError):
        pass
