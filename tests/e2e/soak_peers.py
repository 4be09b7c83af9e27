"""Hostile peers for the soak test (tests/e2e/test_soak.py), and its echo service.

Run as processes of their own, so that the attack's CPU and descriptors are not the
test's (STYLE.md 3.9: loopback TCP only):

    python soak_peers.py echo              a TCP echo service; prints its port
    python soak_peers.py attack CONFIG     every attack below for ``duration_s``,
                                           then one JSON line: what each tried and
                                           how the defenders answered

The attacks, each a loop at a bounded rate (``RATES``), against the relay and the
home daemon:

- ``garbage``: TCP connections that send random bytes, half of them after a valid
  multistream header and ``/noise`` (garbage inside the Noise handshake);
- ``silent``: TCP connections that never send a byte (the host speaks first);
- ``ping``: an authorized peer that completes the handshake, stops reading and
  floods yamux PINGs, directly and through a relay circuit, then dials again;
- ``refused``: a peer the home daemon does not authorize, dialing it directly;
- ``streams``: an authorized peer on as many connections as it is let have, opening
  streams to a service (and to ``/pingpong/1.0.0``) that it never ends or reads;
- ``circuits``: circuits to home through the relay that never start their
  handshake, opened by an authorized peer (home's handshake timeout ends them; the
  relay caps them per pair) and by a peer the relay authorizes and home does not
  (home refuses them before any handshake).

The authorized attacks use one identity each (``seeds``), so that the per-peer limits
one of them runs into do not stop another. Each connection or stream the defender
closed or reset counts as ``cut``, one it refused before it was established as
``refused``, with the reason where the attacker can see one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from peerup.core.errors import Error
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.multiaddr import Multiaddr
from peerup.core.peer_id import PeerId
from peerup.net.connection import Connection
from peerup.net.host import Host
from peerup.net.relay_client import RelayClient, read_message
from peerup.net.stream import Stream
from peerup.proto import relay_v2, yamux

MULTISTREAM = b"\x13/multistream/1.0.0\n"
NOISE = b"\x07/noise\n"
PINGPONG = "/pingpong/1.0.0"

RATES: dict[str, float] = {
    "garbage": 150.0,  # connections per second, per target
    "silent": 150.0,  # connections per second, per target
    "refused": 5.0,  # handshakes per second
    "streams": 100.0,  # streams per second, over all the attacker's connections
    "circuits": 50.0,  # circuits per second, by a peer home authorizes
    "refused circuits": 20.0,  # circuits per second, by a peer home refuses
}
"""Attempts per second: a flood the defenders must survive, paced so that the attack
process (which shares the CI machine's two cores with them) is not the bottleneck."""
PINGS_PER_BLOCK = 1000
PING_BLOCKS = 50
"""At most 50,000 PINGs (600 KB) per flooding connection before it dials again."""
PING_PAUSE_S = 0.05
"""Between a flooding connection's end and the next dial."""
STREAM_CONNECTIONS = 10
"""Connections the stream attacker tries to hold (the host's default limit is 8)."""
CUT_WAIT_S = 5.0
"""How long a garbage connection or a flooder waits to be cut."""


@dataclass
class Tally:
    """What one attack tried and how the defender answered."""

    tried: int = 0
    cut: int = 0
    """Closed or reset by the defender after it was accepted."""
    refused: int = 0
    """Refused outright: at the handshake, by the relay, a stream reset at once."""
    held: int = 0
    """Still open when the attack ended (or never cut within its wait)."""
    errors: int = 0
    """Failed otherwise (e.g. the TCP connect itself)."""
    reasons: Counter[str] = field(default_factory=Counter)
    extra: dict[str, int] = field(default_factory=dict)

    def why(self, reason: str) -> None:
        self.reasons[_short(reason)] += 1

    def as_json(self) -> dict[str, Any]:
        return {
            "tried": self.tried,
            "cut": self.cut,
            "refused": self.refused,
            "held": self.held,
            "errors": self.errors,
            "reasons": dict(self.reasons.most_common(6)),
            **self.extra,
        }


def _short(reason: str) -> str:
    """A reason without the parts that differ per connection (ports, peer IDs)."""
    words = []
    for word in reason.split():
        if word.startswith(("12D3KooW", "127.0.0.1:", "/ip4/")):
            word = "…"
        words.append(word)
    return " ".join(words)[:120]


async def paced(
    rate: float, stop_at: float, start: Callable[[], Awaitable[None]]
) -> None:
    """Start ``start()`` ``rate`` times a second until ``stop_at`` (each a task of
    its own); then wait for them all."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    next_at = loop.time()
    while loop.time() < stop_at:
        task = asyncio.ensure_future(start())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        next_at += 1.0 / rate
        await asyncio.sleep(max(0.0, next_at - loop.time()))
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


async def wait_closed_by_peer(reader: asyncio.StreamReader, until: float) -> bool:
    """Read (and drop) everything until the peer closes or resets: True, or False
    if ``until`` came first."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(max(0.0, until - loop.time())):
            while await reader.read(65536):
                pass
    except (ConnectionError, OSError):
        return True
    except TimeoutError:
        return False
    return True


# --- raw TCP ------------------------------------------------------------------------


async def garbage(tally: Tally, host: str, port: int, stop_at: float) -> None:
    async def one() -> None:
        tally.tried += 1
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            tally.errors += 1
            tally.why(f"connect: {exc}")
            return
        junk = os.urandom(random.randint(1, 4096))
        # Half inside the Noise handshake: a valid multistream header and /noise.
        writer.write(MULTISTREAM + NOISE + junk if tally.tried % 2 else junk)
        loop = asyncio.get_running_loop()
        if await wait_closed_by_peer(reader, loop.time() + CUT_WAIT_S):
            tally.cut += 1
        else:
            tally.held += 1
        writer.close()

    await paced(RATES["garbage"], stop_at, one)


async def silent(tally: Tally, host: str, port: int, stop_at: float) -> None:
    async def one() -> None:
        tally.tried += 1
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            tally.errors += 1
            tally.why(f"connect: {exc}")
            return
        # Held until the defender cuts it or the attack ends.
        if await wait_closed_by_peer(reader, stop_at):
            tally.cut += 1
        else:
            tally.held += 1
        writer.close()

    await paced(RATES["silent"], stop_at, one)


# --- authorized peers ---------------------------------------------------------------


def ping_block(count: int, first: int) -> bytes:
    return b"".join(
        yamux.encode_header(
            yamux.TYPE_PING, yamux.FLAG_SYN, 0, (first + i) & 0xFFFFFFFF
        )
        for i in range(count)
    )


async def ping_flood(
    tally: Tally, key: Ed25519PrivateKey, target: Multiaddr, stop_at: float
) -> None:
    """Dial ``target``, stop reading, queue PINGs until cut; again until ``stop_at``."""
    loop = asyncio.get_running_loop()
    pings = 0
    while loop.time() < stop_at:
        tally.tried += 1
        host = Host(key)
        if target.is_circuit:
            RelayClient(host)
        try:
            try:
                async with asyncio.timeout(10):
                    conn = await host.connect(target)
            except (Error, TimeoutError, OSError) as exc:
                tally.errors += 1
                tally.why(f"dial: {exc}")
                await asyncio.sleep(1.0)
                continue
            conn.transport.pause_reading()  # and never read again
            assert conn.session is not None
            for block in range(PING_BLOCKS):
                if conn.is_closed or loop.time() >= stop_at:
                    break
                conn.session.outbox.append(
                    ping_block(PINGS_PER_BLOCK, block * PINGS_PER_BLOCK + 1)
                )
                conn.flush()
                pings += PINGS_PER_BLOCK
                await asyncio.sleep(0.01)
            # A paused reader sees the end only when a write fails: read again.
            until = min(loop.time() + CUT_WAIT_S, stop_at)
            while not conn.is_closed and loop.time() < until:
                await asyncio.sleep(0.05)
            if not conn.is_closed:
                conn.transport.resume_reading()
                await asyncio.sleep(0.2)
            if conn.is_closed:
                tally.cut += 1
                # Not conn.close_reason: a peer that never reads cannot see why (the
                # defender logs "ping flood").
                tally.why("closed by the defender")
            else:
                tally.held += 1
        finally:
            await host.aclose()
        await asyncio.sleep(PING_PAUSE_S)
    tally.extra["pings_sent"] = pings


async def refused(
    tally: Tally, key: Ed25519PrivateKey, target: Multiaddr, stop_at: float
) -> None:
    """A peer the target does not authorize, dialing it over and over."""

    async def one() -> None:
        tally.tried += 1
        host = Host(key)
        try:
            async with asyncio.timeout(10):
                conn = await host.connect(target)
                await conn.ping()
            tally.held += 1  # let in: that would be a defect
        except (Error, TimeoutError, OSError) as exc:
            tally.refused += 1
            tally.why(str(exc))
        finally:
            await host.aclose()

    await paced(RATES["refused"], stop_at, one)


async def streams_without_end(
    tally: Tally,
    key: Ed25519PrivateKey,
    target: Multiaddr,
    service: str,
    stop_at: float,
) -> None:
    """Open streams that are never ended nor read, on as many connections as the
    target lets one peer have, until ``stop_at``."""
    hosts = [Host(key) for _ in range(STREAM_CONNECTIONS)]
    conns: list[Connection | None] = [None] * len(hosts)
    dial_refusals = 0
    open_streams: list[Stream] = []

    async def connection(i: int) -> Connection | None:
        conn = conns[i]
        if conn is not None and conn.is_open:
            return conn
        if conn is not None:
            tally.extra["connections_cut"] = tally.extra.get("connections_cut", 0) + 1
            tally.why(f"connection: {conn.close_reason}")
            conns[i] = None
        try:
            async with asyncio.timeout(10):
                conns[i] = await hosts[i].connect(target)
                await conns[i].ping()  # type: ignore[union-attr]
        except (Error, TimeoutError, OSError) as exc:
            nonlocal dial_refusals
            dial_refusals += 1
            tally.why(f"connection: {exc}")
            conns[i] = None
        return conns[i]

    turn = 0

    async def one() -> None:
        nonlocal turn
        turn += 1
        conn = await connection(turn % len(hosts))
        if conn is None:
            return
        tally.tried += 1
        protocol = PINGPONG if turn % 4 == 0 else service
        try:
            stream = conn.open_stream([protocol])
            await stream.write(b"x")
        except (Error, OSError) as exc:
            tally.refused += 1
            tally.why(str(exc))
            return
        open_streams.append(stream)

    pacer = asyncio.ensure_future(paced(RATES["streams"], stop_at, one))
    try:
        while not pacer.done():
            await asyncio.sleep(1.0)
            # Streams the defender reset (at once: refused; later: cut).
            still = []
            for stream in open_streams:
                if stream.is_reset:
                    tally.cut += 1
                else:
                    still.append(stream)
            open_streams[:] = still
        await pacer
        tally.held = len(open_streams)
        tally.extra["connections_refused"] = dial_refusals
        tally.extra["connections_open_at_end"] = sum(
            1 for c in conns if c is not None and c.is_open
        )
    finally:
        for host in hosts:
            await host.aclose()


async def circuits(
    tally: Tally,
    key: Ed25519PrivateKey,
    relay: Multiaddr,
    home: PeerId,
    stop_at: float,
    rate: float,
) -> None:
    """Circuits to ``home`` through ``relay`` that never start their handshake, held
    until the relay or home ends them (home's handshake timeout) or ``stop_at``."""
    host = Host(key)
    RelayClient(host)
    loop = asyncio.get_running_loop()
    try:

        async def one() -> None:
            tally.tried += 1
            try:
                relay_conn = await host.connect(relay)
                stream = relay_conn.open_stream([relay_v2.HOP_PROTOCOL_ID])
                async with asyncio.timeout(10):
                    await stream.write(
                        relay_v2.HopMessage(
                            relay_v2.HopType.CONNECT, peer=relay_v2.Peer(home)
                        ).encode()
                    )
                    reply = relay_v2.HopMessage.decode(await read_message(stream))
            except (Error, TimeoutError, OSError) as exc:
                tally.errors += 1
                tally.why(f"hop: {exc}")
                return
            if reply.status is not relay_v2.Status.OK:
                tally.refused += 1
                tally.why(f"relay: {reply.status!r}")
                stream.reset()
                return
            try:
                async with asyncio.timeout(max(0.0, stop_at - loop.time())):
                    while await stream.read(65536):
                        pass
                tally.cut += 1
                tally.why("circuit ended")
            except TimeoutError:
                tally.held += 1
                stream.reset()
            except (Error, OSError) as exc:
                tally.cut += 1
                tally.why(f"circuit: {exc}")

        await paced(rate, stop_at, one)
    finally:
        await host.aclose()


# --- the process --------------------------------------------------------------------


async def attack(config: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + float(config["duration_s"])
    keys = {
        name: Ed25519PrivateKey.from_seed(bytes.fromhex(seed))
        for name, seed in config["seeds"].items()
    }
    relay = Multiaddr.parse(config["relay"])
    home = Multiaddr.parse(config["home"])
    home_id = PeerId.from_string(config["home_peer_id"])
    home_via_relay = Multiaddr.parse(f"{relay}/p2p-circuit/p2p/{home_id}")
    tallies: dict[str, Tally] = {}
    jobs: list[Awaitable[None]] = []

    for name, addr in (("relay", relay), ("home", home)):
        endpoint = addr.without_peer_id().tcp_endpoint()
        assert endpoint is not None
        tallies[f"garbage→{name}"] = t = Tally()
        jobs.append(garbage(t, *endpoint, stop_at))
        tallies[f"silent→{name}"] = t = Tally()
        jobs.append(silent(t, *endpoint, stop_at))
    for name, addr in (
        ("relay", relay),
        ("home", home),
        ("home via relay", home_via_relay),
    ):
        tallies[f"ping→{name}"] = t = Tally()
        jobs.append(ping_flood(t, keys["ping"], addr, stop_at))
    tallies["refused→home"] = t = Tally()
    jobs.append(refused(t, keys["relay_only"], home, stop_at))
    tallies["streams→home"] = t = Tally()
    jobs.append(
        streams_without_end(t, keys["streams"], home, config["service"], stop_at)
    )
    tallies["circuits→home"] = t = Tally()
    jobs.append(
        circuits(t, keys["circuits"], relay, home_id, stop_at, RATES["circuits"])
    )
    tallies["circuits (refused)→home"] = t = Tally()
    jobs.append(
        circuits(
            t, keys["relay_only"], relay, home_id, stop_at, RATES["refused circuits"]
        )
    )
    started = time.monotonic()
    results = await asyncio.gather(*jobs, return_exceptions=True)
    crashed = [repr(r) for r in results if isinstance(r, BaseException)]
    return {
        "duration_s": round(time.monotonic() - started, 1),
        "rates": RATES,
        "attacks": {name: t.as_json() for name, t in tallies.items()},
        "crashed": crashed,
        "cpu_s": round(time.process_time(), 1),
    }


async def echo() -> None:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(f"listening on {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


def main(argv: list[str]) -> int:
    if argv[:1] == ["echo"]:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(echo())
        return 0
    if argv[:1] == ["attack"] and len(argv) == 2:
        config = json.loads(argv[1])
        print(json.dumps(asyncio.run(attack(config))), flush=True)
        return 0
    print("usage: soak_peers.py echo | attack CONFIG_JSON", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
