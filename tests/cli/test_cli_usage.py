"""Usage: ``--help`` everywhere, one ``error:`` line for wrong flags and missing config."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest
from cli_harness import Cli

from peerup.cli import build_parser, main
from peerup.cli.common import CliIO

PEER = "12D3KooWGb33deXtWQfkMTHrdxpqNkiWjCPDVxF5uWZA8LHiVGAp"


def _command_paths(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    paths = [prefix] if prefix else []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths += _command_paths(sub, (*prefix, name))
    return paths


COMMANDS = _command_paths(build_parser())
LEAVES = [p for p in COMMANDS if not any(q[: len(p)] == p and q != p for q in COMMANDS)]


ISSUE_COMMANDS = [
    "init", "daemon", "proxy", "status", "ping", "traceroute", "whoami", "resolve",
    "version", "config validate", "config show", "auth add", "auth list", "auth remove",
    "auth validate", "service add", "service list", "service remove", "service enable",
    "service disable", "relay setup", "relay serve", "relay authorize",
    "relay deauthorize", "relay list-peers", "relay info", "demo",
]  # fmt: skip


def test_every_command_the_issue_names_exists() -> None:
    assert set(ISSUE_COMMANDS) <= {" ".join(p) for p in COMMANDS}


@pytest.mark.parametrize("path", [(), *COMMANDS], ids=lambda p: " ".join(p) or "peerup")
def test_help_exits_0(cli: Cli, path: tuple[str, ...]) -> None:
    result = cli(*path, "--help")

    assert result.code == 0
    assert result.out.startswith("usage: peerup")
    assert result.err == ""


@pytest.mark.parametrize("path", LEAVES, ids=" ".join)
def test_wrong_flag_exits_2_with_one_error_line_and_hint(
    cli: Cli, path: tuple[str, ...]
) -> None:
    result = cli(*path, "--no-such-flag")

    assert result.code == 2
    assert len(result.err_lines) == 1, result.err
    line = result.err_lines[0]
    assert line.startswith("error: ")
    assert "hint:" in line and "--help" in line


def test_unknown_command_exits_2_with_one_error_line(cli: Cli) -> None:
    result = cli("frobnicate")

    assert result.code == 2
    assert len(result.err_lines) == 1
    assert result.err_lines[0].startswith("error: ") and "hint:" in result.err_lines[0]


NEEDS_CONFIG = [
    ("daemon",),
    ("proxy", PEER, "ssh", "0"),
    ("status",),
    ("ping", PEER),
    ("traceroute", PEER),
    ("whoami",),
    ("resolve", "home"),
    ("config", "validate"),
    ("config", "show"),
    ("auth", "add", PEER),
    ("auth", "list"),
    ("auth", "remove", PEER),
    ("auth", "validate"),
    ("service", "add", "web", "127.0.0.1:8080"),
    ("service", "list"),
    ("service", "remove", "web"),
    ("service", "enable", "web"),
    ("service", "disable", "web"),
]


@pytest.mark.parametrize("argv", NEEDS_CONFIG, ids=" ".join)
def test_missing_config_exits_1_with_hint_to_init(
    cli: Cli, argv: tuple[str, ...]
) -> None:
    result = cli(*argv)

    assert result.code == 1
    assert len(result.err_lines) == 1, result.err
    line = result.err_lines[0]
    assert line.startswith("error: ")
    assert "`peerup init`" in line


@pytest.mark.parametrize(
    "argv", [("whoami",), ("status",), ("auth", "list")], ids=" ".join
)
def test_missing_explicit_config_exits_1_naming_the_path(
    cli: Cli, workdir: Path, argv: tuple[str, ...]
) -> None:
    missing = workdir / "nowhere" / "config.yaml"

    result = cli(*argv, "--config", missing)

    assert result.code == 1
    assert len(result.err_lines) == 1
    assert str(missing) in result.err_lines[0]
    assert "`peerup init`" in result.err_lines[0]


def test_usage_error_is_returned_and_written_to_injected_stderr(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stdout, stderr = io.StringIO(), io.StringIO()

    code = main(["status", "--no-such-flag"], CliIO(stdout, stderr))

    assert code == 2
    assert stderr.getvalue().startswith("error: ")
