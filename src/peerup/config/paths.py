"""Where peer-up looks for its config files, and how relative paths in them resolve.

The per-user directory comes from platformdirs (``~/.config/peerup`` on Linux) unless
``PEERUP_CONFIG_DIR`` is set; the variable is read when a function is called, never at
import, so tests and the CLI can change it. A node's config is searched in
``./peerup.yaml``, then the user directory, then ``/etc/peerup``. Relative paths inside
a config file (keys, allowlists) resolve against that file's directory, in
:func:`resolve` only. Not supported: XDG_CONFIG_DIRS search lists, merged configs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

import platformdirs

from peerup.core.errors import ConfigError

APP_NAME: Final = "peerup"
ENV_CONFIG_DIR: Final = "PEERUP_CONFIG_DIR"
CONFIG_FILE_NAME: Final = "config.yaml"
LOCAL_CONFIG_FILE_NAME: Final = "peerup.yaml"
RELAY_CONFIG_FILE_NAME: Final = "relay-server.yaml"
SYSTEM_CONFIG_DIR: Final = Path("/etc/peerup")


def default_config_dir() -> Path:
    """The per-user config directory (``$PEERUP_CONFIG_DIR`` if set)."""
    override = os.environ.get(ENV_CONFIG_DIR)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_config_dir(APP_NAME))


def node_config_candidates() -> list[Path]:
    """Where :func:`find_config` looks, in order."""
    return [
        Path.cwd() / LOCAL_CONFIG_FILE_NAME,
        default_config_dir() / CONFIG_FILE_NAME,
        SYSTEM_CONFIG_DIR / CONFIG_FILE_NAME,
    ]


def relay_config_candidates() -> list[Path]:
    """Where :func:`find_relay_config` looks, in order."""
    return [
        default_config_dir() / RELAY_CONFIG_FILE_NAME,
        SYSTEM_CONFIG_DIR / RELAY_CONFIG_FILE_NAME,
    ]


def find_config(explicit: Path | None) -> Path:
    """The node config file to use: ``explicit`` if given, else the first found.

    Raises:
        ConfigError: ``explicit`` does not exist, or no candidate does.
    """
    return _find(explicit, node_config_candidates(), "run `peerup init` to create one")


def find_relay_config(explicit: Path | None) -> Path:
    """The relay server config file to use: ``explicit`` if given, else the first found.

    Raises:
        ConfigError: ``explicit`` does not exist, or no candidate does.
    """
    return _find(
        explicit, relay_config_candidates(), "run `peerup relay setup` to create one"
    )


def resolve(config_file: Path, value: str | Path) -> Path:
    """``value`` with ``~`` expanded, relative to ``config_file``'s directory."""
    target = Path(value).expanduser()
    if target.is_absolute():
        return target
    return Path(config_file).expanduser().absolute().parent / target


def _find(explicit: Path | None, candidates: list[Path], how_to_create: str) -> Path:
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(
                "config file not found",
                path=str(path),
                hint=f"check the path, or {how_to_create}",
            )
        return path
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise ConfigError(
        f"no config found (looked in {looked})",
        hint=f"{how_to_create}, or pass --config PATH",
    )
