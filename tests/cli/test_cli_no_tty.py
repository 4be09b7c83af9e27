"""No traceback without a terminal: a question with stdin not a tty is an ``error:``.

Every command that can ask something (``init``, ``relay setup``) is run as a script
or systemd would run it: a real ``python -m peerup`` with stdin from /dev/null. Where
an answer is missing it must exit 2 with one ``error:`` line that names the flag to
pass, and write nothing; where the flags answer everything it must not ask at all.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from peerup.cli import main
from peerup.cli.common import CliIO
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.peer_id import PeerId

RELAY_PEER = str(PeerId.from_public_key(Ed25519PrivateKey.generate().public_key))
RELAY_MA = f"/ip4/192.0.2.7/tcp/7777/p2p/{RELAY_PEER}"


def peerup(*argv: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PEERUP_CONFIG_DIR": str(cwd / "user-config")}
    env.pop("PEERUP_LOG", None)
    return subprocess.run(
        [sys.executable, "-m", "peerup", *map(str, argv)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_init_with_flags_asks_nothing_optional(tmp_path: Path) -> None:
    """Flags are answers: the optional network name is not asked for (the README's
    `peerup init --relay … --relay-peer-id …` must work without a terminal)."""
    result = peerup(
        "init", "--dir", "node", "--relay", "192.0.2.7:7777",
        "--relay-peer-id", RELAY_PEER, cwd=tmp_path,
    )  # fmt: skip

    assert result.returncode == 0, result
    assert "Network name" not in result.stdout
    assert (tmp_path / "node" / "config.yaml").exists()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (
            [],
            "error: peerup init needs an answer for the relay address, and stdin is "
            "not a terminal (hint: pass --relay ADDR, or --non-interactive)",
        ),
        (
            ["--relay", "192.0.2.7:7777"],
            "error: peerup init needs an answer for the relay's peer ID, and stdin is "
            "not a terminal (hint: pass --relay-peer-id ID (`peerup relay info` on "
            "the relay prints it))",
        ),
    ],
    ids=["no-flags", "relay-without-peer-id"],
)
def test_init_without_a_terminal_names_the_missing_flag(
    tmp_path: Path, flags: list[str], expected: str
) -> None:
    result = peerup("init", "--dir", "node", *flags, cwd=tmp_path)

    assert one_error_line(result) == expected
    assert result.stdout == ""
    assert not (tmp_path / "node").exists()


@pytest.mark.parametrize(
    "flags",
    [
        ["--relay", RELAY_MA, "--network-name", "home"],
        [
            "--relay",
            "192.0.2.7:7777",
            "--relay-peer-id",
            RELAY_PEER,
            "--network-name",
            "home",
        ],  # fmt: skip
        ["--non-interactive"],
    ],
    ids=["multiaddr", "ip-port", "non-interactive"],
)
def test_init_with_every_answer_given_asks_nothing(
    tmp_path: Path, flags: list[str]
) -> None:
    result = peerup("init", "--dir", "node", *flags, cwd=tmp_path)

    assert result.returncode == 0, result
    assert result.stderr == ""
    assert (tmp_path / "node" / "config.yaml").exists()


def test_relay_setup_twice_without_a_terminal_names_force(tmp_path: Path) -> None:
    first = peerup("relay", "setup", "--dir", "relay", cwd=tmp_path)
    assert first.returncode == 0, first
    config = tmp_path / "relay" / "relay-server.yaml"
    before = config.read_bytes()

    again = peerup("relay", "setup", "--dir", "relay", "--listen",
                   "/ip4/0.0.0.0/tcp/7000", cwd=tmp_path)  # fmt: skip

    assert one_error_line(again) == (
        "error: peerup relay setup needs an answer for whether to overwrite "
        f"{Path('relay') / 'relay-server.yaml'}, and stdin is not a terminal "
        "(hint: pass --force to overwrite it, or use another --dir)"
    )
    assert config.read_bytes() == before
    forced = peerup("relay", "setup", "--dir", "relay", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced


def test_end_of_input_at_a_prompt_is_the_same_error(workdir: Path) -> None:
    """Ctrl-D at a question (EOF on a terminal) ends the same way, in-process."""

    def eof(_question: str) -> str:
        raise EOFError

    out, err = io.StringIO(), io.StringIO()
    code = main(["init", "--dir", str(workdir / "n")], CliIO(out, err, eof))

    assert code == 2
    assert err.getvalue().startswith(
        "error: peerup init needs an answer for the relay address"
    )
    assert "Traceback" not in err.getvalue()
    assert not (workdir / "n").exists()
