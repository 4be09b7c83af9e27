"""An in-memory transport for unit tests: connected pairs of ``asyncio.Transport``s.

Bytes written on one side are delivered to the other side's protocol with
``call_soon``, so ordering and chunking look like a socket's but nothing touches the
OS. A ``MemoryNetwork`` maps ``/memory/<name>``-style listen keys (plain strings here)
to listeners. Flow control is not simulated: writes never pause.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from peerup.core.errors import ConnectError


class MemoryTransport(asyncio.Transport):
    """One end of an in-memory pipe."""

    def __init__(self, name: tuple[str, int]) -> None:
        super().__init__()
        self._loop = asyncio.get_running_loop()
        self._name = name
        self._peer: MemoryTransport | None = None
        self._protocol: asyncio.Protocol | None = None
        self._closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname":
            return self._name
        if name == "peername":
            return self._peer._name if self._peer else default
        return default

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol

    def is_closing(self) -> bool:
        return self._closing

    def set_write_buffer_limits(
        self, high: int | None = None, low: int | None = None
    ) -> None:
        return None

    def get_write_buffer_size(self) -> int:
        return 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._peer is None:
            return
        self._loop.call_soon(self._peer._deliver, bytes(data))

    def _deliver(self, data: bytes) -> None:
        if not self._closing and self._protocol is not None:
            self._protocol.data_received(data)

    def write_eof(self) -> None:
        self.close()

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._protocol is not None:
            self._loop.call_soon(self._protocol.connection_lost, None)
        peer = self._peer
        if peer is not None and not peer._closing:
            self._loop.call_soon(peer.close)

    def abort(self) -> None:
        self.close()


class MemoryNetwork:
    """A namespace of in-memory listeners."""

    def __init__(self) -> None:
        self._listeners: dict[str, Callable[[], asyncio.Protocol]] = {}
        self._port = 10000

    def listen(self, key: str, factory: Callable[[], asyncio.Protocol]) -> None:
        self._listeners[key] = factory

    def dial(
        self, key: str, factory: Callable[[], asyncio.Protocol]
    ) -> asyncio.Protocol:
        """Connect to the listener ``key``; returns the dialer's protocol."""
        listener = self._listeners.get(key)
        if listener is None:
            raise ConnectError(f"no in-memory listener at {key}")
        self._port += 2
        a = MemoryTransport(("127.0.0.1", self._port))
        b = MemoryTransport(("127.0.0.1", self._port + 1))
        a._peer, b._peer = b, a
        client, server = factory(), listener()
        a.set_protocol(client)
        b.set_protocol(server)
        server.connection_made(b)
        client.connection_made(a)
        return client
