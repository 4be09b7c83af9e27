"""Upgrading a relayed connection to a direct one, on loopback TCP.

A relay and two hosts on 127.0.0.1: the dialer ``a`` reaches the listener ``b`` through
the relay, then ``b`` (which received the relayed connection) gets them a direct
connection, either by dialing the address identify taught it, or, when no address is
known, by DCUtR's simultaneous dial. Loopback has no NAT: what these tests show is the
protocol, the roles above TCP on a connection both sides dialed (or that one side's
listener accepted), and that streams opened relayed carry on. The NAT lab tests
(tests/natlab) show the same through real NATs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from peerup.app.relay_service import RelayResources, RelayService
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.multiaddr import Multiaddr
from peerup.core.peer_id import PeerId
from peerup.net.connection import Connection
from peerup.net.holepunch import (
    HolePunchConfig,
    HolePunchResult,
    HolePunchService,
    Outcome,
)
from peerup.net.host import Host
from peerup.net.relay_client import RelayClient
from peerup.net.stream import Stream
from peerup.proto import dcutr

ECHO = "/echo/1.0.0"
LOOPBACK = "/ip4/127.0.0.1/tcp/0"
UNLIMITED = RelayResources.for_interop(
    unlimited=True, limit_duration_s=None, limit_data_bytes=None
)
Run = Callable[..., Any]


async def serve_echo(stream: Stream) -> None:
    while data := await stream.read():
        await stream.write(data)


@dataclass
class Lab:
    relay: Host
    a: Host
    b: Host
    a_punch: HolePunchService
    b_punch: HolePunchService
    relayed: Connection
    """a's relayed connection to b."""

    async def aclose(self) -> None:
        for host in (self.a, self.b, self.relay):
            await host.aclose()


def forget_learned_addrs(host: Host) -> None:
    """Make ``host`` behave as if its peers were behind NAT: the direct addresses
    identify (or a dial) teaches it are dropped at once, so only DCUtR's own address
    exchange can bring a direct connection."""

    def drop(peer: PeerId, _new: list[Multiaddr]) -> None:
        host.peer_addrs[peer] = [a for a in host.peer_addrs[peer] if a.is_circuit]

    host.on_new_addrs.insert(0, drop)


async def relayed_lab(
    *,
    a_listens: bool = True,
    hide_addrs: bool = False,
    config: HolePunchConfig | None = None,
) -> Lab:
    relay = Host(Ed25519PrivateKey.generate())
    relay_addr = (await relay.listen(LOOPBACK))[0].with_peer_id(relay.peer_id)
    RelayService(relay, UNLIMITED).start()
    b = Host(Ed25519PrivateKey.generate())
    b.set_handler(ECHO, serve_echo)
    await b.listen(LOOPBACK)
    a = Host(Ed25519PrivateKey.generate())
    if a_listens:
        await a.listen(LOOPBACK)
    if hide_addrs:
        forget_learned_addrs(a)
        forget_learned_addrs(b)
    a_punch, b_punch = HolePunchService(a, config), HolePunchService(b, config)
    circuit = await RelayClient(b).reserve_and_keep(relay_addr)
    RelayClient(a)
    relayed = await a.connect(circuit)
    assert relayed.is_relayed
    return Lab(relay, a, b, a_punch, b_punch, relayed)


async def result_of(service: HolePunchService, peer: PeerId) -> HolePunchResult:
    async with asyncio.timeout(15):
        while peer not in service.results:
            await asyncio.sleep(0.01)
    return service.results[peer]


async def echo_once(stream: Stream, data: bytes) -> bytes:
    await stream.write(data)
    return await stream.readexactly(len(data))


def test_known_address_upgrades_and_open_streams_carry_on(run: Run) -> None:
    """b learns a's listen address from identify over the relayed connection and
    dials it: new streams go direct, the stream opened relayed keeps working."""

    async def main() -> None:
        lab = await relayed_lab()
        start = time.perf_counter()
        old = lab.relayed.open_stream([ECHO])
        assert await echo_once(old, b"relayed") == b"relayed"
        result = await result_of(lab.b_punch, lab.a.peer_id)
        # On loopback the hole punch, which runs alongside, may win the race.
        assert result.is_direct, result
        async with asyncio.timeout(2):
            while (conn := lab.a.connection_to(lab.b.peer_id)).is_relayed:
                await asyncio.sleep(0.01)
        assert time.perf_counter() - start < 2
        new = await lab.a.new_stream(lab.b.peer_id, ECHO)
        assert not new.conn.is_relayed and new.conn is conn
        assert await echo_once(new, b"direct") == b"direct"
        assert await echo_once(old, b"still relayed") == b"still relayed"
        assert old.conn.is_relayed and old.conn.is_open
        await old.aclose()
        await new.aclose()
        await lab.aclose()

    run(main())


@pytest.mark.parametrize("round_", range(4))
def test_dcutr_punches_when_no_address_is_known(run: Run, round_: int) -> None:
    """Both sides dial at once from their listen ports; whichever SYN wins (a
    simultaneous open, or one side's listener accepting), a is the client above TCP
    and b the server, and both use the one connection."""

    async def main() -> None:
        lab = await relayed_lab(hide_addrs=True)
        b_result = await result_of(lab.b_punch, lab.a.peer_id)
        assert b_result.outcome is Outcome.HOLE_PUNCHED, b_result
        assert b_result.attempts >= 1 and b_result.rtt_s is not None
        assert b_result.role == "initiator"
        b_side = lab.b.connection_to(lab.a.peer_id)
        async with asyncio.timeout(5):
            while (a_side := lab.a.connection_to(lab.b.peer_id)).is_relayed:
                await asyncio.sleep(0.01)
        assert b_side is not None and not b_side.is_relayed
        assert a_side.is_initiator and not b_side.is_initiator
        assert a_side.local_addr == b_side.remote_addr
        stream = await lab.a.new_stream(lab.b.peer_id, ECHO)
        assert await echo_once(stream, b"punched") == b"punched"
        await stream.aclose()
        await lab.aclose()

    run(main())


def test_no_address_to_offer_stays_relayed_with_a_reason(run: Run) -> None:
    """a does not listen: it has no port whose mapping it could offer, so it refuses
    the hole punch; b stays relayed, says why, and the relayed connection works."""

    async def main() -> None:
        lab = await relayed_lab(a_listens=False, hide_addrs=True)
        result = await result_of(lab.b_punch, lab.a.peer_id)
        assert result.outcome is Outcome.RELAYED
        assert "hole punch" in result.reason and "no direct address" in result.reason
        assert not result.is_direct and result.describe().startswith("relayed: ")
        stream = await lab.a.new_stream(lab.b.peer_id, ECHO)
        assert stream.conn.is_relayed
        assert await echo_once(stream, b"ok") == b"ok"
        await stream.aclose()
        await lab.aclose()

    run(main())


def test_dcutr_stream_on_a_direct_connection_is_refused(run: Run) -> None:
    async def main() -> None:
        lab = await relayed_lab()
        await result_of(lab.b_punch, lab.a.peer_id)
        direct = lab.a.connection_to(lab.b.peer_id)
        assert direct is not None and not direct.is_relayed
        stream = direct.open_stream([dcutr.PROTOCOL_ID])
        await stream.write(
            dcutr.HolePunch(
                dcutr.MessageType.CONNECT, (Multiaddr.parse(LOOPBACK),)
            ).encode_prefixed()
        )
        with pytest.raises(Exception):  # noqa: B017 - reset or EOF, either refuses
            data = await stream.read()
            assert data != b""
            raise AssertionError("answered")
        await lab.aclose()

    run(main())


def test_the_relayed_dialer_upgrades_when_asked(run: Run) -> None:
    """b cannot reach a (a does not listen) and a does not dial what b advertised by
    itself (that is b's to do); once the caller says it knows how to reach b (an
    address on the command line), a dials it and moves to the direct connection."""

    async def main() -> None:
        lab = await relayed_lab(a_listens=False)
        result = await result_of(lab.b_punch, lab.a.peer_id)
        assert result.outcome is Outcome.RELAYED, result
        assert lab.a.connection_to(lab.b.peer_id) is lab.relayed
        lab.a_punch.try_direct(lab.b.peer_id)
        a_result = await result_of(lab.a_punch, lab.b.peer_id)
        assert a_result.outcome is Outcome.DIRECT and a_result.role == "responder"
        conn = lab.a.connection_to(lab.b.peer_id)
        assert conn is not None and not conn.is_relayed and conn.is_initiator
        await lab.aclose()

    run(main())


def test_the_idle_relayed_connection_is_closed_after_a_grace_period(run: Run) -> None:
    """Kept while a stream runs on it, closed once idle at two checks in a row."""

    async def main() -> None:
        lab = await relayed_lab(config=HolePunchConfig(relayed_grace_s=0.1))
        old = lab.relayed.open_stream([ECHO])
        assert await echo_once(old, b"x") == b"x"
        await result_of(lab.b_punch, lab.a.peer_id)
        await asyncio.sleep(0.5)
        assert lab.relayed.is_open
        assert await echo_once(old, b"still") == b"still"
        await old.aclose()
        async with asyncio.timeout(3):
            await lab.relayed.closed
        direct = lab.a.connection_to(lab.b.peer_id)
        assert direct is not None and not direct.is_relayed and direct.is_open
        await lab.aclose()

    run(main())
