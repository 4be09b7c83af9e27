"""An Ollama-like streaming HTTP server for the end-to-end tests (run as a script).

``POST /api/generate`` (any path, any body) answers ``200`` with ``Transfer-Encoding:
chunked`` and sends one JSON line per chunk, ``TOKENS`` of them ``INTERVAL_S`` apart,
then a final ``{"done": true}`` line and the zero-length chunk, the way Ollama streams
tokens. Usage: ``python token_server.py PORT``; prints ``listening on PORT`` when ready.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys

TOKENS = 20
INTERVAL_S = 0.05


def chunk(obj: dict[str, object]) -> bytes:
    data = json.dumps(obj).encode() + b"\n"
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        length = 0
        while True:
            line = await reader.readline()
            if not line.strip():
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if length:
            await reader.readexactly(length)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        for i in range(TOKENS):
            await asyncio.sleep(INTERVAL_S)
            writer.write(chunk({"model": "tiny", "response": f"tok{i}", "done": False}))
            await writer.drain()
        writer.write(
            chunk({"model": "tiny", "response": "", "done": True}) + b"0\r\n\r\n"
        )
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print(f"listening on {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
