"""SocketTransport over real loopback TCP, on asyncio's loop and on uvloop.

The far end is a plain socket driven by the test (the loop's sock_* calls), so each
case sees exactly what went over the wire: bytes in order, EOF after the last byte,
a reset, and backpressure when the far end stops reading.
"""

from __future__ import annotations

import asyncio
import select
import socket
import struct
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from peerup.net.sock_transport import SocketTransport

BIG = 8 * 1024 * 1024


class Recorder(asyncio.Protocol):
    """Records every callback; futures for the ones a test waits on."""

    def __init__(self, keep_open_on_eof: bool = True) -> None:
        loop = asyncio.get_running_loop()
        self.keep_open_on_eof = keep_open_on_eof
        self.made = 0
        self.received = bytearray()
        self.events: list[str] = []
        self.got_eof = loop.create_future()
        self.lost: asyncio.Future[Exception | None] = loop.create_future()
        self.resumed = loop.create_future()
        self.data_arrived = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made += 1

    def data_received(self, data: bytes) -> None:
        self.received += data
        self.data_arrived.set()

    def eof_received(self) -> bool:
        self.events.append("eof")
        self.got_eof.set_result(None)
        return self.keep_open_on_eof

    def pause_writing(self) -> None:
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.events.append("resume")
        if not self.resumed.done():
            self.resumed.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")
        assert not self.lost.done(), "connection_lost called twice"
        self.lost.set_result(exc)


async def socket_pair() -> tuple[socket.socket, socket.socket]:
    """(ours, theirs): two connected non-blocking TCP sockets on loopback."""
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        ours = socket.socket()
        ours.setblocking(False)
        accepting = asyncio.ensure_future(loop.sock_accept(listener))
        await loop.sock_connect(ours, listener.getsockname())
        theirs, _ = await accepting
    theirs.setblocking(False)
    return ours, theirs


async def wrapped(
    proto: Recorder | None = None,
) -> tuple[SocketTransport, Recorder, socket.socket]:
    """A SocketTransport driving ``proto`` (a new Recorder if None) over one end of a
    loopback pair: the transport, its protocol and the far end's socket."""
    ours, theirs = await socket_pair()
    protocol = proto if proto is not None else Recorder()
    return SocketTransport(asyncio.get_running_loop(), ours, protocol), protocol, theirs


async def read_to_eof(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    out = bytearray()
    while chunk := await loop.sock_recv(sock, 1 << 20):
        out += chunk
    return bytes(out)


def pattern(n: int, seed: int = 0) -> bytes:
    return bytes((seed + i * 7) & 0xFF for i in range(256)) * (n // 256)


LOOPS: dict[str, Callable[[Coroutine[Any, Any, None]], None]] = {
    "asyncio": asyncio.run,
    "uvloop": uvloop.run,
}


@pytest.fixture(params=sorted(LOOPS))
def on_loop(request: pytest.FixtureRequest) -> Callable[[Any], None]:
    runner = LOOPS[request.param]

    def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
        async def bounded() -> None:
            async with asyncio.timeout(30):
                await main()

        runner(bounded())

    return run


def test_bytes_both_ways_then_half_close_each_way(
    on_loop: Callable[[Any], None],
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, proto, theirs = await wrapped()
        assert proto.made == 1 and transport.is_reading()
        await loop.sock_sendall(theirs, b"hello")
        theirs.shutdown(socket.SHUT_WR)
        await proto.got_eof
        assert bytes(proto.received) == b"hello"
        # Their EOF leaves our direction open (eof_received returned True).
        transport.write(b"answer ")
        transport.writelines([b"in ", bytearray(b"three "), memoryview(b"parts")])
        transport.write_eof()
        assert await read_to_eof(theirs) == b"answer in three parts"
        transport.close()
        assert await proto.lost is None
        assert proto.events == ["eof", "lost"]
        theirs.close()

    on_loop(main)


def test_eof_closes_when_the_protocol_does_not_keep_it_open(
    on_loop: Callable[[Any], None],
) -> None:
    async def main() -> None:
        transport, proto, theirs = await wrapped(Recorder(keep_open_on_eof=False))
        theirs.shutdown(socket.SHUT_WR)
        assert await proto.lost is None
        assert transport.is_closing()
        assert await read_to_eof(theirs) == b""
        theirs.close()

    on_loop(main)


def test_a_stalled_reader_pauses_the_writer_and_nothing_is_lost(
    on_loop: Callable[[Any], None],
) -> None:
    async def main() -> None:
        transport, proto, theirs = await wrapped()
        transport.set_write_buffer_limits(high=256 * 1024)
        payload = pattern(BIG)
        reused = bytearray(b"tail")
        # Nobody reads: the socket buffers fill and the rest waits in the transport.
        for i in range(0, len(payload), 100_000):
            transport.writelines(
                [payload[i : i + 50_000], payload[i + 50_000 : i + 100_000]]
            )
        transport.write(reused)
        reused[:] = b"XXXX"  # the transport kept its own copy
        assert "pause" in proto.events
        assert transport.get_write_buffer_size() > 256 * 1024
        transport.write_eof()  # after the buffered bytes, not before
        received = await read_to_eof(theirs)
        assert received == payload + b"tail"
        await proto.resumed
        assert transport.get_write_buffer_size() == 0
        transport.close()
        assert await proto.lost is None
        theirs.close()

    on_loop(main)


def test_close_sends_what_is_buffered_first(on_loop: Callable[[Any], None]) -> None:
    async def main() -> None:
        transport, proto, theirs = await wrapped()
        payload = pattern(BIG, seed=3)
        transport.write(payload)
        assert transport.get_write_buffer_size() > 0
        transport.close()
        assert transport.is_closing()
        transport.write(b"ignored after close")
        assert await read_to_eof(theirs) == payload
        assert await proto.lost is None
        theirs.close()

    on_loop(main)


def test_pause_reading_holds_data_until_resumed(on_loop: Callable[[Any], None]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, proto, theirs = await wrapped()
        transport.pause_reading()
        assert not transport.is_reading()
        await loop.sock_sendall(theirs, b"held")
        # The bytes are readable on our socket; loop passes do not deliver them.
        ours = transport.get_extra_info("socket")
        assert select.select([ours], [], [], 5)[0] == [ours]
        for _ in range(20):
            await asyncio.sleep(0)
        assert not proto.received
        transport.resume_reading()
        await proto.data_arrived.wait()
        assert bytes(proto.received) == b"held"
        transport.abort()
        assert await proto.lost is None
        theirs.close()

    on_loop(main)


def test_a_reset_by_the_peer_is_reported_once(on_loop: Callable[[Any], None]) -> None:
    async def main() -> None:
        transport, proto, theirs = await wrapped()
        # SO_LINGER with a zero timeout: close() sends RST.
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        theirs.close()
        exc = await proto.lost
        assert isinstance(exc, ConnectionResetError)
        assert transport.is_closing()
        transport.write(b"after the reset")  # ignored, no second connection_lost
        transport.abort()
        await asyncio.sleep(0)
        assert proto.events == ["lost"]

    on_loop(main)


def test_abort_drops_the_buffer_and_closes_at_once(
    on_loop: Callable[[Any], None],
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, proto, theirs = await wrapped()
        transport.write(pattern(BIG))
        assert transport.get_write_buffer_size() > 0
        transport.abort()
        assert transport.get_write_buffer_size() == 0
        assert await proto.lost is None
        assert transport.get_extra_info("socket").fileno() == -1
        got = 0
        try:
            while chunk := await loop.sock_recv(theirs, 1 << 20):
                got += len(chunk)
        except ConnectionResetError:
            pass
        assert got < BIG
        theirs.close()

    on_loop(main)


def test_extra_info_and_limits(on_loop: Callable[[Any], None]) -> None:
    async def main() -> None:
        transport, _, theirs = await wrapped()
        ours = transport.get_extra_info("socket")
        assert isinstance(ours, socket.socket)
        assert transport.get_extra_info("peername") == theirs.getsockname()
        assert transport.get_extra_info("sockname") == ours.getsockname()
        assert transport.get_extra_info("nothing", 7) == 7
        assert transport.can_write_eof()
        transport.set_write_buffer_limits(high=1000)
        assert transport.get_write_buffer_limits() == (250, 1000)
        with pytest.raises(ValueError):
            transport.set_write_buffer_limits(high=10, low=20)
        transport.close()
        theirs.close()

    on_loop(main)


def test_a_protocol_closing_us_from_resume_writing_leaves_a_reused_fd_alone(
    on_loop: Callable[[Any], None],
) -> None:
    """The protocol aborts the transport when writing resumes and opens a new socket
    at once (which may get the same fd number): the new socket's writer stays."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = await socket_pair()
        old_fd = ours.fileno()
        fresh: list[socket.socket] = []
        writable: list[asyncio.Future[None]] = []

        class AbortOnResume(Recorder):
            def resume_writing(self) -> None:
                super().resume_writing()
                transport.abort()
                fresh.extend(socket.socketpair())
                for sock in fresh:
                    done = loop.create_future()
                    writable.append(done)
                    loop.add_writer(sock.fileno(), done.set_result, None)

        proto = AbortOnResume()
        transport = SocketTransport(loop, ours, proto)
        transport.write(pattern(BIG))
        assert "pause" in proto.events
        while not proto.resumed.done():
            await loop.sock_recv(theirs, 1 << 20)
        assert await proto.lost is None
        assert old_fd in [sock.fileno() for sock in fresh]  # the case under test
        await asyncio.gather(*writable)
        for sock in fresh:
            loop.remove_writer(sock.fileno())
            sock.close()
        theirs.close()

    on_loop(main)


def test_a_failing_protocol_callback_closes_the_transport(
    on_loop: Callable[[Any], None],
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        reported: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: reported.append(context))
        ours, theirs = await socket_pair()

        class Failing(Recorder):
            def data_received(self, data: bytes) -> None:
                raise ValueError("bad bytes")

        proto = Failing()
        transport = SocketTransport(loop, ours, proto)
        await loop.sock_sendall(theirs, b"boom")
        exc = await proto.lost
        assert isinstance(exc, ValueError)
        assert transport.is_closing()
        assert [type(c["exception"]) for c in reported] == [ValueError]
        assert await read_to_eof(theirs) == b""
        theirs.close()

    on_loop(main)


def test_writing_after_write_eof_is_an_error(on_loop: Callable[[Any], None]) -> None:
    async def main() -> None:
        transport, _, theirs = await wrapped()
        transport.write(b"last")
        transport.write_eof()
        with pytest.raises(RuntimeError, match="write_eof"):
            transport.write(b"more")
        with pytest.raises(RuntimeError, match="write_eof"):
            transport.writelines([b"more"])
        assert await read_to_eof(theirs) == b"last"
        transport.close()
        theirs.close()

    on_loop(main)


def test_a_failing_connection_made_closes_the_socket(
    on_loop: Callable[[Any], None],
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = await socket_pair()

        class Refusing(Recorder):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                raise ValueError("not now")

        with pytest.raises(ValueError, match="not now"):
            SocketTransport(loop, ours, Refusing())
        assert ours.fileno() == -1
        assert await read_to_eof(theirs) == b""
        theirs.close()

    on_loop(main)
