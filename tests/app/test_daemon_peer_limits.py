"""Per-peer limits set in ``config.yaml`` (``limits:``) reach a running daemon, at
start and on a live reload, and a bad value is a config error with file and line.

Two daemons in-process over loopback TCP; the tunnels are real TCP clients through
the laptop's proxy to an echo service on home.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

import pairing_harness as harness
from peerup.app.allowlist import Allowlist
from peerup.app.daemon import Daemon
from peerup.config import files, load
from peerup.config.schema import NodeLimitsConfig, ServiceConfig
from peerup.core.errors import ConfigError

Tunnel = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def echoes(port: int) -> Tunnel | None:
    """A tunnel that carried one round trip, or None when it was refused."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"ping")
    try:
        async with asyncio.timeout(5):
            if await reader.readexactly(4) == b"ping":
                return reader, writer
    except (asyncio.IncompleteReadError, ConnectionResetError):
        pass
    writer.close()
    return None


def set_limits(config: Path, text: str) -> None:
    body = config.read_text().rstrip("\n") + "\n" + text
    files.write_atomic(config, body)


def test_service_connection_limit_from_config_and_live_reload(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="peerup")
    listen = ["/ip4/127.0.0.1/tcp/0"]
    home_cfg, home_id = harness.make_node(tmp_path, "home", [], listen=listen)
    lap_cfg, lap_id = harness.make_node(tmp_path, "laptop", [], listen=listen)
    Allowlist(home_cfg.parent / "authorized_keys").add(lap_id)
    Allowlist(lap_cfg.parent / "authorized_keys").add(home_id)
    set_limits(home_cfg, "limits:\n  max_service_connections_per_peer: 2\n")

    async def main() -> None:
        _, echo_port = await harness.echo_service()
        load.add_service(home_cfg, ServiceConfig("web", f"127.0.0.1:{echo_port}"))
        home = Daemon(load.load_node(home_cfg))
        laptop = Daemon(load.load_node(lap_cfg))
        await home.start()
        await laptop.start()
        try:
            assert home.node.max_service_connections_per_peer == 2
            laptop.node.host.add_addrs(home_id, home.node.host.listen_addrs)
            server, _ = await laptop.node.start_proxy(home_id, "web", 0)
            port = server.sockets[0].getsockname()[1]
            open_ = [await echoes(port), await echoes(port)]
            assert all(open_)
            assert await echoes(port) is None  # the third is over the limit
            # Raised in the file: the daemon applies it without a restart.
            text = home_cfg.read_text().replace(
                "max_service_connections_per_peer: 2",
                "max_service_connections_per_peer: 3",
            )
            files.write_atomic(home_cfg, text)
            async with asyncio.timeout(5):
                while home.node.max_service_connections_per_peer != 3:
                    await asyncio.sleep(0.05)
            assert await echoes(port) is not None
        finally:
            await laptop.aclose()
            await home.aclose()

    asyncio.run(main())
    assert any(
        "service connections open, the most one peer may have" in r.getMessage()
        for r in caplog.records
    ), caplog.text
    assert any("3 service connections per peer" in r.getMessage() for r in caplog.records)


def test_connection_and_stream_limits_reach_the_host(tmp_path: Path) -> None:
    cfg, _ = harness.make_node(tmp_path, "home", [], listen=["/ip4/127.0.0.1/tcp/0"])
    set_limits(cfg, "limits:\n  max_connections_per_peer: 2\n  max_streams_per_peer: 0\n")
    config = load.load_node(cfg)
    assert config.limits == NodeLimitsConfig(2, 0, 512)
    daemon = Daemon(config)
    assert daemon.node.host.config.max_connections_per_peer == 2
    assert daemon.node.host.config.max_streams_per_peer == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("limits:\n  max_streams_per_peer: -1\n", "must not be negative"),
        ("limits:\n  max_streams_per_peer: many\n", "must be a whole number"),
        ("limits:\n  max_stream_per_peer: 5\n", "unknown key 'max_stream_per_peer'"),
    ],
)
def test_a_bad_limit_names_the_file_and_line(
    tmp_path: Path, text: str, message: str
) -> None:
    cfg, _ = harness.make_node(tmp_path, "home", [])
    set_limits(cfg, text)
    line = len(cfg.read_text().splitlines())  # the limit is the file's last line
    with pytest.raises(ConfigError, match=message) as info:
        load.load_node(cfg)
    shown = str(info.value)
    assert str(cfg) in shown and f":{line}" in shown, shown
    if "unknown" in message:
        assert "max_streams_per_peer" in (info.value.hint or "")
