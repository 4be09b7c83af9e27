"""Relay enrollment (issue 13): ``relay invite`` codes that add machines to the
allowlist of a relay that enforces it, and introduce the machines of one group.

The relay plays the inviter of the pairing handshake (proto/pairing.py, served by
app/pairing.PairingService) with its own store: the codes are in ``relay-invites.json``
and the groups and members in ``relay-groups.json``, beside relay-server.yaml, so they
survive a restart and ``relay invite list|revoke`` edits them while the relay runs (it
re-reads a changed file). While a code is open, the relay's gate admits a peer that
``relay_authorized_keys`` refuses to the invite protocol only (``Access.allow_only``),
at most ``max_admitted`` at once, each for ``admission_s``; nothing else (no
reservation, no circuit). Attempts are counted and a code burnt as for peer invites.
A joiner that proves the code is written into ``relay_authorized_keys``
(``verified=relay-invite``, ``expires=`` when the group grants a limited time) and into
its group, then welcomed with the group's other members (``PeerCard.introductions``).

Introductions (proto/relay_group.py): the relay pushes the group list on
``/peerup/relay-group/1.0.0`` to every connected member when one enrolls, and to a
member whenever it connects (a member that was offline learns of newcomers at its next
connection, i.e. when its daemon reserves). A member no longer authorized is left out.
Delegation (proto/relay_delegate.py): a member whose entry carries ``may_invite=N``
(``relay authorize <peer> --may-invite N``) may ask for an enrollment code to embed in
its own peer invite; each code counts N down, in the file, and is logged. Such a code
is an ordinary one-use code of its own group, so the friend who joins with it is
enrolled like any other machine (and introduced to no one: the member's invite pairs
the two).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from peerup.app import pairing
from peerup.app.allowlist import Allowlist
from peerup.config.invite_store import InviteState, InviteStore, StoredInvite
from peerup.config.relay_groups import Group, Groups, GroupStore, Member
from peerup.config.schema import RelayServerConfig
from peerup.core import varint
from peerup.core.access import Access
from peerup.core.errors import ConfigError, Error
from peerup.core.multiaddr import Multiaddr
from peerup.core.peer_id import PeerId
from peerup.net.connection import Connection
from peerup.net.host import Host
from peerup.net.relay_client import read_message
from peerup.net.stream import Stream
from peerup.proto import relay_delegate, relay_group
from peerup.proto.invite_code import (
    INVITE_ID_BYTES,
    SECRET_BYTES,
    InviteCode,
    InviteKind,
)
from peerup.proto.pairing import PeerCard

log = logging.getLogger(__name__)

INVITES_FILE: Final = "relay-invites.json"
MAX_COUNT: Final = 100
"""Codes one ``relay invite`` makes at most."""
MAX_INTRODUCED: Final = 40
"""Members a WELCOME introduces at most (it must fit a handshake message)."""
PUSH_TIMEOUT_S: Final = 10.0


def new_group(now: float, authorization_s: float | None, rng: pairing.Rng) -> Group:
    return Group(rng(4).hex(), now, authorization_s)


def relay_code(
    invite: StoredInvite, relay: PeerId, addrs: list[Multiaddr]
) -> InviteCode:
    """The enrollment code for ``invite``: the relay is the inviter, ``addrs`` its
    own addresses (each ending in ``/p2p/<relay>``)."""
    return InviteCode(
        invite.id,
        invite.secret,
        invite.expires_at,
        relay,
        tuple(a.with_peer_id(relay) for a in addrs[:8]),
        kind=InviteKind.RELAY,
    )


def introductions(
    groups: Groups, group_id: str, allowed: Callable[[PeerId], bool]
) -> relay_group.GroupList:
    """The members of ``group_id`` still allowed, newest first, at most
    :data:`MAX_INTRODUCED`."""
    members: list[relay_group.Introduction] = []
    seen: set[str] = set()
    for m in sorted(groups.of_group(group_id), key=lambda m: -m.enrolled_at):
        if m.peer in seen:
            continue
        seen.add(m.peer)
        try:
            peer = PeerId.from_string(m.peer)
        except ValueError:
            continue
        if allowed(peer):
            members.append(relay_group.Introduction(peer, m.name))
    return relay_group.GroupList(tuple(members[:MAX_INTRODUCED]), group_id)


def invite_json(invite: StoredInvite, groups: Groups, now: float) -> dict[str, Any]:
    """A relay invite for ``relay invite list`` (no secret)."""
    group = groups.group(invite.group or "")
    return {
        **pairing.invite_json(invite, now),
        "group": invite.group,
        "authorization_s": group.authorization_s if group else None,
    }


class EnrollmentFiles:
    """A relay's enrollment codes and groups on disk: what ``relay invite`` edits,
    whether or not the relay runs."""

    def __init__(
        self,
        directory: Path,
        *,
        clock: Callable[[], float] = time.time,
        rng: pairing.Rng = os.urandom,
    ) -> None:
        self.store = InviteStore(directory, INVITES_FILE)
        self.groups = GroupStore(directory)
        self.clock = clock
        self.rng = rng

    def create(
        self,
        count: int,
        ttl_s: float,
        *,
        authorization_s: float | None = None,
        group: str | None = None,
    ) -> list[StoredInvite]:
        """``count`` codes of one group (a new one unless ``group`` names one).

        Raises:
            ValueError: a bad count, or an unknown group.
        """
        if not 1 <= count <= MAX_COUNT:
            raise ValueError(f"--count must be 1 to {MAX_COUNT}")
        now = self.clock()
        if group is None:
            made = new_group(now, authorization_s, self.rng)
            self.groups.transact(lambda g: (Groups((*g.groups, made), g.members), None))
            group = made.id
        elif self.groups.load().group(group) is None:
            raise ValueError(f"no group {group!r} (`relay invite list` shows them)")
        invites = [
            StoredInvite(
                id=self.rng(INVITE_ID_BYTES),
                secret=self.rng(SECRET_BYTES),
                created_at=now,
                expires_at=int(now + ttl_s),
                group=group,
            )
            for _ in range(count)
        ]
        self.store.transact(lambda inv: ([*inv, *invites], None), now=now)
        return invites

    def listed(self) -> list[dict[str, Any]]:
        now = self.clock()
        groups = self.groups.load()
        return [invite_json(i, groups, now) for i in self.store.load()]

    def revoke(self, id_prefix: str) -> tuple[StoredInvite, bool] | None:
        """Revoke a code (see app/pairing.revoke).

        Raises:
            ValueError: the prefix matches several codes.
        """
        now = self.clock()
        return self.store.transact(
            lambda inv: pairing.revoke(inv, id_prefix, now), now=now
        )


class RelayEnrollment:
    """Serves enrollment codes on a relay host (see the module docstring)."""

    def __init__(
        self,
        host: Host,
        config: RelayServerConfig,
        allowlist: Allowlist,
        *,
        clock: Callable[[], float] = time.time,
        rng: pairing.Rng = os.urandom,
    ) -> None:
        self.host = host
        self.config = config
        self.allowlist = allowlist
        self.clock = clock
        self.rng = rng
        self.files = EnrollmentFiles(config.path.parent, clock=clock, rng=rng)
        self.store = self.files.store
        self.groups = self.files.groups
        self.service = pairing.PairingService(
            host,
            self.store,
            card=self._card,
            record=self._record,
            clock=clock,
            rng=rng,
        )

    def start(self) -> None:
        self.service.start()
        self.host.on_connection.append(self._on_connection)
        self.host.set_handler(relay_delegate.PROTOCOL_ID, self._serve_delegation)

    def close(self) -> None:
        self.service.close()

    def admit(self, peer: PeerId, refused: Access) -> Access:
        """The gate's answer for a peer the allowlist refused (see PairingService)."""
        access = self.service.admit(peer, refused)
        if access.only_protocols is not None:
            log.info("relay enrollment: admitting %s to enrollment only", peer)
        return access

    # --- delegation -------------------------------------------------------------------

    async def _serve_delegation(self, stream: Stream) -> None:
        member = stream.remote_peer
        try:
            async with asyncio.timeout(PUSH_TIMEOUT_S):
                raw = await read_message(stream, relay_delegate.MAX_MESSAGE_BYTES)
                request = relay_delegate.DelegateRequest.decode(raw)
        except (Error, TimeoutError, OSError) as exc:
            log.info("relay enrollment: bad delegation request from %s: %s", member, exc)
            stream.reset()
            return
        answer = self.delegate(member, request.ttl_s)
        with contextlib.suppress(Error, OSError):
            await stream.write(varint.prefixed(answer.encode()))
            await stream.close_write()

    def delegate(self, member: PeerId, ttl_s: int) -> relay_delegate.DelegateResponse:
        """One enrollment code for ``member`` to embed in its invite, if its
        ``may_invite`` grant allows; the grant is counted down first."""
        status = relay_delegate.Status
        self.allowlist.reload_if_changed()  # the grant as the file has it now
        entry = next(
            (e for e in self.allowlist.entries() if e.peer_id == member), None
        )
        if entry is None or not self._is_allowed(member) or entry.attr("may_invite") is None:
            log.info("relay enrollment: %s asked to enroll a machine; not allowed", member)
            return relay_delegate.DelegateResponse(
                status.NOT_ALLOWED, detail="this relay does not let you enroll machines"
            )
        left = entry.may_invite
        if left <= 0:
            log.info("relay enrollment: %s used every enrollment it was granted", member)
            return relay_delegate.DelegateResponse(
                status.LIMIT_REACHED,
                detail="you used every enrollment this relay granted you",
            )
        try:
            self.allowlist.update(member, may_invite=left - 1)
            (invite,) = self.files.create(1, float(ttl_s))
        except (ConfigError, OSError, ValueError) as exc:
            log.error("relay enrollment: delegation to %s failed: %s", member, exc)
            return relay_delegate.DelegateResponse(status.INTERNAL, detail=str(exc)[:200])
        log.info(
            "relay enrollment: %s delegated enrollment code %s (group %s), %d left",
            member, invite.id_hex, invite.group, left - 1,
        )  # fmt: skip
        return relay_delegate.DelegateResponse(
            status.OK, invite.id, invite.secret, invite.expires_at, left - 1
        )

    # --- the handshake's callbacks ------------------------------------------------------

    def _used_by(self, peer: PeerId) -> StoredInvite | None:
        """The invite ``peer`` just used (mark_used wrote it before record is called)."""
        used = [
            i
            for i in self.store.load()
            if i.state is InviteState.USED and i.peer == str(peer)
        ]
        return max(used, key=lambda i: i.ended_at or 0.0) if used else None

    def _record(self, peer: PeerId, card: PeerCard) -> pairing.Recorded:
        invite = self._used_by(peer)
        if invite is None or invite.group is None:
            raise ConfigError("the enrollment invite vanished during the handshake")
        group_id = invite.group
        now = self.clock()
        group = self.groups.load().group(group_id)
        name = pairing.choose_name(card.name, peer, ()) if card.name else None
        expires = None
        if group is not None and group.authorization_s is not None:
            expires = datetime.fromtimestamp(now, UTC) + timedelta(
                seconds=group.authorization_s
            )
        day = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
        comment = f"{name or peer.short()}, enrolled {day} (group {group_id})"
        is_new = self.allowlist.add(
            peer, comment=comment, expires=expires, verified="relay-invite"
        )
        if not is_new:
            self.allowlist.update(peer, expires=expires, verified="relay-invite")
        member = Member(str(peer), group_id, name, now, invite.id_hex)
        self.groups.transact(
            lambda g: (
                Groups(
                    g.groups,
                    (
                        *(
                            m
                            for m in g.members
                            if not (m.peer == member.peer and m.group == group_id)
                        ),
                        member,
                    ),
                ),
                None,
            )
        )
        log.info(
            "relay enrollment: %s enrolled with invite %s (group %s) as %s",
            peer, invite.id_hex, group_id, name or "(no name)",
        )  # fmt: skip
        self._push_group(group_id, exclude=peer)
        return pairing.Recorded(name, is_new)

    def _card(self, invite: StoredInvite) -> PeerCard:
        group_id = invite.group or ""
        return PeerCard(introductions=self._list_for(group_id))

    def _is_allowed(self, peer: PeerId) -> bool:
        return self.allowlist.check(peer, datetime.now(UTC)).is_allowed

    def _list_for(self, group_id: str) -> relay_group.GroupList:
        try:
            groups = self.groups.load()
        except ConfigError as exc:
            log.error("relay enrollment: %s", exc)
            groups = Groups()
        return introductions(groups, group_id, self._is_allowed)

    # --- introductions --------------------------------------------------------------------

    def _on_connection(self, conn: Connection) -> None:
        if conn.only_protocols is not None:
            return
        peer = conn.remote_peer
        try:
            group_ids = self.groups.load().groups_of(str(peer))
        except ConfigError as exc:
            log.error("relay enrollment: %s", exc)
            return
        for group_id in group_ids:
            self.host.spawn(
                self._push(conn, self._list_for(group_id)), "relay group push"
            )

    def _push_group(self, group_id: str, *, exclude: PeerId) -> None:
        """Tell the group's connected members its new list."""
        group_list = self._list_for(group_id)
        for member in group_list.members:
            if member.peer == exclude:
                continue
            for conn in self.host.connections.get(member.peer, []):
                if conn.only_protocols is None and conn.is_open:
                    self.host.spawn(self._push(conn, group_list), "relay group push")
                    break

    async def _push(self, conn: Connection, group_list: relay_group.GroupList) -> None:
        with contextlib.suppress(Error, TimeoutError, OSError):
            async with asyncio.timeout(PUSH_TIMEOUT_S):
                stream = conn.open_stream([relay_group.PROTOCOL_ID])
                try:
                    await stream.write(varint.prefixed(group_list.encode()))
                    await stream.close_write()
                    await stream.read_all(0)  # the member closes once it has it
                except BaseException:
                    stream.reset()
                    raise
                log.debug(
                    "relay enrollment: told %s about %d member(s) of group %s",
                    conn.remote_peer, len(group_list.members), group_list.group,
                )  # fmt: skip
