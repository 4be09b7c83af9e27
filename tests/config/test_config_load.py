"""config.load: reading and validating node and relay files, and the templates."""

from __future__ import annotations

from pathlib import Path

import pytest

from peerup.config import load
from peerup.config.schema import RelayResourcesConfig
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


RELAY = peer(9)
LAPTOP = peer(1)

EXAMPLE = f"""\
version: 1
identity_key: identity.key
listen:
  - /ip4/0.0.0.0/tcp/4001
  - /ip6/::/tcp/4001
relays:
  - /ip4/203.0.113.10/tcp/7777/p2p/{RELAY}
network_name: home
security:
  authorized_keys: authorized_keys
  enforce_allowlist: true
services:
  ssh:
    local_address: 127.0.0.1:22
    enabled: true
    allowed_peers: []
  web:
    local_address: "[::1]:8080"
    enabled: false
    allowed_peers:
      - laptop
names:
  laptop: {LAPTOP}
"""


def test_example_file_loads(tmp_path: Path) -> None:
    cfg = load.load_node(write(tmp_path / "config.yaml", EXAMPLE))
    assert cfg.path == tmp_path / "config.yaml"
    assert cfg.version == 1
    assert cfg.identity_key == tmp_path / "identity.key"
    assert cfg.authorized_keys == tmp_path / "authorized_keys"
    assert cfg.listen == ("/ip4/0.0.0.0/tcp/4001", "/ip6/::/tcp/4001")
    assert cfg.relays == (f"/ip4/203.0.113.10/tcp/7777/p2p/{RELAY}",)
    assert cfg.network_name == "home" and cfg.enforce_allowlist
    ssh, web = cfg.services
    assert (ssh.name, ssh.local_address, ssh.enabled, ssh.allowed_peers) == (
        "ssh",
        "127.0.0.1:22",
        True,
        (),
    )
    assert (web.enabled, web.allowed_peers, web.port) == (False, (LAPTOP,), 8080)
    assert cfg.names == (("laptop", LAPTOP),)
    assert cfg.resolve_name("laptop") == LAPTOP


def test_minimal_file_uses_defaults(tmp_path: Path) -> None:
    cfg = load.load_node(write(tmp_path / "c.yaml", "version: 1\nidentity_key: k\n"))
    assert (cfg.listen, cfg.relays, cfg.services, cfg.names) == ((), (), (), ())
    assert cfg.authorized_keys == tmp_path / "authorized_keys"
    assert cfg.enforce_allowlist and cfg.network_name is None


def test_node_template_loads_back(tmp_path: Path) -> None:
    text = load.render_node_config(
        "keys/identity.key",
        ["/ip4/0.0.0.0/tcp/4001", "/ip6/::/tcp/4001"],
        [f"/dns4/relay.example.com/tcp/7777/p2p/{RELAY}"],
        "home",
    )
    assert text.count("#") > 10  # it explains itself
    cfg = load.load_node(write(tmp_path / "config.yaml", text))
    assert cfg.identity_key == tmp_path / "keys" / "identity.key"
    assert cfg.relays == (f"/dns4/relay.example.com/tcp/7777/p2p/{RELAY}",)
    assert cfg.network_name == "home"
    assert cfg.services == () and cfg.names == ()


def test_node_template_without_relays_or_network_name(tmp_path: Path) -> None:
    text = load.render_node_config("identity.key", [], [], None)
    cfg = load.load_node(write(tmp_path / "config.yaml", text))
    assert (cfg.listen, cfg.relays, cfg.network_name) == ((), (), None)


def test_relay_template_loads_back_with_defaults(tmp_path: Path) -> None:
    text = load.render_relay_config(["/ip4/0.0.0.0/tcp/7777", "/ip6/::/tcp/7777"])
    cfg = load.load_relay(write(tmp_path / "relay-server.yaml", text))
    assert cfg.listen == ("/ip4/0.0.0.0/tcp/7777", "/ip6/::/tcp/7777")
    assert cfg.identity_key == tmp_path / "relay_identity.key"
    assert cfg.authorized_keys == tmp_path / "relay_authorized_keys"
    assert cfg.enforce_allowlist
    assert cfg.resources == RelayResourcesConfig()


def test_relay_resources_override(tmp_path: Path) -> None:
    text = (
        "version: 1\nlisten: [/ip4/0.0.0.0/tcp/7777]\nidentity_key: k\n"
        "security: {enforce_allowlist: false}\n"
        "resources:\n  circuit_duration_s: 120\n  circuit_data_bytes: 131072\n"
    )
    cfg = load.load_relay(write(tmp_path / "r.yaml", text))
    assert not cfg.enforce_allowlist
    assert cfg.resources.circuit_duration_s == 120
    assert cfg.resources.circuit_data_bytes == 131072
    assert cfg.resources.max_reservations == 1024


def _replace(old: str, new: str) -> str:
    assert old in EXAMPLE
    return EXAMPLE.replace(old, new, 1)


# (file text, line, field, words in the message, words in the hint)
NODE_ERRORS = [
    (_replace("listen:", "lisen:"), 3, "lisen", "unknown key", "did you mean 'listen'"),
    (
        _replace("    enabled: false", "    enabeld: false"),
        19,
        "services.web.enabeld",
        "unknown key",
        "did you mean 'enabled'",
    ),
    (
        _replace("  enforce_allowlist: true", "  bogus: 1"),
        11,
        "security.bogus",
        "unknown key",
        "authorized_keys",
    ),
    (
        _replace("127.0.0.1:22", "127.0.0.1:99999"),
        14,
        "services.ssh.local_address",
        "out of range",
        "host:port",
    ),
    (
        _replace("127.0.0.1:22", "127.0.0.1"),
        14,
        "services.ssh.local_address",
        "host:port",
        "127.0.0.1:22",
    ),
    (_replace("  ssh:", "  ping:"), 13, "services.ping", "reserved", "pick another"),
    (_replace("  ssh:", "  SSH:"), 13, "services.SSH", "invalid service name", ""),
    (_replace("/ip6/::/tcp/4001", "/ip6/::/tcp/port"), 5, "listen[1]", "", "multiaddr"),
    (
        _replace("/ip6/::/tcp/4001", "0.0.0.0:4001"),
        5,
        "listen[1]",
        "start with",
        "IP:PORT",
    ),
    (_replace(f"/p2p/{RELAY}", ""), 7, "relays[0]", "/p2p/", "peerup relay info"),
    (
        _replace(f"/ip4/203.0.113.10/tcp/7777/p2p/{RELAY}", "203.0.113.10:7777"),
        7,
        "relays[0]",
        "start with",
        "IP:PORT",
    ),
    (
        _replace("/ip4/0.0.0.0/tcp/4001", f"/ip4/0.0.0.0/tcp/4001/p2p/{RELAY}"),
        4,
        "listen[0]",
        "must not contain /p2p/",
        "relays",
    ),
    (
        _replace("    enabled: true", "    enabled: yes"),
        15,
        "services.ssh.enabled",
        "true or false",
        "YAML 1.2",
    ),
    (
        _replace("  enforce_allowlist: true", "  enforce_allowlist: 1"),
        11,
        "security.enforce_allowlist",
        "true or false",
        "",
    ),
    (
        _replace("version: 1", "version: 2"),
        1,
        "version",
        "unsupported version 2",
        "upgrade",
    ),
    (_replace("version: 1", "version: one"), 1, "version", "whole number", ""),
    (
        _replace("identity_key: identity.key\n", ""),
        1,
        "identity_key",
        "required",
        "identity_key",
    ),
    (
        _replace(f"laptop: {LAPTOP}", "laptop: 12D3KooWnotapeer"),
        23,
        "names.laptop",
        "invalid peer ID",
        "12D3KooW",
    ),
    (
        _replace(f"laptop: {LAPTOP}", f"'{RELAY}': {LAPTOP}"),
        23,
        f"names.{RELAY}",
        "is itself a valid peer ID",
        "",
    ),
    (
        _replace("      - laptop", "      - desktop"),
        21,
        "services.web.allowed_peers[0]",
        "neither a peer ID nor a name",
        "laptop",
    ),
    (
        _replace("      - laptop", f"      - laptop\n      - {LAPTOP}"),
        22,
        "services.web.allowed_peers[1]",
        "listed twice",
        "",
    ),
    (
        _replace("network_name: home", "network_name: my home"),
        8,
        "network_name",
        "invalid network name",
        "",
    ),
    (
        _replace(
            "listen:\n  - /ip4/0.0.0.0/tcp/4001\n  - /ip6/::/tcp/4001",
            "listen: /ip4/0.0.0.0/tcp/4001",
        ),
        3,
        "listen",
        "must be a list",
        "- ",
    ),
    (
        _replace("  ssh:\n", "  ssh:\n    local_address: 127.0.0.1:23\n"),
        15,
        None,
        "duplicate key",
        "indentation",
    ),
    (_replace("  web:", "  web: [x"), 18, None, "YAML syntax error", "indentation"),
]


@pytest.mark.parametrize(("text", "line", "field", "message", "hint"), NODE_ERRORS)
def test_node_error_names_file_line_and_field(
    tmp_path: Path, text: str, line: int, field: str | None, message: str, hint: str
) -> None:
    path = write(tmp_path / "config.yaml", text)
    with pytest.raises(ConfigError) as info:
        load.load_node(path)
    err = info.value
    assert err.path == str(path)
    assert err.line == line, str(err)
    assert err.field == field
    assert message.lower() in str(err).lower()
    assert str(err).startswith(f"{path}:{line}: ")
    if hint:
        assert err.hint is not None and hint in err.hint, err.hint


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("- a\n- b\n", "must be a YAML mapping"),
        ("just text\n", "mapping"),
    ],
)
def test_node_file_that_is_not_a_mapping(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path / "config.yaml", text)
    with pytest.raises(ConfigError, match=message) as info:
        load.load_node(path)
    assert info.value.path == str(path)


RELAY_OK = "version: 1\nlisten:\n  - /ip4/0.0.0.0/tcp/7777\nidentity_key: k\n"

RELAY_ERRORS = [
    (
        RELAY_OK + "resources:\n  max_circuits: -1\n",
        6,
        "resources.max_circuits",
        "negative",
    ),
    (
        RELAY_OK + "resources:\n  max_circuit: 5\n",
        6,
        "resources.max_circuit",
        "unknown key",
    ),
    (
        RELAY_OK + "resources:\n  max_circuits: 1.5\n",
        6,
        "resources.max_circuits",
        "whole number",
    ),
    (
        RELAY_OK + "resources:\n  max_circuits: true\n",
        6,
        "resources.max_circuits",
        "whole number",
    ),
    (RELAY_OK + "services: {}\n", 5, "services", "unknown key"),
    ("version: 1\nlisten: []\nidentity_key: k\n", 2, "listen", "at least one"),
    ("version: 1\nidentity_key: k\n", 1, "listen", "at least one"),
]


@pytest.mark.parametrize(("text", "line", "field", "message"), RELAY_ERRORS)
def test_relay_error_names_file_line_and_field(
    tmp_path: Path, text: str, line: int, field: str, message: str
) -> None:
    path = write(tmp_path / "relay-server.yaml", text)
    with pytest.raises(ConfigError) as info:
        load.load_relay(path)
    assert (info.value.path, info.value.line, info.value.field) == (
        str(path),
        line,
        field,
    )
    assert message in str(info.value)


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666])
def test_writable_by_others_is_refused_with_chmod_hint(
    tmp_path: Path, mode: int
) -> None:
    path = write(tmp_path / "config.yaml", EXAMPLE, mode)
    with pytest.raises(ConfigError, match="too open") as info:
        load.load_node(path)
    assert info.value.hint == f"chmod go-w {path}"


def test_readable_by_others_is_fine(tmp_path: Path) -> None:
    # The config holds no secret; only writers could redirect the node.
    assert load.load_node(write(tmp_path / "config.yaml", EXAMPLE, 0o644)).version == 1


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found") as info:
        load.load_node(tmp_path / "config.yaml")
    assert info.value.hint is not None and "peerup init" in info.value.hint


def test_absolute_and_home_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    text = (
        "version: 1\nidentity_key: ~/id.key\n"
        f"security:\n  authorized_keys: {tmp_path}/ak\n"
    )
    cfg = load.load_node(write(tmp_path / "c.yaml", text))
    assert cfg.identity_key == tmp_path / "home" / "id.key"
    assert cfg.authorized_keys == tmp_path / "ak"


def test_null_sections_are_empty(tmp_path: Path) -> None:
    text = (
        "version: 1\nidentity_key: k\nlisten:\nrelays:\nservices:\nnames:\nsecurity:\n"
    )
    cfg = load.load_node(write(tmp_path / "c.yaml", text))
    assert (cfg.listen, cfg.services, cfg.names) == ((), (), ())
