"""The only place that writes files: atomically, with mode 0600, and permission checks.

A write goes to a temporary file in the same directory, is fsynced, renamed over the
target and the directory is fsynced, so a process killed at any moment leaves either
the old file or the new one, never a half-written one. Secrets (keys, the API cookie,
allowlists) are refused on load when group or world can read or write them, as
OpenSSH does for its keys.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from peerup.core.errors import ConfigError


def _write_temp(path: Path, raw: bytes, mode: int) -> str:
    """Write ``raw`` to a fsynced temporary file beside ``path``; returns its name."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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


def check_private(path: Path) -> None:
    """Refuse a secret file that group or others may read or write.

    Raises:
        ConfigError: with a chmod hint.
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


def read_private(path: Path) -> bytes:
    """Read a secret file after :func:`check_private`."""
    check_private(path)
    return Path(path).read_bytes()
