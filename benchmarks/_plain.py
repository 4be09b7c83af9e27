"""Baseline peer: plain asyncio streams over TCP, optionally with ChaCha20-Poly1305 frames.

The lower bound for what an asyncio libp2p stack can do on this machine. ``serve``
prints one ready line and serves, per TCP connection, the service named by the first
byte: ``E`` echo, ``S`` sink (reply the byte count + ``\\n``), ``O`` source (read
``N\\n``, send N bytes). ``client`` runs the same steps as the interop ``dial`` role
(``sink:N``, ``source:N``, ``concurrent:S:N``, ``latency:K``), where a "stream" is a new
TCP connection, and prints one result line with the same fields.

With ``--crypto`` every byte after the service byte travels in Noise-sized frames:
2-byte big-endian length, then ChaCha20-Poly1305 of at most 65519 plaintext bytes
(64 KiB - 1 on the wire, as the libp2p Noise spec frames them), nonce = counter.
There is no handshake (a fixed key): this measures the framing and AEAD cost alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

KEY = bytes(range(32))
MAX_PLAIN = 65535 - 16
CHUNK = 256 * 1024
DATA = os.urandom(CHUNK)
LIMIT = 4 * 1024 * 1024
"""StreamReader buffer limit: the default 64 KiB pauses the socket every 128 KiB."""


class Sealer:
    def __init__(self) -> None:
        self.aead = ChaCha20Poly1305(KEY)
        self.nonce = 0

    def seal(self, data: bytes) -> bytes:
        out = []
        view = memoryview(data)
        for i in range(0, len(view), MAX_PLAIN):
            nonce = b"\0\0\0\0" + self.nonce.to_bytes(8, "little")
            self.nonce += 1
            ct = self.aead.encrypt(nonce, view[i : i + MAX_PLAIN], None)
            out.append(len(ct).to_bytes(2, "big"))
            out.append(ct)
        return b"".join(out)


class Opener:
    """Reads big chunks and cuts frames out of a local buffer (no per-frame
    ``readexactly``, which copies the StreamReader buffer every call)."""

    def __init__(self) -> None:
        self.aead = ChaCha20Poly1305(KEY)
        self.nonce = 0
        self.buf = bytearray()
        self.pos = 0

    async def read(self, reader: asyncio.StreamReader) -> bytes:
        """The decrypted frames available now (at least one), or b"" at EOF."""
        out: list[bytes] = []
        while not out:
            view = memoryview(self.buf)
            while len(self.buf) - self.pos >= 2:
                size = int.from_bytes(view[self.pos : self.pos + 2], "big")
                if len(self.buf) - self.pos - 2 < size:
                    break
                nonce = b"\0\0\0\0" + self.nonce.to_bytes(8, "little")
                self.nonce += 1
                out.append(
                    self.aead.decrypt(
                        nonce, view[self.pos + 2 : self.pos + 2 + size], None
                    )
                )
                self.pos += 2 + size
            view.release()
            if out:
                break
            del self.buf[: self.pos]
            self.pos = 0
            data = await reader.read(4 * CHUNK)
            if not data:
                return b""
            self.buf += data
        return out[0] if len(out) == 1 else b"".join(out)


class Pipe:
    """One side of a connection: raw or sealed reads and writes."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, crypto: bool
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.sealer = Sealer() if crypto else None
        self.opener = Opener() if crypto else None

    async def read(self) -> bytes:
        if self.opener is not None:
            return await self.opener.read(self.reader)
        return await self.reader.read(CHUNK)

    async def write(self, data: bytes) -> None:
        self.writer.write(self.sealer.seal(data) if self.sealer is not None else data)
        await self.writer.drain()

    def close(self) -> None:
        self.writer.close()


# --- server ----------------------------------------------------------------------


async def handle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, crypto: bool
) -> None:
    pipe = Pipe(reader, writer, crypto)
    try:
        kind = await reader.readexactly(1)
        if kind == b"E":
            while data := await pipe.read():
                await pipe.write(data)
        elif kind == b"S":
            count = 0
            while data := await pipe.read():
                count += len(data)
            await pipe.write(f"{count}\n".encode())
        elif kind == b"O":
            n = int(await reader.readline())
            sent = 0
            while sent < n:
                take = min(CHUNK, n - sent)
                await pipe.write(DATA[:take])
                sent += take
    except (OSError, asyncio.IncompleteReadError, ValueError):
        pass
    finally:
        pipe.close()


async def serve(args: argparse.Namespace) -> int:
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, args.crypto),
        "127.0.0.1",
        0,
        backlog=1024,
        limit=LIMIT,
    )
    port = server.sockets[0].getsockname()[1]
    print(
        json.dumps({"event": "ready", "port": port, "crypto": args.crypto}), flush=True
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    return 0


# --- client ----------------------------------------------------------------------


async def connect(port: int, kind: bytes, crypto: bool) -> Pipe:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=LIMIT)
    writer.write(kind)
    return Pipe(reader, writer, crypto)


async def read_line(pipe: Pipe) -> bytes:
    buf = b""
    while not buf.endswith(b"\n"):
        data = await pipe.read()
        if not data:
            break
        buf += data
    return buf


async def step_sink(port: int, crypto: bool, n: int) -> dict[str, Any]:
    pipe = await connect(port, b"S", crypto)
    start = time.perf_counter()
    sent = 0
    while sent < n:
        take = min(CHUNK, n - sent)
        await pipe.write(DATA[:take])
        sent += take
    pipe.writer.write_eof()
    line = await read_line(pipe)
    elapsed = time.perf_counter() - start
    pipe.close()
    return {
        "ok": line.strip() == str(n).encode(),
        "mb_per_s": round(n / elapsed / 1e6, 2),
    }


async def step_source(port: int, crypto: bool, n: int) -> dict[str, Any]:
    pipe = await connect(port, b"O", crypto)
    start = time.perf_counter()
    pipe.writer.write(f"{n}\n".encode())
    got = 0
    while data := await pipe.read():
        got += len(data)
    elapsed = time.perf_counter() - start
    pipe.close()
    return {"ok": got == n, "mb_per_s": round(n / elapsed / 1e6, 2)}


async def echo_one(port: int, crypto: bool, n: int) -> bool:
    pipe = await connect(port, b"E", crypto)

    async def writer() -> None:
        sent = 0
        while sent < n:
            take = min(CHUNK, n - sent)
            await pipe.write(DATA[:take])
            sent += take
        pipe.writer.write_eof()

    task = asyncio.ensure_future(writer())
    got = 0
    while got < n:
        data = await pipe.read()
        if not data:
            break
        got += len(data)
    await task
    pipe.close()
    return got == n


async def step_concurrent(port: int, crypto: bool, s: int, n: int) -> dict[str, Any]:
    start = time.perf_counter()
    oks = await asyncio.gather(*(echo_one(port, crypto, n) for _ in range(s)))
    elapsed = time.perf_counter() - start
    return {"ok": all(oks), "streams": s, "mb_per_s": round(s * n / elapsed / 1e6, 2)}


def summary(samples_s: list[float]) -> dict[str, Any]:
    ms = sorted(x * 1000 for x in samples_s)
    return {
        "median_ms": round(statistics.median(ms), 3),
        "p90_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.9))], 3),
        "min_ms": round(ms[0], 3),
        "samples": len(ms),
    }


async def step_latency(port: int, crypto: bool, k: int) -> dict[str, Any]:
    new_conn = []
    for _ in range(k):
        start = time.perf_counter()
        pipe = await connect(port, b"E", crypto)
        await pipe.write(b"x")
        ok = await pipe.read() == b"x"
        new_conn.append(time.perf_counter() - start)
        pipe.close()
        if not ok:
            return {"ok": False, "error": "wrong echo"}
    pipe = await connect(port, b"E", crypto)
    rtts = []
    for _ in range(k):
        start = time.perf_counter()
        await pipe.write(b"z")
        if await pipe.read() != b"z":
            return {"ok": False, "error": "wrong echo"}
        rtts.append(time.perf_counter() - start)
    pipe.close()
    return {
        "ok": True,
        "new_stream_echo": summary(new_conn),
        "open_stream_rtt": summary(rtts),
    }


async def client(args: argparse.Namespace) -> int:
    result: dict[str, Any] = {"event": "result", "steps": {}}
    t0 = time.perf_counter()
    _, w = await asyncio.open_connection("127.0.0.1", args.port)
    result["connect_ms"] = round((time.perf_counter() - t0) * 1000, 3)
    w.close()
    for item in args.steps.split(","):
        name, *raw = item.split(":")
        nums = [int(x) for x in raw]
        if name == "sink":
            res = await step_sink(args.port, args.crypto, nums[0])
        elif name == "source":
            res = await step_source(args.port, args.crypto, nums[0])
        elif name == "concurrent":
            res = await step_concurrent(args.port, args.crypto, nums[0], nums[1])
        elif name == "latency":
            res = await step_latency(args.port, args.crypto, nums[0])
        else:
            res = {"ok": False, "error": f"unknown step {name}"}
        result["steps"][name] = res
    result["ok"] = all(s.get("ok") for s in result["steps"].values())
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="role", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--crypto", action="store_true")
    c = sub.add_parser("client")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--steps", required=True)
    c.add_argument("--crypto", action="store_true")
    args = parser.parse_args()
    return asyncio.run(serve(args) if args.role == "serve" else client(args))


if __name__ == "__main__":
    sys.exit(main())
