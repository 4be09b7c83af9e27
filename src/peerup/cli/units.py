"""``peerup service install|uninstall``: run the daemon (or, with ``--relay``, the
relay) as a systemd service.

The unit text comes from app/units.py, with this interpreter's absolute path
(``sys.executable -m peerup``, so a virtual environment or pipx install keeps working
whatever ``PATH`` systemd has) and the absolute path of the config in use. The file is
written atomically; then, when systemctl and a running systemd (and, for the daemon's
user unit, a user session) are there, ``systemctl [--user] daemon-reload`` and
``enable --now`` run; otherwise the exact commands are printed. ``--unit-dir DIR``
writes elsewhere and only prints the commands (tests use it). ``uninstall`` disables
and stops the unit where it can, then removes the file.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from peerup.app import units
from peerup.cli import common
from peerup.config import files, load, paths

SYSTEMCTL_TIMEOUT_S = 60.0
LINGER_DIR = Path("/var/lib/systemd/linger")
"""logind's record of the users whose manager runs without a login session."""


def register(ssub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``install`` and ``uninstall`` to the ``service`` command's sub-parsers."""
    i = ssub.add_parser(
        "install",
        help="run the daemon as a systemd user service (--relay: the relay, as a "
        "system service)",
    )
    _add_common(i)
    i.add_argument("--no-start", action="store_true", help="only write the unit file")
    i.add_argument(
        "--run-as",
        metavar="USER",
        default=None,
        help="with --relay: the account the relay runs as (default: the owner of "
        "its config file; root only if root owns it)",
    )
    i.set_defaults(run=run_install)
    u = ssub.add_parser("uninstall", help="stop and remove what `install` set up")
    _add_common(u)
    u.set_defaults(run=run_uninstall)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--relay",
        action="store_true",
        help=f"the relay's system unit ({units.SYSTEM_UNIT_DIR / units.RELAY_UNIT}; "
        "needs root) instead of the daemon's user unit",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="the config the service runs with (default: the one `peerup daemon`, "
        "or with --relay `peerup relay serve`, would use)",
    )
    p.add_argument(
        "--unit-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="write the unit file in DIR instead, and only print the systemctl "
        "commands",
    )


# --- where things are -----------------------------------------------------------------


def _python() -> Path:
    if not sys.executable:
        raise units.UnitError("cannot tell which Python runs peerup")
    # Not resolved: a virtual environment's python is a symlink whose target would
    # not see the environment's packages.
    return Path(sys.executable).absolute()


def _unit_dir(args: argparse.Namespace) -> Path:
    if args.unit_dir is not None:
        return Path(args.unit_dir).expanduser().absolute()
    if args.relay:
        return units.SYSTEM_UNIT_DIR
    return units.user_unit_dir(os.environ.get("XDG_CONFIG_HOME"), Path.home())


def _needs_root(args: argparse.Namespace, command: str) -> None:
    """The relay's unit goes in /etc/systemd/system: only root may write there."""
    if not args.relay or args.unit_dir is not None or os.geteuid() == 0:
        return
    config = f" --config {shlex.quote(str(args.config))}" if args.config else ""
    raise units.UnitError(
        f"`service {command} --relay` changes {units.SYSTEM_UNIT_DIR}: it needs root",
        hint=f"sudo {shlex.quote(str(_python()))} -m peerup service {command} "
        f"--relay{config}, or --unit-dir DIR to only write the file",
    )


def _config_owner(config: Path) -> str | None:
    """The account owning ``config``; None for root (or an unknown uid)."""
    uid = config.stat().st_uid
    if uid == 0:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def why_not_managed(args: argparse.Namespace, *, is_user: bool) -> str | None:
    """Why systemctl will not be run for this unit (None: it will)."""
    if args.unit_dir is not None:
        return f"the unit is in {args.unit_dir} (--unit-dir)"
    if shutil.which("systemctl") is None:
        return "systemctl is not installed here"
    if not Path("/run/systemd/system").is_dir():
        return "systemd is not running here"
    if is_user and not os.environ.get("XDG_RUNTIME_DIR"):
        return "there is no systemd user session here (XDG_RUNTIME_DIR is not set)"
    return None


def _systemctl(commands: list[list[str]]) -> None:
    """Run each command in turn.

    Raises:
        UnitError: one failed (with the commands still to run as the hint).
    """
    for n, cmd in enumerate(commands):
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=SYSTEMCTL_TIMEOUT_S
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise units.UnitError(
                f"`{shlex.join(cmd)}` failed: {exc}",
                hint=f"run: {units.shell_line(commands[n:])}",
            ) from None
        if done.returncode != 0:
            said = (done.stderr or done.stdout).strip().splitlines()
            raise units.UnitError(
                f"`{shlex.join(cmd)}` failed: {said[-1] if said else done.returncode}",
                hint=f"run: {units.shell_line(commands[n:])}",
            )


# --- install / uninstall --------------------------------------------------------------


def run_install(args: argparse.Namespace, io: common.CliIO) -> int:
    _needs_root(args, "install")
    python = _python()
    unit_dir = _unit_dir(args)
    if args.relay:
        config = paths.find_relay_config(args.config).absolute()
        load.load_relay(config)  # a unit that cannot start is no use
        user = args.run_as if args.run_as is not None else _config_owner(config)
        unit = units.relay_unit(python, config, unit_dir, user=user)
    else:
        if args.run_as is not None:
            raise common.UsageError(
                "--run-as is for --relay: the daemon's user unit runs as you"
            )
        config = paths.find_config(args.config).absolute()
        load.load_node(config)
        unit = units.daemon_unit(python, config, unit_dir)
    try:
        old: str | None = unit.path.read_text()
    except FileNotFoundError:
        old = None
    if old != unit.text:
        files.write_atomic(unit.path, unit.text, mode=0o644)
    state = "wrote" if old is None else "unchanged:" if old == unit.text else "updated"
    io.out(f"{state} {unit.path}")
    io.out(f"  ExecStart={units.command_line(unit.exec_argv)}")
    commands = unit.start_commands(restart=old is not None and old != unit.text)
    if args.no_start:
        io.out(f"to start it: {units.shell_line(commands)}")
        return 0
    reason = why_not_managed(args, is_user=unit.is_user)
    if reason is not None:
        io.out(f"{reason}; to start it, run: {units.shell_line(commands)}")
    else:
        _systemctl(commands)
        io.out(
            f"started {unit.name}: {shlex.join(unit.systemctl('status', unit.name))}"
        )
    user = _login_name()
    if unit.is_user and not (LINGER_DIR / user).exists():
        io.out(
            "to keep it running while you are logged out: "
            f"sudo loginctl enable-linger {shlex.quote(user)}"
        )
    return 0


def _login_name() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def run_uninstall(args: argparse.Namespace, io: common.CliIO) -> int:
    _needs_root(args, "uninstall")
    unit_dir = _unit_dir(args)
    name = units.RELAY_UNIT if args.relay else units.DAEMON_UNIT
    unit = units.Unit(name, unit_dir / name, "", (), is_user=not args.relay)
    if not unit.path.exists():
        raise units.UnitError(
            f"no {name} in {unit_dir}",
            hint="nothing to uninstall"
            + (
                ""
                if args.unit_dir
                else " (pass --unit-dir if it was written elsewhere)"
            ),
        )
    reason = why_not_managed(args, is_user=unit.is_user)
    if reason is None:
        _systemctl(unit.stop_commands())
    unit.path.unlink()
    # What `systemctl disable` removes, for when it could not run.
    for wants in unit_dir.glob("*.wants"):
        if (wants / name).is_symlink():
            (wants / name).unlink()
    io.out(f"removed {unit.path}")
    if reason is None:
        _systemctl(unit.reload_commands())
    else:
        stop = [unit.systemctl("stop", name), *unit.reload_commands()]
        io.out(f"{reason}; if it was running, run: {units.shell_line(stop)}")
    return 0
