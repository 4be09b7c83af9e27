"""A cut tunnel reaches the TCP application as a reset, never as a clean end.

Real loopback TCP, real nodes (``app.node.Node``: the daemon's proxy and service
handlers) and a real relay; the far node or the relay runs in a child process where
the case kills it with SIGKILL. The TCP client is a plain blocking socket: when the
tunnel is cut its ``recv`` must raise ConnectionResetError, not return ``b""``, and
the nodes log the cut with its cause. A clean close by the far application still
arrives as a clean end (``b""``) after every byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

import pytest
import uvloop

from peerup.app.node import Node, Service
from peerup.app.relay_service import RelayResources, RelayService
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.multiaddr import Multiaddr
from peerup.net.host import Host

MB = 1024 * 1024
CHUNK = b"x" * 65536
RECV_TIMEOUT_S = 10.0

UNLIMITED = RelayResources.for_interop(
    unlimited=True, limit_duration_s=None, limit_data_bytes=None
)

# A far node in a child process: a service that sends without end, exposed by a Node
# that listens on loopback (and, given a relay address, keeps a reservation there).
FAR_NODE = textwrap.dedent(
    """
    import asyncio, sys
    from peerup.app.node import Node, Service
    from peerup.core.keys import Ed25519PrivateKey
    from peerup.core.multiaddr import Multiaddr

    async def main():
        async def endless(reader, writer):
            while True:
                writer.write(b"x" * 65536)
                await writer.drain()
        server = await asyncio.start_server(endless, "127.0.0.1", 0)
        node = Node(Ed25519PrivateKey.generate())
        node.expose(Service("big", "127.0.0.1", server.sockets[0].getsockname()[1]))
        addrs = await node.listen(["/ip4/127.0.0.1/tcp/0"])
        print(addrs[0].with_peer_id(node.peer_id), flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)

RELAY = textwrap.dedent(
    """
    import asyncio
    from peerup.app.relay_service import RelayResources, RelayService
    from peerup.core.keys import Ed25519PrivateKey
    from peerup.net.host import Host

    async def main():
        host = Host(Ed25519PrivateKey.generate())
        addrs = await host.listen("/ip4/127.0.0.1/tcp/0")
        RelayService(host, RelayResources.for_interop(
            unlimited=True, limit_duration_s=None, limit_data_bytes=None)).start()
        print(addrs[0].with_peer_id(host.peer_id), flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


class Child:
    """A Python child process that prints one multiaddr, then runs until killed."""

    def __init__(self, code: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PEERUP_")}
        env["PYTHONPATH"] = os.pathsep.join(sys.path)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )

    async def addr(self) -> Multiaddr:
        assert self.proc.stdout is not None
        line = await asyncio.to_thread(self.proc.stdout.readline)
        if not line:
            assert self.proc.stderr is not None
            pytest.fail(f"child exited: {self.proc.stderr.read().decode()}")
        return Multiaddr.parse(line.decode().strip())

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)


@pytest.fixture
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in started:
        child.kill()


async def start_service(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> int:
    """A local TCP service whose first connection runs ``handle``; later ones (the
    proxy's diagnosis of a failed connection probes the service) are closed."""
    served = False

    async def first_only(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal served
        if served:
            w.close()
            return
        served = True
        await handle(r, w)

    server = await asyncio.start_server(first_only, "127.0.0.1", 0)
    return int(server.sockets[0].getsockname()[1])


async def start_relay(resources: RelayResources) -> tuple[Host, Multiaddr]:
    relay = Host(Ed25519PrivateKey.generate())
    addrs = await relay.listen("/ip4/127.0.0.1/tcp/0")
    RelayService(relay, resources).start()
    return relay, addrs[0].with_peer_id(relay.peer_id)


async def home_behind(
    relay_addr: Multiaddr, service_port: int
) -> tuple[Node, Multiaddr]:
    """A node exposing service "big", reachable only through ``relay_addr``."""
    home = Node(Ed25519PrivateKey.generate())
    home.expose(Service("big", "127.0.0.1", service_port))
    return home, await home.reserve_now(relay_addr)


async def proxy_to(target: Multiaddr) -> tuple[Node, int]:
    """A node with a proxy to service "big" on ``target``; the proxy's port."""
    laptop = Node(Ed25519PrivateKey.generate())
    peer = target.peer_id
    assert peer is not None
    laptop.host.add_addrs(peer, [target])
    await laptop.connect(peer)
    server, _ = await laptop.start_proxy(peer, "big", 0)
    return laptop, int(server.sockets[0].getsockname()[1])


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(RECV_TIMEOUT_S)
    return sock


def read_at_least(sock: socket.socket, n: int) -> int:
    got = 0
    while got < n:
        data = sock.recv(MB)
        if not data:
            raise AssertionError(f"clean end after {got} bytes, before {n}")
        got += len(data)
    return got


def read_to_end(sock: socket.socket) -> tuple[int, BaseException | None]:
    """Bytes read until the end, and the error that ended it (None: a clean end)."""
    got = 0
    while True:
        try:
            data = sock.recv(MB)
        except OSError as exc:
            return got, exc
        if not data:
            return got, None
        got += len(data)


def cut_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "peerup.net.tcp_splice" and "cut" in r.getMessage()
    ]


LOOPS = pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
"""The daemons run on uvloop, whose transports are not asyncio's."""


def run(coro: Coroutine[Any, Any, None], loop: str = "asyncio") -> None:
    bounded = asyncio.wait_for(coro, 60)
    if loop == "uvloop":
        uvloop.run(bounded)
    else:
        asyncio.run(bounded)


@LOOPS
def test_relay_data_limit_resets_the_client_and_the_service(
    caplog: pytest.LogCaptureFixture, loop: str
) -> None:
    caplog.set_level(logging.INFO)

    async def main() -> None:
        limited = RelayResources(circuit_data_bytes=MB)
        relay, relay_addr = await start_relay(limited)
        service_end: asyncio.Future[BaseException | None] = (
            asyncio.get_running_loop().create_future()
        )

        async def sender(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                for _ in range(128):  # 8 MiB, far past the limit
                    w.write(CHUNK)
                    await w.drain()
                await reader.read()
            except OSError as exc:
                service_end.set_result(exc)
                return
            service_end.set_result(None)

        home, circuit = await home_behind(relay_addr, await start_service(sender))
        laptop, port = await proxy_to(circuit)
        sock = connect(port)
        got, error = await asyncio.to_thread(read_to_end, sock)
        sock.close()
        async with asyncio.timeout(RECV_TIMEOUT_S):
            at_service = await service_end

        assert isinstance(error, ConnectionResetError), (got, error)
        assert got <= MB
        assert isinstance(at_service, ConnectionResetError), at_service
        cuts = cut_lines(caplog)
        assert any(home.peer_id.short() in c for c in cuts), cuts  # the proxy side
        assert any(laptop.peer_id.short() in c for c in cuts), cuts  # the service side
        # Both ends name the limit, from the limit the relay announced.
        assert all("relay ended the circuit: relay data limit" in c for c in cuts), cuts
        relay_lines = [
            r.getMessage() for r in caplog.records if r.name.endswith("relay_service")
        ]
        assert any("relay data limit reached after 1.0 MB" in m for m in relay_lines)
        for closing in (laptop, home, relay):
            await closing.aclose()

    run(main(), loop)


def test_peer_gone_on_a_limited_circuit_is_not_called_a_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The relay announces a data limit, but the home node goes away long before
    it: the proxy side says the peer went away, not that a limit was reached."""
    caplog.set_level(logging.INFO)

    async def main() -> None:
        relay, relay_addr = await start_relay(RelayResources(circuit_data_bytes=64 * MB))

        async def echo(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await reader.read(65536):
                    w.write(data)
                    await w.drain()

        home, circuit = await home_behind(relay_addr, await start_service(echo))
        laptop, port = await proxy_to(circuit)
        sock = connect(port)
        sock.sendall(b"x" * 1000)
        await asyncio.to_thread(read_at_least, sock, 1000)
        await home.aclose()  # the far machine goes away
        got, error = await asyncio.to_thread(read_to_end, sock)
        sock.close()
        assert isinstance(error, ConnectionResetError), (got, error)
        cuts = [c for c in cut_lines(caplog) if home.peer_id.short() in c]
        assert cuts, caplog.text
        assert all("the peer went away" in c for c in cuts), cuts
        assert not any("limit" in c for c in cuts), cuts
        for closing in (laptop, relay):
            await closing.aclose()

    run(main())


@LOOPS
def test_far_node_killed_resets_the_client(
    children: list[Child], caplog: pytest.LogCaptureFixture, loop: str
) -> None:
    caplog.set_level(logging.INFO)

    async def main() -> None:
        far = Child(FAR_NODE)
        children.append(far)
        laptop, port = await proxy_to(await far.addr())
        sock = connect(port)
        await asyncio.to_thread(read_at_least, sock, MB)
        far.kill()
        got, error = await asyncio.to_thread(read_to_end, sock)
        sock.close()

        assert isinstance(error, ConnectionResetError), (got, error)
        assert any("peer went away" in c for c in cut_lines(caplog)), caplog.text
        await laptop.aclose()

    run(main(), loop)


def test_relay_killed_resets_both_ends(
    children: list[Child], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    async def main() -> None:
        relay = Child(RELAY)
        children.append(relay)
        relay_addr = await relay.addr()
        service_end: asyncio.Future[BaseException | None] = (
            asyncio.get_running_loop().create_future()
        )

        async def endless(
            reader: asyncio.StreamReader, w: asyncio.StreamWriter
        ) -> None:
            try:
                while True:
                    w.write(CHUNK)
                    await w.drain()
            except OSError as exc:
                service_end.set_result(exc)

        home, circuit = await home_behind(relay_addr, await start_service(endless))
        laptop, port = await proxy_to(circuit)
        sock = connect(port)
        await asyncio.to_thread(read_at_least, sock, MB)
        relay.kill()
        got, error = await asyncio.to_thread(read_to_end, sock)
        sock.close()
        async with asyncio.timeout(RECV_TIMEOUT_S):
            at_service = await service_end

        assert isinstance(error, ConnectionResetError), (got, error)
        assert isinstance(at_service, ConnectionResetError), at_service
        cuts = cut_lines(caplog)
        assert len(cuts) == 2 and all("relay went away" in c for c in cuts), cuts
        for closing in (laptop, home):
            await closing.aclose()

    run(main())


def test_client_reset_resets_the_service_connection() -> None:
    async def main() -> None:
        relay, relay_addr = await start_relay(UNLIMITED)
        request = b"partial request"
        loop = asyncio.get_running_loop()
        service_got_request = asyncio.Event()
        service_end: asyncio.Future[BaseException | bytes] = loop.create_future()

        async def reader_side(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                await r.readexactly(len(request))
                service_got_request.set()
                service_end.set_result(await r.read())
            except OSError as exc:
                service_end.set_result(exc)

        home, circuit = await home_behind(relay_addr, await start_service(reader_side))
        laptop, port = await proxy_to(circuit)
        sock = connect(port)
        sock.sendall(request)
        async with asyncio.timeout(RECV_TIMEOUT_S):
            await service_got_request.wait()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # RST
        async with asyncio.timeout(RECV_TIMEOUT_S):
            at_service = await service_end

        assert isinstance(at_service, ConnectionResetError), at_service
        for closing in (laptop, home, relay):
            await closing.aclose()

    run(main())


@pytest.mark.parametrize("relayed", [False, True], ids=["direct", "relayed"])
def test_clean_close_by_the_far_application_is_a_clean_end(relayed: bool) -> None:
    payload = os.urandom(3 * MB)

    async def main() -> None:
        async def send_and_close(
            r: asyncio.StreamReader, w: asyncio.StreamWriter
        ) -> None:
            w.write(payload)
            await w.drain()
            w.close()

        service_port = await start_service(send_and_close)
        relay = None
        if relayed:
            relay, relay_addr = await start_relay(UNLIMITED)
            home, target = await home_behind(relay_addr, service_port)
        else:
            home = Node(Ed25519PrivateKey.generate())
            home.expose(Service("big", "127.0.0.1", service_port))
            listened = await home.listen(["/ip4/127.0.0.1/tcp/0"])
            target = listened[0].with_peer_id(home.peer_id)
        laptop, port = await proxy_to(target)

        def fetch() -> tuple[bytes, bytes]:
            with connect(port) as sock:
                parts = []
                while data := sock.recv(MB):
                    parts.append(data)
                return b"".join(parts), sock.recv(1)

        body, after = await asyncio.to_thread(fetch)
        assert body == payload
        assert after == b""
        for closing in (laptop, home, relay):
            if closing is not None:
                await closing.aclose()

    run(main())
