"""Opening streams in as few writes as possible, over loopback TCP.

- An inbound stream whose opener sent data right behind its proposal (optimistic
  multistream) gets its negotiation answer and yamux ACK with its first reply bytes,
  or after ``hold_answer_s`` if it never replies; an opener that proposed without
  data gets them at once.
- ``open_stream(data_expected=True)`` lets bytes written in the next loop pass share
  the opening frame.
- Inline handlers (no task), and a TCP splice whose stream comes before its TCP
  connection (what a service does), including a service that is down.

Whether bytes were sent is observed at the other end: a yamux ping's answer arrives
after anything its peer flushed before it (one TCP connection keeps order).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
from collections.abc import Callable
from typing import Any

import pytest

from peerup.core.errors import NegotiationError, StreamReset
from peerup.core.keys import Ed25519PrivateKey
from peerup.net.connection import Connection, ConnectionConfig
from peerup.net.host import Host, HostConfig
from peerup.net.stream import Stream
from peerup.net.tcp_splice import TcpStreamSplice
from peerup.proto import multistream
from python_sources import in_python_sources

Run = Callable[..., Any]  # the run fixture (tests/net/conftest.py)
PROTO = "/hold/1.0.0"
PONG_FRAME_BYTES = 12


def host_with(hold_answer_s: float) -> Host:
    config = HostConfig(connection=ConnectionConfig(hold_answer_s=hold_answer_s))
    return Host(Ed25519PrivateKey.generate(), config)


async def connected(server: Host) -> tuple[Host, Connection]:
    bound = await server.listen("/ip4/127.0.0.1/tcp/0")
    client = Host(Ed25519PrivateKey.generate())
    conn = await client.connect(bound[0].with_peer_id(server.peer_id))
    await conn.ping()  # the server side is ready once it answered
    # Both identify exchanges are over: from here on, only the test's streams talk.
    server_conn = server.connection_to(client.peer_id)
    assert server_conn is not None
    await client.identified(conn)
    await server.identified(server_conn)
    await conn.ping()
    return client, conn


async def bytes_since(conn: Connection, before: int) -> int:
    """Muxed bytes the peer sent since ``before`` was read from
    ``conn.muxed_bytes_received``, up to its answer to a ping sent now (not counted)."""
    await conn.ping()
    return conn.muxed_bytes_received - before - PONG_FRAME_BYTES


def test_answer_waits_for_the_first_reply_when_the_opener_sent_data(run: Run) -> None:
    async def main() -> None:
        server = host_with(hold_answer_s=60.0)
        got_data = asyncio.Event()
        may_reply = asyncio.Event()

        async def handler(stream: Stream) -> None:
            assert await stream.read() == b"hello"
            got_data.set()
            await may_reply.wait()
            await stream.write(b"world")

        server.set_handler(PROTO, handler)
        client, conn = await connected(server)
        before = conn.muxed_bytes_received
        stream = conn.open_stream([PROTO])
        await stream.write(b"hello")
        await got_data.wait()
        assert await bytes_since(conn, before) == 0
        may_reply.set()
        assert await stream.read() == b"world"
        assert await stream.negotiated() == PROTO
        await client.aclose()
        await server.aclose()

    run(main())


def test_answer_goes_at_once_when_the_opener_waits_for_it(run: Run) -> None:
    async def main() -> None:
        server = host_with(hold_answer_s=60.0)
        never = asyncio.Event()

        async def handler(stream: Stream) -> None:
            await never.wait()

        server.set_handler(PROTO, handler)
        client, conn = await connected(server)
        # Two proposals: the opener negotiates before writing anything.
        stream = await client.new_stream(conn, ["/other/1.0.0", PROTO])
        assert stream.protocol == PROTO
        await client.aclose()
        await server.aclose()

    run(main())


def test_held_answer_goes_after_hold_answer_s_without_a_reply(run: Run) -> None:
    async def main() -> None:
        server = host_with(hold_answer_s=0.05)
        never = asyncio.Event()

        async def handler(stream: Stream) -> None:
            await stream.read()
            await never.wait()

        server.set_handler(PROTO, handler)
        client, conn = await connected(server)
        stream = conn.open_stream([PROTO])
        await stream.write(b"hello")
        assert await stream.negotiated() == PROTO
        await client.aclose()
        await server.aclose()

    run(main())


def test_held_answer_is_dropped_when_the_handler_resets(run: Run) -> None:
    async def main() -> None:
        server = host_with(hold_answer_s=60.0)

        async def handler(stream: Stream) -> None:
            await stream.read()
            stream.reset()

        server.set_handler(PROTO, handler)
        client, conn = await connected(server)
        stream = conn.open_stream([PROTO])
        await stream.write(b"hello")
        with pytest.raises(StreamReset):
            await stream.read()
        await client.aclose()
        await server.aclose()

    run(main())


def test_data_expected_shares_the_opening_write(run: Run) -> None:
    async def main() -> None:
        server = host_with(hold_answer_s=60.0)
        opened: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def handler(stream: Stream) -> None:
            opened.set_result(await stream.read())
            await stream.write(b"ok")

        server.set_handler(PROTO, handler)
        client, conn = await connected(server)
        transport: Any = conn._transport
        writes: list[int] = []
        original = transport.write

        def counting(data: bytes) -> None:
            writes.append(len(data))
            original(data)

        transport.write = counting
        stream = conn.open_stream([PROTO], data_expected=True)
        # The opener's first bytes come one loop pass later (as a TCP client's do
        # after the accept), and still share the write of the opening frame.
        loop = asyncio.get_running_loop()
        loop.call_soon(lambda: conn.send_stream_data(stream.stream_id, b"first"))
        assert await opened == b"first"
        assert len(writes) == 1
        assert await stream.read() == b"ok"
        await client.aclose()
        await server.aclose()

    run(main())


def test_inline_handler_crash_resets_the_stream_and_the_host_serves_on(
    run: Run,
) -> None:
    async def main() -> None:
        server = host_with(hold_answer_s=60.0)
        calls: list[Stream] = []

        def crashing(stream: Stream) -> None:
            calls.append(stream)
            if len(calls) == 1:
                raise RuntimeError("boom")
            stream.reset()

        server.set_inline_handler(PROTO, crashing)
        client, conn = await connected(server)
        for _ in range(2):
            stream = conn.open_stream([PROTO])
            await stream.write(b"x")
            with pytest.raises(StreamReset):
                await stream.read()
        assert len(calls) == 2
        await client.aclose()
        await server.aclose()

    run(main())


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool:
        self.transport.close()
        return True


def test_splice_holds_stream_data_until_its_tcp_connection_is_made(run: Run) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        echo = await loop.create_server(_Echo, "127.0.0.1", 0)
        port = echo.sockets[0].getsockname()[1]
        server = host_with(hold_answer_s=60.0)
        splices: asyncio.Queue[TcpStreamSplice] = asyncio.Queue()

        def attach(stream: Stream) -> None:
            splice = TcpStreamSplice()
            splice.attach(stream)
            splices.put_nowait(splice)

        server.set_inline_handler(PROTO, attach)
        client, conn = await connected(server)
        before = conn.muxed_bytes_received
        stream = conn.open_stream([PROTO])
        payload = bytes(range(256)) * 4  # one Noise frame with the SYN: answer held
        await stream.write(payload)
        await stream.close_write()
        splice = await splices.get()
        # Everything (data and FIN) reached the splice before it has a TCP side.
        assert await bytes_since(conn, before) == 0
        await loop.create_connection(lambda: splice, "127.0.0.1", port)
        assert await stream.read_all(len(payload)) == payload
        stats = await splice.done
        assert (stats.ended_by, stats.tcp_to_stream_bytes) == ("eof", len(payload))
        await client.aclose()
        await server.aclose()
        echo.close()

    run(main())


def test_splice_whose_tcp_connection_fails_resets_the_stream(run: Run) -> None:
    async def main() -> None:
        server = host_with(hold_answer_s=60.0)
        splices: asyncio.Queue[TcpStreamSplice] = asyncio.Queue()

        def attach(stream: Stream) -> None:
            splice = TcpStreamSplice()
            splice.attach(stream)
            splices.put_nowait(splice)

        server.set_inline_handler(PROTO, attach)
        client, conn = await connected(server)
        stream = conn.open_stream([PROTO])
        await stream.write(b"request")
        splice = await splices.get()
        splice.connect_failed("error: service down")
        with pytest.raises(StreamReset):
            await stream.read()
        assert (await splice.done).ended_by == "error: service down"
        await client.aclose()
        await server.aclose()

    run(main())


def test_client_bytes_before_the_stream_is_attached_are_bounded_and_all_arrive() -> (
    None
):
    """A proxy accepts a TCP client before its stream exists (while it dials). The
    client may send a lot and close at once: the splice holds at most about one read
    (uvloop starts reading after connection_made even if reading was paused there),
    and once attached everything arrives in order, then the end."""
    uvloop = pytest.importorskip("uvloop")
    payload = os.urandom(4 * 1024 * 1024)

    async def main() -> None:
        server = host_with(hold_answer_s=60.0)
        received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def sink(stream: Stream) -> None:
            received.set_result(await stream.read_all(len(payload)))

        server.set_handler(PROTO, sink)
        client, conn = await connected(server)
        loop = asyncio.get_running_loop()
        accepted: asyncio.Queue[TcpStreamSplice] = asyncio.Queue()
        listener = await loop.create_server(
            lambda: TcpStreamSplice(accepted.put_nowait), "127.0.0.1", 0
        )
        port = listener.sockets[0].getsockname()[1]

        def send_all() -> None:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
                with contextlib.suppress(OSError):
                    sock.recv(1)  # until the proxy side closes

        sender = asyncio.ensure_future(asyncio.to_thread(send_all))
        splice = await accepted.get()
        # Let the client fill the socket buffers while no stream is attached.
        for _ in range(50):
            await asyncio.sleep(0.002)
        held = sum(len(d) for d in splice._early)
        assert held <= 512 * 1024
        splice.attach(conn.open_stream([PROTO]))
        assert await received == payload
        await sender
        listener.close()
        await client.aclose()
        await server.aclose()

    async def bounded() -> None:
        async with asyncio.timeout(30):
            await main()

    uvloop.run(bounded())


class ServiceSetup:
    """A local service (one connection: its first read, then an answer, then close)
    and a host whose inline handler splices each stream to it via connect_now()."""

    def __init__(self, host: str, answer: bytes) -> None:
        self.host = host
        self.answer = answer
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.server = host_with(hold_answer_s=60.0)
        self.splices: asyncio.Queue[TcpStreamSplice] = asyncio.Queue()
        self.server.set_inline_handler(PROTO, self._attach)
        self.first: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.serving = asyncio.ensure_future(self._serve_once())

    def _attach(self, stream: Stream) -> None:
        splice = TcpStreamSplice()
        assert splice.connect_now(self.host, self.port) is None
        splice.attach(stream)
        self.splices.put_nowait(splice)

    async def _serve_once(self) -> None:
        loop = asyncio.get_running_loop()
        conn, _ = await loop.sock_accept(self.listener)
        with conn:
            conn.setblocking(False)
            self.first.set_result(await loop.sock_recv(conn, 1024))
            await loop.sock_sendall(conn, self.answer)

    async def open_and_write(self, data: bytes) -> tuple[Host, Stream, TcpStreamSplice]:
        """A client opens a stream to the service and writes ``data``."""
        client, conn = await connected(self.server)
        stream = conn.open_stream([PROTO])
        await stream.write(data)
        return client, stream, await self.splices.get()

    async def aclose(self) -> None:
        await self.serving
        self.listener.close()
        await self.server.aclose()


def test_a_service_gets_the_first_bytes_before_its_transport_exists(run: Run) -> None:
    """connect_now() starts the service connection in the pass that opened the
    stream; the stream's first bytes go out on the raw socket at once, not after the
    event loop's connect callback and transport setup (finish_connect)."""

    async def main() -> None:
        service = ServiceSetup("127.0.0.1", b"response")
        client, stream, splice = await service.open_and_write(b"request")
        async with asyncio.timeout(10):
            assert await service.first == b"request"
        assert splice.tcp is None  # finish_connect has not run
        await splice.finish_connect()
        await stream.close_write()
        assert await stream.read_all(100) == b"response"
        stats = await splice.done
        assert (stats.stream_to_tcp_bytes, stats.tcp_to_stream_bytes) == (7, 8)
        await client.aclose()
        await service.aclose()

    run(main())


def test_a_connected_service_socket_becomes_the_transport_in_the_same_pass(
    run: Run,
) -> None:
    """adopt_connected() wraps the socket connect_now() connected (loopback: at once)
    without a task or a loop pass; the splice then runs on it both ways."""

    async def main() -> None:
        service = ServiceSetup("127.0.0.1", b"adopted")
        client, stream, splice = await service.open_and_write(b"ask")
        assert splice.adopt_connected()
        assert splice.tcp is not None and splice._sock is None
        assert not splice.adopt_connected()  # once only
        async with asyncio.timeout(10):
            assert await service.first == b"ask"
        await stream.close_write()
        assert await stream.read_all(100) == b"adopted"
        stats = await splice.done
        assert (
            stats.stream_to_tcp_bytes,
            stats.tcp_to_stream_bytes,
            stats.ended_by,
        ) == (
            3,
            7,
            "eof",
        )
        await client.aclose()
        await service.aclose()

    run(main())


def test_a_refused_service_connection_is_reported(run: Run) -> None:
    async def main() -> None:
        with socket.create_server(("127.0.0.1", 0)) as probe:
            port = probe.getsockname()[1]
        # Nothing listens on port now: refused, at once or when finishing.
        splice = TcpStreamSplice()
        error = splice.connect_now("127.0.0.1", port)
        if error is None:
            with pytest.raises(ConnectionRefusedError):
                await splice.finish_connect()
        else:
            assert error.errno == errno.ECONNREFUSED
        splice.connect_failed("error: service down")
        assert (await splice.done).ended_by == "error: service down"

    run(main())


def test_a_service_named_by_host_name_is_connected_by_the_loop(run: Run) -> None:
    async def main() -> None:
        service = ServiceSetup("localhost", b"by name")
        client, stream, splice = await service.open_and_write(b"hi")
        await splice.finish_connect()
        async with asyncio.timeout(10):
            assert await service.first == b"hi"
        await stream.close_write()
        assert await stream.read_all(100) == b"by name"
        await client.aclose()
        await service.aclose()

    run(main())


def test_an_optimistic_stream_to_an_unsupported_protocol_fails_negotiation(
    run: Run,
) -> None:
    """The opener sends header, proposal and data at once; a peer without the
    protocol answers ``na``: negotiation fails with the reason, and so do reads."""

    async def main() -> None:
        server = host_with(hold_answer_s=60.0)
        client, conn = await connected(server)
        stream = conn.open_stream(["/nope/1.0.0"])
        await stream.write(b"request")
        with pytest.raises(NegotiationError, match="does not support /nope/1.0.0"):
            await stream.negotiated()
        with pytest.raises(NegotiationError):
            await stream.read()
        await client.aclose()
        await server.aclose()

    run(main())


class _Conn:
    """What a Stream asks of its connection, recorded (unit test of Stream._feed)."""

    def __init__(self) -> None:
        self.acked = 0
        self.sent = b""
        self.negotiated: list[str | None] = []
        self.loop = asyncio.get_running_loop()

    def acknowledge(self, stream_id: int, n: int) -> None:
        self.acked += n

    def on_stream_negotiated(self, stream: Stream) -> None:
        self.negotiated.append(stream.protocol)

    def send_stream_data(self, stream_id: int, data: bytes, *, flush: bool) -> int:
        self.sent += data
        return len(data)

    def hold_answer(self, stream_id: int, data: bytes) -> None:
        self.sent += data


@in_python_sources
def test_an_optimistic_answer_split_anywhere_is_understood(run: Run) -> None:
    answer = multistream.opening_message("/echo/1.0.0") + b"data"

    async def main(cut: int) -> None:
        conn = _Conn()
        stream = Stream(conn, 1, None, expect="/echo/1.0.0")  # type: ignore[arg-type]
        stream._feed(answer[:cut])
        stream._feed(answer[cut:])
        assert await stream.negotiated() == "/echo/1.0.0", cut
        assert await stream.read(100) == b"data", cut
        assert conn.acked == len(answer), cut
        assert conn.sent == b"", cut  # an optimistic opener has nothing more to send

    for cut in range(1, 37):  # inside the 37-byte answer
        run(main(cut))


OPENING = multistream.opening_message("/echo/1.0.0")


@in_python_sources
def test_an_inbound_opening_split_anywhere_is_answered_the_same(run: Run) -> None:
    """Header, proposal and data from the opener, split at each place between the
    read that opened the stream and the next: negotiated either way, answered with
    the same header and proposal, and the data delivered."""
    wire = OPENING + b"data"

    async def main(cut: int) -> None:
        conn = _Conn()
        supported = frozenset({"/echo/1.0.0", "/other/1.0.0"})
        stream = Stream(conn, 2, None, supported=supported)  # type: ignore[arg-type]
        stream._feed(wire[:cut])
        stream.opened()  # the end of the read that opened the stream
        stream._feed(wire[cut:])
        assert await stream.negotiated() == "/echo/1.0.0", cut
        assert conn.negotiated == ["/echo/1.0.0"], cut
        assert conn.sent == OPENING, cut
        assert await stream.read(100) == b"data", cut
        assert conn.acked == len(wire), cut

    for cut in range(1, len(OPENING) + 4):
        run(main(cut))
