"""An ``asyncio.Transport`` over a yamux stream, so a whole libp2p connection can run
inside one stream: this is how a relayed (``/p2p-circuit``) connection is carried.

Spec: libp2p/specs relay/circuit-v2.md "Connection upgrade": after the relay answers
STATUS OK, each end treats its hop or stop stream as a raw connection and runs the
normal upgrade (multistream, Noise, yamux) over it. Writes that exceed the stream's
send window are buffered here and the protocol is paused (``pause_writing``) above
``high_water_bytes``, which carries backpressure through the relay. A piece that fits
one frame of the stream (the carried connection sizes its Noise frames so) waits for
window for all of it rather than being split, so that the far end finds every Noise
frame whole in one stream frame. ``pause_reading`` holds what the stream delivers
without acknowledging it, so the far end stalls once the stream's window is used.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from typing import Any, Final

from peerup.core.errors import ConnectionClosed
from peerup.net.stream import Stream

HIGH_WATER_BYTES: Final = 1024 * 1024


class StreamTransport(asyncio.Transport):
    """Presents ``stream`` as a transport to ``protocol``."""

    def __init__(
        self,
        stream: Stream,
        peer_addr: object = None,
        *,
        limit_duration_s: float = 0.0,
        limit_data_bytes: int = 0,
    ) -> None:
        super().__init__()
        self._stream = stream
        self._loop = stream.conn.loop
        self._protocol: asyncio.Protocol | None = None
        self._pending: deque[memoryview] = deque()
        self._pending_bytes = 0
        self._paused = False
        self._closing = False
        self._lost = False
        self._high = HIGH_WATER_BYTES
        self._peer_addr = peer_addr
        self._reading_paused = False
        self._unread: list[bytes] = []
        """What arrived while reading was paused, unacknowledged (the stream's
        window bounds it)."""
        self.limit_duration_s = limit_duration_s
        """The circuit's limits as the relay announced them (0: none); with the
        bytes carried and the time open they tell a relay's limit from the far
        peer going away when the relay resets the stream."""
        self.limit_data_bytes = limit_data_bytes
        self.bytes_in = 0
        self.bytes_out = 0
        self._started_at = self._loop.time()

    def start(self, protocol: asyncio.Protocol) -> None:
        """Attach ``protocol`` and start delivering data to it."""
        self._protocol = protocol
        protocol.connection_made(self)
        self._stream.attach(self)

    # --- StreamSink -------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._reading_paused:
            self._unread.append(data)
            return
        # The inner connection consumes at once and has its own yamux flow control,
        # so the outer stream's bytes are acknowledged right away.
        self._stream.conn.acknowledge(self._stream.stream_id, len(data))
        self.bytes_in += len(data)
        if self._protocol is not None and not self._lost:
            self._protocol.data_received(data)

    def stream_ended(self) -> None:
        if self._protocol is not None and not self._lost:
            self._protocol.eof_received()
        self._lose(None)

    def stream_failed(self, error: BaseException) -> None:
        self._lose(ConnectionClosed(f"relayed stream failed: {error}{self._limit_hit()}"))

    def _limit_hit(self) -> str:
        """" (relay data limit reached after 1.0 MB)" when the bytes carried or the
        time open reached a limit the relay announced; else "(no relay limit
        reached)" when it announced one, and nothing when it announced none."""
        if not self.limit_duration_s and not self.limit_data_bytes:
            return ""
        carried = max(self.bytes_in, self.bytes_out)
        limit = self.limit_data_bytes
        # The relay forwards whole pieces up to the limit and resets on the piece
        # that would pass it: what got through is within one frame of the limit.
        if limit and carried >= limit - min(limit // 2, 70_000):
            return f" (relay data limit reached after {human_size(carried)})"
        elapsed = self._loop.time() - self._started_at
        if self.limit_duration_s and elapsed >= self.limit_duration_s - 1.0:
            return f" (relay time limit reached after {elapsed:.0f} s)"
        return " (no relay limit reached)"

    def window_opened(self) -> None:
        self._push()

    # --- asyncio.Transport ------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peer_addr
        if name == "stream":
            return self._stream
        return default

    def is_closing(self) -> bool:
        return self._closing

    def is_reading(self) -> bool:
        return not self._reading_paused

    def pause_reading(self) -> None:
        """Hold what the stream delivers, unacknowledged, so the far end stalls."""
        self._reading_paused = True

    def resume_reading(self) -> None:
        if not self._reading_paused:
            return
        self._reading_paused = False
        unread, self._unread = self._unread, []
        for data in unread:
            self.data_received(data)  # holds it again if reading paused meanwhile

    def set_write_buffer_limits(
        self, high: int | None = None, low: int | None = None
    ) -> None:
        if high is not None:
            self._high = high

    def get_write_buffer_size(self) -> int:
        return self._pending_bytes

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._lost or not data:
            return
        self._pending.append(memoryview(data))
        self._pending_bytes += len(data)
        self._push()

    def writelines(
        self, list_of_data: Iterable[bytes | bytearray | memoryview]
    ) -> None:
        """Each piece is sent by itself (a piece up to one frame of the stream goes
        as one frame), and all of them in one write of the carrying connection."""
        if self._closing or self._lost:
            return
        for data in list_of_data:
            if data:
                self._pending.append(memoryview(data))
                self._pending_bytes += len(data)
        self._push()

    def _push(self) -> None:
        conn = self._stream.conn
        stream_id = self._stream.stream_id
        sent = False
        try:
            while self._pending:
                view = self._pending[0]
                # A piece that fits one frame waits for room for all of it.
                n = conn.send_stream_data(stream_id, view, flush=False, whole=True)
                if n == 0:
                    break  # window_opened() pushes again
                sent = True
                self.bytes_out += n
                self._pending_bytes -= n
                if n == len(view):
                    self._pending.popleft()
                else:
                    self._pending[0] = view[n:]
            if sent:
                conn.flush()
        except ConnectionClosed as exc:
            self._lose(exc)
            return
        if self._protocol is None:
            return
        if not self._paused and self._pending_bytes > self._high:
            self._paused = True
            self._protocol.pause_writing()
        elif self._paused and self._pending_bytes <= self._high // 4:
            self._paused = False
            self._protocol.resume_writing()
        if self._closing and not self._pending:
            self._finish_close()

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if not self._pending:
            self._finish_close()

    def _finish_close(self) -> None:
        self._stream.conn.close_stream(self._stream.stream_id)
        self._lose(None)

    def abort(self) -> None:
        self._closing = True
        self._pending.clear()
        self._stream.reset()
        self._lose(None)

    def _lose(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        if self._protocol is not None:
            self._loop.call_soon(self._protocol.connection_lost, exc)


def human_size(n: int) -> str:
    """``1.0 MB``, ``12.3 kB``, ``512 B`` (decimal units, for logs)."""
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f} MB"
    if n >= 1_000:
        return f"{n / 1_000:.1f} kB"
    return f"{n} B"
