"""Fixtures for the CLI tests: ``main([...])`` in-process with captured IO.

``cli(*argv, answers=[...])`` runs ``peerup.cli.main`` with a ``CliIO`` of two
``StringIO`` buffers and a prompt that replays ``answers`` (and records each question).
argparse writes ``--help`` and usage errors to the real ``sys.stdout``/``sys.stderr``
and raises ``SystemExit``, so those are captured too and folded into the result. Every
test runs in an empty directory with ``PEERUP_CONFIG_DIR`` pointing into it, so no
user or system config is ever found.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from cli_harness import Cli, CliResult

from peerup.cli import main
from peerup.cli.common import CliIO


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PEERUP_CONFIG_DIR", str(tmp_path / "user-config"))
    monkeypatch.delenv("PEERUP_LOG", raising=False)
    return tmp_path


@pytest.fixture
def cli(workdir: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    def run(*argv: str | Path, answers: list[str] | None = None) -> CliResult:
        questions: list[str] = []
        pending = list(answers or [])

        def prompt(question: str) -> str:
            questions.append(question)
            if not pending:
                raise AssertionError(f"unexpected prompt {question!r}")
            return pending.pop(0)

        stdout, stderr = io.StringIO(), io.StringIO()
        capsys.readouterr()
        try:
            code = main([str(a) for a in argv], CliIO(stdout, stderr, prompt))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return CliResult(
            code,
            stdout.getvalue() + captured.out,
            stderr.getvalue() + captured.err,
            questions,
        )

    return run


@pytest.fixture
def node_config(cli: Cli, workdir: Path) -> Path:
    """A node made by ``init --non-interactive``; its config.yaml."""
    result = cli("init", "--dir", workdir / "node", "--non-interactive", "--listen",
                 "/ip4/127.0.0.1/tcp/0")  # fmt: skip
    assert result.code == 0, result.err
    return workdir / "node" / "config.yaml"
