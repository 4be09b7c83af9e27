"""``peerup service install|uninstall``: systemd units for the daemon and the relay.

In-process with ``--unit-dir`` (or ``XDG_CONFIG_HOME``) in a temporary directory;
systemctl is never really run: where the test needs systemd "present", the check and
``subprocess.run`` are replaced and the commands recorded.
"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_harness import Cli

from peerup.app import units
from peerup.cli import units as units_cli


def exec_start(text: str) -> list[str]:
    (line,) = [x for x in text.splitlines() if x.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


def test_install_writes_a_user_unit_with_this_python_and_the_config(
    cli: Cli, node_config: Path, workdir: Path
) -> None:
    unit_dir = workdir / "units"
    result = cli("service", "install", "--config", node_config, "--unit-dir", unit_dir)
    assert result.code == 0, result.err
    path = unit_dir / "peerup.service"
    text = path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    argv = exec_start(text)
    assert argv == [sys.executable, "-m", "peerup", "daemon", "--config",
                    str(node_config.absolute())]  # fmt: skip
    assert os.path.isabs(argv[0]) and os.path.isabs(argv[-1])
    for line in ("Restart=on-failure", "LimitNOFILE=65536", "WantedBy=default.target"):
        assert line in text.splitlines()
    # --unit-dir: nothing is run, the commands are printed.
    assert (
        "systemctl --user daemon-reload && systemctl --user enable --now "
        "peerup.service" in result.out
    )
    # The command the unit runs works (here: with `version` instead of `daemon …`).
    done = subprocess.run([*argv[:3], "version"], capture_output=True, text=True)
    assert done.returncode == 0 and "peerup" in done.stdout

    again = cli("service", "install", "--config", node_config, "--unit-dir", unit_dir)
    assert again.code == 0 and f"unchanged: {path}" in again.out


def test_install_again_with_another_config_updates_and_restarts(
    cli: Cli, node_config: Path, workdir: Path
) -> None:
    unit_dir = workdir / "units"
    assert cli("service", "install", "--config", node_config, "--unit-dir",
               unit_dir).code == 0  # fmt: skip
    other = workdir / "other.yaml"
    other.write_text(node_config.read_text())
    result = cli("service", "install", "--config", other, "--unit-dir", unit_dir)
    assert result.code == 0, result.err
    assert f"updated {unit_dir / 'peerup.service'}" in result.out
    assert "systemctl --user restart peerup.service" in result.out
    assert exec_start((unit_dir / "peerup.service").read_text())[-1] == str(other)


def test_uninstall_removes_the_unit_and_its_enablement(
    cli: Cli, node_config: Path, workdir: Path
) -> None:
    unit_dir = workdir / "units"
    assert cli("service", "install", "--config", node_config, "--unit-dir",
               unit_dir).code == 0  # fmt: skip
    wants = unit_dir / "default.target.wants"
    wants.mkdir()
    (wants / "peerup.service").symlink_to(unit_dir / "peerup.service")
    result = cli("service", "uninstall", "--unit-dir", unit_dir)
    assert result.code == 0, result.err
    assert not (unit_dir / "peerup.service").exists()
    assert not (wants / "peerup.service").is_symlink()
    assert "systemctl --user stop peerup.service" in result.out

    again = cli("service", "uninstall", "--unit-dir", unit_dir)
    assert again.code == 1
    assert again.err_lines == [
        f"error: no peerup.service in {unit_dir} (hint: nothing to uninstall)"
    ]


def test_without_systemd_install_writes_the_user_unit_and_prints_the_commands(
    cli: Cli, node_config: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(workdir / "xdg"))
    monkeypatch.setattr(units_cli.shutil, "which", lambda _name: None)
    result = cli("service", "install", "--config", node_config)
    assert result.code == 0, result.err
    path = workdir / "xdg" / "systemd" / "user" / "peerup.service"
    assert path.is_file()
    assert result.out.splitlines()[0] == f"wrote {path}"
    assert (
        "systemctl is not installed here; to start it, run: systemctl --user "
        "daemon-reload && systemctl --user enable --now peerup.service" in result.out
    )
    assert "loginctl enable-linger" in result.out

    removed = cli("service", "uninstall")
    assert removed.code == 0, removed.err
    assert not path.exists()


def test_with_systemd_install_and_uninstall_run_systemctl(
    cli: Cli, node_config: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[list[str]] = []

    def fake_run(cmd: list[str], **_kw: Any) -> subprocess.CompletedProcess[str]:
        ran.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setenv("XDG_CONFIG_HOME", str(workdir / "xdg"))
    monkeypatch.setattr(units_cli, "why_not_managed", lambda *_a, **_k: None)
    monkeypatch.setattr(units_cli.subprocess, "run", fake_run)
    result = cli("service", "install", "--config", node_config)
    assert result.code == 0, result.err
    assert ran == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", "peerup.service"],
    ]
    assert "started peerup.service" in result.out

    ran.clear()
    assert cli("service", "uninstall").code == 0
    assert ran == [
        ["systemctl", "--user", "disable", "--now", "peerup.service"],
        ["systemctl", "--user", "daemon-reload"],
    ]


def test_a_failing_systemctl_is_an_error_line_with_the_commands_left(
    cli: Cli, node_config: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake_run(cmd: list[str], **_kw: Any) -> subprocess.CompletedProcess[str]:
        code = 1 if "enable" in cmd else 0
        return subprocess.CompletedProcess(cmd, code, "", "Failed to enable: boom\n")

    monkeypatch.setenv("XDG_CONFIG_HOME", str(workdir / "xdg"))
    monkeypatch.setattr(units_cli, "why_not_managed", lambda *_a, **_k: None)
    monkeypatch.setattr(units_cli.subprocess, "run", fake_run)
    result = cli("service", "install", "--config", node_config)
    assert result.code == 1
    assert result.err_lines == [
        "error: `systemctl --user enable --now peerup.service` failed: Failed to "
        "enable: boom (hint: run: systemctl --user enable --now peerup.service)"
    ]


def relay_config(cli: Cli, workdir: Path) -> Path:
    result = cli("relay", "setup", "--dir", workdir / "relay", "--non-interactive",
                 "--listen", "/ip4/127.0.0.1/tcp/7777")  # fmt: skip
    assert result.code == 0, result.err
    return workdir / "relay" / "relay-server.yaml"


def test_relay_unit_is_hardened_and_runs_relay_serve(cli: Cli, workdir: Path) -> None:
    config = relay_config(cli, workdir)
    unit_dir = workdir / "units"
    result = cli("service", "install", "--relay", "--config", config,
                 "--unit-dir", unit_dir, "--run-as", "nobody")  # fmt: skip
    assert result.code == 0, result.err
    text = (unit_dir / "peerup-relay.service").read_text()
    assert exec_start(text) == [sys.executable, "-m", "peerup", "relay", "serve",
                                "--config", str(config.absolute())]  # fmt: skip
    lines = text.splitlines()
    for line in (
        "User=nobody",
        "Restart=on-failure",
        "LimitNOFILE=65536",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        f"ReadWritePaths={config.parent.absolute()}",
        "PrivateTmp=yes",
        "WantedBy=multi-user.target",
    ):
        assert line in lines, line
    assert "systemctl daemon-reload && systemctl enable --now peerup-relay.service" in (
        result.out
    )
    assert "loginctl" not in result.out


def test_relay_install_without_root_is_an_error_naming_sudo(
    cli: Cli, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = relay_config(cli, workdir)
    monkeypatch.setattr(units_cli.os, "geteuid", lambda: 1000)
    for action in ("install", "uninstall"):
        result = cli("service", action, "--relay", "--config", config)
        assert result.code == 1
        (line,) = result.err_lines
        assert line.startswith("error: ") and "needs root" in line, line
        assert f"sudo {sys.executable} -m peerup service {action} --relay" in line
        assert "--unit-dir DIR" in line


def test_run_as_is_only_for_the_relay(
    cli: Cli, node_config: Path, workdir: Path
) -> None:
    result = cli("service", "install", "--config", node_config, "--unit-dir",
                 workdir / "u", "--run-as", "nobody")  # fmt: skip
    assert result.code == 2
    assert result.err_lines[0].startswith("error: --run-as is for --relay")
    assert not (workdir / "u").exists()


def test_exec_start_quotes_spaces_percent_and_dollar() -> None:
    unit = units.daemon_unit(
        Path("/opt/my env/bin/python"), Path("/home/a/50%$x/config.yaml"), Path("/u")
    )
    line = next(x for x in unit.text.splitlines() if x.startswith("ExecStart="))
    assert line == (
        'ExecStart="/opt/my env/bin/python" -m peerup daemon --config '
        '"/home/a/50%%$$x/config.yaml"'
    )
    with pytest.raises(ValueError, match="absolute"):
        units.daemon_unit(Path("python"), Path("/c.yaml"), Path("/u"))


def test_install_refuses_a_config_that_does_not_load(
    cli: Cli, node_config: Path, workdir: Path
) -> None:
    """The relay's unit with a node's config.yaml would never start: refused."""
    result = cli("service", "install", "--relay", "--config", node_config,
                 "--unit-dir", workdir / "u")  # fmt: skip
    assert result.code == 1
    assert result.err_lines[0].startswith("error: "), result.err
    assert not (workdir / "u").exists()
