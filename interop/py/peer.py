"""py-libp2p (PyPI `libp2p` 0.8.x) test peer implementing interop/CONTRACT.md.

Roles: listen, dial, relay. Stack: TCP + Noise + Yamux, identify and ping on.
NDJSON on stdout, logs on stderr, SIGTERM -> exit 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import statistics
import sys
import time

import multiaddr
import trio

from libp2p import new_host
from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.pb import crypto_pb2
from libp2p.crypto.x25519 import create_new_key_pair as new_x25519
from libp2p.custom_types import TProtocol
from libp2p.identity.identify.identify import parse_identify_response
from libp2p.network.config import ConnectionConfig
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.relay.circuit_v2 import CircuitV2Protocol, CircuitV2Transport, RelayLimits
from libp2p.relay.circuit_v2.config import RelayConfig
from libp2p.relay.circuit_v2.protocol import DEFAULT_RELAY_LIMITS
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_ID
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service

log = logging.getLogger("interop-py")

ECHO = TProtocol("/echo/1.0.0")
SINK = TProtocol("/sink/1.0.0")
SOURCE = TProtocol("/source/1.0.0")
PING = TProtocol("/ipfs/ping/1.0.0")
IDENTIFY = TProtocol("/ipfs/id/1.0.0")
CHUNK = 64 * 1024


class UsageError(Exception):
    pass


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------- keys
# Standard libp2p PrivateKey protobuf: key_type=Ed25519(1), data=seed(32)||pub(32)
# as go-libp2p writes it. (py-libp2p's own serialize() writes only the 32-byte
# seed and its from_bytes() rejects the 64-byte form, so we do it ourselves.)


def load_or_create_key(path: str | None) -> KeyPair:
    if path and os.path.exists(path):
        pb = crypto_pb2.PrivateKey()
        with open(path, "rb") as f:
            pb.ParseFromString(f.read())
        if pb.key_type != crypto_pb2.KeyType.Ed25519 or len(pb.data) not in (32, 64):
            raise UsageError(f"{path}: not an Ed25519 libp2p PrivateKey")
        priv = Ed25519PrivateKey.from_bytes(pb.data[:32])
        pub = priv.get_public_key()
        if len(pb.data) == 64 and pub.to_bytes() != pb.data[32:]:
            raise UsageError(f"{path}: public half does not match private key")
        return KeyPair(priv, pub)
    priv = Ed25519PrivateKey.new()
    pub = priv.get_public_key()
    if path:
        pb = crypto_pb2.PrivateKey(
            key_type=crypto_pb2.KeyType.Ed25519, data=priv.to_bytes() + pub.to_bytes()
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pb.SerializeToString())
    return KeyPair(priv, pub)


def make_host(kp: KeyPair, listen: list[multiaddr.Multiaddr], one_conn: bool = False):
    # one_conn (dialer): py-libp2p's happy-eyeballs loop otherwise always waits
    # its full 250 ms fallback delay after a successful single-address dial; with
    # max_connections_per_peer=1 a successful dial ends that wait at once.
    host = new_host(
        key_pair=kp,
        sec_opt={NOISE_ID: NoiseTransport(kp, noise_privkey=new_x25519().private_key)},
        muxer_opt={YAMUX_ID: Yamux},
        listen_addrs=listen or None,
        connection_config=ConnectionConfig(max_connections_per_peer=1) if one_conn else None,
    )
    # Contract: resource limits off. The swarm skips every rcmgr check when None.
    host.get_network().set_resource_manager(None)
    # py-libp2p's AutoConnector redials every known peer (up to 200 dials) when
    # below its connection watermarks; a test peer must only make the dials asked.
    async def no_autoconnect() -> None:
        return None
    host.get_network().auto_connector.maybe_connect = no_autoconnect
    return host


def ready(host) -> None:
    addrs = [str(a) for a in host.get_addrs()]
    emit({"event": "ready", "peer_id": str(host.get_id()),
          "multiaddr": addrs[0] if addrs else None, "multiaddrs": addrs})


# ---------------------------------------------------------------- stream helpers


async def read_some(stream, n: int = CHUNK) -> bytes:
    """Up to n bytes; b"" on EOF."""
    try:
        return await stream.read(n)
    except StreamEOF:
        return b""


async def read_exact(stream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        data = await read_some(stream, min(CHUNK, n - len(buf)))
        if not data:
            raise EOFError(f"EOF after {len(buf)} of {n} bytes")
        buf += data
    return bytes(buf)


async def read_to_eof(stream) -> bytes:
    buf = bytearray()
    while data := await read_some(stream):
        buf += data
    return bytes(buf)


async def expect_eof(stream) -> None:
    extra = await read_to_eof(stream)
    if extra:
        raise ValueError(f"{len(extra)} unexpected bytes before EOF")


async def write_all(stream, data: bytes) -> None:
    for i in range(0, len(data), CHUNK):
        await stream.write(data[i : i + CHUNK])


def pattern(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


# ---------------------------------------------------------------- listen-side handlers


async def handle_echo(stream) -> None:
    try:
        while data := await read_some(stream):
            await stream.write(data)
        await stream.close()
    except Exception as e:  # noqa: BLE001
        log.warning("echo handler: %r", e)
        await stream.reset()


async def handle_sink(stream) -> None:
    try:
        total = 0
        while data := await read_some(stream):
            total += len(data)
        await stream.write(f"{total}\n".encode())
        await stream.close()
    except Exception as e:  # noqa: BLE001
        log.warning("sink handler: %r", e)
        await stream.reset()


async def handle_source(stream) -> None:
    try:
        line = b""
        while not line.endswith(b"\n"):
            b = await read_some(stream, 1)
            if not b or len(line) > 32:
                raise ValueError(f"bad request line {line!r}")
            line += b
        n = int(line)
        block = pattern(min(n, 1 << 20), seed=2)
        sent = 0
        while sent < n:
            part = block[: min(len(block), n - sent)]
            await write_all(stream, part)
            sent += len(part)
        await stream.close()
    except Exception as e:  # noqa: BLE001
        log.warning("source handler: %r", e)
        await stream.reset()


def serve(host) -> None:
    host.set_stream_handler(ECHO, handle_echo)
    host.set_stream_handler(SINK, handle_sink)
    host.set_stream_handler(SOURCE, handle_source)


# ---------------------------------------------------------------- dial steps


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def mbps(n: int, seconds: float) -> float:
    return round(n / seconds / 1e6, 3) if seconds > 0 else 0.0


def stats(samples: list[float]) -> dict:
    s = sorted(samples)
    return {"median_ms": ms(statistics.median(s)),
            "p90_ms": ms(s[min(len(s) - 1, int(0.9 * len(s)))]),
            "min_ms": ms(s[0]), "samples": len(s)}


class Dialer:
    def __init__(self, host, peer_id, t_dial: float):
        self.host, self.peer, self.t_dial = host, peer_id, t_dial

    async def open(self, proto):
        return await self.host.new_stream(self.peer, [proto])

    async def echo_roundtrip(self, data: bytes, on_first=None) -> float:
        """Open /echo, write data while reading it back, half-close, expect EOF.
        Returns seconds from stream open to last byte back."""
        t0 = time.perf_counter()
        s = await self.open(ECHO)
        got = bytearray()
        t_last = 0.0

        async def reader():
            nonlocal t_last
            while len(got) < len(data):
                chunk = await read_some(s, min(CHUNK, len(data) - len(got)))
                if not chunk:
                    raise EOFError(f"EOF after {len(got)} of {len(data)} bytes")
                if not got and on_first:
                    on_first()
                got.extend(chunk)
            t_last = time.perf_counter()

        async with trio.open_nursery() as n:
            n.start_soon(reader)
            await write_all(s, data)
        if bytes(got) != data:
            raise ValueError("echoed bytes differ")
        await s.close_write()
        await expect_eof(s)
        await s.close()
        return t_last - t0

    async def step_echo(self, n: int) -> dict:
        first = {}
        secs = await self.echo_roundtrip(
            pattern(n), on_first=lambda: first.setdefault("t", time.perf_counter()))
        return {"ok": True, "mb_per_s": mbps(n, secs),
                "first_byte_since_dial_ms": ms(first["t"] - self.t_dial)}

    async def step_sink(self, n: int) -> dict:
        t0 = time.perf_counter()
        s = await self.open(SINK)
        await write_all(s, pattern(n))
        await s.close_write()
        reply = await read_to_eof(s)
        secs = time.perf_counter() - t0
        await s.close()
        if reply.strip() != str(n).encode() or not reply.endswith(b"\n"):
            raise ValueError(f"sink replied {reply[:40]!r}, expected {n}")
        return {"ok": True, "mb_per_s": mbps(n, secs)}

    async def step_source(self, n: int) -> dict:
        t0 = time.perf_counter()
        s = await self.open(SOURCE)
        await s.write(f"{n}\n".encode())
        await s.close_write()
        total = 0
        while data := await read_some(s):
            total += len(data)
        secs = time.perf_counter() - t0
        await s.close()
        if total != n:
            raise ValueError(f"source sent {total} bytes, expected {n}")
        return {"ok": True, "mb_per_s": mbps(n, secs)}

    async def step_latency(self, k: int) -> dict:
        new_stream = []
        for _ in range(k):
            t0 = time.perf_counter()
            s = await self.open(ECHO)
            await s.write(b"x")
            if await read_exact(s, 1) != b"x":
                raise ValueError("echo mismatch")
            new_stream.append(time.perf_counter() - t0)
            await s.close_write()
            await expect_eof(s)
            await s.close()
        s = await self.open(ECHO)
        rtt = []
        for i in range(k):
            b = bytes([i % 256])
            t0 = time.perf_counter()
            await s.write(b)
            if await read_exact(s, 1) != b:
                raise ValueError("echo mismatch")
            rtt.append(time.perf_counter() - t0)
        await s.close_write()
        await expect_eof(s)
        await s.close()
        return {"ok": True, "new_stream_echo": stats(new_stream),
                "open_stream_rtt": stats(rtt)}

    async def step_ping(self, k: int) -> dict:
        s = await self.open(PING)
        rtts = []
        for _ in range(k):
            payload = os.urandom(32)
            t0 = time.perf_counter()
            await s.write(payload)
            if await read_exact(s, 32) != payload:
                raise ValueError("ping payload mismatch")
            rtts.append(time.perf_counter() - t0)
        await s.close()
        return {"ok": True, "median_ms": ms(statistics.median(rtts))}

    async def step_concurrent(self, streams: int, n: int) -> dict:
        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for i in range(streams):
                nursery.start_soon(self.echo_roundtrip, pattern(n, seed=100 + i))
        secs = time.perf_counter() - t0
        return {"ok": True, "streams": streams, "mb_per_s": mbps(streams * n, secs)}

    async def step_pause(self, n: int, pause_s: float) -> dict:
        data = pattern(n, seed=3)
        s = await self.open(ECHO)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_all, s, data)  # stalls on flow control
            t0 = time.perf_counter()
            await trio.sleep(pause_s)
            paused = time.perf_counter() - t0
            got = await read_exact(s, n)
        if got != data:
            raise ValueError("echoed bytes differ after pause")
        await s.close_write()
        await expect_eof(s)
        await s.close()
        return {"ok": True, "paused_s": round(paused, 3)}

    async def step_identify(self) -> dict:
        # Ask the remote ourselves: py-libp2p's background identify does not keep
        # agent_version in the peerstore.
        s = await self.open(IDENTIFY)
        with trio.fail_after(10):
            raw = await read_to_eof(s)
        await s.close()
        msg = parse_identify_response(raw)
        addrs = []
        for a in msg.listen_addrs:
            try:
                addrs.append(str(multiaddr.Multiaddr(a)))
            except Exception:  # noqa: BLE001
                addrs.append(a.hex())
        return {"ok": True, "protocols": list(msg.protocols),
                "agent_version": msg.agent_version, "listen_addrs": addrs}


STEPS = {  # name -> (number of int args, method name)
    "echo": (1, "step_echo"), "sink": (1, "step_sink"), "source": (1, "step_source"),
    "latency": (1, "step_latency"), "ping": (1, "step_ping"),
    "concurrent": (2, "step_concurrent"), "pause": (2, "step_pause"),
    "identify": (0, "step_identify"),
}


def parse_steps(spec: str) -> list[tuple[str, list[int]]]:
    out = []
    for item in spec.split(","):
        name, *args = item.strip().split(":")
        if name not in STEPS or len(args) != STEPS[name][0]:
            raise UsageError(f"bad step {item!r}")
        try:
            out.append((name, [int(a) for a in args]))
        except ValueError:
            raise UsageError(f"bad step {item!r}") from None
    return out


# ---------------------------------------------------------------- roles


async def run_listen(args, kp: KeyPair) -> int:
    listen = [multiaddr.Multiaddr(a) for a in (args.listen or ["/ip4/127.0.0.1/tcp/0"])]
    host = make_host(kp, listen)
    serve(host)
    async with host.run(listen_addrs=listen), trio.open_nursery() as nursery:
        if not args.relay:
            ready(host)
            await trio.sleep_forever()
        # Circuit v2 client: the STOP handler of CircuitV2Protocol upgrades
        # incoming circuits; CircuitV2Transport makes the HOP reservation.
        relay_ma = multiaddr.Multiaddr(args.relay)
        relay = info_from_p2p_addr(relay_ma)
        transport = await start_circuit(host, nursery)
        await host.connect(relay)
        stream = await host.new_stream(relay.peer_id, [HOP_ID])
        if not await transport.reserve(stream, relay.peer_id, nursery):
            print(f"reservation on {relay_ma} failed", file=sys.stderr)
            nursery.cancel_scope.cancel()
            return 1
        circuit = f"{relay_ma}/p2p-circuit/p2p/{host.get_id()}"
        emit({"event": "ready", "peer_id": str(host.get_id()), "multiaddr": circuit,
              "multiaddrs": [circuit] + [str(a) for a in host.get_addrs()]})
        await trio.sleep_forever()
    return 0


async def start_circuit(host, nursery, limits=None, hop=False):
    proto = CircuitV2Protocol(host, limits=limits, allow_hop=hop)

    async def run_service():
        async with background_trio_service(proto):
            await trio.sleep_forever()

    nursery.start_soon(run_service)
    await proto.event_started.wait()
    return CircuitV2Transport(host, proto, RelayConfig())


async def run_relay(args, kp: KeyPair) -> int:
    listen = [multiaddr.Multiaddr(f"/ip4/{args.host}/tcp/{args.port}")]
    # "Unlimited" = the largest values the wire Limit message carries
    # (duration is uint32 seconds, data uint64 bytes).
    if args.unlimited or args.limit_duration is not None or args.limit_data is not None:
        limits = RelayLimits(
            duration=int(args.limit_duration) if args.limit_duration else 2**31 - 1,
            data=args.limit_data if args.limit_data is not None else 2**62,
            max_circuit_conns=2**31, max_reservations=2**31, reservation_ttl=3600)
    else:
        limits = DEFAULT_RELAY_LIMITS
    host = make_host(kp, listen)
    serve(host)
    async with host.run(listen_addrs=listen), trio.open_nursery() as nursery:
        await start_circuit(host, nursery, limits=limits, hop=True)
        ready(host)
        await trio.sleep_forever()
    return 0


async def run_dial(args, kp: KeyPair) -> int:
    steps = parse_steps(args.steps)
    target = multiaddr.Multiaddr(args.target)
    info = info_from_p2p_addr(target)
    host = make_host(kp, [], one_conn=True)
    serve(host)
    result = {"event": "result", "ok": False, "connect_ms": None,
              "relayed": "/p2p-circuit" in str(target), "encryption": NOISE_ID,
              "multiplexer": YAMUX_ID, "steps": {}}
    async with host.run(listen_addrs=[]), trio.open_nursery() as nursery:
        try:
            return await dial_steps(host, nursery, target, info, steps, result)
        finally:
            nursery.cancel_scope.cancel()


async def dial_steps(host, nursery, target, info, steps, result) -> int:
    circuit = await start_circuit(host, nursery) if result["relayed"] else None
    t_dial = time.perf_counter()
    try:
        if circuit:
            await circuit.dial(target)
        else:
            await host.connect(info)
    except Exception as e:  # noqa: BLE001
        result["error"] = f"connect failed: {e!r}"
        emit(result)
        return 1
    result["connect_ms"] = ms(time.perf_counter() - t_dial)
    conns = host.get_network().get_connections(info.peer_id)
    if conns:
        muxed = conns[0].muxed_conn
        if not isinstance(muxed, Yamux):
            result["multiplexer"] = type(muxed).__name__
        result["relayed"] = result["relayed"] or any(
            "/p2p-circuit" in str(a) for a in muxed.get_transport_addresses())
    d = Dialer(host, info.peer_id, t_dial)
    for name, sargs in steps:
        try:
            res = await getattr(d, STEPS[name][1])(*sargs)
        except BaseException as e:  # noqa: BLE001 (trio wraps errors in groups)
            if isinstance(e, (KeyboardInterrupt, trio.Cancelled)):
                raise
            log.warning("step %s failed: %r", name, e)
            res = {"ok": False, "error": describe(e)}
        result["steps"][name] = res
        if not res["ok"] and not host.get_network().get_connections(info.peer_id):
            log.warning("connection gone after step %s", name)
    result["ok"] = all(r["ok"] for r in result["steps"].values()) and len(
        result["steps"]) == len(steps)
    emit(result)
    return 0 if result["ok"] else 1


def describe(e: BaseException) -> str:
    if isinstance(e, BaseExceptionGroup):
        return "; ".join(describe(x) for x in e.exceptions)
    msg = f"{type(e).__name__}: {e}".rstrip(": ")
    if e.__cause__ is not None:
        msg += f" (caused by {describe(e.__cause__)})"
    return msg


async def amain(args) -> int:
    kp = load_or_create_key(args.key)
    role = {"listen": run_listen, "dial": run_dial, "relay": run_relay}[args.role]
    code = 0
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as sigs:
        async with trio.open_nursery() as nursery:
            async def stop_on_signal():
                async for _ in sigs:
                    log.info("signal received, shutting down")
                    nursery.cancel_scope.cancel()
                    return

            async def main_task():
                nonlocal code
                code = await role(args, kp)
                nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_signal)
            nursery.start_soon(main_task)
    return code


def parse_args(argv):
    p = argparse.ArgumentParser(prog="peer.py", description=__doc__)
    sub = p.add_subparsers(dest="role", required=True)
    lp = sub.add_parser("listen")
    lp.add_argument("--listen", action="append")
    lp.add_argument("--key")
    lp.add_argument("--relay")
    dp = sub.add_parser("dial")
    dp.add_argument("target")
    dp.add_argument("--steps", required=True)
    dp.add_argument("--key")
    rp = sub.add_parser("relay")
    rp.add_argument("--host", default="127.0.0.1")
    rp.add_argument("--port", type=int, default=0)
    rp.add_argument("--key")
    rp.add_argument("--unlimited", action="store_true")
    rp.add_argument("--limit-duration", type=float)
    rp.add_argument("--limit-data", type=int)
    return p.parse_args(argv)


def main(argv=None) -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s py-peer %(levelname)s %(message)s")
    args = parse_args(argv)  # argparse exits 2 on usage errors
    try:
        if args.role == "dial":
            parse_steps(args.steps)
            try:
                info_from_p2p_addr(multiaddr.Multiaddr(args.target))
            except Exception as e:  # noqa: BLE001
                raise UsageError(f"bad target {args.target!r}: {e}") from None
        return trio.run(amain, args)
    except UsageError as e:
        print(f"usage error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001
        print(f"fatal: {describe(e)}", file=sys.stderr)
        return 1

if __name__ == "__main__":
    sys.exit(main())
