"""Invite and join: two machines paired with one code (issue 13), on top of the host.

Inviter (:class:`PairingService`, run by the daemon, or by ``peerup invite`` itself
when no daemon runs): pending invites live in ``invites.json`` (config/invite_store.py).
While one is open, the peer gate admits a peer that ``authorized_keys`` refuses to the
invite protocol only (``Access.allow_only``; net/connection.py answers ``na`` to any
other protocol), at most :data:`MAX_ADMITTED` at once, each connection closed after
:data:`ADMISSION_S` or when its pairing ends. Each SPAKE2 exchange counts as an attempt
before the inviter answers it (so a guess costs an attempt even if the guesser hangs
up); a code is burnt by its :data:`MAX_ATTEMPTS`-th failure, used up by a success,
void at its expiry. On success the invite is marked used, then the joiner is written
into ``authorized_keys`` (``verified=invite``) and ``names``, then it is welcomed.

Joiner (:func:`join`): dials the inviter's peer ID through the relays in the code (the
relay must already let this machine in: a peer invite does not enroll it there), runs
the handshake, and writes the inviter in once the inviter confirmed the key and welcomed
it. Outcomes are :class:`JoinResult` values with the reason and the fix.

Relay enrollment (a ``relay invite`` code, app/relay_enrollment.py): :func:`join` dials
the relay itself (the code's inviter) at the addresses in the code, runs the same
handshake, and on success the relay has written this machine into its allowlist; the
relay's WELCOME introduces the other machines enrolled with codes of the same group,
which are written into ``authorized_keys`` and ``names`` like a paired peer, and the
relay is remembered (``relay-enrollments.json``) as one whose later introductions
(``/peerup/relay-group/1.0.0``, served by :class:`DaemonPairing`) are accepted.

Each side writes atomically and only after key confirmation; a process killed mid-way
leaves valid files (the other side may have written its half: re-pairing is harmless).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from peerup.app import api, failures
from peerup.app.allowlist import Allowlist
from peerup.config import load
from peerup.config.invite_store import InviteState, InviteStore, StoredInvite
from peerup.config.relay_groups import Enrollment, EnrollmentStore
from peerup.config.schema import PEER_NAME_RE, NodeConfig, check_peer_name
from peerup.core import varint
from peerup.core.access import Access
from peerup.core.errors import (
    ConfigError,
    ConnectionClosed,
    Error,
    LocalProtocolError,
    NegotiationError,
    RemoteProtocolError,
)
from peerup.core.multiaddr import Multiaddr
from peerup.core.peer_id import PeerId
from peerup.net.connection import Connection
from peerup.net.host import Host
from peerup.net.stream import Stream
from peerup.proto import invite_code, pairing, relay_delegate, relay_group
from peerup.proto.invite_code import (
    INVITE_ID_BYTES,
    SECRET_BYTES,
    InviteCode,
    InviteKind,
)
from peerup.proto.pairing import PairingHandshake, PeerCard, Reason

log = logging.getLogger(__name__)

MAX_ATTEMPTS: Final = 3
DEFAULT_TTL_S: Final = 600.0
MAX_TTL_S: Final = 7 * 24 * 3600.0
ADMISSION_S: Final = 10.0
"""How long a peer admitted only to pairing keeps its connection."""
MAX_ADMITTED: Final = 8
"""Peers admitted only to pairing at once."""
HANDSHAKE_TIMEOUT_S: Final = 15.0
EXPIRY_GRACE_S: Final = 60.0
"""The joiner refuses a code this long past its expiry by its own clock (the inviter's
clock decides otherwise)."""

Rng = Callable[[int], bytes]


# --- policy (pure) ----------------------------------------------------------------------


def new_invite(
    now: float, ttl_s: float, name: str | None, rng: Rng = os.urandom
) -> StoredInvite:
    """A fresh invite; the caller stores it."""
    return StoredInvite(
        id=rng(INVITE_ID_BYTES),
        secret=rng(SECRET_BYTES),
        created_at=now,
        expires_at=int(now + ttl_s),
        name=name,
    )


def code_for(
    invite: StoredInvite,
    inviter: PeerId,
    relays: list[Multiaddr],
    network_name: str | None,
    enrollment: invite_code.Enrollment | None = None,
) -> InviteCode:
    """The code that names ``invite`` (with a delegated relay enrollment at
    ``relays[0]``, if given)."""
    return InviteCode(
        invite.id,
        invite.secret,
        invite.expires_at,
        inviter,
        tuple(relays[:8]),
        network_name,
        enrollment=enrollment,
    )


class EnrollmentRefused(Error):
    """The relay would not give this member an enrollment code for its invite."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


async def ask_enrollment(
    host: Host, relay: Multiaddr, ttl_s: float
) -> invite_code.Enrollment:
    """Ask ``relay`` for an enrollment code to put into our invite
    (``relay authorize <us> --may-invite N`` on the relay; proto/relay_delegate.py).

    Raises:
        EnrollmentRefused: not allowed, every grant used, or the relay cannot.
        Error: the relay is unreachable (a dial failure, as ``connect`` raises it).
    """
    me = host.peer_id
    def grant(n: str) -> str:
        return f"on the relay: `peerup relay authorize {me} --may-invite {n}`"

    conn = await host.connect(relay)
    try:
        stream = conn.open_stream([relay_delegate.PROTOCOL_ID])
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            request = relay_delegate.DelegateRequest(
                max(1, min(int(ttl_s), relay_delegate.MAX_TTL_S))
            )
            await stream.write(varint.prefixed(request.encode()))
            raw = await stream.read_all(relay_delegate.MAX_MESSAGE_BYTES + 8)
        got = varint.try_read_prefixed(raw, relay_delegate.MAX_MESSAGE_BYTES)
        if got is None:
            raise RemoteProtocolError("the relay's answer ended early")
        answer = relay_delegate.DelegateResponse.decode(got[0])
    except NegotiationError:
        raise EnrollmentRefused(
            "the relay does not enroll machines for its members (it does not enforce "
            "its allowlist, or runs an older peer-up)",
            hint="invite without --enroll, and have the relay's operator run "
            "`peerup relay authorize <peer>` for the new machine",
        ) from None
    except TimeoutError:
        raise EnrollmentRefused(
            "the relay did not answer the enrollment request in time", hint="try again"
        ) from None
    except ValueError:
        raise RemoteProtocolError("the relay's enrollment answer is too long") from None
    status = relay_delegate.Status
    if answer.status is status.NOT_ALLOWED:
        raise EnrollmentRefused(
            "the relay does not let this machine enroll others", hint=grant("5")
        )
    if answer.status is status.LIMIT_REACHED:
        raise EnrollmentRefused(
            "this machine used every enrollment the relay granted it",
            hint=grant("<more>"),
        )
    if answer.status is not status.OK:
        raise EnrollmentRefused(
            f"the relay could not make an enrollment code: {answer.detail}",
            hint="see the relay's log",
        )
    try:
        return invite_code.Enrollment(answer.invite_id, answer.secret, answer.expires_at)
    except LocalProtocolError as exc:
        raise RemoteProtocolError(f"the relay's enrollment is malformed: {exc}") from None


def refusal_for(invite: StoredInvite | None, now: float) -> Reason | None:
    """Why ``invite`` cannot be tried now, or None if it can."""
    if invite is None:
        return Reason.UNKNOWN_INVITE
    if invite.state is InviteState.USED:
        return Reason.USED
    if invite.state is InviteState.BURNT or invite.attempts >= MAX_ATTEMPTS:
        return Reason.BURNT
    if invite.state is InviteState.REVOKED:
        return Reason.REVOKED
    if invite.is_expired(now):
        return Reason.EXPIRED
    return None


def _find(invites: list[StoredInvite], invite_id: bytes) -> int | None:
    for i, invite in enumerate(invites):
        if invite.id == invite_id:
            return i
    return None


def begin_attempt(
    invites: list[StoredInvite], invite_id: bytes, now: float
) -> tuple[list[StoredInvite], StoredInvite | Reason]:
    """Count an attempt on ``invite_id``: the invite (with the attempt counted) if it
    may be tried, else why not."""
    i = _find(invites, invite_id)
    refusal = refusal_for(invites[i] if i is not None else None, now)
    if refusal is not None or i is None:
        return invites, refusal or Reason.UNKNOWN_INVITE
    invites[i] = dataclasses.replace(invites[i], attempts=invites[i].attempts + 1)
    return invites, invites[i]


def attempt_failed(
    invites: list[StoredInvite], invite_id: bytes, now: float
) -> tuple[list[StoredInvite], StoredInvite | None]:
    """After a failed attempt: the invite, burnt if that was its last attempt."""
    i = _find(invites, invite_id)
    if i is None:
        return invites, None
    invite = invites[i]
    if invite.state is InviteState.PENDING and invite.attempts >= MAX_ATTEMPTS:
        invites[i] = invite = invite.ended(InviteState.BURNT, now)
    return invites, invite


def mark_used(
    invites: list[StoredInvite], invite_id: bytes, peer: PeerId, now: float
) -> tuple[list[StoredInvite], Reason | None]:
    """Use the invite up for ``peer``; why not, if it ended meanwhile (revoked)."""
    i = _find(invites, invite_id)
    invite = invites[i] if i is not None else None
    if i is None or invite is None or invite.state is not InviteState.PENDING:
        return invites, refusal_for(invite, now) or Reason.UNKNOWN_INVITE
    invites[i] = invite.ended(InviteState.USED, now, str(peer))
    return invites, None


def revoke(
    invites: list[StoredInvite], id_prefix: str, now: float
) -> tuple[list[StoredInvite], tuple[StoredInvite, bool] | None]:
    """Revoke the invite whose hex ID starts with ``id_prefix``: it and whether this
    revoked it (False: it had ended already), or None if there is no such invite.

    Raises:
        ValueError: the prefix matches several invites.
    """
    prefix = id_prefix.lower()
    matches = [i for i, inv in enumerate(invites) if inv.id_hex.startswith(prefix)]
    if len(matches) > 1:
        raise ValueError(
            f"{id_prefix!r} matches {len(matches)} invites: give more of it"
        )
    if not matches or not prefix:
        return invites, None
    i = matches[0]
    if invites[i].state is not InviteState.PENDING:
        return invites, (invites[i], False)
    invites[i] = invites[i].ended(InviteState.REVOKED, now)
    return invites, (invites[i], True)


def choose_name(
    proposed: str | None, peer: PeerId, names: tuple[tuple[str, PeerId], ...]
) -> str | None:
    """The name to give ``peer``: the one it already has, else the one it proposes
    (``-2``, ``-3``… added when another peer has it), else None (invalid or none)."""
    for name, pid in names:
        if pid == peer:
            return name
    if not proposed:
        return None
    try:
        check_peer_name(proposed, "names")
    except ConfigError:
        return None
    taken = {name for name, _ in names}
    candidate = proposed
    n = 2
    while candidate in taken:
        suffix = f"-{n}"
        candidate = proposed[: 63 - len(suffix)] + suffix
        n += 1
    return candidate


def default_name() -> str | None:
    """This machine's host name, if it makes a valid peer name."""
    name = socket.gethostname().split(".")[0]
    name = re.sub(r"[^A-Za-z0-9._-]", "-", name).strip("-.")[:63]
    if not name or not PEER_NAME_RE.match(name):
        return None
    try:
        check_peer_name(name, "name")
    except ConfigError:
        return None
    return name


# --- writing the other side in ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recorded:
    """What pairing wrote about a peer."""

    name: str | None
    """Its name in ``names`` (None: none could be given)."""
    is_new: bool
    """Whether it was added to ``authorized_keys`` (False: it was listed already)."""


def record_peer(
    allowlist: Allowlist,
    config_path: Path,
    peer: PeerId,
    card: PeerCard,
    *,
    verified: str = "invite",
    now: datetime | None = None,
) -> Recorded:
    """Write ``peer``, under the name it proposed (made unique), into ``names``, then
    into ``authorized_keys`` (with a comment and ``verified=``); each file atomically.

    ``authorized_keys`` is written last, as the commit point: if anything fails
    before it, the peer is not authorized and the name just added is taken back, so
    a pairing reported failed leaves no half behind (model/pairing.pml, P_d).

    Raises:
        ConfigError: a file is invalid or cannot be written.
    """
    day = (now or datetime.now(UTC)).strftime("%Y-%m-%d")
    names = load.load_node(config_path).names
    name = choose_name(card.name, peer, names)
    comment = f"{name or peer.short()}, paired {day}"
    added_name = name is not None and (name, peer) not in names
    if name is not None and added_name:
        load.set_name(config_path, name, peer)
    try:
        is_new = allowlist.add(peer, comment=comment, verified=verified)
    except BaseException:
        if name is not None and added_name:
            try:
                load.remove_name(config_path, name)
            except Error as exc:
                log.warning("could not take back the name %r of %s: %s", name, peer, exc)
        raise
    return Recorded(name, is_new)


# --- inviter ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InviteEvent:
    """Something that happened to an invite, for whoever waits on it."""

    seq: int
    invite_id: str
    kind: str
    """``paired``, ``failed`` (a wrong or aborted attempt) or ``refused`` (a try of
    an invite that can no longer be used)."""
    peer: str
    name: str | None = None
    reason: str | None = None
    attempts: int = 0
    status: str = "pending"
    """The invite's status after the event."""


def invite_json(invite: StoredInvite, now: float) -> dict[str, Any]:
    """An invite for ``invite list`` and the API (no secret)."""
    return {
        "id": invite.id_hex,
        "status": invite.status(now),
        "name": invite.name,
        "created_at": _iso(invite.created_at),
        "expires_at": _iso(invite.expires_at),
        "expires_in_s": max(0, int(invite.expires_at - now)),
        "attempts": invite.attempts,
        "max_attempts": MAX_ATTEMPTS,
        "peer": invite.peer,
    }


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PairingService:
    """Serves ``/peerup/invite/2.0.0`` for the invites in a store.

    ``card(invite)`` is what we tell the joiner about us; ``record(peer, card)`` writes
    the joiner in (and returns what it wrote).
    """

    def __init__(
        self,
        host: Host,
        store: InviteStore,
        *,
        card: Callable[[StoredInvite], PeerCard],
        record: Callable[[PeerId, PeerCard], Recorded],
        clock: Callable[[], float] = time.time,
        rng: Rng = os.urandom,
        admission_s: float = ADMISSION_S,
        max_admitted: int = MAX_ADMITTED,
        timeout_s: float = HANDSHAKE_TIMEOUT_S,
    ) -> None:
        self.host = host
        self.store = store
        self.card = card
        self.record = record
        self.clock = clock
        self.rng = rng
        self.admission_s = admission_s
        self.max_admitted = max_admitted
        self.timeout_s = timeout_s
        self.events: list[InviteEvent] = []
        self._changed = asyncio.Event()
        self._cached: tuple[tuple[int, int, int] | None, list[StoredInvite]] = (
            None,
            [],
        )
        self._timers: dict[Connection, asyncio.TimerHandle] = {}

    def start(self) -> None:
        self.host.set_handler(pairing.PROTOCOL_ID, self._serve)
        self.host.on_connection.append(self._on_connection)
        self.host.on_disconnect.append(self._on_disconnect)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    # --- the gate -----------------------------------------------------------------

    def invites(self) -> list[StoredInvite]:
        """The stored invites (re-read only when the file changed)."""
        signature = self.store.signature()
        if signature != self._cached[0]:
            try:
                self._cached = (signature, self.store.load())
            except ConfigError as exc:
                log.error("cannot read pending invites: %s", exc)
                self._cached = (signature, [])
        return self._cached[1]

    def has_open_invite(self) -> bool:
        now = self.clock()
        return any(invite.is_open(now) for invite in self.invites())

    def admit(self, peer: PeerId, refused: Access) -> Access:
        """The gate's answer for a peer the allowlist refused: admitted to pairing
        only while an invite is open and fewer than ``max_admitted`` are pairing."""
        if not self.has_open_invite():
            return refused
        if len(self._timers) >= self.max_admitted:
            log.info(
                "not admitting %s to pairing: %d peers pairing", peer, len(self._timers)
            )
            return refused
        return Access.allow_only(
            frozenset({pairing.PROTOCOL_ID}),
            f"{refused.reason}; admitted to pairing only (an invite is pending)",
        )

    def _on_connection(self, conn: Connection) -> None:
        if conn.only_protocols is None:
            return
        loop = asyncio.get_running_loop()
        self._timers[conn] = loop.call_later(
            self.admission_s, conn.close, "pairing admission over"
        )

    def _on_disconnect(self, conn: Connection) -> None:
        timer = self._timers.pop(conn, None)
        if timer is not None:
            timer.cancel()

    # --- invites --------------------------------------------------------------------

    def create(self, ttl_s: float, name: str | None) -> StoredInvite:
        """Store a new invite."""
        invite = new_invite(self.clock(), ttl_s, name, self.rng)
        self.store.transact(
            lambda invites: ([*invites, invite], None), now=self.clock()
        )
        return invite

    def revoke(self, id_prefix: str) -> tuple[StoredInvite, bool] | None:
        """Revoke an invite (see :func:`revoke`)."""
        now = self.clock()
        found = self.store.transact(lambda inv: revoke(inv, id_prefix, now), now=now)
        if found is not None:
            self._changed.set()
        return found

    def find(self, id_prefix: str) -> StoredInvite | None:
        found = [i for i in self.invites() if i.id_hex.startswith(id_prefix.lower())]
        return found[0] if len(found) == 1 and id_prefix else None

    async def wait(
        self, invite_id: str, after: int, timeout_s: float
    ) -> list[InviteEvent]:
        """Events of ``invite_id`` after number ``after``; waits up to ``timeout_s``
        (less if the invite expires sooner) for one."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            found = [
                e for e in self.events if e.seq > after and e.invite_id == invite_id
            ]
            invite = self.find(invite_id)
            if found or invite is None or not invite.is_open(self.clock()):
                return found
            remaining = min(
                deadline - asyncio.get_running_loop().time(),
                invite.expires_at - self.clock(),
            )
            if remaining <= 0:
                return []
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._changed.wait()

    def _event(self, invite_id: bytes, kind: str, peer: PeerId, **fields: Any) -> None:
        found = [i for i in self.invites() if i.id == invite_id]
        status = found[0].status(self.clock()) if found else "unknown"
        event = InviteEvent(
            len(self.events) + 1,
            invite_id.hex(),
            kind,
            str(peer),
            status=status,
            **fields,
        )
        self.events.append(event)
        del self.events[:-256]
        self._changed.set()

    # --- the handshake --------------------------------------------------------------

    async def _serve(self, stream: Stream) -> None:
        conn = stream.conn
        peer = stream.remote_peer
        loop = asyncio.get_running_loop()
        hs = PairingHandshake.inviter(
            self.host.peer_id,
            peer,
            rng=self.rng,
            now=loop.time(),
            timeout_s=self.timeout_s,
        )
        attempt: list[StoredInvite] = []

        def handle(event: pairing.Event) -> list[pairing.Event]:
            if isinstance(event, pairing.InviteRequested):
                return self._on_requested(hs, peer, event.invite_id, attempt)
            if isinstance(event, pairing.JoinerConfirmed):
                self._on_confirmed(hs, peer, event.card, attempt)
            elif isinstance(event, pairing.PairingFailed):
                self._on_failed(peer, event, attempt)
            return []

        try:
            try:
                await drive(stream, hs, handle)
            except Error as exc:  # a write to a stream the joiner cut: an attempt too
                log.debug("pairing with %s: stream broke: %s", peer, exc)
                for event in hs.connection_lost():
                    handle(event)
                return
            if hs.state is pairing.PairingState.DONE:
                # The joiner closes once it has WELCOME; our close must not cut it.
                await stream.close_write()
                with contextlib.suppress(Error, TimeoutError, OSError):
                    async with asyncio.timeout(self.admission_s):
                        await stream.read_all(0)
        finally:
            if conn.only_protocols is not None:
                conn.close("pairing finished")

    def _on_requested(
        self,
        hs: PairingHandshake,
        peer: PeerId,
        invite_id: bytes,
        attempt: list[StoredInvite],
    ) -> list[pairing.Event]:
        now = self.clock()
        try:
            decision = self.store.transact(
                lambda inv: begin_attempt(inv, invite_id, now), now=now
            )
        except (ConfigError, OSError) as exc:
            log.error("pairing with %s: cannot read or write invites: %s", peer, exc)
            return [hs.abort(Reason.INTERNAL, str(exc))]
        if isinstance(decision, Reason):
            log.info(
                "pairing: %s tried invite %s: %s", peer, invite_id.hex(), decision.name
            )
            hs.refuse(decision)
            self._event(invite_id, "refused", peer, reason=decision.name.lower())
            return []
        attempt.append(decision)
        log.info(
            "pairing: %s tries invite %s (attempt %d of %d)",
            peer, decision.id_hex, decision.attempts, MAX_ATTEMPTS,
        )  # fmt: skip
        return hs.accept(decision.secret)

    def _on_confirmed(
        self,
        hs: PairingHandshake,
        peer: PeerId,
        card: PeerCard,
        attempt: list[StoredInvite],
    ) -> None:
        invite = attempt[0]
        now = self.clock()
        try:
            refusal = self.store.transact(
                lambda inv: mark_used(inv, invite.id, peer, now), now=now
            )
            if refusal is not None:
                hs.abort(refusal, "the invite ended during the pairing")
                self._event(invite.id, "refused", peer, reason=refusal.name.lower())
                return
            recorded = self.record(peer, card)
        except (ConfigError, OSError, ValueError) as exc:
            log.error("pairing with %s: could not write it in: %s", peer, exc)
            hs.abort(Reason.INTERNAL, str(exc))
            self._event(invite.id, "failed", peer, reason="internal")
            return
        hs.welcome(self.card(invite))
        log.info(
            "pairing: %s paired with invite %s as %s",
            peer, invite.id_hex, recorded.name or "(no name)",
        )  # fmt: skip
        self._event(
            invite.id, "paired", peer, name=recorded.name, attempts=invite.attempts
        )

    def _on_failed(
        self, peer: PeerId, event: pairing.PairingFailed, attempt: list[StoredInvite]
    ) -> None:
        if not attempt:
            return  # refused before any attempt, already told
        invite = attempt[0]
        now = self.clock()
        try:
            after = self.store.transact(
                lambda inv: attempt_failed(inv, invite.id, now), now=now
            )
        except (ConfigError, OSError) as exc:
            log.error("pairing: cannot update invites: %s", exc)
            after = None
        burnt = after is not None and after.state is InviteState.BURNT
        log.warning(
            "pairing: attempt %d of %d on invite %s by %s failed: %s%s",
            invite.attempts, MAX_ATTEMPTS, invite.id_hex, peer, event.reason.name,
            " (the invite is now void)" if burnt else "",
        )  # fmt: skip
        self._event(
            invite.id, "failed", peer, reason=event.reason.name.lower(),
            attempts=invite.attempts,
        )  # fmt: skip


async def drive(
    stream: Stream,
    hs: PairingHandshake,
    handle: Callable[[pairing.Event], list[pairing.Event]],
) -> None:
    """Run ``hs`` over ``stream`` until it finishes: bytes in, events to ``handle``
    (which may answer with further events), bytes out, its deadline as the timer.

    Raises:
        NegotiationError: the peer does not speak the invite protocol (optimistic
            negotiation reports it at the first read).
    """
    loop = asyncio.get_running_loop()
    while True:
        out = hs.data_to_send()
        if out:
            await stream.write(out)
        if hs.is_finished:
            return
        deadline = hs.next_deadline()
        events: list[pairing.Event]
        try:
            async with asyncio.timeout_at(deadline):
                data = await stream.read(pairing.MAX_MESSAGE_BYTES)
        except TimeoutError:
            events = hs.handle_timeout(loop.time())
        except ConnectionClosed:
            events = hs.connection_lost()
        else:
            events = hs.receive_data(data) if data else hs.connection_lost()
        while events:
            follow: list[pairing.Event] = []
            for event in events:
                follow += handle(event)
            follow += hs.receive_data(b"")  # bytes that waited for a decision
            events = follow


# --- joiner -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JoinResult:
    """How a ``join`` went."""

    is_paired: bool
    inviter: str
    message: str
    hint: str | None = None
    reason: str | None = None
    """A :class:`~peerup.proto.pairing.Reason` name (lower case), or ``unreachable``."""
    name: str | None = None
    """The inviter's name in our ``names``."""
    services: tuple[str, ...] = ()
    """What the inviter offers."""
    network_name: str | None = None
    relays: tuple[str, ...] = ()
    is_enrollment: bool = False
    """A relay enrollment code: ``inviter`` is the relay."""
    introduced: tuple[str, ...] = ()
    """Enrollment: the group members written in (names, or peer IDs)."""

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JoinResult:
        return cls(
            bool(data["is_paired"]),
            str(data["inviter"]),
            str(data["message"]),
            data.get("hint"),
            data.get("reason"),
            data.get("name"),
            tuple(data.get("services") or ()),
            data.get("network_name"),
            tuple(data.get("relays") or ()),
            bool(data.get("is_enrollment", False)),
            tuple(data.get("introduced") or ()),
        )


_REASONS: Final[dict[Reason, tuple[str, str | None]]] = {
    Reason.WRONG_CODE: (
        "the inviter does not have this code: wrong code (this try counts as one of "
        f"{MAX_ATTEMPTS})",
        "a typo would have been caught; ask the inviter for the code again",
    ),
    Reason.UNKNOWN_INVITE: (
        "the inviter has no such invite (is the code from another machine?)",
        "ask for a new code (`peerup invite`)",
    ),
    Reason.EXPIRED: ("this invite has expired", "ask for a new code (`peerup invite`)"),
    Reason.USED: (
        "this invite was already used by another machine",
        "ask for a new code (`peerup invite`)",
    ),
    Reason.BURNT: (
        f"this invite is void: it had {MAX_ATTEMPTS} wrong attempts",
        "ask for a new code (`peerup invite`)",
    ),
    Reason.REVOKED: (
        "the inviter revoked this invite",
        "ask for a new code (`peerup invite`)",
    ),
    Reason.UNSUPPORTED_VERSION: (
        "the inviter runs a peer-up that speaks another pairing version",
        "use the same peer-up version on both machines",
    ),
    Reason.INTERNAL: (
        "the inviter could not finish the pairing (see its log)",
        "ask for a new code once the inviter fixed it",
    ),
    Reason.TIMEOUT: ("the inviter did not answer in time", "try again"),
    Reason.ABORTED: ("the inviter hung up during the pairing", "try again"),
    Reason.PROTOCOL_ERROR: ("the pairing broke down (protocol error)", "try again"),
}


def explain(reason: Reason, inviter: str) -> JoinResult:
    message, hint = _REASONS[reason]
    return JoinResult(False, inviter, message, hint, reason.name.lower())


async def join(
    host: Host,
    code: InviteCode,
    card: PeerCard,
    record: Callable[[PeerId, PeerCard], Recorded],
    *,
    clock: Callable[[], float] = time.time,
    rng: Rng = os.urandom,
    timeout_s: float = HANDSHAKE_TIMEOUT_S,
    on_enrolled: Callable[[PeerId, str | None], None] | None = None,
) -> JoinResult:
    """Pair with the inviter of ``code``; ``record`` writes the inviter in. For a
    relay enrollment code, enroll at the relay: ``on_enrolled(relay, group)`` is told
    first, then ``record`` writes each group member the relay introduced. A peer
    invite that carries a delegated enrollment (``invite --enroll``) enrolls at its
    relay first, then pairs; when both fail, the enrollment's failure is the cause."""
    kw: dict[str, Any] = {
        "clock": clock, "rng": rng, "timeout_s": timeout_s, "on_enrolled": on_enrolled,
    }  # fmt: skip
    enrollment = code.enrollment_code()
    if enrollment is None or code.inviter == host.peer_id:
        return await _join_one(host, code, card, record, **kw)
    enrolled = await _join_one(host, enrollment, card, record, **kw)
    if enrolled.is_paired:
        log.info("enrolled at relay %s with the invite's enrollment", enrollment.inviter)
    paired = await _join_one(host, code, card, record, **kw)
    if paired.is_paired:
        note = (
            f"; enrolled at relay {enrollment.inviter.short()}"
            if enrolled.is_paired
            else ""
        )
        return dataclasses.replace(paired, message=paired.message + note)
    if enrolled.is_paired:
        return paired
    return dataclasses.replace(
        enrolled,
        message="could not enroll at the relay the invite names: " + enrolled.message,
    )


async def _join_one(
    host: Host,
    code: InviteCode,
    card: PeerCard,
    record: Callable[[PeerId, PeerCard], Recorded],
    *,
    clock: Callable[[], float],
    rng: Rng,
    timeout_s: float,
    on_enrolled: Callable[[PeerId, str | None], None] | None,
) -> JoinResult:
    inviter = str(code.inviter)
    relays = tuple(str(r) for r in code.relays)
    is_relay = code.kind is InviteKind.RELAY
    if code.inviter == host.peer_id:
        return JoinResult(
            False, inviter, "this is this machine's own invite",
            "run `peerup join` on the other machine", "own_invite", relays=relays,
        )  # fmt: skip
    if code.is_expired(clock() - EXPIRY_GRACE_S):
        result = explain(Reason.EXPIRED, inviter)
        when = _iso(code.expires_at)
        return dataclasses.replace(result, message=f"{result.message} (at {when})")
    if not code.relays:
        return JoinResult(
            False, inviter, "the code names no relay to reach the inviter through",
            "ask for a code from a machine with a relay in its config", "unreachable",
        )  # fmt: skip
    existing = host.connection_to(code.inviter)
    host.add_addrs(
        code.inviter, list(code.relays) if is_relay else code.circuit_addrs()
    )
    me = str(host.peer_id)
    try:
        conn = await host.connect(code.inviter)
    except Error as exc:
        return _unreachable(exc, code, me)
    loop = asyncio.get_running_loop()
    hs = PairingHandshake.joiner(
        code, host.peer_id, card, rng=rng, now=loop.time(), timeout_s=timeout_s
    )
    outcome: list[pairing.Event] = []

    def handle(event: pairing.Event) -> list[pairing.Event]:
        outcome.append(event)
        return []

    try:
        stream = conn.open_stream([pairing.PROTOCOL_ID])
        try:
            await drive(stream, hs, handle)
        finally:
            if hs.is_finished:
                await stream.close_write()
            else:
                stream.reset()
    except NegotiationError:
        return _for_relay(
            JoinResult(
                False, inviter, "the inviter is not pairing now: no invite is pending "
                "there", "ask for a new code (`peerup invite`)", "not_pairing",
                relays=relays,
            ),
            is_relay,
        )  # fmt: skip
    except (ConnectionClosed, OSError) as exc:
        if not outcome and is_relay:
            return _relay_refused(code, relays, f" ({exc})")
        if not outcome:
            return dataclasses.replace(
                _for_relay(explain(Reason.ABORTED, inviter), is_relay),
                relays=relays,
                hint=f"try again ({exc})",
            )
    finally:
        if existing is None:
            conn.close("pairing finished")
    if is_relay:
        return _enrolled(outcome, code, record, host.peer_id, on_enrolled)
    return _joined(outcome, code, record, relays)


def _relay_refused(code: InviteCode, relays: tuple[str, ...], detail: str) -> JoinResult:
    return JoinResult(
        False,
        str(code.inviter),
        "the relay refused this machine: no enrollment code is open there (used, "
        f"revoked, expired, or void after {MAX_ATTEMPTS} wrong tries), or too many "
        f"machines are enrolling at once{detail}",
        "ask the relay's operator for a new code (`peerup relay invite`), or try "
        "again in a few seconds",
        "unreachable",
        relays=relays,
        is_enrollment=True,
    )


def _for_relay(result: JoinResult, is_relay: bool) -> JoinResult:
    """A joiner's outcome worded for a relay enrollment code."""
    if not is_relay:
        return result

    def word(text: str | None) -> str | None:
        if text is None:
            return None
        return (
            text.replace("`peerup invite`", "`peerup relay invite` on the relay")
            .replace("the inviter", "the relay")
            .replace("The inviter", "The relay")
            .replace("an invite", "an enrollment code")
        )

    return dataclasses.replace(
        result,
        message=word(result.message) or "",
        hint=word(result.hint),
        is_enrollment=True,
    )


def _enrolled(
    outcome: list[pairing.Event],
    code: InviteCode,
    record: Callable[[PeerId, PeerCard], Recorded],
    me: PeerId,
    on_enrolled: Callable[[PeerId, str | None], None] | None,
) -> JoinResult:
    relay = str(code.inviter)
    relays = tuple(str(r) for r in code.relays)
    done = [e for e in outcome if isinstance(e, pairing.PairingCompleted)]
    if not done:
        failed = [e for e in outcome if isinstance(e, pairing.PairingFailed)]
        reason = failed[0].reason if failed else Reason.ABORTED
        if reason is Reason.ABORTED:
            # A relay's gate that refuses us completes the Noise handshake, then
            # closes: the handshake sees the connection end before any answer.
            return _relay_refused(code, relays, " (it hung up at once)")
        result = dataclasses.replace(explain(reason, relay), relays=relays)
        return _for_relay(result, True)
    group = done[0].card.introductions
    introduced: list[str] = []
    try:
        if on_enrolled is not None:
            on_enrolled(code.inviter, group.group if group else None)
        for member in group.members if group else ():
            if member.peer == me:
                continue
            recorded = record(member.peer, PeerCard(member.name))
            introduced.append(recorded.name or str(member.peer))
    except (ConfigError, OSError, ValueError) as exc:
        return JoinResult(
            False, relay, "enrolled at the relay, but could not write the group's "
            f"machines in here: {exc}", getattr(exc, "hint", None), "internal",
            relays=relays, is_enrollment=True,
        )  # fmt: skip
    others = f"; introduced to {', '.join(introduced)}" if introduced else ""
    return JoinResult(
        True,
        relay,
        f"enrolled at relay {code.inviter.short()}{others}",
        relays=relays,
        is_enrollment=True,
        introduced=tuple(introduced),
    )


def _joined(
    outcome: list[pairing.Event],
    code: InviteCode,
    record: Callable[[PeerId, PeerCard], Recorded],
    relays: tuple[str, ...],
) -> JoinResult:
    inviter = str(code.inviter)
    done = [e for e in outcome if isinstance(e, pairing.PairingCompleted)]
    if not done:
        failed = [e for e in outcome if isinstance(e, pairing.PairingFailed)]
        reason = failed[0].reason if failed else Reason.ABORTED
        return dataclasses.replace(explain(reason, inviter), relays=relays)
    card = done[0].card
    try:
        recorded = record(code.inviter, card)
    except (ConfigError, OSError, ValueError) as exc:
        return JoinResult(
            False, inviter, f"paired, but could not write the inviter in here: {exc}",
            getattr(exc, "hint", None), "internal", relays=relays,
        )  # fmt: skip
    label = recorded.name or code.inviter.short()
    return JoinResult(
        True,
        inviter,
        f"paired with {label}",
        name=recorded.name,
        services=card.services,
        network_name=card.network_name or code.network_name,
        relays=relays,
    )


def _unreachable(exc: Error, code: InviteCode, me: str) -> JoinResult:
    inviter = str(code.inviter)
    relays = tuple(str(r) for r in code.relays)
    until = _iso(code.expires_at)
    if code.kind is InviteKind.RELAY:
        failure = failures.explain_dial(exc, "the relay", me)
        if failure.cause in (
            failures.Cause.PEER_REFUSED_US,
            failures.Cause.RELAY_REFUSED_US,
        ):
            return _relay_refused(code, relays, "")
        return JoinResult(
            False, inviter, failure.message, failure.hint, "unreachable",
            relays=relays, is_enrollment=True,
        )  # fmt: skip
    failure = failures.explain_dial(exc, "the inviter", me)
    message, hint = failure.message, failure.hint
    if failure.cause is failures.Cause.RELAY_REFUSED_US:
        message = (
            f"{failure.message}: a peer invite pairs this machine with the inviter but "
            "does not enroll it at the inviter's relay"
        )
        hint = (
            f"ask the relay's operator to run `peerup relay authorize {me}`, then run "
            f"`peerup join` again (the code stays valid until {until})"
        )
    elif failure.cause is failures.Cause.PEER_OFFLINE:
        message = "the inviter is not online at its relay"
        hint = (
            "check that `peerup invite` still runs there (or its daemon), then run "
            f"`peerup join` again (the code stays valid until {until})"
        )
    elif failure.cause is failures.Cause.PEER_REFUSED_US:
        message = (
            "the inviter refused this machine: no invite is pending there any more "
            f"(used, revoked, expired, or void after {MAX_ATTEMPTS} wrong tries)"
        )
        hint = "ask for a new code (`peerup invite`)"
    return JoinResult(False, inviter, message, hint, "unreachable", relays=relays)


# --- the daemon's part ---------------------------------------------------------------------


def card_from(config: NodeConfig, name: str | None) -> PeerCard:
    """Our card: ``name``, the enabled services, the network name."""
    return PeerCard(
        name,
        tuple(s.name for s in config.services if s.enabled),
        config.network_name,
    )


def relays_of(config: NodeConfig) -> list[Multiaddr]:
    """The relays a code from this config names.

    Raises:
        ConfigError: there is none (the joiner could not reach us).
    """
    if not config.relays:
        raise ConfigError(
            "no relay in config.yaml: the joiner reaches this machine through a relay",
            path=str(config.path),
            hint="add one under `relays:` (or `peerup init --relay …` on a new machine)",
        )
    return [Multiaddr.parse(r) for r in config.relays]


def check_ttl(ttl_s: float) -> float:
    """Raises ValueError unless 0 < ttl_s <= :data:`MAX_TTL_S`."""
    if not 0 < ttl_s <= MAX_TTL_S:
        raise ValueError(f"the TTL must be more than 0 s and at most {MAX_TTL_S:g} s")
    return ttl_s


class DaemonPairing:
    """Invites served by the daemon, and its API routes (see app/api.py):
    POST /v1/invites {ttl_s, name}, GET /v1/invites, DELETE /v1/invites/<id>,
    POST /v1/invites/<id>/wait {after, timeout_s}, POST /v1/join {code, name}."""

    def __init__(
        self,
        host: Host,
        config: Callable[[], NodeConfig],
        allowlist: Callable[[], Allowlist],
        on_paired: Callable[[], None],
    ) -> None:
        self.host = host
        self._config = config
        self._allowlist = allowlist
        self._on_paired = on_paired
        self.service = PairingService(
            host,
            InviteStore(config().path.parent),
            card=lambda invite: card_from(self._config(), invite.name),
            record=self._record,
        )

    def _record(self, peer: PeerId, card: PeerCard) -> Recorded:
        recorded = record_peer(self._allowlist(), self._config().path, peer, card)
        self._on_paired()  # names are in config.yaml: reload now, not at the next poll
        return recorded

    def start(self) -> None:
        self.service.start()
        self.host.set_handler(relay_group.PROTOCOL_ID, self._on_group)

    def close(self) -> None:
        self.service.close()

    def admit(self, peer: PeerId, refused: Access) -> Access:
        return self.service.admit(peer, refused)

    def _on_enrolled(self, relay: PeerId, group: str | None) -> None:
        EnrollmentStore(self._config().path.parent).add(
            Enrollment(str(relay), group, time.time())
        )

    async def _on_group(self, stream: Stream) -> None:
        """A relay we enrolled at introduces its group's members: write them in."""
        relay = stream.remote_peer
        try:
            trusted = EnrollmentStore(self._config().path.parent).is_enrolled_at(
                str(relay)
            )
        except ConfigError as exc:
            log.error("relay group: %s", exc)
            trusted = False
        if not trusted:
            log.info(
                "relay group: ignoring introductions from %s (not enrolled)", relay
            )
            stream.reset()
            return
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                raw = await stream.read_all(relay_group.MAX_MESSAGE_BYTES + 8)
            got = varint.try_read_prefixed(raw, relay_group.MAX_MESSAGE_BYTES)
            if got is None:
                raise RemoteProtocolError("truncated group list")
            group = relay_group.GroupList.decode(got[0])
        except (Error, TimeoutError, ValueError) as exc:
            log.info("relay group: bad introductions from %s: %s", relay, exc)
            stream.reset()
            return
        await stream.close_write()
        known = {e.peer_id for e in self._allowlist().entries()}
        for member in group.members:
            if member.peer == self.host.peer_id or member.peer in known:
                continue
            try:
                recorded = self._record(member.peer, PeerCard(member.name))
            except (ConfigError, OSError, ValueError) as exc:
                log.error("relay group: cannot write %s in: %s", member.peer, exc)
                return
            log.info(
                "relay group: %s introduced %s as %s",
                relay, member.peer, recorded.name or "(no name)",
            )  # fmt: skip

    def register_routes(self, server: api.ApiServer) -> None:
        server.route("POST", "/v1/invites", self._api_invites_post)
        server.route("GET", "/v1/invites", self._api_invites_list)
        server.route("DELETE", "/v1/invites", self._api_invites_revoke)
        server.route("POST", "/v1/join", self._api_join)

    async def _api_invites_post(self, body: api.Json, args: list[str]) -> api.Json:
        if len(args) == 2 and args[1] == "wait":
            return await self._api_wait(body, args[0])
        if args:
            raise ValueError("POST /v1/invites or /v1/invites/<id>/wait")
        config = self._config()
        relays = relays_of(config)
        ttl_s = check_ttl(float(body.get("ttl_s", DEFAULT_TTL_S)))
        name = body.get("name") or default_name()
        enrollment = None
        if body.get("enroll"):
            if not relays:
                raise ValueError("--enroll needs a relay in the config (`relays:`)")
            enrollment = await ask_enrollment(self.host, relays[0], ttl_s)
        invite = self.service.create(ttl_s, str(name) if name else None)
        code = code_for(
            invite, self.host.peer_id, relays, config.network_name, enrollment
        )
        return issued_json(invite, code, self.service.clock())

    async def _api_wait(self, body: api.Json, invite_id: str) -> api.Json:
        after = int(body.get("after", 0))
        timeout_s = min(float(body.get("timeout_s", 20.0)), 25.0)
        events = await self.service.wait(invite_id, after, timeout_s)
        invite = self.service.find(invite_id)
        return {
            "events": [dataclasses.asdict(e) for e in events],
            "invite": invite_json(invite, self.service.clock()) if invite else None,
        }

    async def _api_invites_list(self, body: api.Json, args: list[str]) -> api.Json:
        now = self.service.clock()
        return {"invites": [invite_json(i, now) for i in self.service.invites()]}

    async def _api_invites_revoke(self, body: api.Json, args: list[str]) -> api.Json:
        found = self.service.revoke(args[0] if args else "")
        if found is None:
            raise ValueError("no such invite (`peerup invite list` shows them)")
        invite, revoked = found
        return {"invite": invite_json(invite, self.service.clock()), "revoked": revoked}

    async def _api_join(self, body: api.Json, args: list[str]) -> api.Json:
        code = InviteCode.parse(str(body.get("code", "")))
        name = body.get("name") or default_name()
        card = card_from(self._config(), str(name) if name else None)
        result = await join(
            self.host, code, card, self._record, on_enrolled=self._on_enrolled
        )
        return result.as_json()


def issued_json(invite: StoredInvite, code: InviteCode, now: float) -> dict[str, Any]:
    """A new invite and its code, for the CLI."""
    return {**invite_json(invite, now), "code": code.to_text(), "uri": code.uri()}
