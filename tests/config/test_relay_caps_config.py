"""The relay's per-destination and per-pair circuit caps are set in
``relay-server.yaml`` (``resources:``), written with comments by the template, and
reach the relay service."""

from __future__ import annotations

from pathlib import Path

import pytest

from peerup.app.relay_server import resources_from
from peerup.config import files, load
from peerup.config.schema import RelayServerConfig
from peerup.core.errors import ConfigError

RELAY = (
    "version: 1\nlisten: [/ip4/0.0.0.0/tcp/7777]\nidentity_key: k\n"
    "security: {enforce_allowlist: false}\n"
)


def load_text(tmp_path: Path, text: str) -> RelayServerConfig:
    path = tmp_path / "relay-server.yaml"
    files.write_atomic(path, text)
    return load.load_relay(path)


def test_circuit_caps_load_and_reach_the_relay_service(tmp_path: Path) -> None:
    cfg = load_text(
        tmp_path,
        RELAY + "resources:\n"
        "  max_circuits_per_destination: 300\n"
        "  max_circuits_per_pair: 20\n",
    )
    assert cfg.resources.max_circuits_per_destination == 300
    assert cfg.resources.max_circuits_per_pair == 20
    resources = resources_from(cfg)
    assert resources.max_circuits_per_destination == 300
    assert resources.max_circuits_per_pair == 20


def test_circuit_caps_default_to_the_relay_service_defaults(tmp_path: Path) -> None:
    resources = resources_from(load_text(tmp_path, RELAY))
    assert (
        resources.max_circuits_per_destination,
        resources.max_circuits_per_pair,
    ) == (
        1024,
        256,
    )


def test_the_template_writes_the_caps_with_a_comment(tmp_path: Path) -> None:
    text = load.render_relay_config(["/ip4/0.0.0.0/tcp/7777"])
    lines = text.splitlines()
    for key, value in (
        ("max_circuits_per_destination", 1024),
        ("max_circuits_per_pair", 256),
    ):
        at = lines.index(f"  {key}: {value}")
        assert lines[at - 1].startswith("  # relayed connections")
    assert load_text(tmp_path, text).resources.max_circuits_per_pair == 256


def test_a_bad_cap_names_its_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, RELAY + "resources:\n  max_circuits_per_pair: -3\n")
    assert "resources.max_circuits_per_pair" in str(info.value)
