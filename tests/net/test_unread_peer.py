"""A peer that sends and never reads: what it makes us write stays bounded.

Over loopback TCP (STYLE.md 3.9): only real sockets fill up when a peer stops reading.
The flooding peer is our own host, driven by hand: its connection stops reading and
its yamux session queues raw PING frames.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from peerup.core.access import Access
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.multiaddr import Multiaddr
from peerup.core.peer_id import PeerId
from peerup.net.connection import Connection, ConnectionConfig
from peerup.net.host import Host, HostConfig
from peerup.net.stream import Stream
from peerup.proto import multistream, noise, yamux

ECHO = "/echo/1.0.0"
Run = Callable[..., Any]  # the run fixture (tests/net/conftest.py)


def new_host(config: HostConfig | None = None, **kwargs: Any) -> Host:
    return Host(Ed25519PrivateKey.generate(), config, **kwargs)


async def serve_echo(stream: Stream) -> None:
    while data := await stream.read():
        await stream.write(data)


async def echo_roundtrip(host: Host, target: Multiaddr, data: bytes) -> bytes:
    stream = await host.new_stream(target, ECHO)
    await stream.write(data)
    await stream.close_write()
    return await stream.read_all(len(data))


async def echo_server(config: HostConfig | None = None) -> tuple[Host, Multiaddr]:
    server = new_host(config)
    server.set_handler(ECHO, serve_echo)
    bound = await server.listen("/ip4/127.0.0.1/tcp/0")
    return server, bound[0].with_peer_id(server.peer_id)


def stop_reading(conn: Connection) -> None:
    """The flooder: reads nothing more, with a small receive buffer (no autotuning),
    so what the server answers piles up on the server's side."""
    conn.transport.pause_reading()


def ping_block(count: int, first: int) -> bytes:
    return b"".join(
        yamux.encode_header(yamux.TYPE_PING, yamux.FLAG_SYN, 0, first + i)
        for i in range(count)
    )


def send_pings(conn: Connection, blocks: int, per_block: int = 1000) -> None:
    """Queue ``blocks * per_block`` PINGs on the flooder's connection (not awaited:
    they sit in its write buffer until the server reads them)."""
    assert conn.session is not None
    for b in range(blocks):
        conn.session.outbox.append(ping_block(per_block, b * per_block + 1))
        conn.flush()


async def watch_write_buffer(
    conn: Connection, until: Callable[[], bool], seconds: float
) -> int:
    """The largest write buffer ``conn`` had, sampled until ``until()`` or timeout."""
    largest = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end and not until():
        if not conn.is_closed:
            largest = max(largest, conn.transport.get_write_buffer_size())
        await asyncio.sleep(0.005)
    return largest


def test_a_ping_flood_from_a_peer_that_never_reads_is_cut_off(run: Run) -> None:
    async def main() -> None:
        server, addr = await echo_server()
        async with server, new_host() as flooder, new_host() as good:
            conn = await flooder.connect(addr)
            await conn.ping()  # the server is muxed too
            [theirs] = server.connections[flooder.peer_id]
            stop_reading(conn)
            send_pings(conn, 200)  # 200,000 PINGs, 2.4 MB
            largest = await watch_write_buffer(theirs, lambda: theirs.is_closed, 10)
            assert theirs.is_closed, "the flooder was never cut off"
            assert "ping flood" in theirs.close_reason
            # At most a burst of answers and a GO_AWAY were ever queued for it.
            assert largest < 16 * 1024
            assert await echo_roundtrip(good, addr, b"still served") == b"still served"

    run(main())


def test_a_peer_that_keeps_making_us_answer_without_reading_is_not_read(
    run: Run,
) -> None:
    """With the ping limit out of the way, the generic guard: once our write buffer
    is over its high-water mark and the peer made us queue ``max_answers_while_unread``
    more answers, we stop reading it; when it reads again, so do we."""
    high = 64 * 1024
    unlimited_pings = yamux.YamuxConfig(
        ping_answers_per_s=1e9, ping_answer_burst=10**9, max_unanswered_pings=10**9
    )
    config = HostConfig(
        connection=ConnectionConfig(
            yamux=unlimited_pings,
            write_buffer_high_bytes=high,
            max_answers_while_unread=256,
        )
    )

    async def main() -> None:
        server, addr = await echo_server(config)
        async with server, new_host() as flooder, new_host() as good:
            conn = await flooder.connect(addr)
            await conn.ping()  # the server is muxed too
            [theirs] = server.connections[flooder.peer_id]
            stop_reading(conn)
            send_pings(conn, 500)  # 500,000 PINGs: 6 MB of answers if all read
            largest = await watch_write_buffer(
                theirs, lambda: not theirs.transport.is_reading(), 10
            )
            largest = max(largest, theirs.transport.get_write_buffer_size())
            assert not theirs.transport.is_reading(), "still reading the flooder"
            # The high-water mark, plus the answers of the reads around it (a read
            # is at most 256 KiB of PINGs: as many bytes of answers).
            assert largest < high + 2 * (256 + 16) * 1024, largest
            assert await echo_roundtrip(good, addr, b"still served") == b"still served"
            # The peer reads again: our buffer drains and we read it again.
            conn.transport.resume_reading()
            async with asyncio.timeout(20):
                while conn.transport.get_write_buffer_size() or not (
                    theirs.transport.is_reading()
                ):
                    await asyncio.sleep(0.01)
            assert not theirs.is_closed
            assert await echo_roundtrip(flooder, addr, b"and you") == b"and you"

    run(main(), timeout_s=60)


def test_nothing_is_answered_before_the_gate_has_passed(run: Run) -> None:
    """A refused peer that sends its last handshake message and yamux frames in one
    write gets nothing back after the handshake's second message: no PING answer, no
    stream ACK."""

    def gate(_peer: PeerId) -> Access:
        return Access.deny("not on the allowlist")

    async def main() -> None:
        server, addr = await echo_server_with_gate(gate)
        async with server:
            host, port = addr.without_peer_id().tcp_endpoint() or ("", 0)
            reader, writer = await asyncio.open_connection(host, port)
            neg = multistream.MultistreamNegotiator(
                multistream.Role.INITIATOR, [noise.PROTOCOL_ID]
            )
            writer.write(neg.data_to_send())
            selected = None
            while selected is None:
                for ev in neg.receive_data(await reader.read(4096)):
                    if isinstance(ev, multistream.ProtocolSelected):
                        selected = ev
            hs = noise.NoiseHandshake(
                noise.HandshakeRole.INITIATOR,
                Ed25519PrivateKey.generate(),
                muxers=[yamux.PROTOCOL_ID],
            )
            writer.write(hs.data_to_send())
            done: list[noise.HandshakeCompleted] = []
            while not done:
                chunk = await reader.read(4096)
                assert chunk, "the server hung up before its handshake message"
                done = hs.receive_data(chunk)
            cipher = hs.transport()
            frames = ping_block(10, 1) + yamux.encode_header(
                yamux.TYPE_WINDOW_UPDATE, yamux.FLAG_SYN, 1, 0
            )
            writer.write(hs.data_to_send() + cipher.encrypt(frames))
            after = bytearray()
            async with asyncio.timeout(5):
                try:
                    while chunk := await reader.read(4096):
                        after += chunk
                except ConnectionResetError:
                    pass
            writer.close()
            assert bytes(after) == b"", "answered before the gate decided"
            assert server.connections == {}

    run(main())


async def echo_server_with_gate(
    gate: Callable[[PeerId], Access],
) -> tuple[Host, Multiaddr]:
    server = new_host(gate=gate)
    server.set_handler(ECHO, serve_echo)
    bound = await server.listen("/ip4/127.0.0.1/tcp/0")
    return server, bound[0].with_peer_id(server.peer_id)


@pytest.fixture(autouse=True)
def _quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
