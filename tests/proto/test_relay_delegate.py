"""Delegated enrollment on the wire: proto/relay_delegate.py messages and the
enrollment a peer invite carries (proto/invite_code.py ``Enrollment``)."""

from __future__ import annotations

import pytest

from peerup.core.errors import RemoteProtocolError
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.multiaddr import Multiaddr
from peerup.core.peer_id import PeerId
from peerup.proto import relay_delegate as rd
from peerup.proto.invite_code import CodeError, Enrollment, InviteCode, InviteKind


def peer() -> PeerId:
    return PeerId.from_public_key(Ed25519PrivateKey.generate().public_key)


def test_messages_round_trip() -> None:
    request = rd.DelegateRequest(600)
    assert rd.DelegateRequest.decode(request.encode()) == request
    answer = rd.DelegateResponse(rd.Status.OK, b"\1" * 4, b"\2" * 10, 1_800_000_000, 3)
    assert rd.DelegateResponse.decode(answer.encode()) == answer
    refusal = rd.DelegateResponse(rd.Status.LIMIT_REACHED, detail="used up")
    assert rd.DelegateResponse.decode(refusal.encode()) == refusal


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x08\x00", b"\x08" + b"\xff" * 5 + b"\x0f", b"\x0a\x05abc"],
)
def test_a_bad_request_is_a_protocol_error(raw: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        rd.DelegateRequest.decode(raw)


def test_an_unknown_status_is_a_protocol_error() -> None:
    with pytest.raises(RemoteProtocolError, match="unknown status"):
        rd.DelegateResponse.decode(b"\x08\x09")


def relay_addr(relay: PeerId) -> Multiaddr:
    return Multiaddr.parse("/ip4/203.0.113.10/tcp/7777").with_peer_id(relay)


def test_a_peer_invite_carries_an_enrollment_at_its_first_relay() -> None:
    relay, inviter = peer(), peer()
    enrollment = Enrollment(b"\7" * 4, b"\x08" * 10, 1_800_000_100)
    code = InviteCode(
        b"\1" * 4, b"\2" * 10, 1_800_000_000, inviter, (relay_addr(relay),),
        "home", enrollment=enrollment,
    )  # fmt: skip
    parsed = InviteCode.parse(code.to_text())
    assert parsed == code
    enroll = parsed.enrollment_code()
    assert enroll is not None
    assert enroll.kind is InviteKind.RELAY and enroll.inviter == relay
    assert (enroll.invite_id, enroll.secret) == (b"\7" * 4, b"\x08" * 10)
    # Without one, the code is the same as before (no flag, no bytes).
    plain = InviteCode(b"\1" * 4, b"\2" * 10, 1_800_000_000, inviter, (relay_addr(relay),))
    assert InviteCode.parse(plain.to_text()).enrollment_code() is None
    assert len(code.to_bytes()) == len(plain.to_bytes()) + 18 + len("home") + 1


def test_an_enrollment_on_a_relay_code_is_refused() -> None:
    relay = peer()
    raw = bytearray(
        InviteCode(
            b"\1" * 4, b"\2" * 10, 1_800_000_000, relay, (relay_addr(relay),),
            kind=InviteKind.RELAY,
        ).to_bytes()[:-4]
    )  # fmt: skip
    raw[2] |= 2  # claim an enrollment
    raw += b"\7" * 18
    with pytest.raises(CodeError, match="content is not"):
        InviteCode.from_payload(bytes(raw))
