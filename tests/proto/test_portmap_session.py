"""proto/portmap.py: one mapping through PCP or NAT-PMP, driven with a test clock and
a gateway written out here (no sockets)."""

from __future__ import annotations

import struct

import pytest

from peerup.core.errors import RemoteProtocolError
from peerup.proto import natpmp, pcp
from peerup.proto.portmap import (
    GatewaySilent,
    MappingGranted,
    MappingRefused,
    MappingReleased,
    Method,
    PortMapSession,
    SessionState,
)

NONCE = b"n" * 12


def _session(**kw: object) -> PortMapSession:
    return PortMapSession("tcp", 4001, "10.1.0.2", NONCE, lifetime_s=3600, **kw)  # type: ignore[arg-type]


def _pcp_answer(
    request: bytes, *, result: int = 0, port: int = 41234, life: int = 3600
) -> bytes:
    """What a PCP gateway answers to ``request`` (a MAP request we sent)."""
    lifetime = struct.unpack_from("!I", request, 4)[0]
    nonce = request[24:36]
    return pcp.MapResponse(
        result, min(lifetime, life), 9, nonce, "tcp", 4001, port if lifetime else 0,
        "203.0.113.20",
    ).encode()  # fmt: skip


def test_pcp_grant_then_renewal_at_half_the_lifetime_repeats_nonce_and_port() -> None:
    s = _session()
    s.start(100.0)
    [request] = s.data_to_send()
    assert request[0] == pcp.VERSION and request[24:36] == NONCE
    [granted] = s.receive_datagram(_pcp_answer(request, life=600), 100.1)
    assert granted == MappingGranted(Method.PCP, "203.0.113.20", 41234, 600, False)
    assert s.state is SessionState.MAPPED
    assert s.next_deadline() == pytest.approx(400.1)
    assert s.handle_timeout(400.0) == [] and s.data_to_send() == []
    assert s.handle_timeout(400.1) == []
    [renewal] = s.data_to_send()
    assert renewal[24:36] == NONCE
    assert struct.unpack_from("!H", renewal, 42)[0] == 41234  # the port granted
    assert renewal[56:60] == bytes([203, 0, 113, 20])  # and its address
    [again] = s.receive_datagram(_pcp_answer(renewal, life=600), 400.2)
    assert isinstance(again, MappingGranted) and again.renewal


def test_unanswered_requests_are_resent_at_250_ms_doubling_then_silent() -> None:
    s = _session(max_tries=4)
    s.start(0.0)
    first = s.data_to_send()
    sent_at = []
    now = 0.0
    while (deadline := s.next_deadline()) is not None:
        now = deadline
        events = s.handle_timeout(now)
        if events:
            assert events == [GatewaySilent(Method.PCP, 4)]
            break
        assert s.data_to_send() == first
        sent_at.append(now)
    assert sent_at == [0.25, 0.75, 1.75]
    assert now == 3.75 and s.state is SessionState.FAILED
    assert s.receive_datagram(_pcp_answer(first[0]), 4.0) == []  # too late: ignored


def test_natpmp_only_gateway_gets_natpmp() -> None:
    """RFC 6887 section 9: a NAT-PMP gateway answers PCP with its "unsupported
    version"; the same mapping then goes through NAT-PMP (address + map)."""
    s = _session()
    s.start(0.0)
    s.data_to_send()
    unsupported = struct.pack("!BBHI", 0, 129, natpmp.ResultCode.UNSUPPORTED_VERSION, 0)
    assert s.receive_datagram(unsupported, 0.01) == []
    assert s.method is Method.NATPMP
    address_req, map_req = s.data_to_send()
    assert address_req == natpmp.ExternalAddressRequest().encode()
    assert map_req == natpmp.MapRequest("tcp", 4001, 4001, 3600).encode()
    mapped = natpmp.MapResponse(0, 1, "tcp", 4001, 4001, 7200).encode()
    assert s.receive_datagram(mapped, 0.02) == []  # the address is still missing
    address = natpmp.ExternalAddressResponse(0, 1, "198.51.100.10").encode()
    [granted] = s.receive_datagram(address, 0.03)
    assert granted == MappingGranted(Method.NATPMP, "198.51.100.10", 4001, 7200, False)
    # Deleting: lifetime 0 and suggested port 0 (RFC 6886 3.4).
    assert s.release(1.0) == []
    [delete] = s.data_to_send()
    assert delete == natpmp.MapRequest("tcp", 4001, 0, 0).encode()
    done = natpmp.MapResponse(0, 2, "tcp", 4001, 0, 0).encode()
    assert s.receive_datagram(done, 1.1) == [MappingReleased(answered=True)]


def test_a_refusal_is_an_event_with_the_gateways_reason() -> None:
    s = _session()
    s.start(0.0)
    [request] = s.data_to_send()
    [refused] = s.receive_datagram(
        _pcp_answer(request, result=pcp.ResultCode.NOT_AUTHORIZED)[:24], 0.1
    )
    assert refused == MappingRefused(
        Method.PCP, 2, "not authorized (mappings are disabled on the router)"
    )
    assert s.state is SessionState.FAILED


def test_pcp_only_does_not_fall_back() -> None:
    s = _session(methods=(Method.PCP,))
    s.start(0.0)
    s.data_to_send()
    [refused] = s.receive_datagram(struct.pack("!BBHI", 0, 129, 1, 0), 0.1)
    assert isinstance(refused, MappingRefused) and "NAT-PMP" in refused.reason


def test_bad_and_foreign_answers_leave_the_request_waiting() -> None:
    s = _session()
    s.start(0.0)
    [request] = s.data_to_send()
    with pytest.raises(RemoteProtocolError):
        s.receive_datagram(b"\x02\x81junk", 0.1)
    other = bytearray(_pcp_answer(request))
    other[24:36] = b"x" * 12  # another client's nonce
    assert s.receive_datagram(bytes(other), 0.1) == []
    with pytest.raises(RemoteProtocolError, match="NAT-PMP answer"):
        s.receive_datagram(struct.pack("!BBHI", 0, 129, 3, 0), 0.1)
    assert s.state is SessionState.REQUESTING
    [granted] = s.receive_datagram(_pcp_answer(request), 0.2)
    assert isinstance(granted, MappingGranted)


def test_release_unanswered_ends_after_the_tries_and_twice_is_a_no_op() -> None:
    s = _session(max_tries=2)
    s.start(0.0)
    [request] = s.data_to_send()
    s.receive_datagram(_pcp_answer(request), 0.1)
    assert s.release(1.0) == []
    [delete] = s.data_to_send()
    assert struct.unpack_from("!I", delete, 4)[0] == 0 and delete[24:36] == NONCE
    assert s.handle_timeout(1.25) == []
    assert s.handle_timeout(1.75) == [MappingReleased(answered=False)]
    assert s.release(2.0) == []
    assert s.state is SessionState.RELEASED


def test_release_before_start_is_immediate() -> None:
    assert _session().release(0.0) == [MappingReleased(answered=True)]
