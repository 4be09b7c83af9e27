"""The only place that writes files: atomically, with mode 0600, and permission checks.

A write goes to a temporary file in the same directory, is fsynced, renamed over the
target and the directory is fsynced, so a process killed at any moment leaves either
the old file or the new one, never a half-written one. The temporary file is named
``.<name>.<pid>.<random>.tmp``; one left by a killed writer is removed at the next
start (:func:`remove_stale_temps`: its writer is dead, or it is older than
:data:`STALE_TEMP_S`). Secrets (keys, the API cookie, allowlists) are refused on load
when group or world can read or write them, as OpenSSH does for its keys.

Like OpenSSH's StrictModes (``secure_filename`` in its ``auth.c``), keys, allowlists
and config files are also refused when another user owns them (root excepted), or
owns or may write a directory on their path (:func:`check_secure_path`): up to the
home directory for a file under it, else up to ``/``. A root-owned sticky directory
such as ``/tmp`` may be world-writable above the file's own directory, which itself
must never be. Not checked: ACLs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import re
import stat
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from peerup.core.errors import ConfigError

log = logging.getLogger(__name__)

STALE_TEMP_S: Final = 10.0
"""A temporary file this old is left over even if a process with its writer's pid
runs (pids are reused); a live writer keeps one for milliseconds."""
_TEMP_RE: Final = re.compile(r"^\.(?P<name>.+?)\.(?:(?P<pid>\d+)\.)?[a-z0-9_]{8}\.tmp$")
"""The temporary names of :func:`_write_temp` (without the pid: older versions)."""


def _make_private_dirs(directory: Path) -> None:
    """Create ``directory`` and any missing parent with mode 0700 (``mkdir -p``
    gives parents the default mode, which :func:`check_secure_path` may refuse)."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        if directory.parent == directory:
            break
        directory = directory.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir(mode=0o700)


def _write_temp(path: Path, raw: bytes, mode: int) -> str:
    """Write ``raw`` to a fsynced temporary file beside ``path``; returns its name."""
    _make_private_dirs(path.parent)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent
    )
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp


def _fsync_dir(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_atomic(path: Path, data: bytes | str, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically; the file gets ``mode``."""
    path = Path(path)
    tmp = _write_temp(path, data.encode() if isinstance(data, str) else data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def create_exclusive(path: Path, data: bytes | str, mode: int = 0o600) -> bool:
    """Create ``path`` with ``data`` only if it does not exist; False if it did.

    The content is written and fsynced under a temporary name, then hard-linked into
    place: ``link`` fails if the name exists, so two concurrent creators cannot both
    win, and the file never appears half-written.
    """
    path = Path(path)
    tmp = _write_temp(path, data.encode() if isinstance(data, str) else data, mode)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(path.parent)
    return True


def _pid_is_dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: it runs, as another user
        return False
    return False


def remove_stale_temps(directory: Path, *, now: float | None = None) -> list[Path]:
    """Remove the temporary files of atomic writes that a killed writer left in
    ``directory``: those whose writer's pid is dead, or older than
    :data:`STALE_TEMP_S`. Returns what was removed (a missing directory: nothing).
    """
    now = time.time() if now is None else now
    me = os.geteuid()
    removed = []
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    for name in names:
        match = _TEMP_RE.match(name)
        if match is None:
            continue
        path = Path(directory, name)
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue  # its writer renamed it meanwhile
        if not stat.S_ISREG(st.st_mode) or st.st_uid != me:
            continue
        pid = match["pid"]
        if not (pid and _pid_is_dead(int(pid))) and now - st.st_mtime < STALE_TEMP_S:
            continue  # a live writer's, probably
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
            log.info("removed %s, left by an interrupted write of %s", path, match[1])
    return removed


def remove_stale_temps_beside(paths: Iterable[Path]) -> list[Path]:
    """:func:`remove_stale_temps` in the directory of each of ``paths`` (once each);
    called when a daemon or relay starts."""
    removed = []
    for directory in dict.fromkeys(Path(p).parent for p in paths):
        removed += remove_stale_temps(directory)
    return removed


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _home() -> Path | None:
    home = os.path.expanduser("~")
    return Path(os.path.realpath(home)) if home != "~" else None


def check_secure_path(path: Path) -> None:
    """Refuse ``path`` if another user owns it (root excepted), or owns or may write
    a directory on its way from ``/`` (or from the home directory, for a file under
    it): whoever can write those directories can replace the file.

    Raises:
        ConfigError: naming the file or directory, with a chown or chmod hint.
    """
    me = os.geteuid()
    real = Path(os.path.realpath(path))
    try:
        st = real.stat()
    except FileNotFoundError:
        raise ConfigError("file not found", path=str(path)) from None
    if st.st_uid not in (me, 0):
        raise ConfigError(
            f"owned by {_user(st.st_uid)}, not by {_user(me)} (who runs peer-up) "
            "or root: that user could change it",
            path=str(path),
            hint=f"chown {_user(me)} {real}",
        )
    home = _home()
    stop = home if home is not None and real.is_relative_to(home) else None
    directory = real.parent
    while True:
        st = directory.stat()
        if st.st_uid not in (me, 0):
            raise ConfigError(
                f"its directory {directory} is owned by {_user(st.st_uid)}, who "
                "could replace the file",
                path=str(path),
                hint=f"chown {_user(me)} {directory} (or move the file)",
            )
        # A root-owned sticky directory (/tmp) lets no one replace what others own
        # in it; it is accepted above the file's own directory only.
        shared = (
            st.st_mode & stat.S_ISVTX and st.st_uid == 0 and directory != real.parent
        )
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not shared:
            raise ConfigError(
                f"its directory {directory} is writable by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}), who could replace the file",
                path=str(path),
                hint=f"chmod go-w {directory}",
            )
        if directory == stop or directory.parent == directory:
            return
        directory = directory.parent


def check_private(path: Path) -> None:
    """Refuse a secret file that group or others may read or write, or that is not
    safe from other users (:func:`check_secure_path`).

    Raises:
        ConfigError: with a chmod or chown hint.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError("file not found", path=str(path)) from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"permissions {stat.S_IMODE(st.st_mode):04o} are too open "
            "(group or others can access it)",
            path=str(path),
            hint=f"chmod 600 {path}",
        )
    check_secure_path(path)


def read_private(path: Path) -> bytes:
    """Read a secret file after :func:`check_private`."""
    check_private(path)
    return Path(path).read_bytes()
