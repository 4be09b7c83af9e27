"""Commit-confirmed config changes, as network appliances (and the Go original) do
them: apply a new ``config.yaml`` live, and go back to the previous one by itself
unless the change is confirmed in time (issue 15, item 5).

Files beside the config (``<name>`` is the config's file name):

- ``<name>.pending.json``: ``{"deadline": unix seconds, "backup": path, "applied_at"}``
  while a change waits for ``config confirm``. It is on disk, so the revert happens
  even if the command's session was cut by the change, and after a daemon restart.
- ``<name>.before``: the config as it was before the pending change.
- ``<name>.last-good``: the last config that ran for a while without a failed reload
  and without a pending change (:data:`GOOD_AFTER_S`), for ``config rollback``.

All writes are atomic (config/files.py). Time is passed in: the daemon's config
watcher calls :func:`due` and :func:`maybe_mark_good` on each tick.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from peerup.config import files, load
from peerup.core.errors import ConfigError, NotFound

GOOD_AFTER_S: Final = 60.0
"""A config that ran this long with no failed reload becomes the last-known-good."""


def pending_path(config: Path) -> Path:
    return config.with_name(config.name + ".pending.json")


def before_path(config: Path) -> Path:
    return config.with_name(config.name + ".before")


def last_good_path(config: Path) -> Path:
    return config.with_name(config.name + ".last-good")


@dataclass(frozen=True, slots=True)
class Pending:
    deadline: float
    applied_at: float


def read_pending(config: Path) -> Pending | None:
    path = pending_path(config)
    try:
        data = json.loads(path.read_text())
        return Pending(float(data["deadline"]), float(data["applied_at"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"unreadable pending change: {exc}",
            path=str(path),
            hint="`peerup config confirm` keeps the current config and removes it",
        ) from None


def apply(config: Path, new: Path, now: float, confirm_timeout_s: float | None) -> None:
    """Make ``new`` the config (it must load), keeping the current one to go back to
    if ``confirm_timeout_s`` is given and no confirmation comes in time.

    Raises:
        ConfigError: ``new`` is not a valid config (with its file and line), or a
            change is already pending.
    """
    try:
        text = new.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {new}: {exc.strerror or exc}") from None
    # Refused before anything changes; errors name the new file and its line.
    load.node_from_text(text, new)
    if confirm_timeout_s is not None:
        if read_pending(config) is not None:
            raise ConfigError(
                "a change is already waiting for confirmation",
                path=str(config),
                hint="`peerup config confirm` or `peerup config rollback` first",
            )
        files.write_atomic(before_path(config), config.read_text())
        files.write_atomic(
            pending_path(config),
            json.dumps(
                {
                    "deadline": now + confirm_timeout_s,
                    "applied_at": now,
                    "backup": str(before_path(config)),
                }
            ),
        )
    files.write_atomic(config, text)


def confirm(config: Path) -> bool:
    """Keep the pending change; False if none was pending."""
    path = pending_path(config)
    if not path.exists():
        return False
    path.unlink()
    return True


def revert(config: Path) -> bool:
    """Put back the config from before the pending change; False if none pending."""
    if not pending_path(config).exists():
        return False
    files.write_atomic(config, before_path(config).read_text())
    pending_path(config).unlink()
    return True


def due(config: Path, now: float) -> bool:
    """Whether a pending change ran out of time unconfirmed."""
    pending = read_pending(config)
    return pending is not None and now >= pending.deadline


def maybe_mark_good(config: Path, running_since: float, now: float) -> bool:
    """Save the running config as last-known-good once it ran :data:`GOOD_AFTER_S`
    with nothing pending; True when written."""
    if now - running_since < GOOD_AFTER_S or pending_path(config).exists():
        return False
    text = config.read_text()
    good = last_good_path(config)
    if good.exists() and good.read_text() == text:
        return False
    files.write_atomic(good, text)
    return True


def rollback(config: Path) -> Path:
    """Put back the last-known-good config (or the one before a pending change).

    Raises:
        NotFound: there is nothing to go back to.
    """
    if revert(config):
        return before_path(config)
    good = last_good_path(config)
    if not good.exists():
        raise NotFound(
            f"no last-known-good copy of {config} yet",
            hint=f"one is written once a config ran {GOOD_AFTER_S:.0f} s with the "
            "daemon and no failed reload",
        )
    load.node_from_text(good.read_text(), good)
    files.write_atomic(config, good.read_text())
    return good
