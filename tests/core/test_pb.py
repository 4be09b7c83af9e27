"""core.pb: the small protobuf wire codec."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerup.core import pb
from peerup.core.errors import RemoteProtocolError


def test_varint_field_known_answer() -> None:
    # The protobuf encoding guide's example: field 1 = 150.
    assert pb.encode_varint_field(1, 150).hex() == "089601"


def test_string_field_known_answer() -> None:
    # The protobuf encoding guide's example: field 2 = "testing".
    assert pb.encode_str_field(2, "testing").hex() == "120774657374696e67"


def test_bytes_field_with_large_field_number() -> None:
    # Key (16 << 3 | 2) = 130 needs a two-byte varint.
    assert pb.encode_bytes_field(16, b"\x01").hex() == "82010101"


def test_decode_all_supported_wire_types() -> None:
    raw = (
        pb.encode_varint_field(1, 150)
        + bytes.fromhex("11")
        + (7).to_bytes(8, "little")  # field 2, fixed64
        + pb.encode_bytes_field(3, b"abc")
        + bytes.fromhex("25")
        + (9).to_bytes(4, "little")  # field 4, fixed32
    )
    assert pb.decode_fields(raw) == [
        (1, pb.VARINT, 150),
        (2, pb.FIXED64, 7),
        (3, pb.LEN, b"abc"),
        (4, pb.FIXED32, 9),
    ]


def test_empty_message_has_no_fields() -> None:
    assert pb.decode_fields(b"") == []


@pytest.mark.parametrize("wire", [3, 4, 6, 7])
def test_groups_and_unknown_wire_types_are_rejected(wire: int) -> None:
    with pytest.raises(RemoteProtocolError, match="wire type"):
        pb.decode_fields(bytes((1 << 3 | wire, 0)))


def test_field_number_zero_is_rejected() -> None:
    with pytest.raises(RemoteProtocolError, match="field number 0"):
        pb.decode_fields(b"\x00\x01")


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ("0a05616263", "overruns"),
        ("0901020304", "fixed64"),
        ("0d0102", "fixed32"),
        ("08", "truncated"),
        ("0a", "truncated"),
        ("80", "truncated"),
    ],
)
def test_truncated_fields_are_rejected(raw: str, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        pb.decode_fields(bytes.fromhex(raw))


def test_reader_takes_last_scalar_and_all_repeated() -> None:
    raw = pb.join(
        [
            pb.encode_varint_field(1, 1),
            pb.encode_str_field(2, "a"),
            pb.encode_varint_field(1, 2),
            pb.encode_str_field(2, "b"),
            pb.encode_bytes_field(9, b"unknown field, ignored"),
        ]
    )
    msg = pb.Reader(raw, "Test")
    assert msg.uint(1) == 2
    assert msg.str_(2) == "b"
    assert msg.repeated_str(2) == ["a", "b"]
    assert msg.repeated_bytes(2) == [b"a", b"b"]
    assert msg.uint(3) is None
    assert msg.bytes_(3) is None
    assert msg.str_(3) is None
    assert msg.repeated_str(3) == []


def test_reader_rejects_wrong_wire_type() -> None:
    msg = pb.Reader(pb.encode_varint_field(1, 5), "Test")
    with pytest.raises(RemoteProtocolError, match="wire type"):
        msg.bytes_(1)
    msg = pb.Reader(pb.encode_bytes_field(1, b"x"), "Test")
    with pytest.raises(RemoteProtocolError, match="wire type"):
        msg.uint(1)


def test_reader_rejects_invalid_utf8_string() -> None:
    msg = pb.Reader(pb.encode_bytes_field(1, b"\xff\xfe"), "Test")
    with pytest.raises(RemoteProtocolError, match="UTF-8"):
        msg.str_(1)
    with pytest.raises(RemoteProtocolError, match="UTF-8"):
        msg.repeated_str(1)


def test_reader_rejects_malformed_message_on_construction() -> None:
    with pytest.raises(RemoteProtocolError):
        pb.Reader(b"\x0a\x05ab", "Test")


fields = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=(1 << 29) - 1),
        st.one_of(
            st.integers(min_value=0, max_value=(1 << 63) - 1),
            st.binary(max_size=300),
        ),
    ),
    max_size=8,
)


@given(fields)
def test_encode_decode_round_trip(items: list[tuple[int, int | bytes]]) -> None:
    parts: list[bytes] = []
    expected: list[pb.Field] = []
    for number, value in items:
        if isinstance(value, int):
            parts.append(pb.encode_varint_field(number, value))
            expected.append((number, pb.VARINT, value))
        else:
            parts.append(pb.encode_bytes_field(number, value))
            expected.append((number, pb.LEN, value))
    assert pb.decode_fields(pb.join(parts)) == expected
