"""A small protobuf (proto2/proto3 wire format) codec for the few libp2p messages.

Spec: protobuf encoding guide (wire types 0, 1, 2, 5). Hand-written on purpose: the
messages we need (Noise payload, PublicKey, Identify, circuit-v2, DCUtR, envelopes) are
small and few, and this keeps the protobuf runtime and generated code out of the wire
path (see STYLE.md 3.1). Groups (wire types 3/4) are rejected. Decoding never raises
anything but :class:`RemoteProtocolError`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from peerup.core import varint
from peerup.core.errors import RemoteProtocolError

VARINT: Final = 0
FIXED64: Final = 1
LEN: Final = 2
FIXED32: Final = 5

Field = tuple[int, int, "int | bytes"]


def encode_varint_field(number: int, value: int) -> bytes:
    """Encode a varint field (uint32/uint64/enum/bool)."""
    return varint.encode(number << 3 | VARINT) + varint.encode(value)


def encode_bytes_field(number: int, value: bytes) -> bytes:
    """Encode a length-delimited field (bytes, string, sub-message)."""
    return varint.encode(number << 3 | LEN) + varint.encode(len(value)) + value


def encode_str_field(number: int, value: str) -> bytes:
    """Encode a string field as UTF-8."""
    return encode_bytes_field(number, value.encode())


def decode_fields(data: bytes) -> list[Field]:
    """Split a message into ``(field_number, wire_type, value)`` triples.

    Raises:
        RemoteProtocolError: on any malformed input.
    """
    fields: list[Field] = []
    pos = 0
    end = len(data)
    while pos < end:
        key, pos = varint.decode(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise RemoteProtocolError("protobuf field number 0")
        if wire == VARINT:
            value, pos = varint.decode(data, pos)
            fields.append((number, wire, value))
        elif wire == LEN:
            length, pos = varint.decode(data, pos)
            if pos + length > end:
                raise RemoteProtocolError("protobuf field overruns message")
            fields.append((number, wire, bytes(data[pos : pos + length])))
            pos += length
        elif wire == FIXED64:
            if pos + 8 > end:
                raise RemoteProtocolError("truncated fixed64")
            fields.append((number, wire, int.from_bytes(data[pos : pos + 8], "little")))
            pos += 8
        elif wire == FIXED32:
            if pos + 4 > end:
                raise RemoteProtocolError("truncated fixed32")
            fields.append((number, wire, int.from_bytes(data[pos : pos + 4], "little")))
            pos += 4
        else:
            raise RemoteProtocolError(f"unsupported protobuf wire type {wire}")
    return fields


class Reader:
    """Typed access to a decoded message's fields; unknown fields are ignored."""

    def __init__(self, data: bytes, what: str) -> None:
        self.what = what
        self.fields = decode_fields(data)

    def _typed(self, number: int, wire: int) -> list[int | bytes]:
        out: list[int | bytes] = []
        for num, w, value in self.fields:
            if num != number:
                continue
            if w != wire:
                raise RemoteProtocolError(
                    f"{self.what}: field {number} has wire type {w}, expected {wire}"
                )
            out.append(value)
        return out

    def uint(self, number: int) -> int | None:
        """The last value of a varint field, or None."""
        values = self._typed(number, VARINT)
        return int(values[-1]) if values else None

    def bytes_(self, number: int) -> bytes | None:
        """The last value of a bytes field, or None."""
        values = self._typed(number, LEN)
        value = values[-1] if values else None
        return value if isinstance(value, bytes) else None

    def str_(self, number: int) -> str | None:
        """The last value of a string field, or None."""
        raw = self.bytes_(number)
        return None if raw is None else _utf8(raw, self.what, number)

    def repeated_bytes(self, number: int) -> list[bytes]:
        """All values of a repeated bytes field."""
        return [v for v in self._typed(number, LEN) if isinstance(v, bytes)]

    def repeated_str(self, number: int) -> list[str]:
        """All values of a repeated string field."""
        return [_utf8(v, self.what, number) for v in self.repeated_bytes(number)]


def _utf8(raw: bytes, what: str, number: int) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise RemoteProtocolError(f"{what}: field {number} is not UTF-8") from None


def join(parts: Iterable[bytes]) -> bytes:
    """Concatenate encoded fields into a message."""
    return b"".join(parts)
