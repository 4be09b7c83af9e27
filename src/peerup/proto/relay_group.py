"""Relay group introductions: who else a relay enrolled with codes of the same group.

Spec: peer-up's own (issue 13, relay enrollment). A relay that enrolls machines with
``peerup relay invite`` codes groups the codes of one ``relay invite`` run; every
machine enrolled with one of them is introduced to the others, so that a household
pairs in one go. Introductions travel two ways:

- in the relay's WELCOME card of the enrollment handshake (proto/pairing.py
  ``PeerCard.introductions``): the newcomer learns the members enrolled before it;
- on ``/peerup/relay-group/1.0.0``: the relay opens a stream to a connected member and
  writes one :class:`GroupList` (varint-length-prefixed), then closes. It does so when
  a member of the group enrolls, and whenever a member connects (so one that was offline
  learns of newcomers at its next connection to the relay).

Each entry is the member's peer ID and the name it proposed for itself. A member trusts
its relay for these introductions only if it enrolled there with a group code (the
caller's policy, app/pairing.py). Not here: storage and who is in which group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from peerup.core import pb
from peerup.core.errors import RemoteProtocolError
from peerup.core.peer_id import PeerId

PROTOCOL_ID: Final = "/peerup/relay-group/1.0.0"
MAX_MESSAGE_BYTES: Final = 64 * 1024
MAX_MEMBERS: Final = 256


@dataclass(frozen=True, slots=True)
class Introduction:
    """One member of the group."""

    peer: PeerId
    name: str | None = None

    def encode(self) -> bytes:
        parts = [pb.encode_bytes_field(1, self.peer.multihash)]
        if self.name is not None:
            parts.append(pb.encode_str_field(2, self.name))
        return pb.join(parts)

    @classmethod
    def decode(cls, raw: bytes) -> Introduction:
        r = pb.Reader(raw, "Introduction")
        mh = r.bytes_(1)
        if mh is None:
            raise RemoteProtocolError("an introduction lacks its peer ID")
        try:
            peer = PeerId(mh)
        except ValueError as exc:
            raise RemoteProtocolError(
                f"bad peer ID in an introduction: {exc}"
            ) from None
        return cls(peer, r.str_(2))


@dataclass(frozen=True, slots=True)
class GroupList:
    """The members of a group, as the relay tells one of them."""

    members: tuple[Introduction, ...] = ()
    group: str | None = None
    """The group's ID (informational)."""

    def encode(self) -> bytes:
        parts = [pb.encode_bytes_field(1, m.encode()) for m in self.members]
        if self.group is not None:
            parts.append(pb.encode_str_field(2, self.group))
        return pb.join(parts)

    @classmethod
    def decode(cls, raw: bytes) -> GroupList:
        """Raises RemoteProtocolError on anything malformed or too long."""
        r = pb.Reader(raw, "GroupList")
        items = r.repeated_bytes(1)
        if len(items) > MAX_MEMBERS:
            raise RemoteProtocolError(f"more than {MAX_MEMBERS} members")
        return cls(tuple(Introduction.decode(i) for i in items), r.str_(2))
