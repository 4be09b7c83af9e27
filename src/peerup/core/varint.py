"""Unsigned varints (multiformats unsigned-varint) and length-prefixed framing.

Spec: multiformats/unsigned-varint. Values are limited to 63 bits and 9 bytes, and
non-minimal encodings are rejected, as the spec requires.
"""

from __future__ import annotations

from typing import Final

from peerup.core.errors import RemoteProtocolError

MAX_LEN: Final = 9


def encode(value: int) -> bytes:
    """Encode a non-negative integer as an unsigned varint."""
    if value < 0 or value >= 1 << 63:
        raise ValueError(f"varint out of range: {value}")
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int]:
    """Decode one varint at ``offset``.

    Returns:
        ``(value, new_offset)``.

    Raises:
        RemoteProtocolError: truncated, too long or non-minimal input.
    """
    result = try_decode(data, offset)
    if result is None:
        raise RemoteProtocolError("truncated varint")
    return result


def try_decode(
    data: bytes | bytearray | memoryview, offset: int = 0
) -> tuple[int, int] | None:
    """Like :func:`decode`, but return None when more bytes are needed."""
    value = 0
    shift = 0
    pos = offset
    end = len(data)
    while pos < end:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if byte == 0 and pos - offset > 1:
                raise RemoteProtocolError("non-minimal varint")
            return value, pos
        shift += 7
        if pos - offset >= MAX_LEN:
            raise RemoteProtocolError("varint longer than 9 bytes")
    return None


def prefixed(payload: bytes) -> bytes:
    """Prefix ``payload`` with its varint length."""
    return encode(len(payload)) + payload


def try_read_prefixed(
    buf: bytes | bytearray, max_len: int, offset: int = 0
) -> tuple[bytes, int] | None:
    """Read one varint-length-prefixed message from ``buf`` at ``offset``.

    Returns:
        ``(payload, new_offset)``, or None when the message is not complete yet.

    Raises:
        RemoteProtocolError: malformed length, or a length above ``max_len``.
    """
    head = try_decode(buf, offset)
    if head is None:
        return None
    length, pos = head
    if length > max_len:
        raise RemoteProtocolError(f"message of {length} bytes exceeds {max_len}")
    if len(buf) - pos < length:
        return None
    return bytes(buf[pos : pos + length]), pos + length
