"""``peerup init``, interactive: scripted answers, 0600 files, never an overwrite."""

from __future__ import annotations

import stat
from pathlib import Path

from cli_harness import Cli

from peerup.config import load

RELAY_PEER = "12D3KooWK4VWMFdY7z1d9nhbZMGXnaRR1bnFLWxBoDWCD3nquzfr"
FILES = ("config.yaml", "identity.key", "authorized_keys")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_interactive_init_with_relay_ip_port_writes_private_files(
    cli: Cli, workdir: Path
) -> None:
    directory = workdir / "home"

    result = cli(
        "init", "--dir", directory, answers=["127.0.0.1:7777", RELAY_PEER, "home"]
    )

    assert result.code == 0, result.err
    assert [q.split(" (")[0].rstrip(": ") for q in result.questions] == [
        "Relay address",
        "Relay peer ID",
        "Network name",
    ]
    for name in FILES:
        assert _mode(directory / name) == 0o600, name
    assert _mode(directory) == 0o700
    config = load.load_node(directory / "config.yaml")
    assert config.relays == (f"/ip4/127.0.0.1/tcp/7777/p2p/{RELAY_PEER}",)
    assert config.network_name == "home"
    assert config.identity_key == directory / "identity.key"
    whoami = cli("whoami", "--config", directory / "config.yaml")
    assert f"Peer ID:  {whoami.out.strip()}" in result.out


def test_interactive_init_relay_without_port_uses_default_port(
    cli: Cli, workdir: Path
) -> None:
    result = cli("init", "--dir", workdir / "n", answers=["192.0.2.7", RELAY_PEER, ""])

    assert result.code == 0, result.err
    config = load.load_node(workdir / "n" / "config.yaml")
    assert config.relays == (f"/ip4/192.0.2.7/tcp/7777/p2p/{RELAY_PEER}",)
    assert config.network_name is None


def test_init_refuses_to_overwrite_an_existing_config(cli: Cli, workdir: Path) -> None:
    directory = workdir / "home"
    first = cli(
        "init", "--dir", directory, answers=["127.0.0.1:7777", RELAY_PEER, "home"]
    )
    assert first.code == 0
    before = {name: (directory / name).read_bytes() for name in FILES}

    again = cli("init", "--dir", directory, answers=["127.0.0.1:7778", RELAY_PEER, "x"])
    flags = cli("init", "--dir", directory, "--non-interactive")

    for result in (again, flags):
        assert result.code == 1
        assert len(result.err_lines) == 1, result.err
        assert result.err_lines[0].startswith("error: ")
        assert "already exists" in result.err_lines[0]
        assert "hint:" in result.err_lines[0]
    assert again.questions == []
    assert {name: (directory / name).read_bytes() for name in FILES} == before


def test_interactive_init_with_bad_relay_peer_id_writes_nothing(
    cli: Cli, workdir: Path
) -> None:
    directory = workdir / "home"

    result = cli(
        "init", "--dir", directory, answers=["127.0.0.1:7777", "not-a-peer", ""]
    )

    assert result.code == 2
    assert len(result.err_lines) == 1 and result.err_lines[0].startswith("error: ")
    assert not (directory / "config.yaml").exists()
    assert not (directory / "identity.key").exists()


def test_interactive_init_with_relay_but_no_peer_id_says_how_to_find_it(
    cli: Cli, workdir: Path
) -> None:
    result = cli("init", "--dir", workdir / "n", answers=["127.0.0.1:7777", "", ""])

    assert result.code == 2
    assert "relay info" in result.err_lines[0]
