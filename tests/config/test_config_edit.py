"""config.load editing: comments, order and every other byte survive each edit."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from peerup.config import load
from peerup.config.schema import ServiceConfig
from peerup.core.errors import ConfigError
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.peer_id import PeerId


def peer(n: int) -> PeerId:
    return PeerId.from_public_key(
        Ed25519PrivateKey.from_seed(bytes([n]) * 32).public_key
    )


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


A, B, C = peer(1), peer(2), peer(3)

USER_FILE = f"""\
# my node   (hand-written, keep this)
version: 1
identity_key: identity.key   # next to this file

listen:
- /ip4/0.0.0.0/tcp/4001      # zero-indented list, as some people write
relays: []

services:
  # ssh first
  ssh:
    local_address: 127.0.0.1:22  # sshd
    enabled: true
    # only the laptop
    allowed_peers: [laptop]

  # the web thing
  web:
    local_address: '127.0.0.1:8080'
    enabled: true

# Names come last
names:
    laptop: {A}   # four-space indent here
    "phone": {B}
# end of file
"""


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    return write(tmp_path / "config.yaml", USER_FILE)


def edited(old: str, new: str) -> str:
    assert USER_FILE.count(old) == 1, old
    return USER_FILE.replace(old, new)


def test_user_file_is_valid(cfg: Path) -> None:
    assert [s.name for s in load.load_node(cfg).services] == ["ssh", "web"]


def test_add_service_appends_after_last_service(cfg: Path) -> None:
    load.add_service(cfg, ServiceConfig("nas", "192.168.1.5:445", False, (C,)))
    assert cfg.read_text() == edited(
        "    enabled: true\n\n# Names come last",
        "    enabled: true\n  nas:\n    local_address: 192.168.1.5:445\n"
        f"    enabled: false\n    allowed_peers:\n      - {C}\n\n# Names come last",
    )
    assert load.load_node(cfg).service("nas") == ServiceConfig(
        "nas", "192.168.1.5:445", False, (C,)
    )


def test_add_then_remove_service_restores_the_file(cfg: Path) -> None:
    load.add_service(cfg, ServiceConfig("nas", "192.168.1.5:445"))
    load.remove_service(cfg, "nas")
    assert cfg.read_text() == USER_FILE


def test_remove_first_service_keeps_the_next_ones_comment(cfg: Path) -> None:
    load.remove_service(cfg, "ssh")
    assert cfg.read_text() == edited(
        "  ssh:\n    local_address: 127.0.0.1:22  # sshd\n    enabled: true\n"
        "    # only the laptop\n    allowed_peers: [laptop]\n",
        "",
    )


def test_remove_last_service_keeps_the_section_comment_after_it(cfg: Path) -> None:
    load.remove_service(cfg, "web")
    assert cfg.read_text() == edited(
        "  web:\n    local_address: '127.0.0.1:8080'\n    enabled: true\n", ""
    )


def test_removing_every_service_leaves_an_empty_mapping(cfg: Path) -> None:
    load.remove_service(cfg, "ssh")
    load.remove_service(cfg, "web")
    text = cfg.read_text()
    assert (
        "services: {}\n  # ssh first\n\n  # the web thing\n\n# Names come last" in text
    )
    assert load.load_node(cfg).services == ()
    load.add_service(cfg, ServiceConfig("ssh", "127.0.0.1:22"))
    assert load.load_node(cfg).service("ssh") is not None


def test_set_service_enabled_changes_only_that_value(cfg: Path) -> None:
    load.set_service_enabled(cfg, "ssh", False)
    assert cfg.read_text() == edited(
        "22  # sshd\n    enabled: true", "22  # sshd\n    enabled: false"
    )
    load.set_service_enabled(cfg, "ssh", True)
    assert cfg.read_text() == USER_FILE


def test_set_service_enabled_adds_the_key_when_missing(tmp_path: Path) -> None:
    text = (
        "version: 1\nidentity_key: k\nservices:\n  ssh:\n    local_address: h:22\n# x\n"
    )
    path = write(tmp_path / "c.yaml", text)
    load.set_service_enabled(path, "ssh", False)
    assert path.read_text() == text.replace("h:22\n", "h:22\n    enabled: false\n")


def test_set_service_enabled_unchanged_does_not_write(cfg: Path) -> None:
    before = cfg.stat().st_ino
    load.set_service_enabled(cfg, "web", True)
    assert cfg.stat().st_ino == before


def test_set_name_adds_with_the_files_indentation(cfg: Path) -> None:
    load.set_name(cfg, "desk", C)
    assert cfg.read_text() == edited(
        f'    "phone": {B}\n', f'    "phone": {B}\n    desk: {C}\n'
    )


def test_set_name_replaces_only_the_value(cfg: Path) -> None:
    load.set_name(cfg, "laptop", C)
    assert cfg.read_text() == edited(f"laptop: {A}   #", f"laptop: {C}   #")
    load.set_name(cfg, "phone", C)
    assert f'"phone": {C}\n' in cfg.read_text()
    assert load.load_node(cfg).resolve_name("phone") == C


def test_remove_name(cfg: Path) -> None:
    load.remove_name(cfg, "phone")
    assert cfg.read_text() == edited(f'    "phone": {B}\n', "")


def test_remove_name_still_used_by_a_service_is_refused(cfg: Path) -> None:
    with pytest.raises(ConfigError, match="would make the file invalid") as info:
        load.remove_name(cfg, "laptop")
    assert info.value.field == "services.ssh.allowed_peers[0]"
    assert cfg.read_text() == USER_FILE


def test_edits_on_the_init_template(tmp_path: Path) -> None:
    text = load.render_node_config("identity.key", ["/ip4/0.0.0.0/tcp/4001"], [], None)
    path = write(tmp_path / "config.yaml", text)
    load.add_service(path, ServiceConfig("ssh", "127.0.0.1:22"))
    load.set_name(path, "laptop", A)
    expected = text.replace(
        "services: {}\n",
        "services:\n  ssh:\n    local_address: 127.0.0.1:22\n    enabled: true\n"
        "    allowed_peers: []\n",
    ).replace("names: {}\n", f"names:\n  laptop: {A}\n")
    assert path.read_text() == expected
    load.remove_service(path, "ssh")
    load.remove_name(path, "laptop")
    assert path.read_text() == text


def test_sections_are_created_when_missing(tmp_path: Path) -> None:
    text = "# c\nversion: 1\nidentity_key: k\n# tail\n"
    path = write(tmp_path / "c.yaml", text)
    load.add_service(path, ServiceConfig("ssh", "127.0.0.1:22"))
    load.set_name(path, "laptop", A)
    assert path.read_text() == (
        "# c\nversion: 1\nidentity_key: k\nservices:\n  ssh:\n"
        "    local_address: 127.0.0.1:22\n    enabled: true\n    allowed_peers: []\n"
        f"names:\n  laptop: {A}\n# tail\n"
    )


def test_flow_style_sections_are_edited_through_the_tree(tmp_path: Path) -> None:
    text = (
        "version: 1  # v\nidentity_key: k\n"
        "services: {ssh: {local_address: '127.0.0.1:22'}}\n"
        f"names: {{laptop: {A}}}\n"
    )
    path = write(tmp_path / "c.yaml", text)
    load.add_service(path, ServiceConfig("web", "127.0.0.1:80"))
    load.set_service_enabled(path, "ssh", False)
    load.set_name(path, "laptop", B)
    cfg = load.load_node(path)
    assert [(s.name, s.enabled) for s in cfg.services] == [
        ("ssh", False),
        ("web", True),
    ]
    assert cfg.names == (("laptop", B),)
    assert path.read_text().startswith("version: 1  # v\n")


def test_numeric_looking_names_are_quoted(cfg: Path) -> None:
    load.set_name(cfg, "123", C)
    load.add_service(cfg, ServiceConfig("8080", "127.0.0.1:8080"))
    loaded = load.load_node(cfg)
    assert loaded.resolve_name("123") == C
    assert loaded.service("8080") is not None


@pytest.mark.parametrize(
    ("service", "message"),
    [
        (ServiceConfig("ssh", "127.0.0.1:2222"), "already exists"),
    ],
)
def test_add_existing_service_is_refused(
    cfg: Path, service: ServiceConfig, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load.add_service(cfg, service)
    assert info.value.path == str(cfg)
    assert (
        info.value.hint is not None and "peerup service remove ssh" in info.value.hint
    )
    assert cfg.read_text() == USER_FILE


def test_unknown_service_or_name_is_refused_listing_known_ones(cfg: Path) -> None:
    with pytest.raises(ConfigError, match="no service named 'ftp'") as info:
        load.remove_service(cfg, "ftp")
    assert info.value.hint == "defined: ssh, web"
    with pytest.raises(ConfigError, match="no service named"):
        load.set_service_enabled(cfg, "ftp", True)
    with pytest.raises(ConfigError, match="no name named 'desk'"):
        load.remove_name(cfg, "desk")
    assert cfg.read_text() == USER_FILE


def test_invalid_name_is_refused(cfg: Path) -> None:
    with pytest.raises(ConfigError, match="invalid name"):
        load.set_name(cfg, "my laptop", C)
    with pytest.raises(ConfigError, match="itself a valid peer ID"):
        load.set_name(cfg, str(A), C)
    assert cfg.read_text() == USER_FILE


def test_invalid_file_is_not_edited(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "version: 1\nidentity_key: k\nlisen: []\n")
    with pytest.raises(ConfigError, match="unknown key") as info:
        load.add_service(path, ServiceConfig("ssh", "127.0.0.1:22"))
    assert info.value.line == 3
    assert path.read_text() == "version: 1\nidentity_key: k\nlisen: []\n"


def test_world_writable_file_is_not_edited(cfg: Path) -> None:
    cfg.chmod(0o666)
    with pytest.raises(ConfigError, match="too open"):
        load.set_name(cfg, "desk", C)
    assert cfg.read_text() == USER_FILE


def test_edited_file_is_private(cfg: Path) -> None:
    cfg.chmod(0o644)
    load.set_name(cfg, "desk", C)
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600


def test_crash_before_rename_leaves_the_old_file(
    cfg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(src: str, dst: str) -> None:
        raise OSError("killed")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="killed"):
        load.add_service(cfg, ServiceConfig("nas", "192.168.1.5:445"))
    assert cfg.read_text() == USER_FILE
    assert os.listdir(cfg.parent) == ["config.yaml"]  # no temporary file left
