"""Stream: what the application sees of one yamux stream.

Spec: libp2p/specs yamux/README.md (half-close, reset) and
connections/README.md (one protocol per stream, negotiated with multistream-select).
Shaped like asyncio's streams: ``read``, ``readexactly``, ``readline``, ``write`` (waits
for flow-control window and for the socket to drain), ``close_write`` (half-close),
``reset`` and ``aclose``; an async context manager that resets on error.

Reading acknowledges consumed bytes to yamux, which is what re-opens the peer's send
window: a reader that stops reading stalls the writer, nothing is dropped or reset.
An outbound stream with one protocol negotiates optimistically: writes go out at once
and the responder's confirmation is consumed before the first read returns data.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Collection
from typing import TYPE_CHECKING, Final, Protocol

from peerup.core.errors import (
    ConnectionClosed,
    LocalProtocolError,
    NegotiationError,
    StreamReset,
)
from peerup.proto import multistream

if TYPE_CHECKING:
    from types import TracebackType

    from peerup.core.peer_id import PeerId
    from peerup.net.connection import Connection

DEFAULT_READ_BYTES: Final = 256 * 1024


class StreamSink(Protocol):
    """Receives a stream's events directly instead of buffering them for read()."""

    def data_received(self, data: bytes) -> None: ...

    def stream_ended(self) -> None: ...

    def stream_failed(self, error: BaseException) -> None: ...

    def window_opened(self) -> None: ...


class Stream:
    """One bidirectional byte stream over a connection."""

    _expect: bytes | None
    """An optimistic opener's awaited answer (header and proposal, echoed back)
    while no negotiator exists (see _feed)."""
    _supported: Collection[str] | None
    """An inbound stream's protocols while no negotiator exists (see _feed)."""

    def __init__(
        self,
        conn: Connection,
        stream_id: int,
        negotiator: multistream.MultistreamNegotiator | None,
        *,
        expect: str | None = None,
        supported: Collection[str] | None = None,
    ) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self._negotiator = negotiator
        self._chunks: deque[bytes] = deque()
        self.protocol: str | None = None
        self.bytes_read = 0
        self.bytes_written = 0
        self._buffered = 0
        self._head = 0  # offset into _chunks[0] already consumed
        self._eof = False
        self._error: BaseException | None = None
        self._read_waiter: asyncio.Future[None] | None = None
        self._write_waiter: asyncio.Future[None] | None = None
        # Created only if someone waits for the negotiation (most never do).
        self._negotiated: asyncio.Future[str] | None = None
        self._negotiation_error: BaseException | None = None
        self._write_closed = False
        self._discard = False
        self._sink: StreamSink | None = None
        self._reply = b""
        self._data_in_opening = False
        self._expect = None
        self._supported = None
        # Inbound: answered once the frames that opened it are processed (opened()).
        self._opening = supported is not None or (
            negotiator is not None and negotiator.role is multistream.Role.RESPONDER
        )
        if supported is not None:
            # No negotiator unless the opener's first bytes are not simply the header
            # and one proposal we support.
            self._supported = supported
        # The connection sends the negotiator's first bytes (see Connection.open_stream
        # and Connection._on_muxed), so that they can share a frame with what follows.
        if expect is not None:
            # Optimistic, one proposal: no negotiator unless the answer differs.
            self.protocol = expect
            self._expect = multistream.opening_message(expect)

    # --- identity ---------------------------------------------------------------

    @property
    def remote_peer(self) -> PeerId:
        return self.conn.remote_peer

    @property
    def is_reset(self) -> bool:
        return isinstance(self._error, StreamReset)

    @property
    def is_negotiated(self) -> bool:
        """The peer agreed on the protocol (an optimistic opener: it confirmed).

        Stays true once reached, even after a reset: a splice tells a refused stream
        (never agreed) from a cut one by it.
        """
        return not self._negotiating and self._negotiation_error is None

    @property
    def negotiation_error(self) -> BaseException | None:
        """Why the protocol was not agreed (``NegotiationError``: the peer answered
        ``na``), or None."""
        return self._negotiation_error

    def __repr__(self) -> str:
        return f"<Stream {self.stream_id} {self.protocol} {self.conn!r}>"

    # --- called by the connection driver ----------------------------------------

    def _feed(self, data: bytes) -> None:
        supported = self._supported
        if supported is not None:
            self._supported = None
            found = multistream.proposal_at_start(data, supported)
            if found is None:
                self._negotiator = multistream.MultistreamNegotiator(
                    multistream.Role.RESPONDER, supported
                )
            else:
                protocol, end = found
                # Our answer is the same header and proposal back.
                if self._opening:
                    self._reply += data[:end]
                else:
                    self._send_raw(data[:end])
                self.protocol = protocol
                data = self._selected(data, end)
                if not data:
                    return
        expect = self._expect
        if expect is not None:
            self._expect = None
            if data.startswith(expect):
                data = self._selected(data, len(expect))
                if not data:
                    return
            else:
                # Split, refused or otherwise different: the negotiator takes over,
                # in the state of having sent header and proposal already.
                assert self.protocol is not None
                self._negotiator = multistream.MultistreamNegotiator(
                    multistream.Role.INITIATOR, [self.protocol], optimistic=True
                )
                self._negotiator.data_to_send()
        neg = self._negotiator
        if neg is not None:
            try:
                events = neg.receive_data(data)
            except Exception as exc:  # RemoteProtocolError, LocalProtocolError
                self.conn.acknowledge(self.stream_id, len(data))
                self._fail_negotiation(f"multistream: {exc}")
                return
            if self._opening:
                # Answered when the frames that opened the stream are processed
                # (opened()), once we know whether data came right behind them.
                self._reply += neg.data_to_send()
            else:
                self._send_raw(neg.data_to_send())
            leftover = b""
            for ev in events:
                if isinstance(ev, multistream.ProtocolRefused):
                    self.conn.on_protocol_refused(self, ev.protocol)
                elif isinstance(ev, multistream.ProtocolSelected):
                    self._negotiator = None
                    self.protocol = ev.protocol
                    leftover = ev.leftover
                    self._negotiation_done()
                    self.conn.on_stream_negotiated(self)
                elif isinstance(ev, multistream.NegotiationFailed):
                    self._fail_negotiation(ev.reason)
            # Negotiation bytes are consumed here; leftover application data is
            # acknowledged when the application reads it.
            self.conn.acknowledge(self.stream_id, len(data) - len(leftover))
            if leftover:
                self._feed(leftover)
            return
        if self._opening:
            self._data_in_opening = True
        if self._discard:
            self.conn.acknowledge(self.stream_id, len(data))
            return
        if self._sink is not None:
            # Attached: deliver at once. The sink acknowledges the bytes to yamux when
            # it has passed them on, which keeps backpressure.
            self._sink.data_received(data)
            return
        self._chunks.append(data)
        self._buffered += len(data)
        self._wake_reader()

    def _selected(self, data: bytes, end: int) -> bytes:
        """The short paths of _feed agreed on ``self.protocol`` with ``data[:end]``:
        report it, consume those bytes; returns what follows them."""
        self._negotiation_done()
        self.conn.on_stream_negotiated(self)
        self.conn.acknowledge(self.stream_id, end)
        return data[end:]

    def _negotiation_done(self) -> None:
        waiter = self._negotiated
        if waiter is not None and not waiter.done():
            assert self.protocol is not None
            waiter.set_result(self.protocol)

    @property
    def _negotiating(self) -> bool:
        return (
            self._negotiator is not None
            or self._expect is not None
            or self._supported is not None
        )

    def _fail_negotiation(self, reason: str) -> None:
        err = NegotiationError(reason)
        self._negotiator = None
        self._expect = None
        self._supported = None
        self._negotiation_failed(err)
        self._error = err
        self.conn.reset_stream(self.stream_id)
        if self._sink is not None:
            # A splice joined before the answer came (a proxy's optimistic stream)
            # must hear of it, or its TCP client waits for bytes that never come.
            self._sink.stream_failed(err)
        self._wake_reader()
        self._wake_writer()

    def _end(self) -> None:
        self._eof = True
        if self._sink is not None:
            self._sink.stream_ended()
        if self._negotiating:
            self._fail_negotiation("stream closed during protocol negotiation")
        self._wake_reader()

    def _reset(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        if self._sink is not None:
            self._sink.stream_failed(error)
        if self._negotiating:
            self._negotiator = None
            self._expect = None
            self._supported = None
            self._negotiation_failed(error)
        self._wake_reader()
        self._wake_writer()

    def _window_opened(self) -> None:
        self._wake_writer()
        if self._sink is not None:
            self._sink.window_opened()

    def attach(self, sink: StreamSink) -> None:
        """Deliver all further data straight to ``sink`` (used for relayed connections).

        Data already buffered is delivered first; an ended stream reports at once.
        """
        self._sink = sink
        while self._chunks:
            self._take_all_into(sink)
        if self._eof:
            sink.stream_ended()
        elif self._error is not None:
            sink.stream_failed(self._error)

    def _take_all_into(self, sink: StreamSink) -> None:
        # Not via _take: that would acknowledge, and the sink acknowledges itself.
        chunk = self._chunks.popleft()
        data = chunk[self._head :] if self._head else chunk
        self._head = 0
        self._buffered -= len(data)
        self.bytes_read += len(data)
        if data:
            sink.data_received(data)

    def _wake_reader(self) -> None:
        waiter = self._read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_writer(self) -> None:
        waiter = self._write_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _send_raw(self, data: bytes) -> None:
        if data:
            self.conn.send_stream_data(self.stream_id, data, flush=False)

    def opened(self) -> None:
        """The frames that opened this inbound stream are processed: answer them.

        If the opener sent data right behind its protocol proposal, it negotiates
        optimistically and is not waiting for our answer, so the answer (and the
        yamux ACK) is held for our first reply bytes: one write instead of two
        (``Connection.hold_answer``). Otherwise it goes out now (with our multistream
        header if nothing was proposed yet).
        """
        self._opening = False
        reply, self._reply = self._reply, b""
        if self._error is not None:
            return
        if self._supported is not None:
            # Nothing proposed yet: the general negotiator answers with our header.
            self._negotiator = multistream.MultistreamNegotiator(
                multistream.Role.RESPONDER, self._supported
            )
            self._supported = None
        if self._negotiator is not None:
            self._send_raw(reply + self._negotiator.data_to_send())
        elif self._data_in_opening:
            self.conn.hold_answer(self.stream_id, reply)
        else:
            self._send_raw(reply)

    # --- application API --------------------------------------------------------

    def _negotiation_failed(self, error: BaseException) -> None:
        self._negotiation_error = error
        waiter = self._negotiated
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
            waiter.exception()  # mark retrieved; read/write re-raise it

    async def negotiated(self) -> str:
        """Wait until the protocol is confirmed by the peer; returns it."""
        if self._negotiation_error is not None:
            raise self._negotiation_error
        if not self._negotiating:
            assert self.protocol is not None
            return self.protocol
        if self._negotiated is None:
            self._negotiated = self.conn.loop.create_future()
        return await self._negotiated

    async def _wait_readable(self) -> None:
        while not self._buffered and not self._eof:
            if self._error is not None:
                raise self._error
            if self._read_waiter is not None:
                raise LocalProtocolError("another task is already reading this stream")
            self._read_waiter = self.conn.loop.create_future()
            try:
                await self._read_waiter
            finally:
                self._read_waiter = None
        if self._error is not None and not self._buffered:
            raise self._error

    def _take(self, n: int) -> bytes:
        """Remove up to ``n`` buffered bytes (n > 0)."""
        chunk = self._chunks[0]
        head = self._head
        avail = len(chunk) - head
        if n >= avail:
            self._chunks.popleft()
            self._head = 0
            out = chunk if head == 0 else chunk[head:]
        else:
            out = chunk[head : head + n]
            self._head = head + n
        taken = len(out)
        self._buffered -= taken
        self.bytes_read += taken
        self.conn.acknowledge(self.stream_id, taken)
        return out

    async def read(self, n: int = -1) -> bytes:
        """Read up to ``n`` bytes (any amount buffered if n < 0); b"" at end of stream.

        Raises:
            StreamReset: the stream was reset.
            NegotiationError: the peer refused the protocol.
        """
        if n == 0:
            return b""
        if not self._buffered:
            await self._wait_readable()
            if not self._buffered:
                return b""
        if n < 0:
            if len(self._chunks) == 1 or self._buffered <= 0:
                return self._take(self._buffered)
            n = min(self._buffered, DEFAULT_READ_BYTES)
        first = self._take(n)
        if len(first) == n or not self._buffered:
            return first
        parts: list[bytes] = [first]
        need = n - len(first)
        while need and self._buffered:
            part = self._take(need)
            parts.append(part)
            need -= len(part)
        return b"".join(parts)

    async def readexactly(self, n: int) -> bytes:
        """Read exactly ``n`` bytes.

        Raises:
            asyncio.IncompleteReadError: the stream ended first.
        """
        parts: list[bytes] = []
        got = 0
        while got < n:
            part = await self.read(n - got)
            if not part:
                raise asyncio.IncompleteReadError(b"".join(parts), n)
            parts.append(part)
            got += len(part)
        return b"".join(parts)

    async def readline(self, limit: int = 4096) -> bytes:
        """Read up to and including ``\\n`` (or to EOF), at most ``limit`` bytes."""
        out = bytearray()
        while len(out) < limit:
            if not self._buffered:
                await self._wait_readable()
                if not self._buffered:
                    break
            chunk = self._chunks[0]
            idx = chunk.find(b"\n", self._head)
            take = (idx - self._head + 1) if idx >= 0 else len(chunk) - self._head
            out += self._take(min(take, limit - len(out)))
            if idx >= 0:
                break
        return bytes(out)

    async def read_all(self, limit: int) -> bytes:
        """Read until EOF, at most ``limit`` bytes (ValueError past it)."""
        out = bytearray()
        while True:
            part = await self.read()
            if not part:
                return bytes(out)
            out += part
            if len(out) > limit:
                raise ValueError(f"stream sent more than {limit} bytes")

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Write all of ``data``, waiting for window and for the socket to drain.

        Raises:
            StreamReset / ConnectionClosed: the stream or connection is gone.
            LocalProtocolError: the stream was closed for writing.
        """
        if self._write_closed:
            raise LocalProtocolError("write after close_write")
        view = memoryview(data)
        conn = self.conn
        while view:
            if self._error is not None:
                raise self._error
            n = conn.send_stream_data(self.stream_id, view)
            if n:
                self.bytes_written += n
                view = view[n:]
                continue
            self._write_waiter = conn.loop.create_future()
            try:
                await self._write_waiter
            finally:
                self._write_waiter = None
        await conn.drain()

    async def close_write(self) -> None:
        """Half-close: the peer reads EOF; we can still read. Idempotent."""
        if self._write_closed:
            return
        self._write_closed = True
        if self._error is None:
            self.conn.close_stream(self.stream_id)

    def reset(self) -> None:
        """Abort both directions at once; the peer sees a reset, not an end."""
        if self._error is None:
            self._error = StreamReset("stream reset locally")
        self.conn.reset_stream(self.stream_id)
        self._wake_reader()
        self._wake_writer()

    async def aclose(self) -> None:
        """Close for writing and stop reading (later data is discarded)."""
        await self.close_write()
        self._discard = True
        if self._buffered:
            self.conn.acknowledge(self.stream_id, self._buffered)
            self._chunks.clear()
            self._buffered = 0
            self._head = 0

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self.reset()
        else:
            await self.aclose()


def closed_error(reason: str) -> ConnectionClosed:
    """The error streams see when their connection goes away."""
    return ConnectionClosed(f"connection closed: {reason}")
