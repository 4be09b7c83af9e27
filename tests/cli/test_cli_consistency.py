"""One convention for every command: "not found" is a failed operation (exit 1) with
one ``error:`` line and a hint; under ``--json`` an error is a JSON object with
``error`` and ``hint`` on stdout (issue 10, item 9)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from cli_harness import Cli

from peerup.core.keys import Ed25519PrivateKey
from peerup.core.peer_id import PeerId

STRANGER = str(PeerId.from_public_key(Ed25519PrivateKey.generate().public_key))


@pytest.fixture
def configs(cli: Cli, workdir: Path) -> tuple[Path, Path]:
    assert cli("init", "--dir", workdir / "n", "--non-interactive").code == 0
    assert cli("relay", "setup", "--dir", workdir / "r", "--non-interactive").code == 0
    return workdir / "n" / "config.yaml", workdir / "r" / "relay-server.yaml"


@pytest.mark.parametrize(
    "argv",
    [
        ["name", "remove", "nosuch"],
        ["auth", "remove", STRANGER],
        ["service", "remove", "nosuch"],
        ["service", "enable", "nosuch"],
        ["service", "disable", "nosuch"],
        ["resolve", "nosuch"],
        ["proxy", "remove", "2999"],
        ["relay", "deauthorize", STRANGER],
    ],
    ids=lambda argv: " ".join(argv[:2]),
)
def test_not_found_exits_1_with_one_error_line_and_a_hint(
    cli: Cli, configs: tuple[Path, Path], argv: list[str]
) -> None:
    node, relay = configs
    result = cli(*argv, "--config", relay if argv[0] == "relay" else node)

    assert result.code == 1, result
    assert len(result.err_lines) == 1, result.err
    assert result.err_lines[0].startswith("error: ")
    assert "(hint: " in result.err_lines[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["resolve", "nosuch", "--json"],
        ["whoami", "--json"],
        ["status", "--json"],
        ["config", "validate", "--json"],
        ["ping", "nosuch", "--json"],
    ],
    ids=lambda argv: argv[0],
)
def test_json_errors_are_json_objects_on_stdout(
    cli: Cli, configs: tuple[Path, Path], workdir: Path, argv: list[str]
) -> None:
    node, _ = configs
    if argv[0] in ("whoami", "status", "config"):
        node = workdir / "missing.yaml"  # config file not found
    result = cli(*argv, "--config", node)

    assert result.code == 1, result
    answer = json.loads(result.out)
    assert set(answer) == {"error", "hint"}
    assert answer["error"] and answer["hint"]
    assert result.err == ""


def test_proxy_on_a_busy_port_says_so_with_a_hint(
    cli: Cli, configs: tuple[Path, Path]
) -> None:
    node, _ = configs
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli("proxy", STRANGER, "ssh", str(port), "--config", node)

    assert result.code == 1, result
    assert result.err_lines == [
        f"error: cannot listen on 127.0.0.1:{port}: address already in use "
        "(hint: another program (or another proxy) has that port: pick another, "
        "or 0 for any free one)"
    ]
