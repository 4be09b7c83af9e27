"""Ping ``/ipfs/ping/1.0.0``: 32 random bytes, echoed back, repeatable on one stream.

Spec: libp2p/specs ping/ping.md. This module checks answers; the caller supplies the
random payload and the clock, so it stays sans-IO.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from peerup.core.errors import RemoteProtocolError

PROTOCOL_ID: Final = "/ipfs/ping/1.0.0"
PAYLOAD_BYTES: Final = 32


@dataclass(frozen=True, slots=True)
class PingResult:
    """One completed ping."""

    rtt_s: float


class PingChecker:
    """Tracks one outstanding ping on a stream."""

    def __init__(self) -> None:
        self._payload: bytes | None = None
        self._sent_at = 0.0
        self._buf = bytearray()

    def start(self, payload: bytes, now: float) -> bytes:
        """Begin a ping with ``payload`` (32 random bytes); returns bytes to send."""
        if len(payload) != PAYLOAD_BYTES:
            raise ValueError("ping payload must be 32 bytes")
        self._payload = payload
        self._sent_at = now
        return payload

    def receive_data(self, data: bytes, now: float) -> PingResult | None:
        """Feed the echoed bytes; returns the result once all 32 arrived.

        Raises:
            RemoteProtocolError: the echo differs from what was sent.
        """
        if self._payload is None:
            raise RemoteProtocolError("ping: unexpected data")
        self._buf += data
        if len(self._buf) < PAYLOAD_BYTES:
            return None
        if bytes(self._buf[:PAYLOAD_BYTES]) != self._payload or len(self._buf) > 32:
            raise RemoteProtocolError("ping: echo does not match")
        self._buf.clear()
        self._payload = None
        return PingResult(now - self._sent_at)
