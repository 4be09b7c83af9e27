"""systemd units for ``peerup service install``: the daemon and the relay as services.

Pure: builds a unit's text and the ``systemctl`` commands that start or stop it from
absolute paths; cli/units.py finds those paths, writes the file and runs the commands.
- The daemon is a *user* unit (``~/.config/systemd/user/peerup.service``): it runs as
  the user who owns the identity and config, under their user manager. Without
  ``loginctl enable-linger`` that manager, and so the daemon, runs only while the user
  is logged in.
- The relay is a *system* unit (``/etc/systemd/system/peerup-relay.service``), run as
  the owner of its config (never root when the config belongs to someone else) with
  the file system read-only except its own directory, no new privileges, a private
  /tmp and only the IPv4, IPv6 and Unix socket address families.
Both run ``<python> -m peerup …`` with the interpreter that wrote them, so the unit
keeps working whatever ``PATH`` the service manager has, and restart on failure.
Reference: systemd.service(5), systemd.exec(5), systemd.syntax(7) (quoting).
Not supported: other init systems, socket activation, templated units.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from peerup.core.errors import Error

DAEMON_UNIT: Final = "peerup.service"
RELAY_UNIT: Final = "peerup-relay.service"
SYSTEM_UNIT_DIR: Final = Path("/etc/systemd/system")
LIMIT_NOFILE: Final = 65536
"""Every tunnelled TCP connection and every peer is a file descriptor."""
RESTART_SEC: Final = 5
WATCHDOG_SEC: Final = 30
"""systemd restarts a service whose event loop sent no WATCHDOG=1 for this long."""
DAEMON_MEMORY_MAX: Final = "512M"
RELAY_MEMORY_MAX: Final = "1G"
"""Ceilings far above what the soak test measured (a daemon and a relay each under
100 MB under a flood), so that a leak ends in a restart, not in the OOM killer
choosing among the machine's other processes."""


class UnitError(Error):
    """A unit could not be installed or removed (printed with a hint)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True, slots=True)
class Unit:
    """A unit file to write, and how systemctl reaches it."""

    name: str
    path: Path
    text: str
    exec_argv: tuple[str, ...]
    """The command the unit runs."""
    is_user: bool
    """A user unit (``systemctl --user``) rather than a system one."""

    def systemctl(self, *args: str) -> list[str]:
        return ["systemctl", *(["--user"] if self.is_user else []), *args]

    def start_commands(self, *, restart: bool = False) -> list[list[str]]:
        """What makes systemd read the unit and start it now and at every boot;
        with ``restart``, a running one is restarted (its file changed)."""
        start = (
            [self.systemctl("enable", self.name), self.systemctl("restart", self.name)]
            if restart
            else [self.systemctl("enable", "--now", self.name)]
        )
        return [self.systemctl("daemon-reload"), *start]

    def stop_commands(self) -> list[list[str]]:
        """What stops the unit and keeps it from starting again (before removing it)."""
        return [self.systemctl("disable", "--now", self.name)]

    def reload_commands(self) -> list[list[str]]:
        """What makes systemd forget a removed unit file."""
        return [self.systemctl("daemon-reload")]


_PLAIN: Final = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


def quote_arg(arg: str, *, is_command: bool = True) -> str:
    """One word of a unit setting (systemd.syntax(7), systemd.service(5)): ``%``
    doubled so no specifier is expanded, ``$`` too in a command line (where it would
    expand a variable), and double quotes around anything with spaces, quotes or
    backslashes."""
    escaped = arg.replace("%", "%%")
    if is_command:
        escaped = escaped.replace("$", "$$")
    if arg and _PLAIN.fullmatch(arg):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def user_unit_dir(xdg_config_home: str | None, home: Path) -> Path:
    """Where systemd's user manager reads a user's own units."""
    base = home / ".config"
    if xdg_config_home and Path(xdg_config_home).is_absolute():
        base = Path(xdg_config_home)
    return base / "systemd" / "user"


def command_line(argv: list[str] | tuple[str, ...]) -> str:
    return " ".join(quote_arg(a) for a in argv)


def _check_absolute(**paths: Path) -> None:
    for what, path in paths.items():
        if not path.is_absolute():
            raise ValueError(f"{what} must be an absolute path: {path}")


def daemon_unit(python: Path, config: Path, unit_dir: Path) -> Unit:
    """The user unit running ``peerup daemon --config <config>``.

    Args:
        python: the interpreter that has peer-up installed (absolute).
        config: the node's config.yaml (absolute).
        unit_dir: where the file goes (absolute).
    """
    _check_absolute(python=python, config=config, unit_dir=unit_dir)
    argv = [str(python), "-m", "peerup", "daemon", "--config", str(config)]
    text = "\n".join(
        [
            "# Written by `peerup service install`; `peerup service uninstall` removes it.",
            "[Unit]",
            "Description=peer-up daemon (relay reservations, services, local API)",
            "",
            "[Service]",
            # READY once listening and reserved, WATCHDOG=1 from the event loop
            # (net/sdnotify.py): a hung daemon is restarted.
            "Type=notify",
            f"WatchdogSec={WATCHDOG_SEC}",
            f"ExecStart={command_line(argv)}",
            # The daemon re-reads config.yaml on SIGHUP.
            "ExecReload=/bin/kill -HUP $MAINPID",
            "Restart=on-failure",
            f"RestartSec={RESTART_SEC}",
            f"LimitNOFILE={LIMIT_NOFILE}",
            f"MemoryMax={DAEMON_MEMORY_MAX}",
            "Environment=PYTHONUNBUFFERED=1",
            "NoNewPrivileges=yes",
            "PrivateTmp=yes",
            "LockPersonality=yes",
            "RestrictSUIDSGID=yes",
            "",
            "[Install]",
            "WantedBy=default.target",
            "",
        ]
    )
    return Unit(DAEMON_UNIT, unit_dir / DAEMON_UNIT, text, tuple(argv), is_user=True)


def relay_unit(python: Path, config: Path, unit_dir: Path, *, user: str | None) -> Unit:
    """The system unit running ``peerup relay serve --config <config>``.

    Args:
        python: the interpreter that has peer-up installed (absolute).
        config: the relay's relay-server.yaml (absolute); its directory stays writable.
        unit_dir: where the file goes (absolute).
        user: the account to run as; None runs it as root.
    """
    _check_absolute(python=python, config=config, unit_dir=unit_dir)
    argv = [str(python), "-m", "peerup", "relay", "serve", "--config", str(config)]
    lines = [
        "# Written by `peerup service install --relay`; `peerup service uninstall "
        "--relay` removes it.",
        "[Unit]",
        "Description=peer-up relay (circuit relay v2)",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=notify",
        f"WatchdogSec={WATCHDOG_SEC}",
        f"ExecStart={command_line(argv)}",
    ]
    if user is not None:
        lines.append(f"User={user}")
    lines += [
        "Restart=on-failure",
        f"RestartSec={RESTART_SEC}",
        f"LimitNOFILE={LIMIT_NOFILE}",
        f"MemoryMax={RELAY_MEMORY_MAX}",
        "Environment=PYTHONUNBUFFERED=1",
        # Hardening (systemd.exec(5)): the relay only needs its own directory and
        # network sockets.
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        f"ReadWritePaths={quote_arg(str(config.parent), is_command=False)}",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectControlGroups=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "RestrictNamespaces=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    text = "\n".join(lines)
    return Unit(RELAY_UNIT, unit_dir / RELAY_UNIT, text, tuple(argv), is_user=False)


def shell_line(commands: list[list[str]]) -> str:
    """``commands`` as one shell line joined by ``&&`` (for the user to run)."""
    return " && ".join(shlex.join(c) for c in commands)
