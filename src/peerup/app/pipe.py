"""A remote service on a byte pipe: ``peerup proxy --stdio`` (ssh's ``ProxyCommand``).

Carries one connection to ``/peerup/<service>/1.0.0`` on a peer over any pair of
asyncio streams: standard input and output when ``proxy --stdio`` runs a node of its
own, or the local API's Unix socket when the daemon carries it (``POST /v1/pipe``,
see app/daemon.py). Bytes from the local side go out at once (client-first protocols
need no round trip); whoever must report a failure learns of it before the first
byte from the far side is written (``on_first``), so the daemon can still answer
with an HTTP error instead of the upgrade. Half-close both ways: local EOF is the
stream's FIN, the far side's FIN closes the local writer. A stream that fails before
the service said anything is diagnosed (app/node.py ``diagnose_service``, worded by
app/failures.py); one cut after that is a :attr:`Cause.CUT`, never a clean end.

Copy tasks rather than callbacks: one pipe per ssh session, not the data path of
many connections (that is net/tcp_splice.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from peerup.app import api, failures, tunnel
from peerup.app.failures import Failure
from peerup.app.node import Node
from peerup.core.errors import ConnectionClosed, Error, NegotiationError
from peerup.core.peer_id import PeerId
from peerup.net.stream import Stream

CHUNK_BYTES = 256 * 1024


class ByteSink(Protocol):
    """Where the far side's bytes go: an asyncio StreamWriter, or :class:`FileSink`."""

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def can_write_eof(self) -> bool: ...

    def write_eof(self) -> None: ...


@dataclass(frozen=True, slots=True)
class PipeResult:
    """How a piped connection ended: ``failure`` None for a clean end."""

    failure: Failure | None
    bytes_out: int
    bytes_in: int
    path: str


async def carry(
    node: Node,
    peer: PeerId,
    service: str,
    label: str,
    reader: asyncio.StreamReader,
    writer: ByteSink,
    on_first: Callable[[], Awaitable[None]] | None = None,
) -> PipeResult:
    """Join ``reader``/``writer`` to ``service`` on ``peer`` until both ends close.

    ``on_first`` runs once, right before the first byte from the far side is
    written to ``writer`` (or its end is passed on), never after a failure that
    came first.
    """
    try:
        conn = await node.connect(peer)
    except Error as exc:
        return PipeResult(
            failures.explain_dial(exc, label, str(node.peer_id)), 0, 0, ""
        )
    path = "relayed" if conn.is_relayed else "direct"
    stream = conn.open_stream([tunnel.service_protocol(service)])
    up = asyncio.ensure_future(_local_to_stream(reader, stream))
    sent_in = 0
    failure: Failure | None = None
    try:
        started = False
        while True:
            try:
                data = await stream.read(CHUNK_BYTES)
            except (ConnectionClosed, NegotiationError) as exc:
                if started:
                    failure = failures.Failure(
                        failures.Cause.CUT,
                        f"the tunnel to {label} was cut: {exc}",
                        None,
                        str(exc),
                    )
                else:
                    up.cancel()
                    failure = await node.diagnose_service(
                        conn, stream, service, label, str(exc)
                    )
                break
            if not started:
                started = True
                if on_first is not None:
                    await on_first()
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                break
            writer.write(data)
            sent_in += len(data)
            await writer.drain()
        if failure is None:
            # The far side is done; the local side may still be sending.
            try:
                bytes_out = await up
            except Error as exc:
                bytes_out = 0
                failure = failures.Failure(
                    failures.Cause.CUT,
                    f"the tunnel to {label} was cut: {exc}",
                    None,
                    str(exc),
                )
        else:
            up.cancel()
            stream.reset()
            bytes_out = 0
            with contextlib.suppress(asyncio.CancelledError, Error, OSError):
                bytes_out = await up
    finally:
        if not up.done():
            up.cancel()
    return PipeResult(failure, bytes_out, sent_in, path)


async def carry_via_daemon(
    client: api.ApiClient,
    peer: str,
    service: str,
    reader: asyncio.StreamReader,
    writer: ByteSink,
) -> int:
    """The same through the running daemon (``POST /v1/pipe``): the daemon carries
    the bytes, we move them between ``reader``/``writer`` and its socket. Returns the
    bytes received.

    Raises:
        ApiError: the daemon could not reach the service (message and hint).
    """
    sock_reader, sock_writer = await client.open_pipe(
        "/v1/pipe", {"peer": peer, "service": service}
    )
    up = asyncio.ensure_future(_local_to_socket(reader, sock_writer))
    received = 0
    try:
        await api.read_pipe_answer(sock_reader)
        while True:
            try:
                data = await sock_reader.read(CHUNK_BYTES)
            except ConnectionResetError:
                raise ConnectionClosed(
                    "the tunnel was cut (the daemon reset the pipe; its log says why)"
                ) from None
            if not data:
                break
            writer.write(data)
            received += len(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        await up
    finally:
        if not up.done():
            up.cancel()
        sock_writer.close()
    return received


async def _local_to_socket(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(CHUNK_BYTES):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


async def _local_to_stream(reader: asyncio.StreamReader, stream: Stream) -> int:
    """Local bytes to the stream, then its FIN; how many were sent."""
    sent = 0
    while data := await reader.read(CHUNK_BYTES):
        await stream.write(data)
        sent += len(data)
    await stream.close_write()
    return sent


async def stdio_streams() -> tuple[asyncio.StreamReader, ByteSink]:
    """Standard input and output as a reader and a sink. Pipes, sockets and
    terminals (what ssh hands a ProxyCommand) go through the event loop; regular
    files (``< request > answer``) through a thread, as the loop cannot poll them."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=CHUNK_BYTES)
    in_fd = os.dup(sys.stdin.fileno())
    if _pollable(in_fd):
        stdin = os.fdopen(in_fd, "rb", buffering=0)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), stdin)
    else:
        threading.Thread(
            target=_read_file, args=(in_fd, reader, loop), daemon=True
        ).start()
    out_fd = os.dup(sys.stdout.fileno())
    if not _pollable(out_fd):
        return reader, FileSink(out_fd)
    stdout = os.fdopen(out_fd, "wb", buffering=0)
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, stdout
    )
    return reader, asyncio.StreamWriter(transport, protocol, None, loop)


def _pollable(fd: int) -> bool:
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)


def _read_file(
    fd: int, reader: asyncio.StreamReader, loop: asyncio.AbstractEventLoop
) -> None:
    with os.fdopen(fd, "rb", buffering=0) as f:
        while data := f.read(CHUNK_BYTES):
            loop.call_soon_threadsafe(reader.feed_data, data)
    loop.call_soon_threadsafe(reader.feed_eof)


class FileSink:
    """A regular file as a :class:`ByteSink` (written in a thread)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        self._pending.append(data)

    async def drain(self) -> None:
        data, self._pending = b"".join(self._pending), []
        if data:
            await asyncio.get_running_loop().run_in_executor(
                None, _write_all, self.fd, data
            )

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        with contextlib.suppress(OSError):
            os.fsync(self.fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
