"""The Go original's files load as they are (config/go_original.py): its
``config.yaml`` and ``relay-server.yaml``, written here from its documented schema
(configs/*.sample.yaml and internal/config/config.go of satindergrewal/peer-up), with
what has no meaning here ignored and said; ``peerup config migrate`` rewrites them in
this format; its ``identity.key`` and ``authorized_keys`` are read as they are."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pairing_harness import run_peerup
from peerup.app.allowlist import Allowlist
from peerup.config import files, identity_store, load
from peerup.core.errors import ConfigError
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.peer_id import PeerId

RELAY_ID = "12D3KooWHb3cLbgUBNEJJ5pXmTVAmdjMxjab4XQ5XQhycYK5PY1t"
HOME_ID = "12D3KooWLTsTfZgEr5sTLUWjEqs7827ZnHvHA19khsLTfEUJ6Mty"

GO_NODE = f"""\
# peer-up Unified Configuration
version: 1

identity:
  key_file: "identity.key"

network:
  listen_addresses:
    - "/ip4/0.0.0.0/tcp/9100"
    - "/ip4/0.0.0.0/udp/9100/quic-v1"
    - "/ip6/::/tcp/9100"
  force_private_reachability: true

relay:
  addresses:
    - "/ip4/203.0.113.10/tcp/7777/p2p/{RELAY_ID}"
  reservation_interval: "2m"

discovery:
  rendezvous: "peerup-default-network"
  bootstrap_peers: []

security:
  authorized_keys_file: "authorized_keys"
  enable_connection_gating: true

protocols:
  ping_pong:
    enabled: true
    id: "/pingpong/1.0.0"

services:
  ssh:
    enabled: true
    local_address: "localhost:22"
  plex:
    enabled: false
    local_address: "localhost:32400"

names:
  home: "{HOME_ID}"
"""

GO_RELAY = """\
# Relay Server Configuration
version: 1

identity:
  key_file: "relay_node.key"

network:
  listen_addresses:
    - "/ip4/0.0.0.0/tcp/7777"
    - "/ip6/::/tcp/7777"
    - "/ip4/0.0.0.0/tcp/443/ws"

security:
  authorized_keys_file: "relay_authorized_keys"
  enable_connection_gating: true

resources:
  max_reservations: 128
  max_circuits: 16
  buffer_size: 2048
  max_reservations_per_ip: 8
  max_reservations_per_asn: 32
  reservation_ttl: "1h"
  session_duration: "10m"
  session_data_limit: "64MB"

health:
  enabled: true
  listen_address: "127.0.0.1:8080"
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    files.write_atomic(path, text)
    return path


def test_the_go_originals_node_config_loads_as_it_is(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    path = write(tmp_path, "config.yaml", GO_NODE)
    config = load.load_node(path)
    assert config.identity_key == tmp_path / "identity.key"
    assert config.listen == ("/ip4/0.0.0.0/tcp/9100", "/ip6/::/tcp/9100")
    assert config.relays == (f"/ip4/203.0.113.10/tcp/7777/p2p/{RELAY_ID}",)
    assert config.authorized_keys == tmp_path / "authorized_keys"
    assert config.enforce_allowlist is True
    assert [(s.name, s.local_address, s.enabled) for s in config.services] == [
        ("ssh", "localhost:22", True), ("plex", "localhost:32400", False),
    ]  # fmt: skip
    assert config.names == (("home", PeerId.from_string(HOME_ID)),)
    said = caplog.text
    assert "Go original's format" in said
    for ignored in ("quic-v1", "force_private_reachability", "discovery", "protocols"):
        assert ignored in said, ignored


def test_the_go_originals_relay_config_loads_as_it_is(tmp_path: Path) -> None:
    config = load.load_relay(write(tmp_path, "relay-server.yaml", GO_RELAY))
    assert config.identity_key == tmp_path / "relay_node.key"
    assert config.listen == ("/ip4/0.0.0.0/tcp/7777", "/ip6/::/tcp/7777")
    assert config.enforce_allowlist is True
    r = config.resources
    assert (r.max_reservations, r.max_circuits, r.max_reservations_per_ip) == (128, 16, 8)
    assert (r.reservation_ttl_s, r.circuit_duration_s) == (3600, 600)
    assert r.circuit_data_bytes == 64_000_000
    assert config.telemetry.metrics_enabled and config.telemetry.metrics_port == 8080


def test_a_bad_go_duration_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "relay-server.yaml", GO_RELAY.replace('"10m"', '"ten"'))
    with pytest.raises(ConfigError, match="not a duration"):
        load.load_relay(path)


def test_editing_asks_for_a_migration_first(tmp_path: Path) -> None:
    path = write(tmp_path, "config.yaml", GO_NODE)
    with pytest.raises(ConfigError, match="Go original's format") as info:
        load.set_name(path, "nas", PeerId.from_string(HOME_ID))
    assert "config migrate" in (info.value.hint or "")
    assert path.read_text() == GO_NODE


peerup = run_peerup


def test_config_migrate_rewrites_both_files(tmp_path: Path) -> None:
    node = write(tmp_path, "config.yaml", GO_NODE)
    before = load.load_node(node)
    done = peerup("config", "migrate", "--config", node)
    assert done.returncode == 0, done.stderr
    assert "ignored: discovery" in done.stdout
    assert (tmp_path / "config.yaml.go-original").read_text() == GO_NODE
    text = node.read_text()
    assert text.startswith("# Migrated by `peerup config migrate`")
    assert "identity_key: identity.key" in text
    assert load.load_node(node) == before
    # Now ours: it can be edited.
    load.set_name(node, "nas", PeerId.from_string(RELAY_ID))

    relay = write(tmp_path, "relay-server.yaml", GO_RELAY)
    before_relay = load.load_relay(relay)
    done = peerup("config", "migrate", "--relay", relay)
    assert done.returncode == 0, done.stderr
    assert load.load_relay(relay) == before_relay
    again = peerup("config", "migrate", "--relay", relay)
    assert again.returncode == 1 and "already in this project's format" in again.stderr


def test_its_identity_key_and_authorized_keys_are_read_as_they_are(
    tmp_path: Path,
) -> None:
    """go-libp2p's crypto.MarshalPrivateKey (the Go original's identity.key) is the
    libp2p PrivateKey protobuf; its authorized_keys is a peer ID per line with
    `#` comments."""
    key = Ed25519PrivateKey.generate()
    files.write_atomic(tmp_path / "identity.key", key.to_protobuf())
    assert identity_store.load(tmp_path / "identity.key").public_key == key.public_key
    peer = PeerId.from_public_key(key.public_key)
    files.write_atomic(tmp_path / "authorized_keys", f"# home\n{peer}  # laptop\n\n")
    allowlist = Allowlist(tmp_path / "authorized_keys")
    allowlist.load()
    assert [e.peer_id for e in allowlist.entries()] == [peer]
