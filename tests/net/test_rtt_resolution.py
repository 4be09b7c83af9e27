"""RTTs are measured with a high-resolution clock, not the event loop's.

uvloop's ``loop.time()`` counts whole milliseconds (and is read once per loop pass),
so RTTs taken with it come out as 0.0 or 1.0 ms: ``status`` showed "rtt 1.0 ms" and
``traceroute`` a relay hop of 0.0/1.0/4.0 ms. On loopback a real RTT is a fraction of a
millisecond, so a few samples that are all whole milliseconds mean the wrong clock.
The tests run on uvloop, as the CLI does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from peerup.core.keys import Ed25519PrivateKey
from peerup.net.connection import Connection
from peerup.net.host import Host

uvloop = pytest.importorskip("uvloop")

T = TypeVar("T")
SAMPLES = 5


def on_uvloop(coro: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(30):
            return await coro

    result: T = uvloop.run(bounded())
    return result


def whole_ms(rtt_s: float) -> bool:
    ms = rtt_s * 1000
    return abs(ms - round(ms)) < 1e-9


async def connected_pair() -> tuple[Host, Host, Connection]:
    server, client = (
        Host(Ed25519PrivateKey.generate()),
        Host(Ed25519PrivateKey.generate()),
    )
    bound = await server.listen("/ip4/127.0.0.1/tcp/0")
    conn = await client.connect(bound[0].with_peer_id(server.peer_id))
    return server, client, conn


def test_host_ping_rtts_are_not_whole_milliseconds() -> None:
    async def main() -> list[float]:
        server, client, conn = await connected_pair()
        try:
            return await client.ping(conn, count=SAMPLES)
        finally:
            await client.aclose()
            await server.aclose()

    rtts = on_uvloop(main())
    assert len(rtts) == SAMPLES and all(0 <= r < 1.0 for r in rtts)
    assert not all(whole_ms(r) for r in rtts), rtts


def test_connection_rtt_after_start_and_yamux_ping_are_not_whole_milliseconds() -> None:
    async def main() -> tuple[list[float], list[float]]:
        at_start: list[float] = []
        pings: list[float] = []
        for _ in range(SAMPLES):
            server, client, conn = await connected_pair()
            try:
                # The connection pings once when it is up (so status has an RTT).
                async with asyncio.timeout(10):
                    while conn.rtt_s is None:
                        await asyncio.sleep(0.001)
                at_start.append(conn.rtt_s)
                pings.append(await conn.ping())
                assert conn.rtt_s == pings[-1]
            finally:
                await client.aclose()
                await server.aclose()
        return at_start, pings

    at_start, pings = on_uvloop(main())
    assert not all(whole_ms(r) for r in at_start), at_start
    assert not all(whole_ms(r) for r in pings), pings
