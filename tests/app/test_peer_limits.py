"""Per-peer limits on local service connections, and running out of descriptors.

A peer may have ``max_service_connections_per_peer`` connections to local services
open at once; more are refused (counted, logged once and then summed up). With no
descriptor left for a service connection (``EMFILE``), each stream is refused with
one log line and no traceback, and service resumes when descriptors are free again.
Two nodes in-process over loopback TCP; the tunnels are real TCP clients through a
proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
from collections.abc import AsyncIterator, Iterator

import pytest

from peerup.app.node import Node, Service
from peerup.app.tunnel import service_protocol as tunnel_protocol
from peerup.core.errors import Error
from peerup.core.keys import Ed25519PrivateKey


async def echo_service() -> int:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return int(server.sockets[0].getsockname()[1])


@contextlib.asynccontextmanager
async def home_and_proxy(**limits: int) -> AsyncIterator[tuple[Node, int]]:
    """Home serving "web" (an echo), and the local port of a laptop's proxy to it."""
    home = Node(Ed25519PrivateKey.generate(), **limits)
    laptop = Node(Ed25519PrivateKey.generate())
    try:
        await home.listen(["/ip4/127.0.0.1/tcp/0"])
        home.expose(Service("web", "127.0.0.1", await echo_service()))
        laptop.host.add_addrs(home.peer_id, home.host.listen_addrs)
        server, _ = await laptop.start_proxy(home.peer_id, "web", 0)
        yield home, server.sockets[0].getsockname()[1]
    finally:
        await laptop.aclose()
        await home.aclose()


Tunnel = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def tunnel(port: int) -> Tunnel:
    return await asyncio.open_connection("127.0.0.1", port)


async def echoes(t: Tunnel, data: bytes = b"ping") -> bool:
    reader, writer = t
    writer.write(data)
    try:
        async with asyncio.timeout(5):
            return await reader.readexactly(len(data)) == data
    except (asyncio.IncompleteReadError, ConnectionResetError):
        return False


def test_service_connections_past_the_per_peer_limit_are_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="peerup")

    async def main() -> None:
        async with home_and_proxy(max_service_connections_per_peer=3) as (home, port):
            first = [await tunnel(port) for _ in range(3)]
            assert all([await echoes(t) for t in first])
            over = [await tunnel(port) for _ in range(4)]
            assert not any([await echoes(t) for t in over])
            assert home.refusals["limit"] == 4
            assert all([await echoes(t, b"still") for t in first])
            first[0][1].close()
            async with asyncio.timeout(5):
                peer = next(iter(home.host.connections))
                while home.service_connections(peer) > 2:
                    await asyncio.sleep(0.01)
            assert await echoes(await tunnel(port))  # room again

    asyncio.run(main())
    limit_lines = [
        r.getMessage() for r in caplog.records if "the most one" in r.getMessage()
    ]
    # The first at once; the other three summed up (here when the host closed).
    assert len(limit_lines) == 2, limit_lines
    assert "3 service connections open" in limit_lines[0]
    assert limit_lines[1].startswith("refused 3 more streams from ")
    assert "to service 'web'" in limit_lines[1]


@contextlib.contextmanager
def no_descriptors_left() -> Iterator[None]:
    """Use up every descriptor this process may open (with a soft limit just above
    what is open, so that takes few files); all given back after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held: list[int] = []
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 32, hard)
    )
    try:
        with contextlib.suppress(OSError):
            while True:
                held.append(os.open(os.devnull, os.O_RDONLY))
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def stream_echoes(node: Node, home: Node, data: bytes = b"ping") -> bool:
    """A stream straight to home's "web" (no proxy: no descriptor on this side)."""
    stream = await node.host.new_stream(home.peer_id, tunnel_protocol("web"))
    try:
        await stream.write(data)
        async with asyncio.timeout(5):
            return await stream.readexactly(len(data)) == data
    except (Error, asyncio.IncompleteReadError):
        return False
    finally:
        stream.reset()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_out_of_descriptors_a_service_stream_is_refused_with_one_line_no_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="peerup")

    async def main() -> None:
        home = Node(Ed25519PrivateKey.generate())
        laptop = Node(Ed25519PrivateKey.generate())
        try:
            await home.listen(["/ip4/127.0.0.1/tcp/0"])
            home.expose(Service("web", "127.0.0.1", await echo_service()))
            laptop.host.add_addrs(home.peer_id, home.host.listen_addrs)
            assert await stream_echoes(laptop, home)  # connected and warm
            await asyncio.sleep(0.3)  # its service connection closed, both ends
            with no_descriptors_left():
                for _ in range(10):
                    assert not await stream_echoes(laptop, home)
            assert await stream_echoes(laptop, home)
        finally:
            await laptop.aclose()
            await home.aclose()

    asyncio.run(main())
    ours = [r for r in caplog.records if r.name.startswith("peerup")]
    assert not [r for r in ours if r.exc_info], caplog.text
    down = [
        r.getMessage()
        for r in caplog.records
        if "Too many open files" in r.getMessage()
    ]
    # The first at once, the other nine summed up (here when the host closed).
    assert len(down) == 2, down
    assert down[0].startswith("service web: local 127.0.0.1:"), down
    assert down[1].startswith("refused 9 more streams from "), down
