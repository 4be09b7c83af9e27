"""The pairing handshake (proto/pairing.py), two state machines wired in memory: success,
wrong code caught by key confirmation, binding to both peer IDs, refusals, chunking at
every byte, garbage as an outcome, timeouts; and the short authentication string."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerup.core import varint
from peerup.core.errors import LocalProtocolError
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.multiaddr import Multiaddr
from peerup.core.peer_id import PeerId
from peerup.proto import pairing
from peerup.proto.invite_code import InviteCode
from peerup.proto.pairing import (
    InviteRequested,
    JoinerConfirmed,
    PairingCompleted,
    PairingFailed,
    PairingHandshake,
    PairingState,
    PeerCard,
    Reason,
)


def seeded_peer(seed: int) -> PeerId:
    key = Ed25519PrivateKey.from_seed(bytes([seed]) * 32)
    return PeerId.from_public_key(key.public_key)


INVITER, JOINER, MALLORY, RELAY = (seeded_peer(i) for i in (1, 2, 3, 4))
CODE = InviteCode(
    b"\x01\x02\x03\x04", b"s" * 10, 2_000_000_000, INVITER,
    (Multiaddr.parse(f"/ip4/127.0.0.1/tcp/7777/p2p/{RELAY}"),),
)  # fmt: skip
JOINER_CARD = PeerCard("laptop")
INVITER_CARD = PeerCard("home", ("ssh", "web"), "house")


def rng(seed: int) -> Callable[[int], bytes]:
    r = random.Random(seed)
    return lambda n: r.randbytes(n)


def joiner(code: InviteCode = CODE, me: PeerId = JOINER) -> PairingHandshake:
    return PairingHandshake.joiner(code, me, JOINER_CARD, rng=rng(1), now=0.0)


def inviter(joiner_id: PeerId = JOINER) -> PairingHandshake:
    return PairingHandshake.inviter(INVITER, joiner_id, rng=rng(2), now=0.0)


def run(
    j: PairingHandshake, i: PairingHandshake, secret: bytes = CODE.secret
) -> tuple[list[pairing.Event], list[pairing.Event]]:
    """Move bytes until both stop; the inviter accepts ``secret`` and welcomes."""
    j_events: list[pairing.Event] = []
    i_events: list[pairing.Event] = []
    for _ in range(10):
        moved = False
        data = j.data_to_send()
        if data:
            moved = True
            for ev in i.receive_data(data):
                i_events.append(ev)
                if isinstance(ev, InviteRequested):
                    i_events += i.accept(secret)
                elif isinstance(ev, JoinerConfirmed):
                    i.welcome(INVITER_CARD)
        data = i.data_to_send()
        if data:
            moved = True
            j_events += j.receive_data(data)
        if not moved:
            break
    return j_events, i_events


def test_pairing_completes_and_each_side_learns_the_other_card() -> None:
    j, i = joiner(), inviter()
    j_events, i_events = run(j, i)
    assert i_events == [InviteRequested(CODE.invite_id), JoinerConfirmed(JOINER_CARD)]
    assert j_events == [PairingCompleted(INVITER_CARD)]
    assert j.state is PairingState.DONE and i.state is PairingState.DONE
    assert j.next_deadline() is None


def test_wrong_secret_fails_key_confirmation_before_any_card_is_sent() -> None:
    j, i = joiner(), inviter()
    j_events, i_events = run(j, i, secret=b"x" * 10)
    assert j_events == [PairingFailed(Reason.WRONG_CODE, j_events[0].detail)]  # type: ignore[union-attr]
    assert i_events[-1] == PairingFailed(Reason.WRONG_CODE, "refused", is_remote=True)
    assert not any(isinstance(e, JoinerConfirmed) for e in i_events)
    assert i.state is PairingState.FAILED and j.state is PairingState.FAILED


def test_the_key_is_bound_to_the_joiner_peer_id() -> None:
    """A machine in the middle that relays the joiner's messages over its own Noise
    session (so the inviter sees Mallory's peer ID) gets nowhere."""
    j, i = joiner(), inviter(joiner_id=MALLORY)
    j_events, i_events = run(j, i)
    assert isinstance(j_events[0], PairingFailed)
    assert j_events[0].reason is Reason.WRONG_CODE
    assert not any(isinstance(e, JoinerConfirmed) for e in i_events)


def test_the_key_is_bound_to_the_inviter_peer_id() -> None:
    other = InviteCode(
        CODE.invite_id, CODE.secret, CODE.expires_at, MALLORY, CODE.relays
    )
    j_events, i_events = run(joiner(code=other), inviter())
    assert isinstance(j_events[0], PairingFailed)
    assert j_events[0].reason is Reason.WRONG_CODE


def test_a_joiner_that_lies_about_confirmation_is_caught_by_the_inviter() -> None:
    j, i = joiner(), inviter()
    i.receive_data(j.data_to_send())
    i.accept(CODE.secret)
    j.receive_data(i.data_to_send())
    confirm = j.data_to_send()
    forged = bytearray(confirm)
    forged[-1] ^= 1  # the MAC's last byte
    events = i.receive_data(bytes(forged))
    assert events == [PairingFailed(Reason.WRONG_CODE, events[0].detail)]  # type: ignore[union-attr]
    assert i.data_to_send()  # REFUSAL{WRONG_CODE} goes back


@pytest.mark.parametrize(
    "reason", [Reason.EXPIRED, Reason.USED, Reason.BURNT, Reason.REVOKED,
               Reason.UNKNOWN_INVITE],
)  # fmt: skip
def test_a_refusal_reaches_the_joiner_with_its_reason(reason: Reason) -> None:
    j, i = joiner(), inviter()
    [requested] = i.receive_data(j.data_to_send())
    assert isinstance(requested, InviteRequested)
    i.refuse(reason)
    assert j.receive_data(i.data_to_send()) == [
        PairingFailed(reason, "refused", is_remote=True)
    ]


def test_events_do_not_depend_on_how_bytes_are_chunked() -> None:
    j, i = joiner(), inviter()
    hello = j.data_to_send()
    for cut in range(1, len(hello)):
        ii = inviter()
        events = ii.receive_data(hello[:cut]) + ii.receive_data(hello[cut:])
        assert events == [InviteRequested(CODE.invite_id)]
    events = []
    for k in range(len(hello)):
        events += i.receive_data(hello[k : k + 1])
    assert events == [InviteRequested(CODE.invite_id)]
    i.accept(CODE.secret)
    challenge = i.data_to_send()
    collected = []
    for k in range(len(challenge)):
        collected += j.receive_data(challenge[k : k + 1])
    assert collected == [] and j.state is PairingState.WAIT_WELCOME


@given(st.binary(max_size=300))
def test_garbage_is_an_outcome_never_an_exception(data: bytes) -> None:
    i = inviter()
    for ev in i.receive_data(data):
        assert isinstance(ev, InviteRequested | PairingFailed)
    j = joiner()
    for ev in j.receive_data(data):
        assert isinstance(ev, PairingFailed)


def test_a_bad_spake2_element_is_a_protocol_error() -> None:
    i = inviter()
    hello = pairing.PairingMessage(
        pairing.MessageType.HELLO, version=2, invite_id=CODE.invite_id,
        spake=b"A" + b"\xff" * 32,
    ).encode()  # fmt: skip
    [requested] = i.receive_data(varint.prefixed(hello))
    assert isinstance(requested, InviteRequested)
    [failed] = i.accept(CODE.secret)
    assert isinstance(failed, PairingFailed)
    assert failed.reason is Reason.PROTOCOL_ERROR


def test_another_version_is_refused_as_such() -> None:
    hello = pairing.PairingMessage(
        pairing.MessageType.HELLO, version=3, invite_id=CODE.invite_id, spake=b"x"
    ).encode()
    i = inviter()
    [failed] = i.receive_data(varint.prefixed(hello))
    assert isinstance(failed, PairingFailed)
    assert failed.reason is Reason.UNSUPPORTED_VERSION


def test_no_answer_in_time_is_a_timeout() -> None:
    j = joiner()
    deadline = j.next_deadline()
    assert deadline == 30.0
    assert j.handle_timeout(29.9) == []
    [failed] = j.handle_timeout(30.0)
    assert isinstance(failed, PairingFailed) and failed.reason is Reason.TIMEOUT
    assert j.next_deadline() is None


def test_a_hang_up_mid_way_is_aborted() -> None:
    j, i = joiner(), inviter()
    i.receive_data(j.data_to_send())
    i.accept(CODE.secret)
    [failed] = i.connection_lost()
    assert isinstance(failed, PairingFailed) and failed.reason is Reason.ABORTED


def test_decisions_out_of_turn_are_local_errors() -> None:
    i = inviter()
    with pytest.raises(LocalProtocolError):
        i.accept(CODE.secret)
    with pytest.raises(LocalProtocolError):
        i.welcome(INVITER_CARD)
    with pytest.raises(LocalProtocolError):
        joiner().refuse(Reason.EXPIRED)


def test_the_short_authentication_string_is_the_same_on_both_sides() -> None:
    a = pairing.short_auth_string(INVITER, JOINER)
    b = pairing.short_auth_string(JOINER, INVITER)
    assert a == b
    assert len(a.emoji) == pairing.SAS_EMOJI
    assert len(a.number.replace(" ", "")) == pairing.SAS_DIGITS
    assert pairing.short_auth_string(INVITER, MALLORY) != a
    assert (
        len({e for e, _ in pairing.EMOJI}) == len({w for _, w in pairing.EMOJI}) == 64
    )
