"""Direct first: two daemons that reach each other through a relay move to a direct
connection by themselves, and a proxied session started relayed survives the move.

Two daemons in-process and a relay, all on loopback, so the daemons can reach each
other directly: the laptop knows home only by its peer ID (so its first connection
goes through the relay); home learns the laptop's address from identify over the
relayed connection and dials it. Then new proxied connections go direct within 2 s,
a long TCP echo session opened before keeps echoing on the relayed connection until
it ends, and ``status`` says which connection new streams use.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from peerup.app.daemon import Daemon, client_for
from peerup.app.relay_service import RelayResources, RelayService
from peerup.config import files, load
from peerup.config.schema import ServiceConfig
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.multiaddr import Multiaddr
from peerup.core.peer_id import PeerId
from peerup.net.host import Host

OPEN = RelayResources.for_interop(
    unlimited=True, limit_duration_s=None, limit_data_bytes=None
)


def write_node(base: Path, relay: Multiaddr) -> tuple[Path, PeerId]:
    key = Ed25519PrivateKey.generate()
    files.write_atomic(base / "identity.key", key.to_protobuf())
    files.write_atomic(base / "authorized_keys", "# test\n")
    text = load.render_node_config(
        identity_key="identity.key",
        listen=["/ip4/127.0.0.1/tcp/0"],
        relays=[str(relay)],
        network_name=None,
    )
    files.write_atomic(base / "config.yaml", text)
    return base / "config.yaml", PeerId.from_public_key(key.public_key)


async def echo_server() -> tuple[asyncio.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1])


async def call(daemon: Daemon, method: str, path: str, body: dict | None = None) -> Any:
    return await asyncio.to_thread(client_for(daemon.config).call, method, path, body)


async def echo(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
) -> bytes:
    writer.write(data)
    await writer.drain()
    return await reader.readexactly(len(data))


def test_proxy_starts_relayed_moves_direct_and_the_open_session_survives(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        relay = Host(Ed25519PrivateKey.generate())
        relay_addr = (await relay.listen("/ip4/127.0.0.1/tcp/0"))[0].with_peer_id(
            relay.peer_id
        )
        RelayService(relay, OPEN).start()
        home_cfg, home_id = write_node(tmp_path / "h", relay_addr)
        lap_cfg, lap_id = write_node(tmp_path / "l", relay_addr)
        files.write_atomic(tmp_path / "h" / "authorized_keys", f"{lap_id} # laptop\n")
        files.write_atomic(tmp_path / "l" / "authorized_keys", f"{home_id} # home\n")
        server, port = await echo_server()
        load.add_service(home_cfg, ServiceConfig("talk", f"127.0.0.1:{port}"))
        home = Daemon(load.load_node(home_cfg), watch_interval_s=0.05)
        laptop = Daemon(load.load_node(lap_cfg), watch_interval_s=0.05)
        await home.start()
        await laptop.start()
        await home.node.relay_client.wait_reserved(relay_addr)

        proxy = await call(
            laptop, "POST", "/v1/connect", {"peer": str(home_id), "service": "talk"}
        )
        p_port = int(proxy["listen"].rsplit(":", 1)[1])
        # The long session: opened while only the relay path exists.
        r1, w1 = await asyncio.open_connection("127.0.0.1", p_port)
        assert await echo(r1, w1, b"first") == b"first"
        host = laptop.node.host
        [relayed] = host.connections[home_id]
        assert relayed.is_relayed
        relayed_at = time.perf_counter()

        async with asyncio.timeout(2):
            while (conn := host.connection_to(home_id)) is None or conn.is_relayed:
                await asyncio.sleep(0.01)
        to_direct = time.perf_counter() - relayed_at
        assert to_direct < 2, to_direct

        # A new proxied connection goes direct...
        r2, w2 = await asyncio.open_connection("127.0.0.1", p_port)
        assert await echo(r2, w2, b"second") == b"second"
        # ...while the first keeps echoing through the relay.
        for i in range(20):
            payload = f"still {i}".encode() * 100
            assert await echo(r1, w1, payload) == payload
        assert relayed.is_open and len(relayed.streams) == 1

        peers = (await call(laptop, "GET", "/v1/peers"))["peers"]
        mine = [p for p in peers if p["peer_id"] == str(home_id)]
        assert sorted(p["path"] for p in mine) == ["direct", "relayed"]
        [in_use] = [p for p in mine if p["new_streams"]]
        [relayed_entry] = [p for p in mine if p["path"] == "relayed"]
        assert in_use["path"] == "direct" and relayed_entry["streams"] == 1
        home_peers = (await call(home, "GET", "/v1/peers"))["peers"]
        upgrades = {
            p["upgrade"]["line"] for p in home_peers if p["peer_id"] == str(lap_id)
        }
        assert len(upgrades) == 1 and upgrades.pop().startswith("direct after")
        status = await call(laptop, "GET", "/v1/status")
        assert any(p["observed_addr"] for p in status["peers"] if p["path"] == "direct")

        for w in (w1, w2):
            w.write_eof()
        for r in (r1, r2):
            assert await r.read() == b""
        for w in (w1, w2):
            w.close()
        stats = laptop.proxies[proxy["id"]].stats
        async with asyncio.timeout(5):
            while stats.connections < 2:
                await asyncio.sleep(0.01)
        assert stats.failures == 0

        await laptop.aclose()
        await home.aclose()
        await relay.aclose()
        server.close()

    asyncio.run(main())
