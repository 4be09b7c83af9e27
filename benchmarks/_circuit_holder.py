"""Helper of relay.py: many peerup hosts that each hold one idle relayed connection.

A Host reuses its connection to a peer, so one host can hold only one circuit to the
listener; this process runs ``--hosts`` separate Hosts (fresh identities). Driven over
stdin/stdout with NDJSON so the benchmark can measure the relay between phases:

1. connect every host to the relay (no circuit yet), print ``{"event":"relay_connected"}``;
2. on the stdin line ``circuits``: dial the listener's circuit address from every host,
   echo 1 byte over each relayed connection (the circuit really carries data), print
   ``{"event":"circuits"}``; the connections then stay open and idle;
3. on ``stop``, EOF, or after ``--hold-s`` seconds: close every host and exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from peerup.core.keys import Ed25519PrivateKey
from peerup.core.multiaddr import Multiaddr
from peerup.net.host import Host
from peerup.net.relay_client import RelayClient

ECHO = "/echo/1.0.0"


def emit(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def stdin_lines() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    return reader


async def run_batched(coros: list, batch: int) -> list:  # type: ignore[type-arg]
    results = []
    for i in range(0, len(coros), batch):
        results += await asyncio.gather(*coros[i : i + batch], return_exceptions=True)
    return results


async def open_circuit(host: Host, target: Multiaddr) -> None:
    conn = await host.connect(target)
    if not conn.is_relayed:
        raise RuntimeError("connection is not relayed")
    stream = conn.open_stream([ECHO])
    await stream.write(b"x")
    if await stream.read(1) != b"x":
        raise RuntimeError("bad echo")
    await stream.aclose()


async def main_async(args: argparse.Namespace) -> int:
    relay = Multiaddr.parse(args.relay)
    target = Multiaddr.parse(args.target)
    stdin = await stdin_lines()
    deadline = time.monotonic() + args.hold_s
    hosts = [Host(Ed25519PrivateKey.generate()) for _ in range(args.hosts)]
    for host in hosts:
        RelayClient(host)
    try:
        t0 = time.perf_counter()
        res = await run_batched(
            [asyncio.wait_for(h.connect(relay), 30) for h in hosts], args.batch
        )
        errors = [repr(r) for r in res if isinstance(r, BaseException)]
        emit(
            {
                "event": "relay_connected",
                "ok": len(hosts) - len(errors),
                "errors": errors[:3],
                "seconds": round(time.perf_counter() - t0, 3),
            }
        )
        while True:
            try:
                line = await asyncio.wait_for(
                    stdin.readline(), deadline - time.monotonic()
                )
            except TimeoutError:
                return 1
            cmd = line.decode().strip()
            if cmd == "circuits":
                t0 = time.perf_counter()
                res = await run_batched(
                    [asyncio.wait_for(open_circuit(h, target), 30) for h in hosts],
                    args.batch,
                )
                errors = [repr(r) for r in res if isinstance(r, BaseException)]
                emit(
                    {
                        "event": "circuits",
                        "ok": len(hosts) - len(errors),
                        "errors": errors[:3],
                        "seconds": round(time.perf_counter() - t0, 3),
                    }
                )
            elif cmd == "stop" or not line:
                return 0
    finally:
        for host in hosts:
            await host.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--relay", required=True, help="relay multiaddr with /p2p/")
    parser.add_argument("--target", required=True, help="listener circuit multiaddr")
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--batch", type=int, default=20, help="dials in flight at once")
    parser.add_argument(
        "--hold-s", type=float, default=600.0, help="exit after this long"
    )
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
