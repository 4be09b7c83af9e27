"""Identity key files: libp2p PrivateKey protobuf, created 0600, refused when readable
by group or others, and interchangeable with what go-libp2p writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from peerup.config import identity_store
from peerup.core.errors import ConfigError
from peerup.core.keys import Ed25519PrivateKey


def test_created_key_is_private_and_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "k" / "identity.key"
    key, created = identity_store.load_or_create(path)
    assert created
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, created_again = identity_store.load_or_create(path)
    assert not created_again and again.public_key == key.public_key


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_key_readable_by_others_is_refused_with_a_hint(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "identity.key"
    identity_store.load_or_create(path)
    os.chmod(path, mode)
    with pytest.raises(ConfigError) as err:
        identity_store.load(path)
    assert err.value.hint == f"chmod 600 {path}"


def test_garbage_key_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    path.write_bytes(b"not a key")
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match="not a libp2p Ed25519 private key"):
        identity_store.load(path)


def test_go_libp2p_key_layout_is_accepted(tmp_path: Path) -> None:
    # go-libp2p's MarshalPrivateKey: 08 01 12 40 || seed || public.
    key = Ed25519PrivateKey.from_seed(bytes(32))
    raw = b"\x08\x01\x12\x40" + key.seed + key.public_key.data
    assert key.to_protobuf() == raw
    path = tmp_path / "identity.key"
    path.write_bytes(raw)
    os.chmod(path, 0o600)
    assert identity_store.load(path).public_key == key.public_key
