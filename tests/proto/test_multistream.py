"""proto.multistream: multistream-select 1.0.0 negotiation, both roles in memory."""

from __future__ import annotations

import pytest

from peerup.core.errors import LocalProtocolError, RemoteProtocolError
from peerup.proto import multistream as ms
from peerup.proto.multistream import MultistreamNegotiator, Role

YAMUX = "/yamux/1.0.0"
MPLEX = "/mplex/6.7.0"


def pair(
    proposals: list[str], supported: set[str], *, optimistic: bool = False
) -> tuple[MultistreamNegotiator, MultistreamNegotiator]:
    return (
        MultistreamNegotiator(Role.INITIATOR, proposals, optimistic=optimistic),
        MultistreamNegotiator(Role.RESPONDER, supported),
    )


def transfer(src: MultistreamNegotiator, dst: MultistreamNegotiator) -> list[ms.Event]:
    return dst.receive_data(src.data_to_send())


def run(
    initiator: MultistreamNegotiator, responder: MultistreamNegotiator
) -> tuple[list[ms.Event], list[ms.Event]]:
    """Exchange bytes until both sides stop talking; all events per side."""
    init_events: list[ms.Event] = []
    resp_events: list[ms.Event] = []
    for _ in range(10):
        if responder.state not in (
            ms.NegotiationState.DONE,
            ms.NegotiationState.FAILED,
        ):
            resp_events += transfer(initiator, responder)
        if initiator.state not in (
            ms.NegotiationState.DONE,
            ms.NegotiationState.FAILED,
        ):
            init_events += transfer(responder, initiator)
    return init_events, resp_events


def test_message_encoding_known_answer() -> None:
    assert ms.encode_message(ms.PROTOCOL_ID) == b"\x13/multistream/1.0.0\n"
    assert ms.encode_message("na") == b"\x03na\n"


def test_initiator_sends_header_and_first_proposal_at_once() -> None:
    init = MultistreamNegotiator(Role.INITIATOR, [YAMUX, MPLEX])
    assert init.data_to_send() == b"\x13/multistream/1.0.0\n\x0d/yamux/1.0.0\n"
    assert init.data_to_send() == b""


def test_responder_starts_with_header_only() -> None:
    resp = MultistreamNegotiator(Role.RESPONDER, {YAMUX})
    assert resp.data_to_send() == b"\x13/multistream/1.0.0\n"


def test_first_proposal_accepted() -> None:
    init, resp = pair([YAMUX], {YAMUX})
    init_events, resp_events = run(init, resp)
    assert init_events == [ms.ProtocolSelected(YAMUX, b"")]
    assert resp_events == [ms.ProtocolSelected(YAMUX, b"")]
    assert init.selected == resp.selected == YAMUX


def test_na_falls_back_to_second_proposal() -> None:
    init, resp = pair([MPLEX, YAMUX], {YAMUX})
    init_events, resp_events = run(init, resp)
    assert init_events == [ms.ProtocolRejected(MPLEX), ms.ProtocolSelected(YAMUX, b"")]
    assert resp_events == [ms.ProtocolRefused(MPLEX), ms.ProtocolSelected(YAMUX, b"")]


def test_negotiation_failed_when_nothing_matches() -> None:
    init, resp = pair([MPLEX, "/other/1"], {YAMUX})
    init_events, resp_events = run(init, resp)
    assert init_events[:-1] == [ms.ProtocolRejected(MPLEX)]
    assert isinstance(init_events[-1], ms.NegotiationFailed)
    assert resp_events == [ms.ProtocolRefused(MPLEX), ms.ProtocolRefused("/other/1")]
    assert init.state is ms.NegotiationState.FAILED
    assert init.selected is None


def test_optimistic_initiator_pipelines_data_and_nothing_is_lost() -> None:
    init, resp = pair([YAMUX], {YAMUX}, optimistic=True)
    wire = init.data_to_send() + b"early application data"
    assert resp.receive_data(wire) == [
        ms.ProtocolSelected(YAMUX, b"early application data")
    ]
    back = resp.data_to_send() + b"the answer"
    assert init.receive_data(back) == [ms.ProtocolSelected(YAMUX, b"the answer")]


def test_optimistic_na_is_a_failure_not_a_retry() -> None:
    init, resp = pair([MPLEX], {YAMUX}, optimistic=True)
    _, resp_events = run(init, resp)
    assert resp_events == [ms.ProtocolRefused(MPLEX)]
    assert init.state is ms.NegotiationState.FAILED


def test_optimistic_needs_single_proposal_initiator() -> None:
    with pytest.raises(LocalProtocolError):
        MultistreamNegotiator(Role.INITIATOR, [YAMUX, MPLEX], optimistic=True)
    with pytest.raises(LocalProtocolError):
        MultistreamNegotiator(Role.RESPONDER, [YAMUX], optimistic=True)
    with pytest.raises(LocalProtocolError):
        MultistreamNegotiator(Role.INITIATOR, [])


def test_receive_after_done_is_local_error() -> None:
    init, resp = pair([YAMUX], {YAMUX})
    run(init, resp)
    with pytest.raises(LocalProtocolError):
        resp.receive_data(b"x")


def test_responder_answers_ls_with_na() -> None:
    resp = MultistreamNegotiator(Role.RESPONDER, {YAMUX})
    resp.data_to_send()
    assert (
        resp.receive_data(ms.encode_message(ms.PROTOCOL_ID) + ms.encode_message("ls"))
        == [ms.ProtocolRefused("ls")]
    )
    assert resp.data_to_send() == b"\x03na\n"


def _events_for_chunks(
    role: Role, protocols: list[str], chunks: list[bytes]
) -> list[ms.Event]:
    """Feed chunks like a driver: after selection, later chunks go to the next layer."""
    neg = MultistreamNegotiator(role, protocols)
    events: list[ms.Event] = []
    for i, chunk in enumerate(chunks):
        events += neg.receive_data(chunk)
        if neg.state is ms.NegotiationState.DONE:
            last = events[-1]
            assert isinstance(last, ms.ProtocolSelected)
            events[-1] = ms.ProtocolSelected(
                last.protocol, last.leftover + b"".join(chunks[i + 1 :])
            )
            break
    return events


RESPONDER_INPUT = (
    ms.encode_message(ms.PROTOCOL_ID)
    + ms.encode_message(MPLEX)
    + ms.encode_message(YAMUX)
    + b"pipelined"
)
INITIATOR_INPUT = (
    ms.encode_message(ms.PROTOCOL_ID)
    + ms.encode_message("na")
    + ms.encode_message(YAMUX)
    + b"reply"
)


# The usual exchange, which the negotiator takes in one step when it comes whole.
FAST_RESPONDER_INPUT = (
    ms.encode_message(ms.PROTOCOL_ID) + ms.encode_message(YAMUX) + b"pipelined"
)
FAST_INITIATOR_INPUT = (
    ms.encode_message(ms.PROTOCOL_ID) + ms.encode_message(YAMUX) + b"reply"
)


@pytest.mark.parametrize(
    ("role", "protocols", "wire"),
    [
        (Role.RESPONDER, [YAMUX], RESPONDER_INPUT),
        (Role.INITIATOR, [MPLEX, YAMUX], INITIATOR_INPUT),
        (Role.RESPONDER, [MPLEX, YAMUX], FAST_RESPONDER_INPUT),
        (Role.INITIATOR, [YAMUX], FAST_INITIATOR_INPUT),
    ],
    ids=["responder", "initiator", "responder-usual", "initiator-usual"],
)
def test_every_split_gives_the_same_events(
    role: Role, protocols: list[str], wire: bytes
) -> None:
    expected = _events_for_chunks(role, protocols, [wire])
    assert isinstance(expected[-1], ms.ProtocolSelected)
    for cut in range(len(wire) + 1):
        assert _events_for_chunks(role, protocols, [wire[:cut], wire[cut:]]) == expected
    byte_by_byte = [wire[i : i + 1] for i in range(len(wire))]
    assert _events_for_chunks(role, protocols, byte_by_byte) == expected


@pytest.mark.parametrize(
    "wire",
    [
        ms.encode_message("/multistream/2.0.0"),
        b"\x05hello",  # no trailing newline
        b"\x00",  # empty message, no newline
        b"\x03\xff\xfe\n",  # not UTF-8
        b"\x80\x00",  # non-minimal varint length
        b"\xff\x0f" + b"a" * 10,  # longer than the 1024-byte cap
        b"\x04abc\r",  # wrong terminator
    ],
)
def test_garbage_raises_remote_protocol_error(wire: bytes) -> None:
    for role, protocols in ((Role.RESPONDER, [YAMUX]), (Role.INITIATOR, [YAMUX])):
        with pytest.raises(RemoteProtocolError):
            MultistreamNegotiator(role, protocols).receive_data(wire)


def test_unexpected_answer_to_proposal_raises() -> None:
    init = MultistreamNegotiator(Role.INITIATOR, [YAMUX])
    with pytest.raises(RemoteProtocolError, match="answer"):
        init.receive_data(ms.encode_message(ms.PROTOCOL_ID) + ms.encode_message(MPLEX))


def test_state_is_failed_after_remote_error() -> None:
    resp = MultistreamNegotiator(Role.RESPONDER, [YAMUX])
    with pytest.raises(RemoteProtocolError):
        resp.receive_data(b"\x05hello")
    assert resp.state is ms.NegotiationState.FAILED


@pytest.mark.parametrize("cut", [0, 1, 19, 20, 21, 33])
def test_usual_exchange_answers_the_same_whole_or_split(cut: int) -> None:
    whole = MultistreamNegotiator(Role.RESPONDER, frozenset({MPLEX, YAMUX}))
    assert whole.receive_data(FAST_RESPONDER_INPUT) == [
        ms.ProtocolSelected(YAMUX, b"pipelined")
    ]
    split = MultistreamNegotiator(Role.RESPONDER, [MPLEX, YAMUX])
    split.receive_data(FAST_RESPONDER_INPUT[:cut])
    split.receive_data(FAST_RESPONDER_INPUT[cut:])
    expected = ms.encode_message(ms.PROTOCOL_ID) + ms.encode_message(YAMUX)
    assert whole.data_to_send() == split.data_to_send() == expected
    assert whole.selected == split.selected == YAMUX


def test_unsupported_first_proposal_whole_gets_na() -> None:
    resp = MultistreamNegotiator(Role.RESPONDER, [YAMUX])
    wire = ms.encode_message(ms.PROTOCOL_ID) + ms.encode_message(MPLEX)
    assert resp.receive_data(wire) == [ms.ProtocolRefused(MPLEX)]
    assert resp.data_to_send() == ms.encode_message(ms.PROTOCOL_ID) + b"\x03na\n"
