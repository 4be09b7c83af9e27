"""The interop test peer: the roles in ``interop/CONTRACT.md``, played by peer-up.

Every libp2p implementation we test against ships a peer with this command line, so CI
can put any of them in any role: ``listen`` (serves /echo, /sink, /source), ``dial``
(runs measured steps on one connection and prints one NDJSON result) and ``relay``
(a circuit relay v2 server). Output is NDJSON on stdout; logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from peerup.cli.common import run as run_loop
from peerup.config import identity_store
from peerup.core.errors import Error
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.multiaddr import Multiaddr
from peerup.net.connection import Connection
from peerup.net.host import Host
from peerup.net.relay_client import RelayClient
from peerup.net.stream import Stream

ECHO = "/echo/1.0.0"
SINK = "/sink/1.0.0"
SOURCE = "/source/1.0.0"
CHUNK = 256 * 1024
PATTERN = os.urandom(1 << 20) * 2  # doubled so any 1 MiB window is one slice
PATTERN_LEN = 1 << 20

log = logging.getLogger("peerup.interop")


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def pattern(offset: int, n: int) -> bytes:
    """``n`` bytes of the test pattern starting at stream offset ``offset``."""
    out = []
    while n > 0:
        start = offset % PATTERN_LEN
        take = min(n, PATTERN_LEN)
        out.append(PATTERN[start : start + take])
        offset += take
        n -= take
    return b"".join(out)


# --- served protocols ----------------------------------------------------------------


async def serve_echo(stream: Stream) -> None:
    while True:
        data = await stream.read()
        if not data:
            return
        await stream.write(data)


async def serve_sink(stream: Stream) -> None:
    count = 0
    while True:
        data = await stream.read()
        if not data:
            break
        count += len(data)
    await stream.write(f"{count}\n".encode())


async def serve_source(stream: Stream) -> None:
    line = await stream.readline(64)
    n = int(line.strip() or b"0")
    sent = 0
    while sent < n:
        take = min(CHUNK, n - sent)
        await stream.write(pattern(sent, take))
        sent += take


def add_test_handlers(host: Host) -> None:
    host.set_handler(ECHO, serve_echo)
    host.set_handler(SINK, serve_sink)
    host.set_handler(SOURCE, serve_source)


# --- dial steps --------------------------------------------------------------------


class StepFailed(Exception):
    pass


async def write_pattern(stream: Stream, n: int) -> None:
    sent = 0
    while sent < n:
        take = min(CHUNK, n - sent)
        await stream.write(pattern(sent, take))
        sent += take


async def read_and_check(
    stream: Stream, n: int, first: list[float] | None = None
) -> None:
    got = 0
    while got < n:
        data = await stream.read(min(CHUNK, n - got))
        if not data:
            raise StepFailed(f"stream ended after {got} of {n} bytes")
        if first is not None and not first:
            first.append(time.perf_counter())
        if data != pattern(got, len(data)):
            raise StepFailed(f"echoed bytes differ near offset {got}")
        got += len(data)


async def echo_transfer(
    conn: Connection, n: int, first: list[float] | None = None
) -> float:
    stream = conn.open_stream([ECHO])
    start = time.perf_counter()
    writer = asyncio.ensure_future(write_pattern(stream, n))
    try:
        await read_and_check(stream, n, first)
        await writer
    finally:
        writer.cancel()
    elapsed = time.perf_counter() - start
    await stream.close_write()
    if await stream.read():
        raise StepFailed("echo sent more bytes than it received")
    return elapsed


def mbps(n: int, seconds: float) -> float:
    return round(n / seconds / 1e6, 2) if seconds > 0 else 0.0


def summary(samples_s: list[float]) -> dict[str, Any]:
    ms = sorted(s * 1000 for s in samples_s)
    return {
        "median_ms": round(statistics.median(ms), 3),
        "p90_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.9))], 3),
        "min_ms": round(ms[0], 3),
        "samples": len(ms),
    }


async def step_echo(
    host: Host, conn: Connection, args: list[int], t0: float
) -> dict[str, Any]:
    first: list[float] = []
    elapsed = await echo_transfer(conn, args[0], first)
    return {
        "ok": True,
        "mb_per_s": mbps(args[0], elapsed),
        "first_byte_since_dial_ms": round((first[0] - t0) * 1000, 3) if first else None,
    }


async def step_sink(
    host: Host, conn: Connection, args: list[int], t0: float
) -> dict[str, Any]:
    n = args[0]
    stream = conn.open_stream([SINK])
    start = time.perf_counter()
    await write_pattern(stream, n)
    await stream.close_write()
    line = await stream.readline(64)
    elapsed = time.perf_counter() - start
    if line.strip() != str(n).encode():
        raise StepFailed(f"sink counted {line.strip()!r}, sent {n}")
    return {"ok": True, "mb_per_s": mbps(n, elapsed)}


async def step_source(
    host: Host, conn: Connection, args: list[int], t0: float
) -> dict[str, Any]:
    n = args[0]
    stream = conn.open_stream([SOURCE])
    start = time.perf_counter()
    await stream.write(f"{n}\n".encode())
    got = 0
    while True:
        data = await stream.read()
        if not data:
            break
        got += len(data)
    elapsed = time.perf_counter() - start
    if got != n:
        raise StepFailed(f"source sent {got} bytes, asked for {n}")
    return {"ok": True, "mb_per_s": mbps(n, elapsed)}


async def step_latency(
    host: Host, conn: Connection, args: list[int], t0: float
) -> dict[str, Any]:
    k = args[0]
    new_stream: list[float] = []
    for _ in range(k):
        start = time.perf_counter()
        stream = conn.open_stream([ECHO])
        await stream.write(b"x")
        if await stream.read(1) != b"x":
            raise StepFailed("new-stream echo returned wrong byte")
        new_stream.append(time.perf_counter() - start)
        await stream.aclose()
    rtts: list[float] = []
    stream = conn.open_stream([ECHO])
    await stream.write(b"y")
    await stream.readexactly(1)
    for _ in range(k):
        start = time.perf_counter()
        await stream.write(b"z")
        if await stream.read(1) != b"z":
            raise StepFailed("open-stream echo returned wrong byte")
        rtts.append(time.perf_counter() - start)
    await stream.aclose()
    return {
        "ok": True,
        "new_stream_echo": summary(new_stream),
        "open_stream_rtt": summary(rtts),
    }


async def step_ping(
    host: Host, conn: Connection, args: list[int], t0: float
) -> dict[str, Any]:
    rtts = await host.ping(conn, args[0])
    return {"ok": True, "median_ms": round(statistics.median(rtts) * 1000, 3)}


async def step_concurrent(
    host: Host, conn: Connection, args: list[int], t0: float
) -> dict[str, Any]:
    s, n = args
    start = time.perf_counter()
    await asyncio.gather(*(echo_transfer(conn, n) for _ in range(s)))
    return {
        "ok": True,
        "streams": s,
        "mb_per_s": mbps(s * n, time.perf_counter() - start),
    }


async def step_pause(
    host: Host, conn: Connection, args: list[int], t0: float
) -> dict[str, Any]:
    n, pause_s = args
    stream = conn.open_stream([ECHO])
    writer = asyncio.ensure_future(write_pattern(stream, n))
    # The pause is the scenario under test (a reader that stops), not a wait for
    # correctness: the writer must stall on flow control, and nothing may reset.
    await asyncio.sleep(pause_s)
    if stream.is_reset:
        raise StepFailed("stream was reset while its reader paused")
    try:
        await read_and_check(stream, n)
        await writer
    finally:
        writer.cancel()
    await stream.close_write()
    if await stream.read():
        raise StepFailed("echo sent extra bytes")
    return {"ok": True, "paused_s": pause_s}


async def step_identify(
    host: Host, conn: Connection, args: list[int], t0: float
) -> dict[str, Any]:
    info = await host.identified(conn)
    if info is None:
        raise StepFailed("identify did not complete")
    return {
        "ok": True,
        "protocols": list(info.protocols),
        "agent_version": info.agent_version,
        "listen_addrs": [str(a) for a in info.listen_addrs],
    }


Step = Callable[[Host, Connection, list[int], float], Awaitable[dict[str, Any]]]
STEPS: dict[str, tuple[Step, int]] = {
    "echo": (step_echo, 1),
    "sink": (step_sink, 1),
    "source": (step_source, 1),
    "latency": (step_latency, 1),
    "ping": (step_ping, 1),
    "concurrent": (step_concurrent, 2),
    "pause": (step_pause, 2),
    "identify": (step_identify, 0),
}


def parse_steps(text: str) -> list[tuple[str, list[int]]]:
    steps = []
    for item in filter(None, text.split(",")):
        name, *raw = item.split(":")
        if name not in STEPS:
            raise ValueError(f"unknown step {name!r} (known: {', '.join(STEPS)})")
        if len(raw) != STEPS[name][1]:
            raise ValueError(f"step {name!r} takes {STEPS[name][1]} number(s)")
        steps.append((name, [int(x) for x in raw]))
    return steps


# --- roles -------------------------------------------------------------------------


def load_key(path: str | None) -> Ed25519PrivateKey:
    if path is None:
        return Ed25519PrivateKey.generate()
    key, _ = identity_store.load_or_create(Path(path))
    return key


async def wait_for_sigterm() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def ready_line(host: Host, main: Multiaddr) -> dict[str, Any]:
    return {
        "event": "ready",
        "peer_id": str(host.peer_id),
        "multiaddr": str(main),
        "multiaddrs": [str(a) for a in host.addrs_with_id()],
    }


async def run_listen(args: argparse.Namespace) -> int:
    async with Host(load_key(args.key)) as host:
        add_test_handlers(host)
        for addr in args.listen or ["/ip4/127.0.0.1/tcp/0"]:
            await host.listen(addr)
        main = host.addrs_with_id()[0]
        client = RelayClient(host)
        if args.relay:
            main = await client.reserve_and_keep(Multiaddr.parse(args.relay))
        emit(ready_line(host, main))
        await wait_for_sigterm()
    return 0


async def run_dial(args: argparse.Namespace) -> int:
    steps = parse_steps(args.steps)
    target = Multiaddr.parse(args.target)
    result: dict[str, Any] = {
        "event": "result",
        "ok": False,
        "connect_ms": None,
        "relayed": target.is_circuit,
        "encryption": "/noise",
        "multiplexer": "/yamux/1.0.0",
        "steps": {},
    }
    async with Host(load_key(args.key)) as host:
        RelayClient(host)
        t0 = time.perf_counter()
        try:
            conn = await host.connect(target)
        except Error as exc:
            result["error"] = str(exc)
            emit(result)
            return 1
        result["connect_ms"] = round((time.perf_counter() - t0) * 1000, 3)
        result["relayed"] = conn.is_relayed
        all_ok = True
        for name, params in steps:
            fn, _ = STEPS[name]
            try:
                step_result = await fn(host, conn, params, t0)
            except (Error, StepFailed, asyncio.IncompleteReadError, OSError) as exc:
                step_result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            all_ok = all_ok and bool(step_result.get("ok"))
            result["steps"][name] = step_result
            if not conn.is_open:
                conn = await host.connect(target)
        result["ok"] = all_ok
        emit(result)
        return 0 if all_ok else 1


async def run_relay(args: argparse.Namespace) -> int:
    from peerup.app.relay_service import RelayResources, RelayService

    resources = RelayResources.for_interop(
        unlimited=args.unlimited,
        limit_duration_s=args.limit_duration,
        limit_data_bytes=args.limit_data,
    )
    async with Host(load_key(args.key)) as host:
        await host.listen(f"/ip4/{args.host}/tcp/{args.port}")
        service = RelayService(host, resources)
        service.start()
        add_test_handlers(host)
        emit(ready_line(host, host.addrs_with_id()[0]))
        await wait_for_sigterm()
        await service.aclose()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="peerup-interop", description=__doc__)
    sub = parser.add_subparsers(dest="role", required=True)
    listen = sub.add_parser("listen", help="serve /echo, /sink, /source")
    listen.add_argument("--listen", action="append", help="multiaddr to listen on")
    listen.add_argument(
        "--key", help="libp2p PrivateKey protobuf file (created if missing)"
    )
    listen.add_argument(
        "--relay", help="reserve on this relay and advertise the circuit"
    )
    dial = sub.add_parser("dial", help="run steps against a listener")
    dial.add_argument("target", help="multiaddr of the listener, with /p2p/")
    dial.add_argument("--steps", required=True, help="e.g. echo:1048576,ping:3")
    dial.add_argument("--key")
    relay = sub.add_parser("relay", help="circuit relay v2 server")
    relay.add_argument("--host", default="127.0.0.1")
    relay.add_argument("--port", type=int, default=0)
    relay.add_argument("--key")
    relay.add_argument("--unlimited", action="store_true")
    relay.add_argument("--limit-duration", type=float, default=None)
    relay.add_argument("--limit-data", type=int, default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("PEERUP_LOG", "WARNING").upper(),
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if args.role == "dial":
        try:
            parse_steps(args.steps)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    runner = {"listen": run_listen, "dial": run_dial, "relay": run_relay}[args.role]
    try:
        return run_loop(runner(args))
    except Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
