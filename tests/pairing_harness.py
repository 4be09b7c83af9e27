"""Helpers for the pairing tests and benchmark: a real relay and node configs in a
temporary directory, an echo service, and an event loop in a thread for daemons that
the CLI talks to (imported as a top-level module; see pyproject's pythonpath)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from peerup.app.allowlist import Allowlist
from peerup.app.relay_server import RelayServer
from peerup.config import files, load
from peerup.config.schema import ServiceConfig
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.multiaddr import Multiaddr
from peerup.core.peer_id import PeerId

TIMEOUT_S = 30.0


def write_relay(directory: Path) -> Path:
    """A relay-server.yaml on 127.0.0.1, enforcing its (empty) allowlist."""
    path = directory / "relay-server.yaml"
    files.write_atomic(path, load.render_relay_config(["/ip4/127.0.0.1/tcp/0"]))
    config = load.load_relay(path)
    files.write_atomic(config.identity_key, Ed25519PrivateKey.generate().to_protobuf())
    files.write_atomic(config.authorized_keys, "# relay allowlist\n")
    return path


async def start_relay(directory: Path) -> tuple[RelayServer, Multiaddr]:
    relay = RelayServer(load.load_relay(write_relay(directory)))
    return relay, (await relay.start())[0]


def authorize_on_relay(relay: RelayServer, *peers: PeerId) -> None:
    allowlist = Allowlist(relay.config.authorized_keys)
    for peer in peers:
        allowlist.add(peer)


def make_node(
    base: Path,
    name: str,
    relays: list[str],
    *,
    listen: list[str] | None = None,
    network_name: str | None = None,
) -> tuple[Path, PeerId]:
    """A node directory with key, empty authorized_keys and config.yaml; by default it
    does not listen, so that peers reach it only through its relays."""
    d = base / name
    key = Ed25519PrivateKey.generate()
    files.write_atomic(d / "identity.key", key.to_protobuf())
    files.write_atomic(d / "authorized_keys", "# test\n")
    text = load.render_node_config(
        identity_key="identity.key",
        listen=listen or [],
        relays=relays,
        network_name=network_name,
    )
    files.write_atomic(d / "config.yaml", text)
    return d / "config.yaml", PeerId.from_public_key(key.public_key)


async def echo_service() -> tuple[asyncio.Server, int]:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except ConnectionError:
            pass  # the client went away first
        finally:
            w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1])


def add_web(config: Path, port: int) -> None:
    load.add_service(config, ServiceConfig("web", f"127.0.0.1:{port}"))


async def echo_through(port: int, payload: bytes = b"ping") -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        w.write(payload)
        await w.drain()
        return await asyncio.wait_for(r.readexactly(len(payload)), TIMEOUT_S)
    finally:
        w.close()


def run_peerup(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """One ``peerup`` command as a process of its own, without PEERUP_* settings of
    the test run's environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEERUP_")}
    return subprocess.run(
        [sys.executable, "-m", "peerup", *map(str, args)],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
