"""config.schema: service names, host:port, name resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from peerup.config.schema import (
    RESERVED_SERVICE_NAMES,
    NodeConfig,
    ServiceConfig,
    split_host_port,
)
from peerup.core.errors import ConfigError
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.peer_id import PeerId


def peer(n: int) -> PeerId:
    return PeerId.from_public_key(
        Ed25519PrivateKey.from_seed(bytes([n]) * 32).public_key
    )


def node(names: tuple[tuple[str, PeerId], ...] = ()) -> NodeConfig:
    return NodeConfig(
        path=Path("/c/config.yaml"),
        version=1,
        identity_key=Path("/c/identity.key"),
        listen=(),
        relays=(),
        services=(ServiceConfig("ssh", "127.0.0.1:22"),),
        names=names,
        authorized_keys=Path("/c/authorized_keys"),
    )


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:22", "127.0.0.1", 22),
        ("localhost:8080", "localhost", 8080),
        ("[::1]:22", "::1", 22),
        ("[fe80::1%eth0]:65535", "fe80::1%eth0", 65535),
        ("nas.lan:1", "nas.lan", 1),
    ],
)
def test_split_host_port_accepts(text: str, host: str, port: int) -> None:
    assert split_host_port(text) == (host, port)


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1",
        ":22",
        "host:0",
        "host:65536",
        "host:ssh",
        "::1:22",
        "[::1]22",
        "[nothex]:22",
        "[::1]:",
    ],
)
def test_split_host_port_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        split_host_port(text)


def test_reserved_names_cover_system_protocols() -> None:
    assert {
        "ping",
        "relay",
        "identify",
        "noise",
        "yamux",
        "invite",
    } <= RESERVED_SERVICE_NAMES


@pytest.mark.parametrize("name", sorted(RESERVED_SERVICE_NAMES))
def test_service_with_reserved_name_is_refused(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        ServiceConfig(name, "127.0.0.1:22")
    assert info.value.field == f"services.{name}"
    assert "reserved" in str(info.value)


@pytest.mark.parametrize("name", ["", "SSH", "-ssh", "a_b", "a" * 64, "ssh.web"])
def test_service_with_malformed_name_is_refused(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        ServiceConfig(name, "127.0.0.1:22")
    assert info.value.hint is not None


def test_service_with_bad_port_names_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        ServiceConfig("web", "127.0.0.1:99999")
    assert info.value.field == "services.web.local_address"
    assert "65535" in str(info.value)


def test_service_host_port_and_allowed_peers() -> None:
    svc = ServiceConfig("ssh", "[::1]:2222", allowed_peers=(peer(1),))
    assert (svc.host, svc.port) == ("::1", 2222)
    assert svc.is_allowed(peer(1)) and not svc.is_allowed(peer(2))
    assert ServiceConfig("ssh", "127.0.0.1:22").is_allowed(peer(2))


def test_resolve_name_accepts_names_and_peer_ids() -> None:
    cfg = node(names=(("laptop", peer(1)),))
    assert cfg.resolve_name("laptop") == peer(1)
    assert cfg.resolve_name(str(peer(2))) == peer(2)
    assert cfg.name_of(peer(1)) == "laptop"
    assert cfg.service("ssh") is not None and cfg.service("web") is None


def test_resolve_name_unknown_lists_known_names() -> None:
    cfg = node(names=(("laptop", peer(1)),))
    with pytest.raises(ConfigError) as info:
        cfg.resolve_name("desktop")
    assert info.value.path == "/c/config.yaml"
    assert info.value.hint is not None and "laptop" in info.value.hint


def test_configs_are_frozen_and_hashable() -> None:
    cfg = node()
    assert hash(cfg) == hash(node())
    with pytest.raises(AttributeError):
        cfg.version = 2  # type: ignore[misc]
