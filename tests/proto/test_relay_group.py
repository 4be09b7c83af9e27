"""The relay group list (proto/relay_group.py) and its place in a pairing card."""

from __future__ import annotations

import pytest

from peerup.core.errors import RemoteProtocolError
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.peer_id import PeerId
from peerup.proto import relay_group
from peerup.proto.pairing import PeerCard


def peer(seed: int) -> PeerId:
    return PeerId.from_public_key(
        Ed25519PrivateKey.from_seed(bytes([seed]) * 32).public_key
    )


def test_a_group_list_round_trips_alone_and_in_a_card() -> None:
    group = relay_group.GroupList(
        (relay_group.Introduction(peer(1), "alpha"), relay_group.Introduction(peer(2))),
        "1a2b3c4d",
    )
    assert relay_group.GroupList.decode(group.encode()) == group
    card = PeerCard(introductions=group)
    assert PeerCard.decode(card.encode()) == card
    assert PeerCard.decode(PeerCard("home").encode()).introductions is None


def test_a_bad_group_list_is_a_remote_error() -> None:
    bad = relay_group.GroupList().encode() + b"\x0a\x03\x0a\x01\x00"
    with pytest.raises(RemoteProtocolError):
        relay_group.GroupList.decode(bad)
