"""proto.dcutr: the HolePunch codec and the two roles wired together in memory.

Time is a float the test advances; no sockets, no event loop (STYLE.md 3.9).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerup.core import pb, varint
from peerup.core.errors import LocalProtocolError, RemoteProtocolError
from peerup.core.multiaddr import Multiaddr
from peerup.proto import dcutr
from peerup.proto.dcutr import (
    DcutrSession,
    DcutrState,
    DialNow,
    HolePunch,
    HolePunchFailed,
    MessageType,
    Role,
)

A_ADDR = Multiaddr.parse("/ip4/198.51.100.10/tcp/4001")
B_ADDR = Multiaddr.parse("/ip4/198.51.100.20/tcp/4001")


def test_known_bytes() -> None:
    connect = HolePunch(
        MessageType.CONNECT, (Multiaddr.parse("/ip4/1.2.3.4/tcp/4001"),)
    )
    assert connect.encode().hex() == "0864" + "12080401020304060fa1"
    assert HolePunch(MessageType.SYNC).encode().hex() == "08ac02"
    assert connect.encode_prefixed()[0] == len(connect.encode())


def test_round_trip_and_unknown_addresses_skipped() -> None:
    msg = HolePunch(MessageType.CONNECT, (A_ADDR, B_ADDR))
    assert HolePunch.decode(msg.encode()) == msg
    raw = msg.encode() + pb.encode_bytes_field(2, b"\xd2\x0f")
    assert HolePunch.decode(raw) == msg


@pytest.mark.parametrize(
    "raw", [b"", pb.encode_varint_field(1, 7), pb.encode_bytes_field(2, b"x")]
)
def test_missing_or_unknown_type_is_a_remote_error(raw: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        HolePunch.decode(raw)


@given(st.binary(max_size=64))
def test_decoding_garbage_raises_only_remote_protocol_error(raw: bytes) -> None:
    try:
        HolePunch.decode(raw)
    except RemoteProtocolError:
        pass


def transfer(src: DcutrSession, dst: DcutrSession, now: float) -> list[dcutr.Event]:
    return dst.receive_data(src.data_to_send(), now)


def pair() -> tuple[DcutrSession, DcutrSession]:
    """(B, A): B received the relayed connection and initiates."""
    return DcutrSession(Role.INITIATOR, [B_ADDR]), DcutrSession(
        Role.RESPONDER, [A_ADDR]
    )


def test_one_attempt_measures_rtt_and_dials_half_an_rtt_later() -> None:
    b, a = pair()
    b.start(now=10.0)
    assert transfer(b, a, now=10.05) == []  # A answers CONNECT at once
    assert a.state is DcutrState.SYNC_WAIT
    assert transfer(a, b, now=10.1) == []  # B: rtt 100 ms, SYNC out, timer armed
    assert b.rtt_s == pytest.approx(0.1)
    assert b.next_deadline() == pytest.approx(10.15)
    assert b.handle_timeout(10.149) == []
    # A dials as soon as SYNC arrives, as the client.
    assert transfer(b, a, now=10.15) == [
        DialNow((B_ADDR,), True, 1, pytest.approx(0.1))
    ]
    # B dials when its timer fires, as the server.
    assert b.handle_timeout(10.15) == [DialNow((A_ADDR,), False, 1, pytest.approx(0.1))]
    assert b.next_deadline() is None
    b.dial_succeeded()
    a.dial_succeeded()
    assert b.state is a.state is DcutrState.DONE


def test_same_events_however_the_bytes_are_split() -> None:
    b, a = pair()
    b.start(now=0.0)
    wire = b.data_to_send()
    for cut in range(len(wire) + 1):
        fresh = DcutrSession(Role.RESPONDER, [A_ADDR])
        assert fresh.receive_data(wire[:cut], 1.0) == []
        assert fresh.receive_data(wire[cut:], 1.0) == []
        assert fresh.state is DcutrState.SYNC_WAIT
        assert fresh.peer_addrs == (B_ADDR,)


def test_failed_dials_retry_with_a_new_connect_then_give_up_after_three() -> None:
    b, a = pair()
    now = 0.0
    b.start(now)
    for attempt in (1, 2, 3):
        transfer(b, a, now + 0.01)
        transfer(a, b, now + 0.02)
        [a_dial] = transfer(b, a, now + 0.03)
        assert isinstance(a_dial, DialNow) and a_dial.attempt == attempt
        [b_dial] = b.handle_timeout(now + 0.05)
        assert isinstance(b_dial, DialNow) and b_dial.attempt == attempt
        assert a.dial_failed(now + 1, "timed out") == []
        now += 1
        events = b.dial_failed(now, "timed out")
        if attempt < 3:
            assert events == [] and b.state is DcutrState.CONNECT_SENT
    assert events == [HolePunchFailed("3 attempts failed; the last: timed out", 3)]
    assert b.state is DcutrState.FAILED
    assert b.data_to_send() == b""


def test_a_retry_on_a_new_stream_after_the_peer_closed_the_old_one() -> None:
    """go-libp2p's responder closes the stream after one attempt: the caller opens a
    new stream, then reports the failed dial, which queues the next CONNECT."""
    b, a = pair()
    b.start(0.0)
    transfer(b, a, 0.01)
    transfer(a, b, 0.02)
    transfer(b, a, 0.03)
    b.handle_timeout(0.05)
    assert b.receive_eof() == []  # between attempts: fine
    assert b.peer_closed
    b.new_stream()
    assert not b.peer_closed
    assert b.dial_failed(1.0, "refused") == []
    fresh = DcutrSession(Role.RESPONDER, [A_ADDR])
    assert transfer(b, fresh, 1.01) == []
    assert fresh.state is DcutrState.SYNC_WAIT and b.attempt == 2


def test_retry_connect_is_answered_while_the_responders_dial_is_out() -> None:
    b, a = pair()
    b.start(0.0)
    transfer(b, a, 0.01)
    transfer(a, b, 0.02)
    transfer(b, a, 0.03)
    assert a.state is DcutrState.DIALING
    b.handle_timeout(0.03)
    b.dial_failed(0.5, "timed out")
    assert transfer(b, a, 0.51) == []
    assert a.state is DcutrState.SYNC_WAIT and a.attempt == 2


def test_end_of_stream_while_waiting_fails() -> None:
    b, a = pair()
    b.start(0.0)
    assert b.receive_eof() == [
        HolePunchFailed("the peer closed the stream in CONNECT_SENT", 1)
    ]


def test_unexpected_messages_fail_the_session() -> None:
    b, a = pair()
    b.start(0.0)
    sync = HolePunch(MessageType.SYNC).encode_prefixed()
    [failed] = b.receive_data(sync, 0.1)
    assert isinstance(failed, HolePunchFailed) and "unexpected SYNC" in failed.reason
    [failed] = a.receive_data(sync, 0.1)
    assert isinstance(failed, HolePunchFailed)


def test_connect_without_addresses_fails_both_roles() -> None:
    b = DcutrSession(Role.INITIATOR, [B_ADDR])
    b.start(0.0)
    empty = HolePunch(MessageType.CONNECT).encode_prefixed()
    assert isinstance(b.receive_data(empty, 0.1)[0], HolePunchFailed)
    a = DcutrSession(Role.RESPONDER, [A_ADDR])
    assert isinstance(a.receive_data(empty, 0.1)[0], HolePunchFailed)
    assert a.data_to_send() == b""


def test_oversized_message_raises_and_fails() -> None:
    a = DcutrSession(Role.RESPONDER, [A_ADDR])
    with pytest.raises(RemoteProtocolError):
        a.receive_data(varint.encode(dcutr.MAX_MESSAGE_BYTES + 1), 0.0)
    assert a.state is DcutrState.FAILED


def test_only_the_initiator_starts() -> None:
    a = DcutrSession(Role.RESPONDER, [A_ADDR])
    with pytest.raises(LocalProtocolError):
        a.start(0.0)
