"""Host over loopback TCP: dialing, reuse, peer checks, gating, abuse, backpressure.

These are the few net tests that need real sockets (STYLE.md 3.9): what the kernel
adds (IPv6, raw clients that send garbage or nothing, socket buffers under a paused
reader) cannot be shown over the in-memory transport.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

import pytest

from peerup.core.access import Access
from peerup.core.errors import ConnectionClosed, Error, PeerIdMismatch
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.multiaddr import Multiaddr
from peerup.core.peer_id import PeerId
from peerup.net.connection import Connection, ConnectionConfig
from peerup.net.host import Host, HostConfig
from peerup.net.stream import Stream
from peerup.proto import multistream
from peerup.proto.yamux import YamuxConfig

ECHO = "/echo/1.0.0"
LOOPBACK4 = "/ip4/127.0.0.1/tcp/0"
LOOPBACK6 = "/ip6/::1/tcp/0"

Run = Callable[..., Any]  # the run fixture (tests/net/conftest.py)


def new_host(config: HostConfig | None = None, **kwargs: object) -> Host:
    return Host(Ed25519PrivateKey.generate(), config, **kwargs)  # type: ignore[arg-type]


async def serve_echo(stream: Stream) -> None:
    while data := await stream.read():
        await stream.write(data)


async def listening_echo_host(
    config: HostConfig | None = None, addr: str = LOOPBACK4, **kwargs: object
) -> tuple[Host, Multiaddr]:
    host = new_host(config, **kwargs)
    host.set_handler(ECHO, serve_echo)
    bound = await host.listen(addr)
    return host, bound[0].with_peer_id(host.peer_id)


async def echo_roundtrip(
    host: Host, target: Multiaddr | Connection, data: bytes
) -> bytes:
    stream = await host.new_stream(target, ECHO)
    writer = asyncio.ensure_future(_write_and_close(stream, data))
    received = await stream.read_all(len(data))
    await writer
    return received


async def _write_and_close(stream: Stream, data: bytes) -> None:
    await stream.write(data)
    await stream.close_write()


def tcp_endpoint(addr: Multiaddr) -> tuple[str, int]:
    ep = addr.without_peer_id().tcp_endpoint()
    assert ep is not None
    return ep


def has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


async def read_until_eof(reader: asyncio.StreamReader) -> bytes:
    """What the host sends a raw client before it hangs up (reset counts as hang-up)."""
    out = bytearray()
    try:
        while chunk := await reader.read(65536):
            out += chunk
    except ConnectionResetError:
        pass
    return bytes(out)


# --- dialing ------------------------------------------------------------------------


def test_connect_and_echo_over_tcp(run: Run) -> None:
    async def main() -> None:
        server, addr = await listening_echo_host()
        async with server, new_host() as client:
            conn = await client.connect(addr)
            assert conn.remote_peer == server.peer_id
            assert not conn.is_relayed
            data = os.urandom(3 * 1024 * 1024 + 17)
            assert await echo_roundtrip(client, conn, data) == data

    run(main())


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 on loopback (::1)")
def test_both_ends_know_the_rtt_without_anyone_pinging(run: Run) -> None:
    """Each side pings once when its muxer starts (and keepalives refresh it), so a
    new connection reports an RTT (peerup status) before any explicit ping."""

    async def main() -> None:
        server, addr = await listening_echo_host()
        client = new_host()
        conn = await client.connect(addr)
        async with asyncio.timeout(10):
            while (
                conn.rtt_s is None
                or (server_conn := server.connection_to(client.peer_id)) is None
                or server_conn.rtt_s is None
            ):
                await asyncio.sleep(0.005)
        assert 0 < conn.rtt_s < 5 and 0 < server_conn.rtt_s < 5
        await client.aclose()
        await server.aclose()

    run(main())


def test_listen_and_dial_over_ipv6_loopback(run: Run) -> None:
    async def main() -> None:
        server, addr = await listening_echo_host(addr=LOOPBACK6)
        assert str(addr).startswith("/ip6/::1/tcp/")
        async with server, new_host() as client:
            conn = await client.connect(addr)
            assert conn.remote_peer == server.peer_id
            assert conn.remote_addr is not None
            assert str(conn.remote_addr).startswith("/ip6/::1/tcp/")
            assert await echo_roundtrip(client, conn, b"over ipv6") == b"over ipv6"

    run(main())


def test_second_connect_reuses_the_open_connection(run: Run) -> None:
    async def main() -> None:
        server, addr = await listening_echo_host()
        async with server, new_host() as client:
            first = await client.connect(addr)
            second = await client.connect(addr)
            by_peer_id = await client.connect(server.peer_id)
            assert second is first
            assert by_peer_id is first
            assert len(client.connections[server.peer_id]) == 1

    run(main())


def test_concurrent_dials_to_one_peer_are_joined(run: Run) -> None:
    async def main() -> None:
        server, addr = await listening_echo_host()
        accepted: list[Connection] = []
        server.on_connection.append(accepted.append)
        async with server, new_host() as client:
            conns = await asyncio.gather(*(client.connect(addr) for _ in range(5)))
            assert all(c is conns[0] for c in conns)
            assert len(client.connections[server.peer_id]) == 1
            # The listener saw exactly one connection from the client, too.
            assert await echo_roundtrip(client, conns[0], b"x") == b"x"
            assert len(accepted) == 1

    run(main())


def test_dial_rejects_a_peer_answering_with_another_id(run: Run) -> None:
    async def main() -> None:
        server, addr = await listening_echo_host()
        expected = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key)
        wrong_target = addr.without_peer_id().with_peer_id(expected)
        async with server, new_host() as client:
            with pytest.raises(PeerIdMismatch) as info:
                await client.connect(wrong_target)
            assert "peer ID mismatch" in str(info.value)
            assert client.connection_to(expected) is None
            assert client.connection_to(server.peer_id) is None

    run(main())


# --- gating and abuse -------------------------------------------------------------


def test_gate_refusal_closes_the_connection_before_any_stream(
    run: Run, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="peerup.net")
    handled: list[Stream] = []

    async def record(stream: Stream) -> None:
        handled.append(stream)
        await serve_echo(stream)

    async def main() -> None:
        refused: list[PeerId] = []

        def gate(peer: PeerId) -> Access:
            refused.append(peer)
            return Access.deny("not on the allowlist")

        server = new_host(gate=gate)
        server.set_handler(ECHO, record)
        addr = (await server.listen(LOOPBACK4))[0].with_peer_id(server.peer_id)
        async with server, new_host() as client:
            with pytest.raises(Error):
                # The initiator may finish its side of Noise before the responder
                # decides, so the refusal surfaces at connect or on the first read.
                conn = await client.connect(addr)
                await echo_roundtrip(client, conn, b"let me in")
            assert refused == [client.peer_id]
            assert server.connections == {}
            assert client.connection_to(server.peer_id) is None

    run(main())
    assert handled == []
    assert any("refused peer" in r.getMessage() for r in caplog.records), caplog.text


def test_garbage_from_a_raw_client_is_cut_off_and_host_keeps_serving(run: Run) -> None:
    async def main() -> None:
        server, addr = await listening_echo_host()
        async with server, new_host() as client:
            reader, writer = await asyncio.open_connection(*tcp_endpoint(addr))
            writer.write(b"GET / HTTP/1.1\r\nHost: peerup\r\n" + b"X-Junk: x\r\n" * 64)
            async with asyncio.timeout(5):
                await read_until_eof(reader)
            writer.close()
            assert server.connections == {}
            assert await echo_roundtrip(client, addr, b"still here") == b"still here"

    run(main())


def test_silent_raw_client_is_cut_off_after_handshake_timeout(run: Run) -> None:
    timeout_s = 0.5
    config = HostConfig(connection=ConnectionConfig(handshake_timeout_s=timeout_s))

    async def main() -> None:
        server, addr = await listening_echo_host(config)
        async with server:
            loop = asyncio.get_running_loop()
            reader, writer = await asyncio.open_connection(*tcp_endpoint(addr))
            start = loop.time()
            async with asyncio.timeout(5):
                received = await read_until_eof(reader)
            elapsed = loop.time() - start
            writer.close()
            # The host speaks first (multistream header), then waits for us.
            assert received.startswith(b"\x13/multistream/1.0.0\n")
            assert timeout_s * 0.9 <= elapsed < timeout_s + 2.0

    run(main())


def test_peer_opening_streams_without_end_is_cut_off(run: Run) -> None:
    yamux_config = YamuxConfig(max_inbound_streams=8, max_refused_streams=16)
    config = HostConfig(connection=ConnectionConfig(yamux=yamux_config))

    async def hold(stream: Stream) -> None:
        await stream.read_all(1 << 20)  # keep the stream open until the peer ends it

    async def main() -> None:
        server, addr = await listening_echo_host(config)
        server.set_handler("/hold/1.0.0", hold)
        lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def on_disconnect(conn: Connection) -> None:
            if not lost.done():
                lost.set_result(conn.close_reason)

        server.on_disconnect.append(on_disconnect)
        async with server, new_host() as abuser, new_host() as good:
            conn = await abuser.connect(addr)
            # Far more SYNs than max_inbound_streams + max_refused_streams, sent
            # before any refusal can come back.
            for _ in range(100):
                stream = conn.open_stream(["/hold/1.0.0"])
                try:
                    await stream.write(b"x")
                except ConnectionClosed:
                    break
            async with asyncio.timeout(5):
                reason = await lost
            assert "stream limit" in reason
            async with asyncio.timeout(5):
                await conn.closed
            assert await echo_roundtrip(good, addr, b"unaffected") == b"unaffected"

    run(main())


# --- backpressure -----------------------------------------------------------------


def test_extra_stream_windows_come_from_one_pool_per_connection(run: Run) -> None:
    """However many streams a peer opens, what we grant it beyond each stream's
    initial 256 KiB comes from the session's pool (a new stream takes at most a
    quarter of what is left), and goes back to it when the stream ends."""
    mib = 1024 * 1024
    initial = 256 * 1024
    yamux_config = YamuxConfig(
        max_stream_window_bytes=mib, max_session_window_bytes=2 * mib
    )
    config = HostConfig(connection=ConnectionConfig(yamux=yamux_config))
    opening = len(multistream.opening_message(ECHO))

    async def main() -> None:
        server, addr = await listening_echo_host(config)
        async with server, new_host() as client:
            conn = await client.connect(addr)
            assert conn.session is not None
            session = conn.session
            streams = [conn.open_stream([ECHO]) for _ in range(12)]
            await conn.ping()  # the answer comes after the server's ACKs

            def extra(stream: Stream) -> int:
                return session.send_window(stream.stream_id) + opening - initial

            grants = [extra(s) for s in streams]
            assert grants[0] == mib // 2  # a quarter of 2 MiB
            assert (
                grants == sorted(grants, reverse=True) and grants[-1] < grants[0] // 8
            )
            assert sum(grants) <= 2 * mib
            for stream in streams:
                await stream.close_write()
                assert await stream.read_all(1) == b""
            fresh = conn.open_stream([ECHO])
            await conn.ping()
            assert extra(fresh) == mib // 2  # the whole pool is back

    run(main())


def test_paused_reader_stalls_the_writer_then_everything_arrives(run: Run) -> None:
    window = 256 * 1024  # yamux's initial window: the least a stream can grant
    config = HostConfig(
        connection=ConnectionConfig(yamux=YamuxConfig(max_stream_window_bytes=window))
    )
    total = 16 * window
    data = os.urandom(total)

    async def main() -> None:
        resume = asyncio.Event()
        digest: asyncio.Future[tuple[int, str]] = (
            asyncio.get_running_loop().create_future()
        )

        async def paused_sink(stream: Stream) -> None:
            await resume.wait()
            received = await stream.read_all(total)
            digest.set_result((len(received), hashlib.sha256(received).hexdigest()))

        server = new_host(config)
        server.set_handler("/paused/1.0.0", paused_sink)
        addr = (await server.listen(LOOPBACK4))[0].with_peer_id(server.peer_id)
        async with server, new_host(config) as client:
            stream = await client.new_stream(addr, "/paused/1.0.0")
            writer = asyncio.ensure_future(_write_and_close(stream, data))
            await asyncio.sleep(1.5)
            assert not writer.done(), "the writer finished although nobody read"
            # Only the stream's receive window can be in flight: nothing is dropped
            # or buffered past it, and nothing was reset.
            assert 0 < stream.bytes_written <= window
            assert not stream.is_reset
            resume.set()
            async with asyncio.timeout(10):
                await writer
                size, sha = await digest
            assert stream.bytes_written == total
            assert (size, sha) == (total, hashlib.sha256(data).hexdigest())

    run(main())
