"""The relay's allowlist (relay_authorized_keys): enforced at the handshake, and
re-read when the file changes, so authorizing a peer needs no restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from peerup.app.allowlist import Allowlist
from peerup.app.relay_server import RelayServer
from peerup.config import files, load
from peerup.core.errors import ConnectionClosed, Error
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.peer_id import PeerId
from peerup.net.host import Host
from peerup.net.relay_client import RelayClient


def write_relay(tmp_path: Path) -> Path:
    path = tmp_path / "relay-server.yaml"
    files.write_atomic(path, load.render_relay_config(["/ip4/127.0.0.1/tcp/0"]))
    config = load.load_relay(path)
    files.write_atomic(config.identity_key, Ed25519PrivateKey.generate().to_protobuf())
    files.write_atomic(config.authorized_keys, "# relay allowlist\n")
    return path


def test_unlisted_peer_cannot_reserve_until_added_to_the_file(tmp_path: Path) -> None:
    async def main() -> None:
        config = load.load_relay(write_relay(tmp_path))
        assert config.enforce_allowlist
        relay = RelayServer(config)
        relay_addr = (await relay.start())[0]
        key = Ed25519PrivateKey.generate()
        peer = PeerId.from_public_key(key.public_key)
        client_host = Host(key)
        client = RelayClient(client_host)

        with pytest.raises((Error, ConnectionClosed)):
            await client.reserve(relay_addr)
        assert not relay.service.book.slots

        # Another process (`peerup relay authorize`) edits the file; no restart.
        assert Allowlist(config.authorized_keys).add(peer, comment="laptop")
        rsvp = await client.reserve(relay_addr)
        assert rsvp.relay == relay.host.peer_id
        assert peer in relay.service.book.slots
        await client_host.aclose()
        await relay.aclose()

    asyncio.run(main())


def test_unlisted_dialer_cannot_open_a_circuit(tmp_path: Path) -> None:
    async def main() -> None:
        config = load.load_relay(write_relay(tmp_path))
        relay = RelayServer(config)
        relay_addr = (await relay.start())[0]
        listener_key, dialer_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        allow = Allowlist(config.authorized_keys)
        allow.add(PeerId.from_public_key(listener_key.public_key))
        listener, dialer = Host(listener_key), Host(dialer_key)
        circuit = await RelayClient(listener).reserve_and_keep(relay_addr)
        RelayClient(dialer)
        with pytest.raises((Error, ConnectionClosed)):
            conn = await dialer.connect(circuit)
            await dialer.ping(conn)
        allow.add(PeerId.from_public_key(dialer_key.public_key))
        conn = await dialer.connect(circuit)
        assert conn.is_relayed
        assert (await dialer.ping(conn))[0] < 1.0
        for h in (dialer, listener):
            await h.aclose()
        await relay.aclose()

    asyncio.run(main())
