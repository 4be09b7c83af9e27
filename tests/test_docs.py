"""The docs tell the truth: every ``peerup`` command they show parses (no flag or
sub-command that does not exist), the files they name are the ones peer-up writes,
and the install they describe is one that works from a checkout (issue 10, item 10).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from peerup.cli import build_parser, common, proxies
from peerup.config import load

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PEER = "12D3KooWHU294PZuZdqCwKhjTnSzkkybfJxq6iJdyYawe7TpBM2t"
PLACEHOLDERS = {
    "relay-peer-id": PEER,
    "home-peer-id": PEER,
    "laptop-peer-id": PEER,
    "peer-id": PEER,
    "your peer ID": PEER,
    "their peer ID": PEER,
    "the other's peer ID": PEER,
    "user": "root",
}


def _commands(text: str) -> list[tuple[str, bool]]:
    """``peerup …`` as the docs show it, and whether it is a whole command (a
    code-block line) or may be a mention of one in prose (inline code, which may
    leave out required arguments, but must not name what does not exist)."""
    found = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip().removeprefix("$ ")
            line = line.removeprefix("sudo -u peerup ").removeprefix("sudo ")
            if line.startswith("peerup ") and line.count("peerup ") == 1:
                found.append((line, True))
    for inline in re.findall(r"`(peerup [^`]+)`", text):
        found.append((inline, False))
    return found


def _parseable(command: str) -> str | None:
    """The command with placeholders filled, or None when it is a pattern rather
    than a command (alternatives, ellipses, optional parts)."""
    if any(mark in command for mark in ("|", "…", "[", "...", "$(")):
        return None

    def fill(match: re.Match[str]) -> str:
        return PLACEHOLDERS.get(match.group(1), "x")

    return re.sub(r"<([^>]+)>", fill, command)


def _all_commands() -> list[tuple[str, str, bool]]:
    out = []
    for doc in DOCS:
        for command, whole in _commands(doc.read_text()):
            filled = _parseable(command)
            if filled is not None:
                out.append((doc.name, filled, whole))
    return out


MENTION_OK = ("the following arguments are required", "expected one argument")


def test_the_docs_show_commands() -> None:
    assert len(_all_commands()) > 30


@pytest.mark.parametrize(("doc", "command", "whole"), _all_commands())
def test_every_documented_command_parses(doc: str, command: str, whole: bool) -> None:
    argv = proxies.rewrite_argv(shlex.split(command)[1:])
    try:
        build_parser().parse_args(argv)
    except common.UsageError as exc:
        if whole or not any(m in str(exc) for m in MENTION_OK):
            pytest.fail(f"{doc}: `{command}` does not parse: {exc}")
    except SystemExit as exc:  # --help / --version
        assert exc.code == 0, f"{doc}: `{command}`"


def test_relay_guide_installs_from_a_checkout_and_names_the_real_files() -> None:
    guide = (ROOT / "docs" / "relay-vps.md").read_text()
    assert "pip install peerup" not in guide  # not published on PyPI
    assert "pip install ." in guide or "pipx install ." in guide
    assert load.DEFAULT_RELAY_IDENTITY_KEY in guide
    assert load.DEFAULT_RELAY_AUTHORIZED_KEYS in guide
    named = set(re.findall(r"\brelay[_-][a-z_]*\.key\b", guide))
    assert named <= {load.DEFAULT_RELAY_IDENTITY_KEY}, named


def test_the_user_unit_runs_the_installed_command() -> None:
    unit = (ROOT / "contrib" / "peerup.service").read_text()
    exec_start = re.search(r"^ExecStart=(\S+)", unit, re.M)
    assert exec_start is not None
    assert exec_start.group(1) in ("%h/.local/bin/peerup",), exec_start.group(1)
    readme = (ROOT / "README.md").read_text()
    assert "~/.local/bin/peerup" in readme  # the README's install puts it there
