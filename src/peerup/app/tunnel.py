"""Splicing byte pipes: the one copy loop for every TCP↔stream and stream↔stream pair.

Each direction copies until EOF and then half-closes the other side, so a client's
``shutdown(SHUT_WR)`` reaches the far service and its answer still comes back. Reads
and writes alternate with the writer's drain, so buffers stay bounded and a slow reader
stalls the far writer (backpressure end to end). Optional limits (bytes per direction,
total duration) end the splice by *resetting* both ends, so each side sees an error
rather than a clean end of stream (circuit-v2 limits).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Final, Protocol

from peerup.core.errors import Error

READ_BYTES: Final = 256 * 1024


class PipeEnd(Protocol):
    """Either side of a splice: a libp2p Stream or a TCP connection adapter."""

    async def read(self, n: int = -1) -> bytes: ...

    async def write(self, data: bytes) -> None: ...

    async def close_write(self) -> None: ...

    def reset(self) -> None: ...


class TcpEnd:
    """A TCP connection as a :class:`PipeEnd`."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.reader = reader
        self.writer = writer
        # Larger transport buffer than asyncio's 64 KiB default: fewer pauses at speed.
        writer.transport.set_write_buffer_limits(high=1024 * 1024)

    async def read(self, n: int = -1) -> bytes:
        return await self.reader.read(READ_BYTES if n < 0 else n)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def close_write(self) -> None:
        if self.writer.can_write_eof() and not self.writer.is_closing():
            with contextlib.suppress(OSError):
                self.writer.write_eof()

    def reset(self) -> None:
        self.writer.transport.abort()

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await self.writer.wait_closed()


@dataclass(frozen=True, slots=True)
class SpliceLimit:
    """Ends the splice with a reset when exceeded; None means no limit."""

    data_bytes: int | None = None
    """Bytes allowed in each direction."""
    duration_s: float | None = None


@dataclass(frozen=True, slots=True)
class SpliceResult:
    """How a splice ended."""

    a_to_b_bytes: int
    b_to_a_bytes: int
    duration_s: float
    ended_by: str
    """"eof" (both sides closed cleanly), "data limit", "duration limit" or "error: …"."""


class _LimitHit(Exception):
    pass


async def _pump(
    src: PipeEnd, dst: PipeEnd, counter: list[int], limit: int | None
) -> None:
    while True:
        data = await src.read(READ_BYTES)
        if not data:
            await dst.close_write()
            return
        if limit is not None and counter[0] + len(data) > limit:
            allowed = limit - counter[0]
            if allowed > 0:
                await dst.write(data[:allowed])
                counter[0] += allowed
            raise _LimitHit()
        await dst.write(data)
        counter[0] += len(data)


async def _both(
    a: PipeEnd, b: PipeEnd, ab: list[int], ba: list[int], limit: SpliceLimit
) -> str:
    ended_by = "eof"
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_pump(a, b, ab, limit.data_bytes))
            tg.create_task(_pump(b, a, ba, limit.data_bytes))
    except* _LimitHit:
        ended_by = "data limit"
    except* (Error, OSError, asyncio.IncompleteReadError) as group:
        ended_by = f"error: {group.exceptions[0]}"
    return ended_by


async def splice(
    a: PipeEnd, b: PipeEnd, limit: SpliceLimit | None = None
) -> SpliceResult:
    """Copy a→b and b→a until both directions ended; returns the byte counts."""
    limit = limit or SpliceLimit()
    start = time.monotonic()
    ab, ba = [0], [0]
    try:
        async with asyncio.timeout(limit.duration_s):
            ended_by = await _both(a, b, ab, ba, limit)
    except TimeoutError:
        ended_by = "duration limit"
    if ended_by != "eof":
        a.reset()
        b.reset()
    return SpliceResult(ab[0], ba[0], time.monotonic() - start, ended_by)


# --- services: expose a local TCP port, proxy a remote one -----------------------------

SERVICE_STATUS_PROTOCOL: Final = "/peerup/service-status/1.0.0"
"""Our diagnostic side protocol: asked only after a service stream failed, to tell the
user why (service down, peer not allowed). Peers without it (the Go original) simply
answer ``na`` and the user gets the generic message."""


def service_protocol(name: str) -> str:
    """The wire protocol ID of a service, as the Go original names it."""
    return f"/peerup/{name}/1.0.0"


def parse_host_port(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → ``(host, port)``.

    Raises:
        ValueError: malformed.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    value = int(port)
    if not 0 <= value <= 65535:
        raise ValueError(f"port out of range in {text!r}")
    return host, value
