"""The host's limits against hostile peers, over loopback TCP: connections that never
finish their handshake (capped per address and in all, the oldest cut first), the
descriptor reserve, connections and streams per peer, and logs that stay short under
a flood (STYLE.md 3.9: only real sockets show what the kernel does with them)."""

from __future__ import annotations

import asyncio
import logging
import resource
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from peerup.core.errors import Error
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.multiaddr import Multiaddr
from peerup.net import limits
from peerup.net.connection import Connection, ConnectionConfig
from peerup.net.host import Host, HostConfig
from peerup.net.stream import Stream

ECHO = "/echo/1.0.0"
HOLD = "/hold/1.0.0"
HEADER = b"\x13/multistream/1.0.0\n"
Run = Callable[..., Any]  # the run fixture (tests/net/conftest.py)
SLOW_HANDSHAKE = ConnectionConfig(handshake_timeout_s=60.0)


async def serve_echo(stream: Stream) -> None:
    while data := await stream.read():
        await stream.write(data)


async def hold(stream: Stream) -> None:
    await stream.read_all(1 << 20)


async def server_host(config: HostConfig) -> tuple[Host, Multiaddr]:
    server = Host(Ed25519PrivateKey.generate(), config)
    server.set_handler(ECHO, serve_echo)
    server.set_handler(HOLD, hold)
    bound = await server.listen("/ip4/127.0.0.1/tcp/0")
    return server, bound[0].with_peer_id(server.peer_id)


async def echo_roundtrip(host: Host, target: Multiaddr | Connection) -> bytes:
    stream = await host.new_stream(target, ECHO)
    await stream.write(b"still served")
    await stream.close_write()
    return await stream.read_all(100)


Silent = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def silent(addr: Multiaddr, source: str = "127.0.0.1") -> Silent:
    """A raw connection that says nothing, once the host accepted it (it speaks
    first: the multistream header)."""
    host, port = addr.without_peer_id().tcp_endpoint() or ("", 0)
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    async with asyncio.timeout(5):
        assert await reader.readexactly(len(HEADER)) == HEADER
    return reader, writer


async def is_cut(conn: Silent, wait_s: float = 0.3) -> bool:
    """Whether the host hung up on ``conn`` (waiting at most ``wait_s``)."""
    reader, _ = conn
    try:
        async with asyncio.timeout(wait_s):
            return await reader.read(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_pending_handshakes_past_the_per_address_cap_cut_the_oldest(run: Run) -> None:
    config = HostConfig(
        connection=SLOW_HANDSHAKE, max_pending_per_ip=8, max_pending_connections=100
    )

    async def main() -> None:
        server, addr = await server_host(config)
        async with server, Host(Ed25519PrivateKey.generate()) as client:
            conns = []
            for _ in range(20):
                conns.append(await silent(addr))
                assert server.pending_handshakes <= 8
            cut = [await is_cut(c) for c in conns]
            assert cut == [True] * 12 + [False] * 8
            # A peer from the same address gets in: its handshake is the newest.
            assert await echo_roundtrip(client, addr) == b"still served"
            assert await is_cut(conns[12])  # the oldest silent one made room
            for _, writer in conns:
                writer.close()

    run(main())


def test_pending_handshakes_past_the_total_cap_cut_the_oldest_of_all(run: Run) -> None:
    config = HostConfig(
        connection=SLOW_HANDSHAKE, max_pending_per_ip=8, max_pending_connections=12
    )

    async def main() -> None:
        server, addr = await server_host(config)
        async with server:
            first = [await silent(addr, "127.0.0.1") for _ in range(8)]
            second = [await silent(addr, "127.0.0.2") for _ in range(8)]
            assert server.pending_handshakes == 12
            assert [await is_cut(c) for c in first] == [True] * 4 + [False] * 4
            assert not any([await is_cut(c) for c in second])
            for _, writer in first + second:
                writer.close()

    run(main())


def test_below_the_descriptor_reserve_new_connections_are_refused_at_once(
    run: Run, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="peerup.net")
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    config = HostConfig(reserved_fds=soft)  # never enough free

    async def main() -> None:
        server, addr = await server_host(config)
        async with server:
            host, port = addr.without_peer_id().tcp_endpoint() or ("", 0)
            reader, writer = await asyncio.open_connection(host, port)
            async with asyncio.timeout(5):
                assert await reader.read() == b""  # not even the header
            writer.close()
            assert server.pending_handshakes == 0

    run(main())
    assert "file descriptors free" in caplog.text


def test_the_open_files_limit_is_raised_to_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip("no finite hard limit above 256 to raise to")
    code = (
        "import resource\n"
        "from peerup.net.limits import raise_open_file_limit\n"
        "print(*raise_open_file_limit(), *resource.getrlimit(resource.RLIMIT_NOFILE))\n"
    )

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=lower,
    ).stdout.split()
    assert [int(x) for x in out] == [256, hard, hard, hard]


def test_garbage_connections_make_a_bounded_log_that_still_counts_them(
    run: Run, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="peerup")
    total = 500

    async def garbage(addr: Multiaddr) -> None:
        host, port = addr.without_peer_id().tcp_endpoint() or ("", 0)
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET / HTTP/1.1\r\nHost: peerup\r\n" + b"X-Junk: x\r\n" * 64)
        try:
            await reader.read()
        except ConnectionResetError:
            pass
        writer.close()

    async def main() -> None:
        server, addr = await server_host(HostConfig())
        async with server:
            for _ in range(total // 20):
                await asyncio.gather(*(garbage(addr) for _ in range(20)))
            async with asyncio.timeout(5):
                while server.pending_handshakes:
                    await asyncio.sleep(0.01)
        # Closing the host says what was not said yet.

    run(main())
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) <= 5, lines
    assert lines[0].startswith("refused connection from 127.0.0.1: ")
    summary = next(line for line in lines if "more connections" in line)
    assert summary.startswith(f"refused {total - 1} more connections from 127.0.0.1")


def test_a_peer_past_its_connection_limit_is_refused_and_logged_once(
    run: Run, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="peerup.net.host")
    config = HostConfig(max_connections_per_peer=2)

    async def main() -> None:
        server, addr = await server_host(config)
        key = Ed25519PrivateKey.generate()  # one peer, many hosts
        clients = [Host(key) for _ in range(6)]
        async with server:
            conns = []
            for client in clients:
                try:
                    conn = await client.connect(addr)
                    await echo_roundtrip(client, conn)
                    conns.append(conn)
                except Error:
                    pass
            assert len(conns) == 2
            assert len(server.connections[clients[0].peer_id]) == 2
            for conn, client in zip(conns, clients, strict=False):
                assert await echo_roundtrip(client, conn) == b"still served"
            for client in clients:
                await client.aclose()

    run(main())
    # One line at once, one summary of the rest (here when the host closed).
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 2, refusals
    assert "2 connections, the most one peer may have" in refusals[0]
    assert refusals[1].startswith("refused 3 more connections from 12D3KooW")


def test_a_peer_past_its_stream_limit_across_connections_is_reset(run: Run) -> None:
    config = HostConfig(max_streams_per_peer=10)

    async def main() -> None:
        server, addr = await server_host(config)
        key = Ed25519PrivateKey.generate()
        async with server, Host(key) as one, Host(key) as two:
            conns = [await one.connect(addr), await two.connect(addr)]
            streams = []
            for i in range(12):
                stream = conns[i % 2].open_stream([HOLD])
                await stream.write(b"x")
                streams.append(stream)
            await conns[0].ping()
            await conns[1].ping()
            assert sum(s.is_reset for s in streams) == 2
            for stream in streams:
                if not stream.is_reset:
                    await stream.close_write()
                    assert await stream.read_all(10) == b""  # both sides closed
            assert await echo_roundtrip(one, conns[0]) == b"still served"

    run(main())


def test_accept_out_of_descriptors_is_one_warning_line_not_a_traceback(
    run: Run, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        limits.quiet_accept_errors(loop)
        limits.quiet_accept_errors(loop)  # idempotent
        context = {
            "message": "socket.accept() out of system resource",
            "exception": OSError(24, "Too many open files"),
        }
        for _ in range(5):  # asyncio retries every second, per listener
            loop.call_exception_handler(context)

    run(main())
    assert [r.getMessage() for r in caplog.records] == [
        "not accepting connections for a second: Too many open files"
    ]
    assert not [r for r in caplog.records if r.exc_info]
