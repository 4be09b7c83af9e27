"""The daemon in-process: its local API (cookie, status, auth applied live, dynamic
proxies, ping) and config reload (a service added to config.yaml is exposed without a
restart). Real loopback TCP, a real Unix socket; no subprocesses."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from peerup.app.api import ApiClient
from peerup.app.daemon import Daemon, client_for
from peerup.config import files, load
from peerup.config.schema import ServiceConfig
from peerup.core.errors import ApiError
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.peer_id import PeerId


def make_node(base: Path, name: str) -> tuple[Path, PeerId]:
    d = base / name
    key = Ed25519PrivateKey.generate()
    files.write_atomic(d / "identity.key", key.to_protobuf())
    files.write_atomic(d / "authorized_keys", "# test\n")
    text = load.render_node_config(
        identity_key="identity.key", listen=["/ip4/127.0.0.1/tcp/0"], relays=[],
        network_name=None,
    )
    files.write_atomic(d / "config.yaml", text)
    return d / "config.yaml", PeerId.from_public_key(key.public_key)


async def serve_once(reply: bytes) -> int:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        data = await r.read(100)
        w.write(reply + data)
        await w.drain()
        w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return int(server.sockets[0].getsockname()[1])


async def call(client: ApiClient, method: str, path: str, body: dict | None = None) -> dict:
    return await asyncio.to_thread(client.call, method, path, body)


async def expose_web_and_proxy(
    home: Daemon, home_cfg: Path, laptop: Daemon
) -> tuple[dict, int]:
    """Add service "web" to home's config.yaml (exposed by the reload on change),
    then ask the laptop's daemon for a proxy to it; the proxy and its local port."""
    port = await serve_once(b"svc:")
    load.add_service(home_cfg, ServiceConfig("web", f"127.0.0.1:{port}"))
    async with asyncio.timeout(5):
        while "web" not in home.node.services:
            await asyncio.sleep(0.02)
    home_addr = home.node.host.addrs_with_id()[0]
    proxy = await call(client_for(laptop.config), "POST", "/v1/connect",
                       {"peer": str(home_addr), "service": "web", "port": 0})
    return proxy, int(proxy["listen"].rsplit(":", 1)[1])


def test_api_status_auth_connect_and_reload(tmp_path: Path) -> None:
    async def main() -> None:
        home_cfg, home_id = make_node(tmp_path, "h")
        lap_cfg, lap_id = make_node(tmp_path, "l")
        home = Daemon(load.load_node(home_cfg), watch_interval_s=0.05)
        laptop = Daemon(load.load_node(lap_cfg), watch_interval_s=0.05)
        await home.start()
        await laptop.start()
        hc, lc = client_for(home.config), client_for(laptop.config)
        sock, cookie = hc.socket_path, hc.cookie_path
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(cookie).st_mode) == 0o600

        status = await call(hc, "GET", "/v1/status")
        assert status["peer_id"] == str(home_id)
        bad = ApiClient(sock, tmp_path / "wrong-cookie")
        files.write_atomic(tmp_path / "wrong-cookie", "0" * 64)
        with pytest.raises(ApiError, match="cookie"):
            await asyncio.to_thread(bad.call, "GET", "/v1/status")

        # A service added to config.yaml while running is exposed (reload on change).
        # Not yet authorized: the proxied connection is refused by home's gate.
        proxy, p_port = await expose_web_and_proxy(home, home_cfg, laptop)
        r, w = await asyncio.open_connection("127.0.0.1", p_port)
        w.write(b"x")
        assert await r.read() == b""
        w.close()

        # auth add through the API applies at once, no restart.
        added = await call(hc, "POST", "/v1/auth", {"peer_id": str(lap_id), "comment": "lap"})
        assert added["added"] is True
        r, w = await asyncio.open_connection("127.0.0.1", p_port)
        w.write(b"hello")
        assert await r.read() == b"svc:hello"
        w.close()

        ping = await call(lc, "POST", "/v1/ping", {"peer": str(home_id), "count": 2,
                                                  "interval": 0})
        assert ping["received"] == 2 and ping["path"] == "direct"
        peers = (await call(lc, "GET", "/v1/peers"))["peers"]
        assert [p["path"] for p in peers if p["peer_id"] == str(home_id)] == ["direct"]
        entries = (await call(hc, "GET", "/v1/auth"))["entries"]
        assert [e["peer_id"] for e in entries] == [str(lap_id)]

        # Removing the authorization closes the laptop's connections.
        await call(hc, "DELETE", f"/v1/auth/{lap_id}")
        async with asyncio.timeout(5):
            while home.node.host.connection_to(lap_id) is not None:
                await asyncio.sleep(0.02)

        await call(lc, "DELETE", f"/v1/connect/{proxy['id']}")
        await call(hc, "POST", "/v1/shutdown")
        await home._stop.wait()
        await home.aclose()
        await laptop.aclose()
        assert not sock.exists() and not cookie.exists()

    asyncio.run(main())


def test_reload_applies_enforcement_and_another_authorized_keys_file(
    tmp_path: Path,
) -> None:
    """security.enforce_allowlist and security.authorized_keys changed in config.yaml
    take effect on reload: turning enforcement on closes the connections of peers not
    listed; another file is used once it loads, and a broken one is not switched to."""

    async def main() -> None:
        home_cfg, _ = make_node(tmp_path, "h")
        lap_cfg, lap_id = make_node(tmp_path, "l")
        text = home_cfg.read_text()
        files.write_atomic(
            home_cfg,
            text.replace("enforce_allowlist: true", "enforce_allowlist: false"),
        )
        home = Daemon(load.load_node(home_cfg), watch_interval_s=0.05)
        laptop = Daemon(load.load_node(lap_cfg), watch_interval_s=0.05)
        await home.start()
        await laptop.start()
        _, p_port = await expose_web_and_proxy(home, home_cfg, laptop)

        async def through_proxy() -> bytes:
            r, w = await asyncio.open_connection("127.0.0.1", p_port)
            w.write(b"hi")
            try:
                return await r.read()
            finally:
                w.close()

        assert await through_proxy() == b"svc:hi"  # not enforced: anyone may use it

        def edit(old: str, new: str) -> None:
            files.write_atomic(home_cfg, home_cfg.read_text().replace(old, new))

        edit("enforce_allowlist: false", "enforce_allowlist: true")
        async with asyncio.timeout(5):
            while home.node.host.connection_to(lap_id) is not None:
                await asyncio.sleep(0.02)  # closed: not in authorized_keys
        assert home.config.enforce_allowlist
        assert await through_proxy() == b""

        files.write_atomic(tmp_path / "h" / "other_keys", f"{lap_id} # lap\n")
        edit("authorized_keys: authorized_keys", "authorized_keys: other_keys")
        async with asyncio.timeout(5):
            while home.allowlist.path.name != "other_keys":
                await asyncio.sleep(0.02)
        assert await through_proxy() == b"svc:hi"

        files.write_atomic(tmp_path / "h" / "broken_keys", "not-a-peer-id\n")
        edit("authorized_keys: other_keys", "authorized_keys: broken_keys")
        edited = home_cfg.stat().st_mtime_ns
        async with asyncio.timeout(5):
            while home._mtime != edited:  # the watcher has reloaded the new config
                await asyncio.sleep(0.02)
        assert home.allowlist.path.name == "other_keys"
        assert home.config.authorized_keys.name == "other_keys"

        await home.aclose()
        await laptop.aclose()

    asyncio.run(main())
