"""The Go original's command names, on what exists here: ``daemon status|stop|
services|peers|paths|…``, ``relay add|list|remove`` (a node's relays), ``relay
version``, ``relay config validate``, ``auth add --file``. Real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pairing_harness as harness
from peerup.app.allowlist import Allowlist
from peerup.config import load
from peerup.config.schema import ServiceConfig
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.peer_id import PeerId

RELAY = "/ip4/203.0.113.10/tcp/7777/p2p/12D3KooWHb3cLbgUBNEJJ5pXmTVAmdjMxjab4XQ5XQhycYK5PY1t"


peerup = harness.run_peerup


def new_peer() -> PeerId:
    return PeerId.from_public_key(Ed25519PrivateKey.generate().public_key)


def test_relay_add_list_remove_edit_the_nodes_relays(tmp_path: Path) -> None:
    cfg, _ = harness.make_node(tmp_path, "home", [])
    added = peerup("relay", "add", RELAY, "--config", cfg)
    assert added.returncode == 0, added.stderr
    assert load.load_node(cfg).relays == (RELAY,)
    assert "already listed" in peerup("relay", "add", RELAY, "--config", cfg).stdout
    bad = peerup("relay", "add", "/ip4/203.0.113.10/tcp/7777", "--config", cfg)
    assert bad.returncode != 0 and "/p2p/" in bad.stderr
    listed = peerup("relay", "list", "--json", "--config", cfg)
    assert json.loads(listed.stdout) == [
        {"relay": RELAY, "reserved": None, "last_error": None}
    ]
    relay_id = RELAY.rsplit("/", 1)[1]
    assert peerup("relay", "remove", relay_id, "--config", cfg).returncode == 0
    assert load.load_node(cfg).relays == ()
    missing = peerup("relay", "remove", relay_id, "--config", cfg)
    assert missing.returncode == 1 and "relay list" in missing.stderr


def test_relay_version_and_config_validate(tmp_path: Path) -> None:
    assert peerup("relay", "version").stdout.startswith("peerup ")
    relay_cfg = harness.write_relay(tmp_path)
    done = peerup("relay", "config", "validate", "--config", relay_cfg)
    assert done.returncode == 0, done.stderr
    assert "ok" in done.stdout and "allowlist enforced" in done.stdout
    relay_cfg.write_text(relay_cfg.read_text() + "resources: {max_circuits: lots}\n")
    broken = peerup("relay", "config", "validate", "--config", relay_cfg)
    assert broken.returncode != 0 and "max_circuits" in broken.stderr


def test_auth_add_file_adds_every_peer_once(tmp_path: Path) -> None:
    cfg, _ = harness.make_node(tmp_path, "home", [])
    a, b = new_peer(), new_peer()
    other = tmp_path / "their_authorized_keys"
    other.write_text(f"# theirs\n{a} verified=invite # laptop\n{b}\n")
    Allowlist(cfg.parent / "authorized_keys").add(b)
    done = peerup("auth", "add", "--file", other, "--config", cfg)
    assert done.returncode == 0, done.stderr
    assert "authorized 1 peer(s)" in done.stdout and "1 already listed" in done.stdout
    allowlist = Allowlist(cfg.parent / "authorized_keys")
    allowlist.load()
    entry = next(e for e in allowlist.entries() if e.peer_id == a)
    assert entry.comment == "laptop" and entry.verified == "invite"
    both = peerup("auth", "add", str(a), "--file", other, "--config", cfg)
    assert both.returncode == 2


def test_daemon_actions_ask_the_running_daemon(tmp_path: Path) -> None:
    cfg, peer = harness.make_node(tmp_path, "home", [], listen=["/ip4/127.0.0.1/tcp/0"])
    load.add_service(cfg, ServiceConfig("web", "127.0.0.1:8080"))
    not_running = peerup("daemon", "peers", "--config", cfg)
    assert not_running.returncode == 1 and "peerup daemon" in not_running.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEERUP_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "peerup", "daemon", "--config", str(cfg)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while peerup("daemon", "status", "--json", "--config", cfg).returncode != 0 or (
            json.loads(peerup("daemon", "status", "--json", "--config", cfg).stdout)[
                "daemon"
            ]
            is None
        ):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)
        status = json.loads(peerup("daemon", "status", "--json", "--config", cfg).stdout)
        assert status["daemon"]["peer_id"] == str(peer)
        services = json.loads(peerup("daemon", "services", "--json", "--config", cfg).stdout)
        assert services[0]["name"] == "web" and services[0]["served"] is True
        assert json.loads(peerup("daemon", "peers", "--json", "--config", cfg).stdout) == []
        assert "no peers connected" in peerup("daemon", "paths", "--config", cfg).stdout
        stop = peerup("daemon", "stop", "--config", cfg)
        assert stop.returncode == 0 and "shutdown requested" in stop.stdout
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
