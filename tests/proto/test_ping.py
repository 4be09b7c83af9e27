"""proto.ping: the 32-byte echo checker."""

from __future__ import annotations

import pytest

from peerup.core.errors import RemoteProtocolError
from peerup.proto.ping import PAYLOAD_BYTES, PingChecker, PingResult

PAYLOAD = bytes(range(32))


def test_echo_gives_rtt() -> None:
    checker = PingChecker()
    assert checker.start(PAYLOAD, now=5.0) == PAYLOAD
    assert checker.receive_data(PAYLOAD, now=5.5) == PingResult(0.5)


def test_echo_in_pieces() -> None:
    checker = PingChecker()
    checker.start(PAYLOAD, now=0.0)
    for i in range(PAYLOAD_BYTES - 1):
        assert checker.receive_data(PAYLOAD[i : i + 1], now=1.0) is None
    assert checker.receive_data(PAYLOAD[-1:], now=2.0) == PingResult(2.0)


def test_repeated_pings_on_one_stream() -> None:
    checker = PingChecker()
    for n in range(3):
        checker.start(bytes([n]) * 32, now=float(n))
        assert checker.receive_data(bytes([n]) * 32, now=n + 0.1) is not None


def test_wrong_echo_is_refused() -> None:
    checker = PingChecker()
    checker.start(PAYLOAD, now=0.0)
    with pytest.raises(RemoteProtocolError):
        checker.receive_data(PAYLOAD[::-1], now=1.0)


def test_too_long_echo_is_refused() -> None:
    checker = PingChecker()
    checker.start(PAYLOAD, now=0.0)
    with pytest.raises(RemoteProtocolError):
        checker.receive_data(PAYLOAD + b"\x00", now=1.0)


def test_data_without_a_ping_is_refused() -> None:
    with pytest.raises(RemoteProtocolError):
        PingChecker().receive_data(b"x", now=0.0)


@pytest.mark.parametrize("size", [0, 31, 33])
def test_payload_must_be_32_bytes(size: int) -> None:
    with pytest.raises(ValueError):
        PingChecker().start(b"\x00" * size, now=0.0)
