"""Recording a paired peer is all or nothing (app/pairing.py ``record_peer``).

``names`` is written first and ``authorized_keys`` last, as the commit point: when a
write fails, the pairing is reported failed and the peer is not authorized, and a name
added for it is taken back (the property the spin model checks as P_d, "a run reported
failed leaves its own allowlist unchanged"). The failing write is injected by replacing
one config writer with one that raises, as a full disk would.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import pairing_harness as harness
from peerup.app import pairing
from peerup.app.allowlist import Allowlist
from peerup.config import load
from peerup.core.errors import ConfigError
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.peer_id import PeerId
from peerup.proto.pairing import PeerCard


def new_peer() -> PeerId:
    return PeerId.from_public_key(Ed25519PrivateKey.generate().public_key)


def listed(path: Path) -> set[PeerId]:
    """The peers in the authorized_keys file at ``path``, as read from disk."""
    allowlist = Allowlist(path)
    allowlist.load()
    return {e.peer_id for e in allowlist.entries()}


def disk_full(*_args: object, **_kwargs: object) -> None:
    raise ConfigError("cannot write: no space left on device")


def test_a_failed_names_write_leaves_the_peer_unauthorized(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, _ = harness.make_node(tmp_path, "home", [])
    allowlist = Allowlist(cfg.parent / "authorized_keys")
    peer = new_peer()
    monkeypatch.setattr(load, "set_name", disk_full)
    with pytest.raises(ConfigError, match="no space"):
        pairing.record_peer(allowlist, cfg, peer, PeerCard("laptop"))
    assert peer not in listed(allowlist.path)
    assert load.load_node(cfg).names == ()


def test_a_failed_authorized_keys_write_takes_the_name_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, _ = harness.make_node(tmp_path, "home", [])
    allowlist = Allowlist(cfg.parent / "authorized_keys")
    peer = new_peer()
    monkeypatch.setattr(Allowlist, "add", disk_full)
    with pytest.raises(ConfigError, match="no space"):
        pairing.record_peer(allowlist, cfg, peer, PeerCard("laptop"))
    assert load.load_node(cfg).names == ()
    assert peer not in listed(allowlist.path)


def test_a_recorded_peer_is_in_both_files(tmp_path: Path) -> None:
    cfg, _ = harness.make_node(tmp_path, "home", [])
    allowlist = Allowlist(cfg.parent / "authorized_keys")
    peer = new_peer()
    recorded = pairing.record_peer(allowlist, cfg, peer, PeerCard("laptop"))
    assert recorded == pairing.Recorded("laptop", True)
    assert load.load_node(cfg).names == (("laptop", peer),)
    assert peer in listed(allowlist.path)
    fresh = Allowlist(allowlist.path)
    fresh.load()
    assert next(e for e in fresh.entries() if e.peer_id == peer).verified == "invite"
