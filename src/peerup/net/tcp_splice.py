"""Joins a TCP connection and a libp2p stream with protocol callbacks, no tasks.

Spec: libp2p/specs yamux/README.md (half-close, flow control). Bytes from the TCP
socket go straight into the stream's send window from ``data_received``; bytes from
the stream go straight to the socket from the stream's sink callback. Backpressure is
kept end to end without buffering more than one window: when the stream's send window
is exhausted (or the connection's socket is over its high-water mark), TCP reading is
paused until the window opens; when the TCP socket's write buffer is full, the stream's
received bytes are not acknowledged to yamux, so the far writer stalls. Half-close
travels both ways (TCP EOF → FIN, FIN → ``write_eof``); an error or reset on one side
aborts the other. Callbacks rather than two copy tasks per connection: tasks cost
several event-loop passes per chunk and per new connection.

A cut tunnel is never a clean end: when the stream is reset, or its connection dies
(the far node or the relay went away, a relay limit ended the circuit), the TCP
connection is reset (RST, ``SO_LINGER`` 0 before the close) and the cut is logged
with its cause, so a download cannot "complete" short. Only the far application's
half-close (a yamux FIN) becomes a FIN. A stream the far side never agreed to
(refused by its allowlist or ``allowed_peers``, its service down, the peer
unreachable) was never a tunnel: that TCP connection is closed, as before, and the
caller reports why.

Either side may come first: a proxy accepts the TCP connection and then attaches a
new stream; a service attaches the inbound stream at once and then connects to the
local service, holding (unacknowledged) what the stream delivers until the TCP
connection is made.

Connecting to a service (:meth:`TcpStreamSplice.connect_now`): for a numeric address
the non-blocking ``connect()`` is issued at once, in the same pass that saw the
stream open, and what the stream delivers is sent on the raw socket as soon as it
takes it. On loopback, the usual place of a service, the kernel completes the
handshake inside ``connect()``, so the first bytes reach the service without waiting
for any event-loop callback. The connected socket then becomes the splice's transport
in the same pass (:meth:`TcpStreamSplice.adopt_connected`, with
:class:`~peerup.net.sock_transport.SocketTransport`); a connection still in progress,
or to a name, is finished in a task (:meth:`TcpStreamSplice.finish_connect`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import socket
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, cast

from peerup.core.errors import ConnectionClosed, StreamReset
from peerup.net.sock_transport import SocketTransport
from peerup.net.stream import Stream
from peerup.net.stream_transport import human_size

log = logging.getLogger(__name__)

TCP_HIGH_WATER_BYTES = 1024 * 1024
LINGER_RESET: Final = struct.pack("ii", 1, 0)
"""``SO_LINGER`` on with a zero timeout: closing the socket sends RST, not FIN."""


@dataclass(frozen=True, slots=True)
class SpliceStats:
    """How a TCP↔stream splice ended."""

    tcp_to_stream_bytes: int
    stream_to_tcp_bytes: int
    ended_by: str
    """"eof" when both directions closed cleanly, else "reset: …" / "error: …"."""


class TcpStreamSplice(asyncio.Protocol):
    """The TCP side's protocol; ``attach`` joins it to a stream."""

    _sock: socket.socket | None
    """A socket connecting (or connected) to the service, not yet a transport."""
    _connecting: bool
    """finish_connect is waiting on ``_sock`` (which it then closes if needed)."""

    def __init__(
        self,
        on_connect: Callable[[TcpStreamSplice], None] | None = None,
        *,
        on_done: Callable[[SpliceStats], None] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.on_connect = on_connect
        self.on_done = on_done
        """Called once with the stats when both sides are finished."""
        self.loop = loop or asyncio.get_running_loop()
        self.stats: SpliceStats | None = None
        self.tcp: asyncio.Transport | None = None
        self.stream: Stream | None = None
        self._done: asyncio.Future[SpliceStats] | None = None
        self._tcp_reading_paused = False
        self._tcp_write_paused = False
        self._waiting_writable = False
        self._held_acks = 0
        self._tcp_eof = False
        self._stream_eof = False
        self._up = 0
        self._down = 0
        self._finished = False
        self._cut = False
        """The tunnel was cut (see the module docstring): TCP ends with RST."""
        self._sock = None
        self._connecting = False
        self._sock_connected = False
        """``connect()`` of ``_sock`` returned at once: connected, nothing to check."""
        self._target: tuple[str, int] | None = None
        self._pending: deque[memoryview] = deque()
        self._early: list[bytes] = []
        self._early_down: list[bytes] = []
        self._batch: list[bytes] = []
        self._sink = _StreamSide(self)

    @property
    def done(self) -> asyncio.Future[SpliceStats]:
        """A future of the stats (for awaiting; ``on_done`` is cheaper)."""
        if self._done is None:
            self._done = self.loop.create_future()
            if self.stats is not None:
                self._done.set_result(self.stats)
        return self._done

    # --- wiring -----------------------------------------------------------------------

    def attach(self, stream: Stream) -> None:
        """Start moving bytes between the TCP connection and ``stream``."""
        self.stream = stream
        early, self._early = self._early, []
        for data in early:
            self._up += len(data)
            self._pending.append(memoryview(data))
        stream.attach(self._sink)
        if self._pending:
            self._drain()  # sends our FIN too once all of it is out, after an EOF
        elif self._tcp_eof:
            self._tcp_eof_to_stream()
        elif self._tcp_reading_paused and self.tcp is not None:
            self._resume_tcp_reading()

    # --- TCP side -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it.
        self.tcp = cast(asyncio.Transport, transport)
        self._sock = None  # the transport owns it now
        transport = self.tcp
        transport.set_write_buffer_limits(high=TCP_HIGH_WATER_BYTES)
        if self._finished:
            # The stream failed while we were connecting.
            if self._cut:
                _reset_on_close(transport)
            transport.abort()
            return
        if self.on_connect is not None:
            self.on_connect(self)
        stream = self.stream
        if stream is None:
            # Until a stream is attached, hold what arrives (bounded: reading pauses).
            self._pause_tcp_reading()
            return
        early, self._early_down = self._early_down, []
        for data in early:
            self._from_stream(data)
        if self._stream_eof and transport.can_write_eof():
            transport.write_eof()

    def connect_now(self, host: str, port: int) -> OSError | None:
        """Start connecting to the service at ``host:port`` without waiting.

        For a numeric address the socket is connecting when this returns (on loopback
        it is usually connected), and stream data is sent on it as it arrives; other
        hosts are resolved and connected by :meth:`finish_connect`. Returns the error
        if the connection already failed (e.g. refused), else None.
        """
        self._target = (host, port)
        family = _numeric_family(host)
        if family is None:
            return None
        try:
            # EMFILE (out of descriptors) is an error to report like a refusal.
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            return exc
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = sock.connect_ex((host, port))
            self._sock_connected = err == 0
            if err == errno.EINPROGRESS:
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        except OSError as exc:
            err = exc.errno or errno.EIO
        if err:
            sock.close()
            return OSError(err, os.strerror(err))
        self._sock = sock
        return None

    def adopt_connected(self) -> bool:
        """If the socket of :meth:`connect_now` is connected already (the usual case on
        loopback), make it this splice's transport now and return True; else the
        caller awaits :meth:`finish_connect`."""
        sock = self._sock
        if sock is None or self._finished:
            return False
        if not self._sock_connected:
            try:
                sock.getpeername()
            except OSError:  # still connecting (or failed: finish_connect reports it)
                return False
        SocketTransport(self.loop, sock, self)
        return True

    async def finish_connect(self) -> None:
        """Complete what :meth:`connect_now` started: wait for the connection if it
        is still in progress, then hand the socket to the event loop (or connect by
        name). Raises OSError if it fails; the caller then calls
        :meth:`connect_failed`."""
        assert self._target is not None
        loop = self.loop
        sock = self._sock
        if sock is None:
            host, port = self._target
            await loop.create_connection(lambda: self, host, port)
            return
        if self.adopt_connected():
            return
        try:
            self._connecting = True
            try:
                await loop.sock_connect(sock, self._target)
            except OSError as exc:
                if exc.errno != errno.EISCONN:
                    raise
            finally:
                self._connecting = False
            if self._finished:
                self._close_sock(reset=self._cut)  # the stream went away meanwhile
                return
            SocketTransport(loop, sock, self)
        except BaseException:
            self._close_sock()
            raise

    def connect_failed(self, why: str) -> None:
        """The TCP connection could not be made: reset the stream, finish."""
        self.abort(why)

    def _close_sock(self, *, reset: bool = False) -> None:
        sock, self._sock = self._sock, None
        if sock is not None and self.tcp is None:
            if reset:
                _reset_on_close(sock)
            sock.close()

    def data_received(self, data: bytes) -> None:
        if self.stream is None:
            # Hold it until a stream is attached. uvloop starts reading after
            # connection_made even if it paused reading, so pause (again) here: at
            # most one read is held.
            self._early.append(data)
            tcp = self.tcp
            if tcp is not None and tcp.is_reading():
                tcp.pause_reading()
            self._tcp_reading_paused = True
            return
        self._to_stream(data)

    def _to_stream(self, data: bytes) -> None:
        self._up += len(data)
        if self._pending:
            self._pending.append(memoryview(data))
            return
        stream = self.stream
        assert stream is not None
        try:
            n = stream.conn.send_stream_data(stream.stream_id, data)
        except ConnectionClosed as exc:
            self._abort_tcp(f"error: {exc}", exc)
            return
        if n == len(data) and not stream.conn.is_write_paused:
            return  # all of it went out; reading goes on
        if n < len(data):
            self._pending.append(memoryview(data)[n:])
        self._drain()

    def _drain(self) -> None:
        """Send what the stream's window takes; TCP reading pauses while bytes wait
        (for window, or for the connection's socket to accept writes again)."""
        stream = self.stream
        assert stream is not None
        while self._pending:
            view = self._pending[0]
            try:
                n = stream.conn.send_stream_data(stream.stream_id, view)
            except ConnectionClosed as exc:
                self._abort_tcp(f"error: {exc}", exc)
                return
            if n < len(view):
                self._pending[0] = view[n:]
                self._pause_tcp_reading()
                return
            self._pending.popleft()
        if self._tcp_eof:
            self._tcp_eof_to_stream()
        elif stream.conn.is_write_paused:
            self._pause_tcp_reading()
            if not self._waiting_writable:
                self._waiting_writable = True
                stream.conn.on_writable(self._conn_writable)
        elif not self._finished:
            self._resume_tcp_reading()

    def _conn_writable(self) -> None:
        self._waiting_writable = False
        if not self._pending and not self._finished:
            self._resume_tcp_reading()

    def _window_opened(self) -> None:
        self._drain()

    def eof_received(self) -> bool:
        self._tcp_eof = True
        if self.stream is not None and not self._pending:
            self._tcp_eof_to_stream()
        return True  # keep our write side open: the answer may still be coming

    def _tcp_eof_to_stream(self) -> None:
        assert self.stream is not None
        self.stream.conn.close_stream(self.stream.stream_id)
        self._maybe_finish()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._finished:
            return
        if not (self._tcp_eof and self._stream_eof):
            why = f"error: TCP connection lost ({exc})" if exc else "reset: TCP closed"
            stream = self.stream
            if stream is not None:
                stream.reset()
                log.info(
                    "tunnel %s %s ended by the local side (it sent %s, received %s): "
                    "%s; stream reset",
                    stream.remote_peer.short(),
                    stream.protocol,
                    human_size(self._up),
                    human_size(self._down),
                    exc or "closed before the end of both directions",
                )
            self._finish(why)
        else:
            self._finish("eof")

    def pause_writing(self) -> None:
        self._tcp_write_paused = True

    def resume_writing(self) -> None:
        self._tcp_write_paused = False
        if self._held_acks and self.stream is not None:
            self.stream.conn.acknowledge(self.stream.stream_id, self._held_acks)
            self._held_acks = 0

    def _pause_tcp_reading(self) -> None:
        if not self._tcp_reading_paused and self.tcp is not None:
            self._tcp_reading_paused = True
            with contextlib.suppress(RuntimeError):
                self.tcp.pause_reading()

    def _resume_tcp_reading(self) -> None:
        if (
            self._tcp_reading_paused
            and self.tcp is not None
            and not self.tcp.is_closing()
        ):
            self._tcp_reading_paused = False
            with contextlib.suppress(RuntimeError):
                self.tcp.resume_reading()

    # --- stream side (called by _StreamSide) ---------------------------------------------

    def _from_stream(self, data: bytes) -> None:
        stream = self.stream
        assert stream is not None
        if self.tcp is None:
            sock = self._sock
            if sock is not None and not self._early_down:
                # Straight to the connecting socket, if it takes it already.
                try:
                    n = sock.send(data)
                except OSError:  # not connected yet; errors surface on connecting
                    n = 0
                if n:
                    self._down += n
                    stream.conn.acknowledge(stream.stream_id, n)
                    if n == len(data):
                        return
                    data = data[n:]
            # Not connected yet: hold it, unacknowledged (the window bounds it).
            self._early_down.append(data)
            return
        self._down += len(data)
        conn = stream.conn
        if conn.in_batch:
            # Frames of one read (up to 4 x 64 KiB) go to the socket in one writev.
            batch = self._batch
            batch.append(data)
            if len(batch) == 1:
                conn.at_batch_end(self._write_batch)
            return
        self._write_tcp(data, len(data))

    def _write_batch(self) -> None:
        batch, self._batch = self._batch, []
        if not batch or self._finished or self.tcp is None:
            return
        if len(batch) == 1:
            self._write_tcp(batch[0], len(batch[0]))
        else:
            self._write_tcp(batch, sum(map(len, batch)))

    def _write_tcp(self, data: bytes | list[bytes], n: int) -> None:
        stream, tcp = self.stream, self.tcp
        assert stream is not None and tcp is not None
        if isinstance(data, list):
            tcp.writelines(data)
        else:
            tcp.write(data)
        if self._tcp_write_paused:
            self._held_acks += n
        else:
            stream.conn.acknowledge(stream.stream_id, n)

    def _stream_ended(self) -> None:
        if self._batch:
            self._write_batch()
        self._stream_eof = True
        tcp = self.tcp
        if self._tcp_eof and not self._pending:
            # Both directions are done: closing sends our FIN, no shutdown() needed.
            self._maybe_finish()
            return
        if tcp is not None and not tcp.is_closing() and tcp.can_write_eof():
            tcp.write_eof()

    def _stream_failed(self, error: BaseException) -> None:
        self._abort_tcp(f"reset: {error}", error)

    # --- ending -------------------------------------------------------------------------

    def _maybe_finish(self) -> None:
        if self._tcp_eof and self._stream_eof and not self._pending:
            if self.tcp is not None:
                self.tcp.close()
            self._finish("eof")

    def _abort_tcp(self, why: str, error: BaseException | None = None) -> None:
        """End the TCP side at once: with RST if the tunnel was cut (see the module
        docstring; ``why`` then becomes "reset: <cause>"), closed if the stream never
        got going."""
        if self._finished:
            return
        stream, tcp = self.stream, self.tcp
        cut = (
            stream is not None
            and stream.is_negotiated
            and (tcp is not None or self._sock is not None)
        )
        if tcp is not None:
            if cut:
                _reset_on_close(tcp)
            tcp.abort()
        if stream is not None and cut:
            cause = why if error is None else cut_cause(stream, error, why)
            if error is not None:
                why = "reset: " + cause
            log.info(
                "tunnel %s %s cut (the local side sent %s, received %s): %s; "
                "its TCP connection reset",
                stream.remote_peer.short(),
                stream.protocol,
                human_size(self._up),
                human_size(self._down),
                cause,
            )
        self._finish(why, reset=cut)

    def _finish(self, why: str, *, reset: bool = False) -> None:
        if self._finished:
            return
        self._finished = True
        self._cut = reset
        if self._sock is not None and not self._connecting:
            self._close_sock(reset=reset)
        self._pending.clear()
        self._early_down.clear()
        self._batch.clear()
        stats = self.stats = SpliceStats(self._up, self._down, why)
        if self._done is not None and not self._done.done():
            self._done.set_result(stats)
        if self.on_done is not None:
            self.on_done(stats)

    def abort(self, why: str) -> None:
        """Tear both sides down (e.g. the setup of the stream failed)."""
        if self.stream is not None:
            self.stream.reset()
        self._abort_tcp(why)


def cut_cause(stream: Stream, error: BaseException | None, why: str) -> str:
    """Why ``stream``'s tunnel was cut, in words: who went away, then the detail."""
    conn = stream.conn
    reason = conn.close_reason
    if isinstance(error, StreamReset):
        return "the far side reset it"
    if not conn.is_closed:
        return f"the stream failed ({error or why})"
    if conn.is_relayed and "relayed stream failed: stream reset" in reason:
        # The relay resets a circuit when a limit is reached, and when its other
        # half went away. The limits it announced, against what was carried and
        # for how long, tell the two apart (net/stream_transport.py).
        for hit in ("relay data limit reached", "relay time limit reached"):
            if hit in reason:
                detail = reason[reason.index(hit) :].rstrip(")")
                return f"the relay ended the circuit: {detail}"
        if "(no relay limit reached)" in reason:
            return "the relay ended the circuit: the peer went away"
        return (
            "the relay ended the circuit: the peer went away, or the relay dropped "
            f"it ({reason})"
        )
    if conn.is_relayed and "relayed stream failed" in reason:
        return f"the relay went away ({reason})"
    if "closed locally" in reason:
        return f"this node closed the connection ({reason})"
    return f"peer went away ({reason})"


def _reset_on_close(tcp: asyncio.BaseTransport | socket.socket) -> None:
    """Make closing send RST instead of FIN (``SO_LINGER`` on, timeout 0)."""
    sock = tcp if isinstance(tcp, socket.socket) else tcp.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)


@functools.lru_cache(maxsize=256)  # a daemon's few service addresses, every connection
def _numeric_family(host: str) -> int | None:
    """AF_INET or AF_INET6 for a numeric address, None for a name."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return family
    return None


class _StreamSide:
    """The stream's sink, forwarding to the splice (a separate object because both
    sides have a ``data_received``)."""

    __slots__ = ("splice",)

    def __init__(self, splice: TcpStreamSplice) -> None:
        self.splice = splice

    def data_received(self, data: bytes) -> None:
        self.splice._from_stream(data)

    def stream_ended(self) -> None:
        self.splice._stream_ended()

    def stream_failed(self, error: BaseException) -> None:
        self.splice._stream_failed(error)

    def window_opened(self) -> None:
        self.splice._window_opened()
