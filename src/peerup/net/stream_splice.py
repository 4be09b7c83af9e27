"""Joins two libp2p streams with sink callbacks, no tasks: the relay's circuit copy.

Spec: libp2p/specs relay/circuit-v2.md (a relay splices the hop and stop streams;
limits end the circuit with a reset). Bytes received on one stream are written into
the other stream's send window at once and acknowledged to the sender only once
forwarded, so a slow far side stalls the near writer (backpressure through the relay)
and the relay buffers at most what one window allows. Half-close is passed on; a reset
on either side resets the other. Optional limits: bytes per direction and a duration;
when one is hit both streams are reset, so each end sees an error, not a clean end.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from peerup.core.errors import ConnectionClosed
from peerup.net.stream import Stream


@dataclass(frozen=True, slots=True)
class StreamSpliceResult:
    a_to_b_bytes: int
    b_to_a_bytes: int
    duration_s: float
    ended_by: str
    """"eof", "data limit", "duration limit", or "reset: …"."""


class _Half:
    """One direction: bytes from ``src`` are forwarded into ``dst``."""

    __slots__ = ("splice", "src", "dst", "pending", "held_acks", "count", "ended")

    def __init__(self, splice: StreamSplice, src: Stream, dst: Stream) -> None:
        self.splice = splice
        self.src = src
        self.dst = dst
        self.pending: deque[memoryview] = deque()
        self.held_acks = 0
        self.count = 0
        self.ended = False

    # StreamSink of ``src``
    def data_received(self, data: bytes) -> None:
        limit = self.splice.data_limit
        if limit is not None and self.count + len(data) > limit:
            self.splice.finish("data limit")
            return
        self.count += len(data)
        self.pending.append(memoryview(data))
        if len(self.pending) == 1:
            self.push()

    def _ack(self, n: int) -> None:
        if not n:
            return
        if self.dst.conn.is_write_paused:
            # The far socket is backed up: withhold the window so our sender waits.
            if not self.held_acks:
                self.dst.conn.on_writable(self._release)
            self.held_acks += n
        else:
            self.src.conn.acknowledge(self.src.stream_id, n)

    def _release(self) -> None:
        held, self.held_acks = self.held_acks, 0
        if held and not self.splice.is_done:
            self.src.conn.acknowledge(self.src.stream_id, held)

    def stream_ended(self) -> None:
        self.ended = True
        if not self.pending:
            self._pass_end()

    def _pass_end(self) -> None:
        self.dst.conn.close_stream(self.dst.stream_id)
        self.splice.check_done()

    def stream_failed(self, error: BaseException) -> None:
        self.splice.finish(f"reset: {error}")

    def push(self) -> None:
        """Forward what ``dst``'s window takes (also called when that window opens);
        bytes are acknowledged to ``src`` only as they are forwarded."""
        src_conn, dst_conn = self.src.conn, self.dst.conn
        # Inside src's read: one write to dst for all of it, once it is dispatched.
        dst_conn.flush_at_end_of(src_conn)
        while self.pending:
            view = self.pending[0]
            try:
                n = dst_conn.send_stream_data(
                    self.dst.stream_id, view, flush=not src_conn.in_batch
                )
            except ConnectionClosed as exc:
                self.splice.finish(f"reset: {exc}")
                return
            self._ack(n)
            if n < len(view):
                self.pending[0] = view[n:]
                return
            self.pending.popleft()
        if self.ended:
            self._pass_end()


class _Sink:
    """The sink attached to one stream: its data feeds one half, its window the other."""

    __slots__ = ("reading", "writing")

    def __init__(self, reading: _Half, writing: _Half) -> None:
        self.reading = reading  # the half whose src is this stream
        self.writing = writing  # the half whose dst is this stream

    def data_received(self, data: bytes) -> None:
        self.reading.data_received(data)

    def stream_ended(self) -> None:
        self.reading.stream_ended()

    def stream_failed(self, error: BaseException) -> None:
        self.reading.stream_failed(error)

    def window_opened(self) -> None:
        self.writing.push()


class StreamSplice:
    """Forwards ``a`` ↔ ``b`` until both ended, or a reset or limit ends it."""

    def __init__(
        self,
        a: Stream,
        b: Stream,
        *,
        data_limit: int | None = None,
        duration_limit_s: float | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.a, self.b = a, b
        self.data_limit = data_limit
        self.started_at = self.loop.time()
        self.done: asyncio.Future[StreamSpliceResult] = self.loop.create_future()
        self.ab = _Half(self, a, b)
        self.ba = _Half(self, b, a)
        self._timer = (
            self.loop.call_later(duration_limit_s, self.finish, "duration limit")
            if duration_limit_s
            else None
        )
        a.attach(_Sink(self.ab, self.ba))
        b.attach(_Sink(self.ba, self.ab))

    @property
    def is_done(self) -> bool:
        return self.done.done()

    def check_done(self) -> None:
        ab, ba = self.ab, self.ba
        if ab.ended and ba.ended and not ab.pending and not ba.pending:
            self.finish("eof")

    def finish(self, why: str) -> None:
        if self.done.done():
            return
        if self._timer is not None:
            self._timer.cancel()
        if why != "eof":
            self.a.reset()
            self.b.reset()
        self.done.set_result(
            StreamSpliceResult(
                self.ab.count, self.ba.count, self.loop.time() - self.started_at, why
            )
        )
