"""``peerup invite``, ``invite list|revoke``, ``join`` and ``verify`` through ``main()``,
with a real relay and daemons on loopback in a background loop."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_harness import Cli

from background_loop import Background
from pairing_harness import (
    add_web,
    authorize_on_relay,
    echo_service,
    echo_through,
    make_node,
    start_relay,
)
from peerup.app import pairing
from peerup.app.allowlist import Allowlist
from peerup.app.daemon import Daemon, client_for
from peerup.app.relay_server import RelayServer
from peerup.config import identity_store, load
from peerup.config.invite_store import InviteStore
from peerup.core.multiaddr import Multiaddr
from peerup.core.peer_id import PeerId
from peerup.proto.invite_code import InviteCode
from peerup.proto.pairing import short_auth_string

RELAY_ID = "12D3KooWGb33deXtWQfkMTHrdxpqNkiWjCPDVxF5uWZA8LHiVGAp"


@dataclass
class Net:
    bg: Background
    relay: RelayServer
    relay_addr: Multiaddr
    home: Daemon
    home_cfg: Path
    web_port: int


@pytest.fixture
def net(workdir: Path) -> Iterator[Net]:
    bg = Background()

    async def start() -> Net:
        relay, relay_addr = await start_relay(workdir)
        bg.closers.append(relay.aclose)
        home_cfg, home_id = make_node(workdir, "home", [str(relay_addr)])
        authorize_on_relay(relay, home_id)
        server, port = await echo_service()

        async def stop_server() -> None:
            server.close()

        bg.closers.append(stop_server)
        add_web(home_cfg, port)
        home = Daemon(load.load_node(home_cfg), watch_interval_s=0.05)
        await home.start()
        bg.closers.append(home.aclose)
        async with asyncio.timeout(10):
            await home.node.relay_client.wait_reserved(relay_addr)
        return Net(bg, relay, relay_addr, home, home_cfg, port)

    try:
        yield bg.call(start())
    finally:
        bg.close()


def test_invite_non_interactive_prints_only_the_code_and_the_daemon_keeps_it(
    cli: Cli, net: Net
) -> None:
    result = cli("invite", "--non-interactive", "--ttl", "5m", "--config", net.home_cfg)
    assert result.code == 0, result.err
    [line] = result.out.splitlines()
    code = InviteCode.parse(line)
    assert code.inviter == net.home.peer_id
    assert code.relays == (net.relay_addr,)
    listed = cli("invite", "list", "--json", "--config", net.home_cfg).json()
    [invite] = listed["invites"]
    assert invite["status"] == "pending" and invite["id"] == code.invite_id.hex()
    assert 0 < invite["expires_in_s"] <= 300


def test_join_on_a_fresh_machine_sets_it_up_and_pairs(
    cli: Cli, net: Net, workdir: Path
) -> None:
    """A machine with no config at all: `join` writes key, config (relay from the code)
    and authorized_keys; the relay must know it first, and says so."""
    code = cli("invite", "--non-interactive", "--config", net.home_cfg).out.strip()
    fresh = workdir / "fresh" / "config.yaml"

    first = cli("join", code, "--name", "lap", "--config", fresh)
    assert first.code == 1
    assert fresh.exists()  # set up, so that its peer ID is stable
    config = load.load_node(fresh)
    assert config.relays == (str(net.relay_addr),)
    me = PeerId.from_public_key(identity_store.load(config.identity_key).public_key)
    [line] = first.err_lines
    assert "the relay refused this machine" in line
    assert f"peerup relay authorize {me}" in line

    authorize_on_relay(net.relay, me)
    second = cli("join", code, "--name", "lap", "--config", fresh)
    assert second.code == 0, second.err
    assert "Paired with" in second.out and "offers: web" in second.out
    [(name, peer)] = load.load_node(fresh).names
    assert peer == net.home.peer_id
    assert dict(load.load_node(net.home_cfg).names) == {"lap": me}

    async def proxy_and_echo() -> bytes:
        node_daemon = Daemon(load.load_node(fresh), watch_interval_s=3600)
        await node_daemon.start()
        try:
            answer = await asyncio.to_thread(
                client_for(node_daemon.config).call,
                "POST",
                "/v1/connect",
                {"peer": name, "service": "web", "port": 0},
            )
            return await echo_through(int(answer["listen"].rsplit(":", 1)[1]))
        finally:
            await node_daemon.aclose()

    assert net.bg.call(proxy_and_echo()) == b"ping"


def test_join_reads_the_code_from_the_environment_and_a_prompt(
    cli: Cli, net: Net, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lap_cfg, lap_id = make_node(workdir, "lap", [str(net.relay_addr)])
    authorize_on_relay(net.relay, lap_id)
    code = cli("invite", "--non-interactive", "--config", net.home_cfg).out.strip()
    monkeypatch.setenv("PEERUP_INVITE_CODE", code.lower())
    result = cli("join", "--json", "--config", lap_cfg)
    assert result.code == 0, result.err
    assert result.json()["is_paired"] is True
    monkeypatch.delenv("PEERUP_INVITE_CODE")

    code = cli("invite", "--non-interactive", "--config", net.home_cfg).out.strip()
    result = cli("join", "--config", lap_cfg, answers=[code])
    assert result.questions == ["Invite code: "]
    assert result.code == 0, result.err  # re-pairing a paired peer is harmless


def test_a_mistyped_code_is_a_typo_and_creates_nothing(cli: Cli, workdir: Path) -> None:
    relay = "/ip4/127.0.0.1/tcp/7777/p2p/12D3KooWGb33deXtWQfkMTHrdxpqNkiWjCPDVxF5uWZA8LHiVGAp"
    code = pairing.code_for(
        pairing.new_invite(4e9, 600, None),
        PeerId.from_string("12D3KooWHqxVvLyv5xr4wS3SRQjB2yrHp4XD1qLKZ5ME1tC1yLfF"),
        [Multiaddr.parse(relay)],
        None,
    ).to_text()
    chars = code.replace("-", "")
    typo = chars[:20] + ("X" if chars[20] != "X" else "Y") + chars[21:]
    result = cli("join", typo)
    assert result.code == 1
    [line] = result.err_lines
    assert line.startswith("error: the code has a typo at character 21")
    assert not (workdir / "user-config").exists()


def test_invite_interactive_waits_and_reports_the_pairing(
    cli: Cli, net: Net, workdir: Path
) -> None:
    lap_cfg, lap_id = make_node(workdir, "lap", [str(net.relay_addr)])
    authorize_on_relay(net.relay, lap_id)

    async def lap_joins() -> None:
        lap = Daemon(load.load_node(lap_cfg), watch_interval_s=3600)
        await lap.start()
        net.bg.closers.append(lap.aclose)
        store = InviteStore(net.home_cfg.parent)
        async with asyncio.timeout(20):
            while not store.load():
                await asyncio.sleep(0.02)
        [invite] = store.load()
        code = pairing.code_for(invite, net.home.peer_id, [net.relay_addr], None)
        answer = await asyncio.to_thread(
            client_for(lap.config).call, "POST", "/v1/join", {"code": code.to_text()}
        )
        assert answer["is_paired"], answer

    joined = asyncio.run_coroutine_threadsafe(lap_joins(), net.bg.loop)
    result = cli("invite", "--name", "home", "--config", net.home_cfg)
    joined.result(30)
    assert result.code == 0, result.err
    assert "Invite code for home" in result.out
    assert "peerup://invite/" in result.out
    assert "\u2588" in result.out or "\u2580" in result.out  # the QR code's blocks
    assert "Paired with" in result.out and "authorized and named" in result.out
    assert lap_id in dict(load.load_node(net.home_cfg).names).values()


def test_invite_list_and_revoke_without_a_daemon(cli: Cli, workdir: Path) -> None:
    relay = "/ip4/127.0.0.1/tcp/7777/p2p/" + str(PeerId.from_string(RELAY_ID))
    cfg, _ = make_node(workdir, "solo", [relay])
    store = InviteStore(cfg.parent)
    invite = pairing.new_invite(time.time(), 600, "solo")
    store.transact(lambda inv: ([*inv, invite], None), now=time.time())

    listed = cli("invite", "list", "--config", cfg)
    assert listed.code == 0
    assert listed.out.startswith(f"{invite.id_hex}  pending")
    revoked = cli("invite", "revoke", invite.id_hex[:4], "--config", cfg)
    assert revoked.code == 0 and revoked.out.strip() == f"revoked: {invite.id_hex}"
    again = cli("invite", "revoke", invite.id_hex, "--config", cfg)
    assert again.out.strip() == f"{invite.id_hex} was already revoked"
    missing = cli("invite", "revoke", "ffff", "--config", cfg)
    assert missing.code == 1 and "invite list" in missing.err
    assert (
        json.loads(cli("invite", "list", "--json", "--config", cfg).out)["invites"][0][
            "status"
        ]
        == "revoked"
    )


def test_invite_without_a_relay_says_the_joiner_needs_one(
    cli: Cli, node_config: Path
) -> None:
    result = cli("invite", "--config", node_config)
    assert result.code == 1
    [line] = result.err_lines
    assert "no relay in config.yaml" in line and "relays:" in line


@pytest.mark.parametrize("ttl", ["0", "10x", "-5m", "9d"])
def test_a_bad_ttl_is_a_usage_error(cli: Cli, node_config: Path, ttl: str) -> None:
    result = cli("invite", "--ttl", ttl, "--config", node_config)
    assert result.code == 2
    assert result.err_lines[0].startswith("error: argument --ttl")


def test_verify_shows_the_same_string_on_both_sides_and_records_it(
    cli: Cli, workdir: Path
) -> None:
    a_cfg, a_id = make_node(workdir, "a", [])
    b_cfg, b_id = make_node(workdir, "b", [])
    Allowlist(a_cfg.parent / "authorized_keys").add(b_id, comment="b")
    Allowlist(b_cfg.parent / "authorized_keys").add(a_id, comment="a")
    sas = short_auth_string(a_id, b_id).text()

    on_a = cli("verify", str(b_id), "--config", a_cfg, answers=["y"])
    assert on_a.code == 0, on_a.err
    assert sas in on_a.out
    assert f"peerup verify {a_id}" in on_a.out
    allowlist = Allowlist(a_cfg.parent / "authorized_keys")
    allowlist.load()
    [entry] = allowlist.entries()
    assert entry.verified == "sas" and entry.comment == "b"

    on_b = cli("verify", str(a_id), "--json", "--config", b_cfg).json()
    assert on_b["number"] in sas and on_b["verified"] is None

    refused = cli("verify", str(a_id), "--config", b_cfg, answers=["n"])
    assert refused.code == 1 and "not verified" in refused.err
    stranger = cli("verify", str(a_id), "--config", a_cfg)
    assert stranger.code == 1 and "not in authorized_keys" in stranger.err
