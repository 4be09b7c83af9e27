"""Lasting proxies (``proxies:`` in config.yaml) in the daemon: opened at start, kept
in step with the file on reload (added opened, removed closed, changed reopened), a
port in use reported in status without stopping the rest, and refused by the API's
DELETE. Two daemons in-process on loopback TCP, a real TCP echo service, the real API
over its Unix socket."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

import pytest

import pairing_harness as harness
from peerup.app.api import ApiClient
from peerup.app.daemon import Daemon, client_for
from peerup.config import files, load
from peerup.config.schema import ProxyConfig, ServiceConfig
from peerup.core.errors import ApiError
from peerup.core.peer_id import PeerId

# The tests reload through the API or reload(), never by waiting for the watcher.
NO_WATCH_S = 3600.0


def make_node(base: Path, name: str) -> tuple[Path, PeerId]:
    """A node listening on loopback, with no relay (pairing_harness's)."""
    return harness.make_node(base, name, [], listen=["/ip4/127.0.0.1/tcp/0"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def echo_service(prefix: bytes) -> tuple[asyncio.Server, int]:
    """A TCP service that answers ``prefix`` and then echoes until EOF."""

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(prefix)
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
        w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1])


async def through(port: int, data: bytes) -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(data)
    w.write_eof()
    try:
        async with asyncio.timeout(10):
            return await r.read()
    finally:
        w.close()


async def refused(port: int) -> bool:
    try:
        _, w = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    w.close()
    return False


async def call(client: ApiClient, method: str, path: str) -> Any:
    return await asyncio.to_thread(client.call, method, path)


def config_proxies(daemon: Daemon) -> dict[str, dict[str, Any]]:
    """``status``'s proxies from config.yaml, by listen address."""
    return {
        p["listen"]: p for p in daemon.status()["proxies"] if p["source"] == "config"
    }


class Pair:
    """home (offering services over real TCP) and laptop (with lasting proxies)."""

    def __init__(self, tmp_path: Path) -> None:
        self.home_cfg, self.home_id = make_node(tmp_path, "home")
        self.lap_cfg, self.lap_id = make_node(tmp_path, "laptop")
        files.write_atomic(
            self.home_cfg.parent / "authorized_keys", f"{self.lap_id} # laptop\n"
        )
        load.set_name(self.lap_cfg, "home", self.home_id)
        self.servers: list[asyncio.Server] = []
        self.daemons: list[Daemon] = []

    async def add_service(self, name: str, prefix: bytes) -> None:
        server, port = await echo_service(prefix)
        self.servers.append(server)
        load.add_service(self.home_cfg, ServiceConfig(name, f"127.0.0.1:{port}"))

    async def start(self) -> tuple[Daemon, Daemon]:
        home = Daemon(load.load_node(self.home_cfg), watch_interval_s=NO_WATCH_S)
        await home.start()
        laptop = Daemon(load.load_node(self.lap_cfg), watch_interval_s=NO_WATCH_S)
        self.daemons = [home, laptop]
        await laptop.start()
        # No relay here: tell the laptop where home listens (a relay would otherwise).
        laptop.node.host.add_addrs(self.home_id, home.node.host.addrs)
        return home, laptop

    async def aclose(self) -> None:
        for d in self.daemons:
            await d.aclose()
        for s in self.servers:
            s.close()


def test_config_proxy_opens_at_start_and_carries_a_connection(tmp_path: Path) -> None:
    async def main() -> None:
        pair = Pair(tmp_path)
        await pair.add_service("say", b"home:")
        port = free_port()
        load.add_proxy(pair.lap_cfg, ProxyConfig("home", "say", port))
        _, laptop = await pair.start()
        try:
            listed = config_proxies(laptop)[f"127.0.0.1:{port}"]
            assert listed["error"] is None
            assert listed["peer"] == str(pair.home_id)
            assert await through(port, b"hello" * 1000) == b"home:" + b"hello" * 1000
            assert await through(port, b"again") == b"home:again"
            assert config_proxies(laptop)[f"127.0.0.1:{port}"]["connections"] == 2

            # The API's DELETE is for proxies it opened, not for config.yaml's.
            client = client_for(laptop.config)
            with pytest.raises(ApiError, match="this proxy is in config.yaml") as info:
                await call(client, "DELETE", f"/v1/connect/{listed['id']}")
            assert f"`peerup proxy remove {port}`" in str(info.value)
            assert await through(port, b"still") == b"home:still"
        finally:
            await pair.aclose()

    asyncio.run(main())


def test_reload_opens_added_closes_removed_and_reopens_changed(tmp_path: Path) -> None:
    async def main() -> None:
        pair = Pair(tmp_path)
        await pair.add_service("say", b"one:")
        await pair.add_service("other", b"two:")
        first, second = free_port(), free_port()
        load.add_proxy(pair.lap_cfg, ProxyConfig("home", "say", first))
        _, laptop = await pair.start()
        client = client_for(laptop.config)
        try:
            assert await through(first, b"a") == b"one:a"
            assert await refused(second)

            # Added: POST /v1/reload answers once the new port listens.
            load.add_proxy(pair.lap_cfg, ProxyConfig(str(pair.home_id), "say", second))
            assert await call(client, "POST", "/v1/reload") == {"reloaded": True}
            assert await through(second, b"b") == b"one:b"
            assert set(config_proxies(laptop)) == {
                f"127.0.0.1:{first}",
                f"127.0.0.1:{second}",
            }

            # Removed: the port is closed, the other one stays as it was.
            kept_id = config_proxies(laptop)[f"127.0.0.1:{second}"]["id"]
            load.remove_proxy(pair.lap_cfg, first)
            laptop.reload()
            await laptop.settle_proxies()
            assert await refused(first)
            assert set(config_proxies(laptop)) == {f"127.0.0.1:{second}"}
            assert config_proxies(laptop)[f"127.0.0.1:{second}"]["id"] == kept_id
            assert await through(second, b"c") == b"one:c"

            # Changed (another service on the same port): reopened, same ID.
            load.remove_proxy(pair.lap_cfg, second)
            load.add_proxy(pair.lap_cfg, ProxyConfig("home", "other", second))
            await call(client, "POST", "/v1/reload")
            assert await through(second, b"d") == b"two:d"
            changed = config_proxies(laptop)[f"127.0.0.1:{second}"]
            assert (changed["id"], changed["service"]) == (kept_id, "other")
        finally:
            await pair.aclose()

    asyncio.run(main())


def test_port_in_use_is_reported_in_status_and_the_rest_still_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        pair = Pair(tmp_path)
        await pair.add_service("say", b"home:")
        busy_sock = socket.socket()
        busy_sock.bind(("127.0.0.1", 0))
        busy_sock.listen()
        busy = int(busy_sock.getsockname()[1])
        fine = free_port()
        load.add_proxy(pair.lap_cfg, ProxyConfig("home", "say", busy))
        load.add_proxy(pair.lap_cfg, ProxyConfig("home", "say", fine))
        with caplog.at_level(logging.INFO, logger="peerup.app.daemon"):
            _, laptop = await pair.start()  # does not fail on the busy port
        try:
            status = config_proxies(laptop)
            error = f"cannot listen on 127.0.0.1:{busy}: Address already in use"
            assert status[f"127.0.0.1:{busy}"]["error"] == error
            assert status[f"127.0.0.1:{fine}"]["error"] is None
            assert any(
                r.levelno == logging.ERROR and error in r.getMessage()
                for r in caplog.records
            )
            assert await through(fine, b"ok") == b"home:ok"
            live = await call(client_for(laptop.config), "GET", "/v1/status")
            assert {p["listen"]: p["error"] for p in live["proxies"]} == {
                f"127.0.0.1:{busy}": error,
                f"127.0.0.1:{fine}": None,
            }

            # Once the port is free, the next reload opens it.
            busy_sock.close()
            laptop.reload()
            await laptop.settle_proxies()
            assert config_proxies(laptop)[f"127.0.0.1:{busy}"]["error"] is None
            assert await through(busy, b"now") == b"home:now"
        finally:
            busy_sock.close()
            await pair.aclose()

    asyncio.run(main())


def test_command_proxies_are_marked_and_still_closed_by_delete(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        pair = Pair(tmp_path)
        await pair.add_service("say", b"home:")
        _, laptop = await pair.start()
        client = client_for(laptop.config)
        try:
            body = {"peer": "home", "service": "say", "port": 0}
            opened = await asyncio.to_thread(client.call, "POST", "/v1/connect", body)
            port = int(opened["listen"].rsplit(":", 1)[1])
            [listed] = laptop.status()["proxies"]
            assert (listed["source"], listed["error"]) == ("command", None)
            assert await through(port, b"x") == b"home:x"
            await call(client, "DELETE", f"/v1/connect/{opened['id']}")
            assert laptop.status()["proxies"] == []
            assert await refused(port)
        finally:
            await pair.aclose()

    asyncio.run(main())
