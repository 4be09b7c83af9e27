"""TCP helpers that run inside a NAT lab namespace (``natlab exec HOST -- python3 …``).

``serve PORT``: a TCP echo server on 127.0.0.1:PORT (the service behind a daemon);
prints ``ready`` once it listens.
``client PORT``: TCP connections to 127.0.0.1:PORT (a proxy), driven by commands on
standard input, one per line, each answered with one line on standard output:

- ``open NAME``: connect; ``ok``
- ``echo NAME N``: send N bytes and read them back; ``ok <ms>`` or ``fail <why>``
- ``close NAME``: half-close, expect the end of the echo, close; ``ok`` or ``fail``
- ``quit``
"""

from __future__ import annotations

import asyncio
import sys
import time


async def serve(port: int) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


async def client(port: int) -> None:
    loop = asyncio.get_running_loop()
    conns: dict[str, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        words = line.split()
        if not words or words[0] == "quit":
            return
        try:
            answer = await asyncio.wait_for(command(words, conns, port), 30)
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            answer = f"fail {type(exc).__name__}: {exc}"
        print(answer, flush=True)


async def command(
    words: list[str],
    conns: dict[str, tuple[asyncio.StreamReader, asyncio.StreamWriter]],
    port: int,
) -> str:
    verb, name = words[0], words[1]
    if verb == "open":
        conns[name] = await asyncio.open_connection("127.0.0.1", port)
        return "ok"
    reader, writer = conns[name]
    if verb == "echo":
        n = int(words[2])
        payload = bytes((i * 7 + len(name)) % 251 for i in range(n))
        start = time.perf_counter()
        writer.write(payload)
        await writer.drain()
        back = await reader.readexactly(n)
        if back != payload:
            return "fail echo differs"
        return f"ok {(time.perf_counter() - start) * 1000:.1f}"
    if verb == "close":
        writer.write_eof()
        rest = await reader.read()
        writer.close()
        del conns[name]
        return "ok" if rest == b"" else f"fail {len(rest)} stray bytes"
    return f"fail unknown command {verb}"


if __name__ == "__main__":
    mode, port_text = sys.argv[1], sys.argv[2]
    asyncio.run(serve(int(port_text)) if mode == "serve" else client(int(port_text)))
