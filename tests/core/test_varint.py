"""core.varint: multiformats unsigned-varint and length-prefixed framing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerup.core import varint
from peerup.core.errors import RemoteProtocolError

# Known answers from the multiformats/unsigned-varint README.
KNOWN = [
    (0, "00"),
    (1, "01"),
    (127, "7f"),
    (128, "8001"),
    (255, "ff01"),
    (300, "ac02"),
    (16384, "808001"),
    ((1 << 63) - 1, "ffffffffffffffff7f"),
]


@pytest.mark.parametrize(("value", "hex_"), KNOWN)
def test_encode_known_answers(value: int, hex_: str) -> None:
    assert varint.encode(value).hex() == hex_


@pytest.mark.parametrize(("value", "hex_"), KNOWN)
def test_decode_known_answers(value: int, hex_: str) -> None:
    raw = bytes.fromhex(hex_)
    assert varint.decode(raw) == (value, len(raw))


def test_decode_at_offset_returns_new_offset() -> None:
    assert varint.decode(b"\xaa\xac\x02\x05", 1) == (300, 3)


@pytest.mark.parametrize("value", [-1, 1 << 63, 1 << 64])
def test_encode_out_of_range_raises_value_error(value: int) -> None:
    with pytest.raises(ValueError):
        varint.encode(value)


@pytest.mark.parametrize("raw", ["8000", "ff00", "808000", "8180808000"])
def test_non_minimal_encoding_is_rejected(raw: str) -> None:
    with pytest.raises(RemoteProtocolError, match="non-minimal"):
        varint.decode(bytes.fromhex(raw))


def test_zero_as_single_byte_is_minimal() -> None:
    assert varint.decode(b"\x00") == (0, 1)


def test_nine_bytes_is_the_cap() -> None:
    nine = bytes.fromhex("ffffffffffffffff7f")
    assert varint.decode(nine)[0] == (1 << 63) - 1
    with pytest.raises(RemoteProtocolError, match="9 bytes"):
        varint.decode(bytes.fromhex("ffffffffffffffffff01"))


def test_nine_continuation_bytes_fail_without_waiting_for_more() -> None:
    with pytest.raises(RemoteProtocolError):
        varint.try_decode(b"\xff" * 9)


@pytest.mark.parametrize("raw", [b"", b"\x80", b"\xff\xff"])
def test_truncated_varint(raw: bytes) -> None:
    assert varint.try_decode(raw) is None
    with pytest.raises(RemoteProtocolError, match="truncated"):
        varint.decode(raw)


def test_decode_accepts_bytearray_and_memoryview() -> None:
    assert varint.decode(bytearray(b"\xac\x02")) == (300, 2)
    assert varint.decode(memoryview(b"\xac\x02")) == (300, 2)


@given(st.integers(min_value=0, max_value=(1 << 63) - 1))
def test_round_trip(value: int) -> None:
    raw = varint.encode(value)
    assert len(raw) <= varint.MAX_LEN
    assert varint.decode(raw) == (value, len(raw))
    assert varint.decode(b"\x01" + raw + b"\xff", 1) == (value, 1 + len(raw))


@given(st.integers(min_value=0, max_value=(1 << 63) - 1))
def test_every_proper_prefix_needs_more_bytes(value: int) -> None:
    raw = varint.encode(value)
    for cut in range(len(raw)):
        assert varint.try_decode(raw[:cut]) is None


def test_prefixed_message() -> None:
    assert varint.prefixed(b"abc") == b"\x03abc"
    assert varint.prefixed(b"") == b"\x00"


def test_try_read_prefixed_waits_for_whole_message() -> None:
    msg = varint.prefixed(b"x" * 200)
    for cut in range(len(msg)):
        assert varint.try_read_prefixed(msg[:cut], 1000) is None
    assert varint.try_read_prefixed(msg + b"tail", 1000) == (b"x" * 200, len(msg))


def test_try_read_prefixed_at_offset() -> None:
    buf = varint.prefixed(b"one") + varint.prefixed(b"two")
    first, pos = varint.try_read_prefixed(buf, 10) or (b"", 0)
    assert first == b"one"
    assert varint.try_read_prefixed(buf, 10, pos) == (b"two", len(buf))


def test_try_read_prefixed_rejects_oversized_length_before_body() -> None:
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        varint.try_read_prefixed(varint.encode(11), 10)
