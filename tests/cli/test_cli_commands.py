"""``--json`` outputs, reserved service names, bad peer IDs."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_harness import Cli

PEER = "12D3KooWGb33deXtWQfkMTHrdxpqNkiWjCPDVxF5uWZA8LHiVGAp"


def test_version_json(cli: Cli) -> None:
    result = cli("version", "--json")

    assert result.code == 0
    assert set(result.json()) == {"version", "compiled", "data_path"}


def test_whoami_json_is_the_peer_id(cli: Cli, node_config: Path) -> None:
    plain = cli("whoami", "--config", node_config)
    result = cli("whoami", "--json", "--config", node_config)

    assert result.code == 0
    assert result.json() == {"peer_id": plain.out.strip()}


def test_status_json_without_daemon(cli: Cli, node_config: Path) -> None:
    cli("service", "add", "ssh", "127.0.0.1:22", "--config", node_config)
    cli("auth", "add", PEER, "--config", node_config)

    result = cli("status", "--json", "--config", node_config)

    assert result.code == 0, result.err
    status = result.json()
    assert status["daemon"] is None
    assert status["authorized_peers"] == 1
    assert status["services"] == [
        {"name": "ssh", "local_address": "127.0.0.1:22", "enabled": True}
    ]
    assert status["peer_id"].startswith("12D3KooW")


def test_service_list_json(cli: Cli, node_config: Path) -> None:
    assert cli("service", "list", "--json", "--config", node_config).json() == {
        "services": []
    }
    cli("service", "add", "web", "127.0.0.1:8080", "--allow", PEER, "--config",
        node_config)  # fmt: skip
    cli("service", "add", "ssh", "127.0.0.1:22", "--disabled", "--config", node_config)

    result = cli("service", "list", "--json", "--config", node_config)

    assert result.code == 0
    assert result.json() == {
        "services": [
            {"name": "web", "local_address": "127.0.0.1:8080", "enabled": True,
             "allowed_peers": [PEER]},
            {"name": "ssh", "local_address": "127.0.0.1:22", "enabled": False,
             "allowed_peers": []},
        ]
    }  # fmt: skip


def test_auth_list_json(cli: Cli, node_config: Path) -> None:
    assert cli("auth", "list", "--json", "--config", node_config).json() == {
        "entries": []
    }
    added = cli("auth", "add", PEER, "--comment", "laptop", "--expires", "2099-01-31",
                "--config", node_config)  # fmt: skip
    assert added.code == 0, added.err

    result = cli("auth", "list", "--json", "--config", node_config)

    assert result.code == 0
    [entry] = result.json()["entries"]
    assert entry["peer_id"] == PEER
    assert entry["comment"] == "laptop"
    assert entry["attrs"]["expires"].startswith("2099-01-31")


@pytest.mark.parametrize(
    "argv",
    [("auth", "validate", "--json"), ("config", "validate", "--json"),
     ("config", "show", "--json"), ("init", "--json")],
    ids=" ".join,
)  # fmt: skip
def test_other_json_outputs_parse(
    cli: Cli, node_config: Path, argv: tuple[str, ...]
) -> None:
    if argv[0] == "init":
        extra: tuple[str | Path, ...] = ("--dir", node_config.parent.parent / "other",
                                         "--non-interactive")  # fmt: skip
    else:
        extra = ("--config", node_config)

    result = cli(*argv, *extra)

    assert result.code == 0, result.err
    assert isinstance(result.json(), dict)


@pytest.mark.parametrize("name", ["kad", "invite"])
def test_service_add_refuses_reserved_name(
    cli: Cli, node_config: Path, name: str
) -> None:
    before = node_config.read_bytes()

    result = cli("service", "add", name, "127.0.0.1:8080", "--config", node_config)

    assert result.code != 0
    assert len(result.err_lines) == 1, result.err
    assert result.err_lines[0].startswith("error: ")
    assert "reserved" in result.err_lines[0]
    assert "hint:" in result.err_lines[0]
    assert node_config.read_bytes() == before
    assert cli("service", "list", "--json", "--config", node_config).json() == {
        "services": []
    }


@pytest.mark.parametrize(
    "bad", ["not-a-peer", "12D3KooW", PEER[:-1], PEER.replace("G", "0", 1), ""]
)
def test_auth_add_bad_peer_id_exits_2(cli: Cli, node_config: Path, bad: str) -> None:
    before = (node_config.parent / "authorized_keys").read_bytes()

    result = cli("auth", "add", bad, "--config", node_config)

    assert result.code == 2
    assert len(result.err_lines) == 1, result.err
    assert result.err_lines[0].startswith("error: ")
    assert "12D3KooW" in result.err_lines[0]
    assert (node_config.parent / "authorized_keys").read_bytes() == before
