"""net/portmap.py against a tiny PCP / NAT-PMP gateway written here, on loopback UDP.

The responder speaks just enough of RFC 6886 and RFC 6887 to grant, refuse or ignore
mappings; the mapper is the real driver with its real socket and clock. (The real
router, miniupnpd, is in tests/natlab/test_natlab_portmap.py.)
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from typing import Any

from peerup.net.portmap import (
    Outcome,
    PortMapConfig,
    PortMapper,
    PortMapResult,
    describe,
)
from peerup.proto import natpmp, pcp

Run = Callable[..., Any]


class Gateway(asyncio.DatagramProtocol):
    """``mode``: "natpmp" (answers PCP with NAT-PMP's unsupported version), "pcp",
    "refuse" (PCP NOT_AUTHORIZED), "cgnat" (grants, from a shared-space address),
    "garbage-first" (a malformed answer and another client's, then a grant)."""

    def __init__(self, mode: str, lifetime_s: int = 3600) -> None:
        self.mode = mode
        self.lifetime_s = lifetime_s
        self.lifetimes: list[int] = []
        """Lifetime of every mapping request received (0: a delete)."""
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        assert self.transport is not None
        send = self.transport.sendto
        external = "100.64.0.7" if self.mode == "cgnat" else "198.51.100.10"
        if data[0] == pcp.VERSION:
            if self.mode == "natpmp":
                send(struct.pack("!BBHI", 0, 128 + data[1], 1, 0), addr)
                return
            lifetime = struct.unpack_from("!I", data, 4)[0]
            self.lifetimes.append(lifetime)
            nonce, internal = data[24:36], struct.unpack_from("!H", data, 40)[0]
            if self.mode == "garbage-first" and len(self.lifetimes) == 1:
                send(b"\x02\x81\x00", addr)
                foreign = pcp.MapResponse(
                    0, 60, 1, b"z" * 12, "tcp", internal, 9, external
                )
                send(foreign.encode(), addr)
            if self.mode == "refuse":
                send(
                    pcp.MapResponse(pcp.ResultCode.NOT_AUTHORIZED, 0, 1).encode(), addr
                )
                return
            granted = min(lifetime, self.lifetime_s)
            reply = pcp.MapResponse(
                0, granted, 1, nonce, "tcp", internal, internal, external
            )
            send(reply.encode(), addr)
        elif data[1] == natpmp.OP_EXTERNAL_ADDRESS:
            send(natpmp.ExternalAddressResponse(0, 1, external).encode(), addr)
        else:
            _v, _op, _r, internal, _suggested, lifetime = struct.unpack("!BBHHHI", data)
            self.lifetimes.append(lifetime)
            granted = min(lifetime, self.lifetime_s)
            port = internal if lifetime else 0
            send(
                natpmp.MapResponse(0, 1, "tcp", internal, port, granted).encode(), addr
            )


async def _gateway(mode: str, lifetime_s: int = 3600) -> tuple[Gateway, int]:
    loop = asyncio.get_running_loop()
    transport, gateway = await loop.create_datagram_endpoint(
        lambda: Gateway(mode, lifetime_s), local_addr=("127.0.0.1", 0)
    )
    return gateway, transport.get_extra_info("sockname")[1]


class Watch:
    """The mapper's results as they change, awaitable."""

    def __init__(self) -> None:
        self.results: list[PortMapResult] = []
        self.changed = asyncio.Event()

    def __call__(self, result: PortMapResult) -> None:
        self.results.append(result)
        self.changed.set()

    async def until(self, test: Callable[[PortMapResult], bool]) -> PortMapResult:
        while not (self.results and test(self.results[-1])):
            self.changed.clear()
            await self.changed.wait()
        return self.results[-1]


def _mapper(port: int, watch: Watch, **kw: Any) -> PortMapper:
    config = PortMapConfig(
        methods=("pcp", "natpmp"), gateway="127.0.0.1", gateway_port=port, **kw
    )
    return PortMapper(4001, config, on_change=watch)


def test_natpmp_gateway_maps_renews_and_deletes_on_close(run: Run) -> None:
    async def main() -> None:
        gateway, port = await _gateway("natpmp", lifetime_s=2)
        watch = Watch()
        mapper = _mapper(port, watch)
        mapper.start()
        mapped = await watch.until(lambda r: r.outcome is Outcome.MAPPED)
        assert (
            describe(mapped) == "NAT-PMP mapped 198.51.100.10:4001 -> :4001, lease 2s"
        )
        assert str(mapped.external_addr) == "/ip4/198.51.100.10/tcp/4001"
        # Renewed at half the 2 s granted.
        renewed = await watch.until(lambda r: r.renewals == 1)
        assert renewed.outcome is Outcome.MAPPED
        await mapper.aclose()
        assert gateway.lifetimes == [3600, 3600, 0]
        assert mapper.result.outcome is Outcome.STOPPED
        assert mapper.result.external_addr is None

    run(main())


def test_pcp_gateway_ignores_bad_answers_and_maps(run: Run) -> None:
    async def main() -> None:
        gateway, port = await _gateway("garbage-first")
        watch = Watch()
        mapper = _mapper(port, watch)
        mapper.start()
        mapped = await watch.until(lambda r: r.outcome is not Outcome.DISCOVERING)
        assert describe(mapped) == "PCP mapped 198.51.100.10:4001 -> :4001, lease 1h"
        await mapper.aclose()
        assert gateway.lifetimes == [3600, 0]

    run(main())


def test_closed_port_says_so_at_once(run: Run) -> None:
    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        watch = Watch()
        mapper = _mapper(port, watch)
        loop = asyncio.get_running_loop()
        started = loop.time()
        mapper.start()
        result = await watch.until(lambda r: r.outcome is not Outcome.DISCOVERING)
        assert result.outcome is Outcome.UNSUPPORTED, result
        assert f"port {port} is closed" in result.reason
        assert loop.time() - started < 1.0  # ICMP port unreachable, not a timeout
        await mapper.aclose()

    run(main())


def test_refusal_and_a_router_behind_another_nat_are_results(run: Run) -> None:
    async def main() -> None:
        gateway, port = await _gateway("refuse")
        watch = Watch()
        mapper = _mapper(port, watch)
        mapper.start()
        result = await watch.until(lambda r: r.outcome is not Outcome.DISCOVERING)
        assert result.outcome is Outcome.REFUSED
        assert result.reason == (
            "PCP: the router refused: not authorized (mappings are disabled on the router)"
        )
        await mapper.aclose()

        gateway, port = await _gateway("cgnat")
        watch = Watch()
        mapper = _mapper(port, watch)
        mapper.start()
        result = await watch.until(lambda r: r.outcome is not Outcome.DISCOVERING)
        assert result.outcome is Outcome.NOT_PUBLIC
        assert "100.64.0.7 is not public" in result.reason
        assert gateway.lifetimes == [3600, 0]  # the useless mapping was removed
        await mapper.aclose()

    run(main())
