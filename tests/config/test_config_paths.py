"""config.paths: the config directory, the search order, relative-path resolution."""

from __future__ import annotations

from pathlib import Path

import platformdirs
import pytest

from peerup.config import paths
from peerup.core.errors import ConfigError


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    cwd, user, system = tmp_path / "cwd", tmp_path / "user", tmp_path / "etc"
    for d in (cwd, user, system):
        d.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("PEERUP_CONFIG_DIR", str(user))
    monkeypatch.setattr(paths, "SYSTEM_CONFIG_DIR", system)
    return {"cwd": cwd, "user": user, "system": system}


def test_default_config_dir_reads_env_at_call_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PEERUP_CONFIG_DIR", raising=False)
    assert paths.default_config_dir() == Path(platformdirs.user_config_dir("peerup"))
    monkeypatch.setenv("PEERUP_CONFIG_DIR", str(tmp_path / "x"))
    assert paths.default_config_dir() == tmp_path / "x"


def test_find_config_prefers_local_file(places: dict[str, Path]) -> None:
    for where, name in (("cwd", "peerup.yaml"), ("user", "config.yaml")):
        (places[where] / name).write_text("version: 1\n")
    assert paths.find_config(None) == places["cwd"] / "peerup.yaml"


def test_find_config_falls_back_to_user_then_system(places: dict[str, Path]) -> None:
    (places["system"] / "config.yaml").write_text("version: 1\n")
    assert paths.find_config(None) == places["system"] / "config.yaml"
    (places["user"] / "config.yaml").write_text("version: 1\n")
    assert paths.find_config(None) == places["user"] / "config.yaml"


def test_find_config_names_every_place_it_looked(places: dict[str, Path]) -> None:
    with pytest.raises(ConfigError) as info:
        paths.find_config(None)
    message = str(info.value)
    assert "no config found" in message
    for where in ("cwd", "user", "system"):
        assert str(places[where]) in message
    assert info.value.hint is not None and "peerup init" in info.value.hint


def test_find_config_explicit_must_exist(places: dict[str, Path]) -> None:
    (places["user"] / "config.yaml").write_text("version: 1\n")
    missing = places["cwd"] / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        paths.find_config(missing)
    assert info.value.path == str(missing)
    explicit = places["cwd"] / "mine.yaml"
    explicit.write_text("version: 1\n")
    assert paths.find_config(explicit) == explicit


def test_find_relay_config_hints_relay_setup(places: dict[str, Path]) -> None:
    with pytest.raises(ConfigError) as info:
        paths.find_relay_config(None)
    assert info.value.hint is not None and "relay setup" in info.value.hint
    (places["user"] / "relay-server.yaml").write_text("version: 1\n")
    assert paths.find_relay_config(None) == places["user"] / "relay-server.yaml"


def test_resolve_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "conf" / "config.yaml"
    assert paths.resolve(config, "identity.key") == tmp_path / "conf" / "identity.key"
    assert paths.resolve(config, "keys/a.key") == tmp_path / "conf" / "keys" / "a.key"
    assert paths.resolve(config, "/abs/a.key") == Path("/abs/a.key")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert paths.resolve(config, "~/a.key") == tmp_path / "home" / "a.key"


def test_resolve_relative_config_file_gives_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert (
        paths.resolve(Path("peerup.yaml"), "identity.key") == tmp_path / "identity.key"
    )
