"""What the logs say: who was cut off and why, and times as ISO 8601 UTC.

When a peer's authorization is revoked (removed from authorized_keys, or expired), the
node closes its sessions and logs one INFO line naming the peer and the reason. Relay
reservations are logged with their end as ``2026-01-31T12:00:00Z``, not a raw epoch.
Over loopback TCP, with real hosts.
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from peerup.app.allowlist import Allowlist, close_revoked, cut_off
from peerup.app.relay_service import RelayResources, RelayService
from peerup.core.keys import Ed25519PrivateKey
from peerup.net.host import Host
from peerup.net.relay_client import RelayClient

ISO_UTC = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z"


async def connected(server: Host, client: Host) -> None:
    bound = await server.listen("/ip4/127.0.0.1/tcp/0")
    await client.connect(bound[0].with_peer_id(server.peer_id))
    async with asyncio.timeout(5):
        while client.peer_id not in server.connections:
            await asyncio.sleep(0.005)


def test_revoked_peer_is_cut_off_with_one_info_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keys = tmp_path / "authorized_keys"
    allowlist = Allowlist(keys)

    async def main() -> tuple[int, str]:
        server = Host(Ed25519PrivateKey.generate(), gate=allowlist.gate())
        client = Host(Ed25519PrivateKey.generate())
        allowlist.add(client.peer_id, comment="laptop")
        kept = Host(Ed25519PrivateKey.generate())
        allowlist.add(kept.peer_id)
        try:
            await connected(server, client)
            await connected(server, kept)
            allowlist.remove(client.peer_id)
            with caplog.at_level(logging.INFO, logger="peerup.app.allowlist"):
                return close_revoked(server, allowlist), str(client.peer_id)
        finally:
            for host in (client, kept, server):
                await host.aclose()

    closed, peer = asyncio.run(main())

    assert closed == 1
    lines = [r for r in caplog.records if r.name == "peerup.app.allowlist"]
    assert len(lines) == 1, caplog.text
    assert lines[0].levelno == logging.INFO
    message = lines[0].getMessage()
    assert message == (
        f"authorization revoked for {peer} (not in authorized_keys): "
        "closed 1 connection(s)"
    )


def test_expired_peer_is_logged_with_the_expiry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    allowlist = Allowlist(tmp_path / "authorized_keys")

    async def main() -> str:
        server = Host(Ed25519PrivateKey.generate(), gate=allowlist.gate())
        client = Host(Ed25519PrivateKey.generate())
        soon = datetime.now(UTC) + timedelta(seconds=2)
        allowlist.add(client.peer_id, expires=soon)
        try:
            await connected(server, client)
            await asyncio.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()))
            with caplog.at_level(logging.INFO, logger="peerup.app.allowlist"):
                assert close_revoked(server, allowlist) == 1
            return str(client.peer_id)
        finally:
            await client.aclose()
            await server.aclose()

    peer = asyncio.run(main())

    assert peer in caplog.text
    assert re.search(rf"authorization expired on {ISO_UTC}", caplog.text), caplog.text


def test_cut_off_names_the_peer_and_the_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> tuple[int, int, str]:
        server = Host(Ed25519PrivateKey.generate())
        client = Host(Ed25519PrivateKey.generate())
        try:
            await connected(server, client)
            with caplog.at_level(logging.INFO, logger="peerup.app.allowlist"):
                none = cut_off(server, Host(Ed25519PrivateKey.generate()).peer_id, "x")
                closed = cut_off(server, client.peer_id, "removed by `auth remove`")
            return none, closed, str(client.peer_id)
        finally:
            await client.aclose()
            await server.aclose()

    none, closed, peer = asyncio.run(main())

    assert (none, closed) == (0, 1)
    records = [
        r.getMessage() for r in caplog.records if r.name == "peerup.app.allowlist"
    ]
    assert records == [
        f"authorization revoked for {peer} (removed by `auth remove`): "
        "closed 1 connection(s)"
    ]


def test_reservation_logs_show_iso_times_not_epochs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        relay = Host(Ed25519PrivateKey.generate())
        bound = await relay.listen("/ip4/127.0.0.1/tcp/0")
        RelayService(relay, RelayResources()).start()
        listener = Host(Ed25519PrivateKey.generate())
        try:
            await RelayClient(listener).reserve_and_keep(
                bound[0].with_peer_id(relay.peer_id)
            )
        finally:
            await listener.aclose()
            await relay.aclose()

    with caplog.at_level(logging.INFO):
        asyncio.run(main())

    client = [
        r.getMessage() for r in caplog.records if r.name == "peerup.net.relay_client"
    ]
    server = [
        r.getMessage() for r in caplog.records if r.name == "peerup.app.relay_service"
    ]
    reserved = [m for m in client if m.startswith("reserved on relay")]
    granted = [m for m in server if m.startswith("reservation ")]
    assert reserved and re.search(rf" until {ISO_UTC}$", reserved[0]), client
    assert granted and re.search(rf"\(expires {ISO_UTC}\)$", granted[0]), server
    for message in reserved + granted:
        assert not re.search(r"\b\d{10}\b", message), message
