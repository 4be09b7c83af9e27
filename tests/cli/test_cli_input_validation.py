"""Arguments are checked before anything is done with them.

Ports, dates, comments, peer names and listen addresses given on the command line are
refused with one ``error:`` line and exit 2 (wrong usage) when they cannot be right,
and an ``auth add`` for a peer already listed applies its ``--expires``/``--comment``
instead of dropping them. ``config show`` prints YAML (``true``, ``null``), not Python.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cli_harness import Cli, CliResult
from ruamel.yaml import YAML

from peerup.cli import build_parser
from peerup.cli.common import UsageError
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.peer_id import PeerId


def new_peer() -> str:
    return str(PeerId.from_public_key(Ed25519PrivateKey.generate().public_key))


def usage_error(result: CliResult) -> str:
    assert result.code == 2, (result.out, result.err)
    assert "Traceback" not in result.err
    assert len(result.err_lines) == 1 and result.err_lines[0].startswith("error: ")
    return result.err_lines[0]


# --- proxy port -------------------------------------------------------------------


@pytest.mark.parametrize("port", ["99999", "65536", "-1", "22x", "²"])
def test_proxy_port_out_of_range_is_refused(cli: Cli, port: str) -> None:
    with pytest.raises(UsageError, match="port must be 0-65535"):
        build_parser().parse_args(["proxy", "home", "ssh", port])

    line = usage_error(cli("proxy", new_peer(), "ssh", port))
    assert "port must be 0-65535" in line


@pytest.mark.parametrize("port", ["0", "2222", "65535"])
def test_proxy_port_in_range_is_accepted(port: str) -> None:
    assert build_parser().parse_args(["proxy", "home", "ssh", port]).port == int(port)


# --- auth add -----------------------------------------------------------------------


def keys_text(config: Path) -> str:
    return (config.parent / "authorized_keys").read_text()


@pytest.mark.parametrize("when", ["2020-01-01", "2001-02-03T04:05:06Z"])
def test_auth_add_with_a_past_expiry_is_refused(
    cli: Cli, node_config: Path, when: str
) -> None:
    before = keys_text(node_config)
    peer = new_peer()

    line = usage_error(
        cli("auth", "add", peer, "--expires", when, "--config", node_config)
    )

    assert "is in the past" in line and "hint:" in line
    assert keys_text(node_config) == before


def test_auth_add_with_expires_on_a_listed_peer_updates_it(
    cli: Cli, node_config: Path
) -> None:
    peer = new_peer()
    assert (
        cli("auth", "add", peer, "--comment", "laptop", "--config", node_config).code
        == 0
    )
    later = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()

    result = cli("auth", "add", peer, "--expires", later, "--config", node_config)

    assert result.code == 0, result.err
    assert result.out.strip() == f"updated: {peer} (expires {later}T00:00:00Z)"
    listed = cli("auth", "list", "--json", "--config", node_config).json()["entries"]
    assert listed == [
        {
            "peer_id": peer,
            "attrs": {"expires": f"{later}T00:00:00Z"},
            "comment": "laptop",
        }
    ]
    # Again: a new date replaces the old one; the comment can change too.
    even_later = (datetime.now(UTC) + timedelta(days=60)).date().isoformat()
    result = cli("auth", "add", peer, "--expires", even_later, "--comment", "work laptop",
                 "--config", node_config)  # fmt: skip
    assert result.code == 0 and result.out.startswith("updated:")
    listed = cli("auth", "list", "--json", "--config", node_config).json()["entries"]
    assert listed[0]["attrs"] == {"expires": f"{even_later}T00:00:00Z"}
    assert listed[0]["comment"] == "work laptop"
    # Nothing new: said so, file untouched.
    before = keys_text(node_config)
    result = cli("auth", "add", peer, "--config", node_config)
    assert result.out.strip() == f"already authorized: {peer}"
    assert keys_text(node_config) == before


def test_auth_add_with_a_multiline_comment_is_refused(
    cli: Cli, node_config: Path
) -> None:
    line = usage_error(
        cli("auth", "add", new_peer(), "--comment", "a\nb", "--config", node_config)
    )
    assert "one line" in line


# --- service add --allow ------------------------------------------------------------


def test_service_add_allow_takes_names_and_peer_ids(
    cli: Cli, node_config: Path
) -> None:
    home, other = new_peer(), new_peer()
    assert cli("name", "set", "home", home, "--config", node_config).code == 0

    result = cli("service", "add", "ssh", "127.0.0.1:22", "--allow", "home",
                 "--allow", other, "--allow", home, "--config", node_config)  # fmt: skip

    assert result.code == 0, result.err
    services = cli("service", "list", "--json", "--config", node_config).json()
    assert services["services"][0]["allowed_peers"] == [home, other]


def test_service_add_allow_with_an_unknown_name_says_which_names_exist(
    cli: Cli, node_config: Path
) -> None:
    assert cli("name", "set", "home", new_peer(), "--config", node_config).code == 0
    before = node_config.read_text()

    line = usage_error(
        cli(
            "service",
            "add",
            "ssh",
            "127.0.0.1:22",
            "--allow",
            "hmoe",
            "--config",
            node_config,
        )  # fmt: skip
    )

    assert "'hmoe' is neither a name from" in line
    assert "names: home" in line
    assert node_config.read_text() == before


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["service", "add", "SSH!", "127.0.0.1:22"], "invalid service name"),
        (["service", "add", "ssh", "127.0.0.1:99999"], "out of range"),
        (["name", "set", "bad name", "PEER"], "invalid name"),
    ],
)
def test_bad_names_and_addresses_are_usage_errors(
    cli: Cli, node_config: Path, argv: list[str], needle: str
) -> None:
    argv = [new_peer() if a == "PEER" else a for a in argv]
    before = node_config.read_text()

    line = usage_error(cli(*argv, "--config", node_config))

    assert needle in line
    assert node_config.read_text() == before


# --- listen addresses ---------------------------------------------------------------


@pytest.mark.parametrize(
    "listen", ["/ip4/0.0.0.0/udp/7777", "garbage", "/ip4/0.0.0.0/tcp/70000"]
)
def test_relay_setup_refuses_a_bad_listen_and_writes_nothing(
    cli: Cli, workdir: Path, listen: str
) -> None:
    line = usage_error(
        cli(
            "relay",
            "setup",
            "--dir",
            workdir / "relay",
            "--non-interactive",
            "--listen",
            listen,
        )  # fmt: skip
    )
    assert "--listen" in line and "hint:" in line
    assert not (workdir / "relay").exists()


def test_init_refuses_a_non_tcp_listen_and_writes_nothing(
    cli: Cli, workdir: Path
) -> None:
    line = usage_error(
        cli(
            "init",
            "--dir",
            workdir / "n",
            "--non-interactive",
            "--listen",
            "/ip4/0.0.0.0/udp/4001",
        )  # fmt: skip
    )
    assert "not a TCP address" in line
    assert not (workdir / "n").exists()


def test_relay_authorize_again_with_a_comment_updates_it(
    cli: Cli, workdir: Path
) -> None:
    assert cli("relay", "setup", "--dir", workdir / "r", "--non-interactive").code == 0
    cfg = workdir / "r" / "relay-server.yaml"
    peer = new_peer()
    assert cli("relay", "authorize", peer, "--config", cfg).code == 0

    result = cli("relay", "authorize", peer, "home server", "--config", cfg)

    assert result.code == 0 and "comment updated" in result.out
    listed = cli("relay", "list-peers", "--json", "--config", cfg).json()
    assert listed["peers"] == [{"peer_id": peer, "comment": "home server"}]
    line = usage_error(cli("relay", "authorize", new_peer(), "a\nb", "--config", cfg))
    assert "one line" in line


# --- config show ----------------------------------------------------------------------


def test_config_show_prints_yaml_that_reads_back_as_the_json(
    cli: Cli, node_config: Path
) -> None:
    assert cli("service", "add", "ssh", "127.0.0.1:22", "--disabled",
               "--config", node_config).code == 0  # fmt: skip

    text = cli("config", "show", "--config", node_config)
    shown = cli("config", "show", "--json", "--config", node_config)

    assert text.code == 0 and shown.code == 0
    assert "True" not in text.out and "False" not in text.out and "None" not in text.out
    assert "enforce_allowlist: true" in text.out
    assert "network_name: null" in text.out
    assert YAML(typ="safe").load(text.out) == json.loads(shown.out)


@pytest.mark.parametrize(
    "relay",
    ["192.0.2.7:99999", "192.0.2.7:0", "[2001:db8::7]:70000", "/ip4/192.0.2.7/tcp/0"],
)
def test_init_refuses_a_relay_port_out_of_range_and_writes_nothing(
    cli: Cli, workdir: Path, relay: str
) -> None:
    line = usage_error(
        cli(
            "init",
            "--dir",
            workdir / "n",
            "--non-interactive",
            "--relay",
            relay,
            "--relay-peer-id",
            new_peer(),
        )  # fmt: skip
    )
    assert "port" in line and "hint:" in line
    assert not (workdir / "n").exists()
