"""A TCP transport over a socket that is already connected, made without a task.

Spec: none of libp2p's; the asyncio ``Transport``/``Protocol`` interface (Python
docs, "Transports and Protocols"), the subset a splice uses: ``write``,
``writelines``, ``write_eof``, ``pause_reading``/``resume_reading``, flow-control
callbacks, ``close``/``abort``.

Why by hand: the event loop wraps a socket into a transport only through a coroutine
(``loop.create_connection(sock=…)``), so every tunnelled connection to a local service
cost a task, two more event-loop passes and a handful of redundant system calls
(the loop sets non-blocking mode and TCP_NODELAY again and asks for both addresses)
before its first reply could travel back. This transport is made synchronously, in the
pass that connected the socket, and is driven by ``loop.add_reader``/``add_writer``.
It serves the daemon's side of a tunnel (connections it opens to its local services);
accepted connections still use the loop's own transports.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import socket
from collections import deque
from collections.abc import Iterable
from typing import Any

READ_BYTES = 256 * 1024
"""Bytes asked of one recv(): the same as uvloop's read buffer."""

_RETRY = (BlockingIOError, InterruptedError)
_MAX_IOV = 64
"""Buffers given to one sendmsg() (the kernel's limit is 1024)."""


class SocketTransport(asyncio.Transport):
    """A connected, non-blocking stream socket driving ``protocol``.

    ``connection_made`` is called from the constructor, so the protocol is live when
    it returns. ``connection_lost`` is called once, in a later loop pass, after
    ``close`` (when the write buffer is empty), ``abort`` or a socket error.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol: asyncio.Protocol,
    ) -> None:
        super().__init__()
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._buffer: deque[bytes | bytearray | memoryview] = deque()
        self._buffered = 0
        self._high = 64 * 1024
        self._low = 16 * 1024
        self._protocol_paused = False
        self._reading = True
        self._read_eof = False
        self._eof_wanted = False
        self._eof_sent = False
        self._closing = False
        self._lost = False
        self._writing = False
        """A writer callback is registered (bytes wait in the buffer)."""
        loop.add_reader(self._fd, self._on_readable)
        try:
            protocol.connection_made(self)
        except BaseException:
            self._lost = True
            self._stop_reading()
            sock.close()
            raise

    # --- reading --------------------------------------------------------------

    def _on_readable(self) -> None:
        try:
            data = self._sock.recv(READ_BYTES)
        except _RETRY:
            return
        except OSError as exc:
            self._fatal(exc)
            return
        try:
            if data:
                self._protocol.data_received(data)
                return
            self._read_eof = True
            self._stop_reading()
            keep_open = self._protocol.eof_received()
        except Exception as exc:  # the protocol failed: as asyncio's transports do
            self._fatal(exc)
            return
        if not keep_open:
            self.close()

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def pause_reading(self) -> None:
        if not self._closing:
            self._stop_reading()

    def resume_reading(self) -> None:
        if not self._reading and not self._read_eof and not self._closing:
            self._reading = True
            self._loop.add_reader(self._fd, self._on_readable)

    def is_reading(self) -> bool:
        return self._reading

    # --- writing --------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._eof_wanted:
            raise RuntimeError("Cannot call write() after write_eof()")
        if self._closing or not data:
            return
        if self._buffer:
            self._queue([data], 0)
            return
        try:
            n = self._sock.send(data)
        except _RETRY:
            n = 0
        except OSError as exc:
            self._fatal(exc)
            return
        if n < len(data):
            self._queue([data], n)

    def writelines(
        self, list_of_data: Iterable[bytes | bytearray | memoryview]
    ) -> None:
        """Like :meth:`write` for several pieces: one sendmsg(), no joined copy."""
        if self._eof_wanted:
            raise RuntimeError("Cannot call writelines() after write_eof()")
        if self._closing:
            return
        pieces = [piece for piece in list_of_data if piece]
        if not pieces:
            return
        if self._buffer:
            self._queue(pieces, 0)
            return
        try:
            n = self._sock.sendmsg(pieces[:_MAX_IOV])
        except _RETRY:
            n = 0
        except OSError as exc:
            self._fatal(exc)
            return
        self._queue(pieces, n)

    def _queue(self, pieces: list[bytes | bytearray | memoryview], sent: int) -> None:
        """Buffer what of ``pieces`` is left after ``sent`` bytes went out."""
        buffer = self._buffer
        was_empty = not buffer
        for piece in pieces:
            size = len(piece)
            if sent >= size:
                sent -= size
                continue
            if isinstance(piece, bytearray):
                piece = bytes(piece[sent:])  # the caller may reuse its bytearray
            elif sent:
                piece = memoryview(piece)[sent:]
            sent = 0
            buffer.append(piece)
            self._buffered += len(piece)
        if was_empty and buffer:
            self._writing = True
            self._loop.add_writer(self._fd, self._on_writable)
        self._maybe_pause_protocol()

    def _on_writable(self) -> None:
        buffer = self._buffer
        try:
            sent = self._sock.sendmsg(itertools.islice(buffer, _MAX_IOV))
        except _RETRY:
            return
        except OSError as exc:
            self._fatal(exc)
            return
        self._buffered -= sent
        while sent:
            head = buffer[0]
            if len(head) <= sent:
                sent -= len(head)
                buffer.popleft()
            else:
                buffer[0] = memoryview(head)[sent:]
                sent = 0
        self._maybe_resume_protocol()  # may close or abort us
        if buffer or self._lost:
            return
        self._writing = False
        self._loop.remove_writer(self._fd)
        if self._closing:
            self._lose(None)
        elif self._eof_wanted and not self._eof_sent:
            self._shutdown_write()

    def write_eof(self) -> None:
        if self._eof_wanted or self._closing:
            return
        self._eof_wanted = True
        if not self._buffer:
            self._shutdown_write()

    def _shutdown_write(self) -> None:
        self._eof_sent = True
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            if exc.errno != errno.ENOTCONN:
                self._fatal(exc)

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return self._buffered

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self._low, self._high)

    def set_write_buffer_limits(
        self, high: int | None = None, low: int | None = None
    ) -> None:
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high}) must be >= low ({low}) must be >= 0")
        self._high, self._low = high, low
        self._maybe_pause_protocol()

    def _maybe_pause_protocol(self) -> None:
        if not self._protocol_paused and self._buffered > self._high:
            self._protocol_paused = True
            self._protocol.pause_writing()

    def _maybe_resume_protocol(self) -> None:
        if self._protocol_paused and self._buffered <= self._low:
            self._protocol_paused = False
            self._protocol.resume_writing()

    # --- ending ---------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Stop reading; close once the buffered bytes are sent."""
        if self._closing:
            return
        self._closing = True
        self._stop_reading()
        if not self._buffer:
            self._lose(None)

    def abort(self) -> None:
        self._closing = True
        self._lose(None)

    def _fatal(self, exc: Exception) -> None:
        if not isinstance(exc, OSError):
            self._loop.call_exception_handler(
                {
                    "message": "SocketTransport: the protocol failed",
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )
        self._closing = True
        self._lose(exc)

    def _lose(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._stop_reading()
        self._buffer.clear()
        self._buffered = 0
        if self._writing:
            # Before close(): the fd number may be reused by the next socket.
            self._writing = False
            self._loop.remove_writer(self._fd)
        self._sock.close()
        self._loop.call_soon(self._protocol.connection_lost, exc)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return self._sock
        try:
            if name == "peername":
                return self._sock.getpeername()
            if name == "sockname":
                return self._sock.getsockname()
        except OSError:
            return default
        return default

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        raise NotImplementedError("SocketTransport keeps its protocol")
