"""OpenSSH StrictModes for keys, allowlists and config files.

A file is refused when another user (not root) owns it, or owns or may write a
directory on its path: up to the home directory for a file under it, else up to
``/``. A root-owned sticky directory (``/tmp``) may be world-writable above the
file's own directory, never as it. The error names the file or the directory and
gives a ``chmod``/``chown`` hint. Ownership cases need root (``chown`` to nobody) and
skip otherwise.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable
from pathlib import Path

import pytest

from peerup.app.allowlist import Allowlist
from peerup.config import files, identity_store, load
from peerup.core.errors import ConfigError
from peerup.core.keys import Ed25519PrivateKey

NOBODY = 65534
Loader = Callable[[Path], object]


def is_root() -> bool:
    return os.geteuid() == 0


def me() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def write_key(directory: Path) -> Path:
    path = directory / "identity.key"
    files.write_atomic(path, Ed25519PrivateKey.generate().to_protobuf())
    return path


def write_allowlist(directory: Path) -> Path:
    path = directory / "authorized_keys"
    files.write_atomic(path, "# nobody yet\n")
    return path


def write_config(directory: Path) -> Path:
    write_key(directory)
    write_allowlist(directory)
    text = load.render_node_config(
        identity_key="identity.key",
        listen=["/ip4/127.0.0.1/tcp/0"],
        relays=[],
        network_name=None,
    )
    path = directory / "config.yaml"
    files.write_atomic(path, text, mode=0o644)
    return path


def load_allowlist(path: Path) -> None:
    Allowlist(path).load()


# (what to write into a directory, how it is loaded), for each kind of file.
KINDS: dict[str, tuple[Callable[[Path], Path], Loader]] = {
    "identity key": (write_key, identity_store.load),
    "authorized_keys": (write_allowlist, load_allowlist),
    "config.yaml": (write_config, load.load_node),
}
kinds = pytest.mark.parametrize("kind", list(KINDS))


@pytest.fixture(autouse=True)
def home_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """HOME outside tmp_path, so every case walks up to ``/``."""
    monkeypatch.setenv("HOME", str(tmp_path.parent / "no-such-home"))


@kinds
def test_files_in_a_private_directory_load(tmp_path: Path, kind: str) -> None:
    write, load_it = KINDS[kind]
    load_it(write(tmp_path / "conf"))


@kinds
@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702], ids=oct)
def test_own_directory_writable_by_others_is_refused(
    tmp_path: Path, kind: str, mode: int
) -> None:
    write, load_it = KINDS[kind]
    directory = tmp_path / "conf"
    path = write(directory)
    directory.chmod(mode)

    with pytest.raises(ConfigError) as err:
        load_it(path)

    message = str(err.value)
    assert f"its directory {directory} is writable by group or others" in message
    assert f"mode {mode:04o}" in message
    assert err.value.hint == f"chmod go-w {directory}"


def test_an_ancestor_writable_by_others_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    path = write_key(shared / "mine" / "peerup")
    shared.chmod(0o777)

    with pytest.raises(ConfigError, match=f"its directory {shared} is writable"):
        identity_store.load(path)


def test_a_sticky_own_directory_is_still_refused(tmp_path: Path) -> None:
    directory = tmp_path / "conf"
    path = write_key(directory)
    directory.chmod(0o1777)

    with pytest.raises(ConfigError, match="writable by group or others"):
        identity_store.load(path)


def test_a_root_owned_sticky_ancestor_like_tmp_is_accepted(tmp_path: Path) -> None:
    if not is_root():
        pytest.skip("needs root: the sticky ancestor must be owned by root")
    sticky = tmp_path / "sticky"
    path = write_key(sticky / "mine")
    sticky.chmod(0o1777)

    identity_store.load(path)  # as /tmp/<private dir>/identity.key


def test_directories_above_home_are_not_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared"
    home = shared / "home"
    path = write_key(home / ".config" / "peerup")
    home.chmod(0o700)
    shared.chmod(0o777)  # above home: as OpenSSH, not our business
    monkeypatch.setenv("HOME", str(home))

    identity_store.load(path)

    home.chmod(0o770)  # home itself is checked
    with pytest.raises(ConfigError, match=f"its directory {home} is writable"):
        identity_store.load(path)


@kinds
def test_file_owned_by_another_user_is_refused(tmp_path: Path, kind: str) -> None:
    if not is_root():
        pytest.skip("needs root to give a file to another user (chown nobody)")
    write, load_it = KINDS[kind]
    path = write(tmp_path / "conf")
    os.chown(path, NOBODY, -1)

    with pytest.raises(ConfigError) as err:
        load_it(path)

    assert str(path) in str(err.value)
    assert "owned by nobody" in str(err.value)
    assert err.value.hint == f"chown {me()} {path}"


def test_directory_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    if not is_root():
        pytest.skip("needs root to give a directory to another user (chown nobody)")
    directory = tmp_path / "conf"
    path = write_key(directory)
    os.chown(directory, NOBODY, -1)

    with pytest.raises(ConfigError) as err:
        identity_store.load(path)

    assert f"its directory {directory} is owned by nobody" in str(err.value)
    assert err.value.hint is not None
    assert err.value.hint.startswith(f"chown {me()} {directory}")


def test_symlinked_directory_is_checked_where_it_points(tmp_path: Path) -> None:
    real = tmp_path / "real"
    path = write_key(real)
    link = tmp_path / "link"
    link.symlink_to(real)
    identity_store.load(link / path.name)

    real.chmod(0o777)

    with pytest.raises(ConfigError, match=f"its directory {real} is writable"):
        identity_store.load(link / path.name)


def test_write_atomic_creates_missing_parents_private(tmp_path: Path) -> None:
    old = os.umask(0o002)  # a umask that would make `mkdir -p` parents 0775
    try:
        path = write_key(tmp_path / "a" / "b" / "c")
    finally:
        os.umask(old)

    for directory in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"):
        assert directory.stat().st_mode & 0o777 == 0o700, directory
    identity_store.load(path)
