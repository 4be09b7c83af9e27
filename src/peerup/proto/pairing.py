"""The pairing handshake on ``/peerup/invite/2.0.0``, and short authentication strings.

Spec: peer-up's own (issue 13). SPAKE2 is RFC 9382's, from the ``spake2`` package (as
magic-wormhole uses it; Ed25519 group, asymmetric A/B roles); key derivation is
HKDF-SHA256 (RFC 5869), confirmation HMAC-SHA256. The code it is keyed with is
proto/invite_code.py. The joiner J has dialed the inviter I, and Noise authenticated
both peer IDs::

    J -> I  HELLO{version, invite ID, SPAKE2 A message}
    I -> J  CHALLENGE{SPAKE2 B message, mac_I}      or REFUSAL{reason}
    J -> I  CONFIRM{J's card, mac_J}                or REFUSAL{WRONG_CODE}
    I -> J  WELCOME{I's card, mac_I}                (I wrote J in first) or REFUSAL

Each message is varint-length-prefixed protobuf. SPAKE2's identities are the protocol
ID plus each side's peer ID, so the key is bound to the two Noise-authenticated peers (a
machine in the middle relaying SPAKE2 messages between two Noise sessions ends up with
two different keys). The transcript hash starts with the protocol ID and both peer IDs
and covers every message; HKDF(SPAKE2 key, salt = transcript up to the B message) gives
one MAC key per side, and each MAC covers the transcript up to its own message, so both
sides confirm the key explicitly before anything is written. A card (name, services
offered, network name) is sent only after the sender checked the other side's MAC.
Wrong codes, refusals and garbage are outcomes (:class:`PairingFailed`), not exceptions.
Not here: counting attempts, expiry and storage (the caller's policy, app/pairing.py).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from spake2 import SPAKE2_A, SPAKE2_B  # type: ignore[import-untyped]
from spake2.ed25519_basic import NotOnCurve  # type: ignore[import-untyped]
from spake2.spake2 import SPAKEError  # type: ignore[import-untyped]

from peerup.core import pb, varint
from peerup.core.errors import LocalProtocolError, RemoteProtocolError
from peerup.core.peer_id import PeerId
from peerup.proto import relay_group
from peerup.proto.invite_code import CODE_VERSION, INVITE_ID_BYTES, InviteCode

PROTOCOL_ID: Final = "/peerup/invite/2.0.0"
MAX_MESSAGE_BYTES: Final = 4096


# --- handshake messages ---------------------------------------------------------------


class MessageType(enum.IntEnum):
    HELLO = 1
    CHALLENGE = 2
    CONFIRM = 3
    WELCOME = 4
    REFUSAL = 5


class Reason(enum.IntEnum):
    """Why a pairing did not complete (wire codes, and local outcomes)."""

    WRONG_CODE = 1
    """Key confirmation failed: the two sides did not use the same code."""
    UNKNOWN_INVITE = 2
    EXPIRED = 3
    USED = 4
    """The invite was already used by another machine."""
    BURNT = 5
    """Too many wrong attempts: the invite is void."""
    REVOKED = 6
    UNSUPPORTED_VERSION = 7
    PROTOCOL_ERROR = 8
    INTERNAL = 9
    """The other side could not finish (e.g. could not write its files)."""
    TIMEOUT = 10
    """Local only: no answer in time."""
    ABORTED = 11
    """Local only: the stream ended before the pairing did."""


@dataclass(frozen=True, slots=True)
class PeerCard:
    """What each side tells the other once the code is proven."""

    name: str | None = None
    """The name it proposes for itself."""
    services: tuple[str, ...] = ()
    """Services it offers the other."""
    network_name: str | None = None
    introductions: relay_group.GroupList | None = None
    """A relay's WELCOME to a machine it enrolls: the group's other members
    (proto/relay_group.py)."""

    def encode(self) -> bytes:
        parts = []
        if self.name is not None:
            parts.append(pb.encode_str_field(1, self.name))
        parts += [pb.encode_str_field(2, s) for s in self.services]
        if self.network_name is not None:
            parts.append(pb.encode_str_field(3, self.network_name))
        if self.introductions is not None:
            parts.append(pb.encode_bytes_field(4, self.introductions.encode()))
        return pb.join(parts)

    @classmethod
    def decode(cls, raw: bytes) -> PeerCard:
        r = pb.Reader(raw, "PeerCard")
        intro = r.bytes_(4)
        return cls(
            r.str_(1),
            tuple(r.repeated_str(2)),
            r.str_(3),
            relay_group.GroupList.decode(intro) if intro is not None else None,
        )


@dataclass(frozen=True, slots=True)
class PairingMessage:
    """One handshake message (fields used depend on ``type``)."""

    type: MessageType
    version: int | None = None
    invite_id: bytes | None = None
    spake: bytes | None = None
    card: PeerCard | None = None
    reason: Reason | None = None
    mac: bytes | None = None

    def encode(self) -> bytes:
        """The message, without its length prefix; ``mac`` goes last."""
        parts = [pb.encode_varint_field(1, self.type)]
        if self.version is not None:
            parts.append(pb.encode_varint_field(2, self.version))
        if self.invite_id is not None:
            parts.append(pb.encode_bytes_field(3, self.invite_id))
        if self.spake is not None:
            parts.append(pb.encode_bytes_field(4, self.spake))
        if self.card is not None:
            parts.append(pb.encode_bytes_field(5, self.card.encode()))
        if self.reason is not None:
            parts.append(pb.encode_varint_field(6, self.reason))
        if self.mac is not None:
            parts.append(pb.encode_bytes_field(7, self.mac))
        return pb.join(parts)

    @classmethod
    def decode(cls, raw: bytes) -> PairingMessage:
        """Raises RemoteProtocolError on anything malformed."""
        r = pb.Reader(raw, "PairingMessage")
        type_value = r.uint(1)
        try:
            mtype = MessageType(type_value or 0)
        except ValueError:
            raise RemoteProtocolError(f"unknown pairing message {type_value}") from None
        reason_value = r.uint(6)
        reason = None
        if reason_value is not None:
            try:
                reason = Reason(reason_value)
            except ValueError:
                reason = Reason.PROTOCOL_ERROR
        card_raw = r.bytes_(5)
        return cls(
            mtype,
            r.uint(2),
            r.bytes_(3),
            r.bytes_(4),
            PeerCard.decode(card_raw) if card_raw is not None else None,
            reason,
            r.bytes_(7),
        )

    def without_mac(self) -> PairingMessage:
        return PairingMessage(
            self.type, self.version, self.invite_id, self.spake, self.card, self.reason
        )


# --- handshake state machine ------------------------------------------------------------


class Role(enum.Enum):
    INVITER = "inviter"
    JOINER = "joiner"


class PairingState(enum.Enum):
    WAIT_HELLO = enum.auto()
    """Inviter: waiting for the joiner's first message."""
    WAIT_SECRET = enum.auto()
    """Inviter: the caller must :meth:`accept` or :meth:`refuse` the invite ID."""
    WAIT_CHALLENGE = enum.auto()
    """Joiner: HELLO sent."""
    WAIT_CONFIRM = enum.auto()
    """Inviter: CHALLENGE sent."""
    WAIT_COMMIT = enum.auto()
    """Inviter: the joiner proved the code; the caller writes it in, then
    :meth:`welcome`."""
    WAIT_WELCOME = enum.auto()
    """Joiner: CONFIRM sent."""
    DONE = enum.auto()
    FAILED = enum.auto()


@dataclass(frozen=True, slots=True)
class InviteRequested:
    """Inviter: a joiner names this invite; :meth:`PairingHandshake.accept` its secret
    or :meth:`PairingHandshake.refuse`."""

    invite_id: bytes


@dataclass(frozen=True, slots=True)
class JoinerConfirmed:
    """Inviter: the joiner proved it holds the code; write it in, then
    :meth:`PairingHandshake.welcome`."""

    card: PeerCard


@dataclass(frozen=True, slots=True)
class PairingCompleted:
    """Joiner: the inviter proved the code and wrote us in; write it in."""

    card: PeerCard


@dataclass(frozen=True, slots=True)
class PairingFailed:
    """The pairing ended without success: ``reason``, and whether the other side said
    so (``is_remote``) or this side found it."""

    reason: Reason
    detail: str = ""
    is_remote: bool = False


Event = InviteRequested | JoinerConfirmed | PairingCompleted | PairingFailed

_KEYS_INFO: Final = b"peerup invite 2 confirmation keys"
_LABELS: Final = {
    MessageType.CHALLENGE: b"challenge",
    MessageType.CONFIRM: b"confirm",
    MessageType.WELCOME: b"welcome",
}


def _password(invite_id: bytes, secret: bytes) -> bytes:
    return b"peerup-invite-2\x00" + invite_id + secret


def _spake_identity(role: Role, peer: PeerId) -> bytes:
    return (
        PROTOCOL_ID.encode() + b"\x00" + role.value.encode() + b"\x00" + peer.multihash
    )


@dataclass(slots=True)
class _Keys:
    inviter: bytes
    joiner: bytes


@dataclass(slots=True)
class PairingHandshake:
    """One side of one pairing attempt (see the module docstring for the flow).

    Build it with :meth:`joiner` or :meth:`inviter`. ``rng(n)`` gives ``n`` random bytes
    (SPAKE2's scalar); ``now`` and ``timeout_s`` set the deadline.
    """

    role: Role
    inviter_id: PeerId
    joiner_id: PeerId
    rng: Callable[[int], bytes]
    deadline_at: float
    state: PairingState
    card: PeerCard | None = None
    """Joiner: the card sent in CONFIRM."""
    _invite_id: bytes = b""
    _secret: bytes = b""
    _spake: object = None
    _peer_spake: bytes = b""
    _keys: _Keys | None = None
    _transcript: hashlib._Hash = field(default_factory=hashlib.sha256)
    _inbox: bytearray = field(default_factory=bytearray)
    _outbox: bytearray = field(default_factory=bytearray)

    @classmethod
    def joiner(
        cls,
        code: InviteCode,
        joiner_id: PeerId,
        card: PeerCard,
        *,
        rng: Callable[[int], bytes],
        now: float,
        timeout_s: float = 30.0,
    ) -> PairingHandshake:
        """The joiner's side; HELLO is queued at once."""
        hs = cls(
            Role.JOINER, code.inviter, joiner_id, rng, now + timeout_s,
            PairingState.WAIT_CHALLENGE, card,
        )  # fmt: skip
        hs._start_transcript()
        hs._invite_id = code.invite_id
        hs._secret = code.secret
        spake = SPAKE2_A(
            _password(code.invite_id, code.secret),
            idA=_spake_identity(Role.JOINER, joiner_id),
            idB=_spake_identity(Role.INVITER, code.inviter),
            entropy_f=rng,
        )
        hs._spake = spake
        hs._send(
            PairingMessage(
                MessageType.HELLO,
                version=CODE_VERSION,
                invite_id=code.invite_id,
                spake=bytes(spake.start()),
            )
        )
        return hs

    @classmethod
    def inviter(
        cls,
        inviter_id: PeerId,
        joiner_id: PeerId,
        *,
        rng: Callable[[int], bytes],
        now: float,
        timeout_s: float = 30.0,
    ) -> PairingHandshake:
        """The inviter's side, for a joiner that opened the invite protocol."""
        hs = cls(
            Role.INVITER, inviter_id, joiner_id, rng, now + timeout_s,
            PairingState.WAIT_HELLO,
        )  # fmt: skip
        hs._start_transcript()
        return hs

    def _start_transcript(self) -> None:
        self._transcript.update(
            varint.prefixed(PROTOCOL_ID.encode())
            + varint.prefixed(self.inviter_id.multihash)
            + varint.prefixed(self.joiner_id.multihash)
        )

    # --- the common API -------------------------------------------------------------

    @property
    def is_finished(self) -> bool:
        return self.state in (PairingState.DONE, PairingState.FAILED)

    @property
    def invite_id(self) -> bytes:
        """The invite ID the joiner named (empty before HELLO)."""
        return self._invite_id

    def data_to_send(self) -> bytes:
        out = bytes(self._outbox)
        self._outbox.clear()
        return out

    def next_deadline(self) -> float | None:
        return None if self.is_finished else self.deadline_at

    def handle_timeout(self, now: float) -> list[Event]:
        if self.is_finished or now < self.deadline_at:
            return []
        return [self._fail(Reason.TIMEOUT, "no answer in time", tell_peer=False)]

    def connection_lost(self) -> list[Event]:
        """The stream ended (or was reset) before the pairing finished."""
        if self.is_finished:
            return []
        return [self._fail(Reason.ABORTED, "the other side hung up", tell_peer=False)]

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from the stream; the same events however they are chunked."""
        if self.is_finished:
            return []
        self._inbox += data
        events: list[Event] = []
        while not self.is_finished and self.state is not PairingState.WAIT_SECRET:
            try:
                got = varint.try_read_prefixed(self._inbox, MAX_MESSAGE_BYTES)
                if got is None:
                    break
                raw, end = got
                del self._inbox[:end]
                events += self._on_message(PairingMessage.decode(raw), raw)
            except RemoteProtocolError as exc:
                events.append(self._fail(Reason.PROTOCOL_ERROR, str(exc)))
        return events

    # --- the inviter's decisions ----------------------------------------------------

    def accept(self, secret: bytes) -> list[Event]:
        """Inviter: answer the HELLO with the named invite's secret."""
        self._expect(Role.INVITER, PairingState.WAIT_SECRET)
        spake = SPAKE2_B(
            _password(self._invite_id, secret),
            idA=_spake_identity(Role.JOINER, self.joiner_id),
            idB=_spake_identity(Role.INVITER, self.inviter_id),
            entropy_f=self.rng,
        )
        spake_b = bytes(spake.start())
        try:
            key = bytes(spake.finish(self._peer_spake))
        except (SPAKEError, NotOnCurve, ValueError) as exc:
            return [self._fail(Reason.PROTOCOL_ERROR, f"bad SPAKE2 message: {exc}")]
        challenge = PairingMessage(MessageType.CHALLENGE, spake=spake_b)
        self._keys = self._derive(key, spake_b)
        self._send(challenge, self._keys.inviter)
        self.state = PairingState.WAIT_CONFIRM
        return []

    def refuse(self, reason: Reason) -> None:
        """Inviter: refuse the named invite (unknown, expired, used, ...)."""
        self._expect(Role.INVITER, PairingState.WAIT_SECRET)
        self._fail(reason, "refused", tell_peer=True)

    def welcome(self, card: PeerCard) -> None:
        """Inviter: the joiner is written in; tell it so, with our card."""
        self._expect(Role.INVITER, PairingState.WAIT_COMMIT)
        assert self._keys is not None
        self._send(PairingMessage(MessageType.WELCOME, card=card), self._keys.inviter)
        self.state = PairingState.DONE

    def abort(self, reason: Reason, detail: str) -> PairingFailed:
        """Give up (e.g. files could not be written), telling the peer why."""
        if self.is_finished:
            return PairingFailed(reason, detail)
        return self._fail(reason, detail, tell_peer=True)

    # --- internals --------------------------------------------------------------------

    def _expect(self, role: Role, state: PairingState) -> None:
        if self.role is not role or self.state is not state:
            raise LocalProtocolError(
                f"{self.role.value} in state {self.state.name} cannot do that"
            )

    def _derive(self, key: bytes, spake_b: bytes) -> _Keys:
        salt = self._transcript.copy()
        salt.update(varint.prefixed(spake_b))
        okm = HKDF(
            algorithm=hashes.SHA256(), length=64, salt=salt.digest(), info=_KEYS_INFO
        ).derive(key)
        return _Keys(okm[:32], okm[32:])

    def _mac(self, key: bytes, msg: PairingMessage) -> bytes:
        """HMAC over the transcript so far plus ``msg`` (without its MAC)."""
        th = self._transcript.copy()
        th.update(varint.prefixed(msg.encode()))
        return hmac.new(key, _LABELS[msg.type] + th.digest(), hashlib.sha256).digest()

    def _send(self, msg: PairingMessage, key: bytes | None = None) -> None:
        if key is not None:
            msg = PairingMessage(
                msg.type, msg.version, msg.invite_id, msg.spake, msg.card,
                msg.reason, self._mac(key, msg),
            )  # fmt: skip
        raw = msg.encode()
        self._transcript.update(varint.prefixed(raw))
        self._outbox += varint.prefixed(raw)

    def _mac_is_valid(self, key: bytes, msg: PairingMessage) -> bool:
        if msg.mac is None:
            return False
        return hmac.compare_digest(self._mac(key, msg.without_mac()), msg.mac)

    def _fail(
        self, reason: Reason, detail: str, *, tell_peer: bool = True
    ) -> PairingFailed:
        if tell_peer and not self.is_finished:
            self._send(PairingMessage(MessageType.REFUSAL, reason=reason))
        self.state = PairingState.FAILED
        self._spake = None
        return PairingFailed(reason, detail, is_remote=False)

    def _absorb(self, raw: bytes) -> None:
        """Add a received message, as received, to the transcript."""
        self._transcript.update(varint.prefixed(raw))

    def _on_message(self, msg: PairingMessage, raw: bytes) -> list[Event]:
        if msg.type is MessageType.REFUSAL:
            self.state = PairingState.FAILED
            return [
                PairingFailed(
                    msg.reason or Reason.PROTOCOL_ERROR, "refused", is_remote=True
                )
            ]
        handler = _HANDLERS.get((self.role, self.state, msg.type))
        if handler is None:
            return [
                self._fail(
                    Reason.PROTOCOL_ERROR,
                    f"unexpected {msg.type.name} in state {self.state.name}",
                )
            ]
        return handler(self, msg, raw)

    def _on_hello(self, msg: PairingMessage, raw: bytes) -> list[Event]:
        self._absorb(raw)
        if msg.version != CODE_VERSION:
            return [
                self._fail(
                    Reason.UNSUPPORTED_VERSION, f"joiner speaks version {msg.version}"
                )
            ]
        if (
            msg.invite_id is None
            or len(msg.invite_id) != INVITE_ID_BYTES
            or not msg.spake
        ):
            return [self._fail(Reason.PROTOCOL_ERROR, "HELLO lacks a field")]
        self._invite_id = msg.invite_id
        self._peer_spake = msg.spake
        self.state = PairingState.WAIT_SECRET
        return [InviteRequested(msg.invite_id)]

    def _on_challenge(self, msg: PairingMessage, raw: bytes) -> list[Event]:
        if not msg.spake:
            return [
                self._fail(Reason.PROTOCOL_ERROR, "CHALLENGE lacks its SPAKE2 part")
            ]
        try:
            key = bytes(self._spake.finish(msg.spake))  # type: ignore[attr-defined]
        except (SPAKEError, NotOnCurve, ValueError) as exc:
            return [self._fail(Reason.PROTOCOL_ERROR, f"bad SPAKE2 message: {exc}")]
        self._keys = self._derive(key, msg.spake)
        if not self._mac_is_valid(self._keys.inviter, msg):
            return [
                self._fail(
                    Reason.WRONG_CODE,
                    "the inviter's key confirmation does not match: not the same code",
                )
            ]
        self._absorb(raw)
        self._send(
            PairingMessage(MessageType.CONFIRM, card=self.card or PeerCard()),
            self._keys.joiner,
        )
        self.state = PairingState.WAIT_WELCOME
        return []

    def _on_confirm(self, msg: PairingMessage, raw: bytes) -> list[Event]:
        assert self._keys is not None
        if not self._mac_is_valid(self._keys.joiner, msg):
            return [
                self._fail(
                    Reason.WRONG_CODE,
                    "the joiner's key confirmation does not match: not the same code",
                )
            ]
        self._absorb(raw)
        self.state = PairingState.WAIT_COMMIT
        return [JoinerConfirmed(msg.card or PeerCard())]

    def _on_welcome(self, msg: PairingMessage, raw: bytes) -> list[Event]:
        assert self._keys is not None
        if not self._mac_is_valid(self._keys.inviter, msg):
            return [self._fail(Reason.PROTOCOL_ERROR, "WELCOME with a bad MAC")]
        self._absorb(raw)
        self.state = PairingState.DONE
        return [PairingCompleted(msg.card or PeerCard())]


_Handler = Callable[[PairingHandshake, PairingMessage, bytes], list[Event]]
_HANDLERS: Final[dict[tuple[Role, PairingState, MessageType], _Handler]] = {
    (
        Role.INVITER,
        PairingState.WAIT_HELLO,
        MessageType.HELLO,
    ): PairingHandshake._on_hello,
    (Role.JOINER, PairingState.WAIT_CHALLENGE, MessageType.CHALLENGE): (
        PairingHandshake._on_challenge
    ),
    (Role.INVITER, PairingState.WAIT_CONFIRM, MessageType.CONFIRM): (
        PairingHandshake._on_confirm
    ),
    (Role.JOINER, PairingState.WAIT_WELCOME, MessageType.WELCOME): (
        PairingHandshake._on_welcome
    ),
}
"""(role, state, message) -> handler: every other combination is a protocol error."""


# --- short authentication string --------------------------------------------------------

EMOJI: Final[tuple[tuple[str, str], ...]] = (
    ("\U0001f436", "dog"), ("\U0001f431", "cat"), ("\U0001f981", "lion"),
    ("\U0001f434", "horse"), ("\U0001f984", "unicorn"), ("\U0001f437", "pig"),
    ("\U0001f418", "elephant"), ("\U0001f430", "rabbit"), ("\U0001f43c", "panda"),
    ("\U0001f413", "rooster"), ("\U0001f427", "penguin"), ("\U0001f422", "turtle"),
    ("\U0001f41f", "fish"), ("\U0001f419", "octopus"), ("\U0001f98b", "butterfly"),
    ("\U0001f337", "tulip"), ("\U0001f333", "tree"), ("\U0001f335", "cactus"),
    ("\U0001f344", "mushroom"), ("\U0001f30d", "globe"), ("\U0001f319", "moon"),
    ("\U0001f525", "fire"), ("\U0001f34c", "banana"), ("\U0001f34e", "apple"),
    ("\U0001f353", "strawberry"), ("\U0001f33d", "corn"), ("\U0001f355", "pizza"),
    ("\U0001f382", "cake"), ("\U0001f499", "heart"), ("\U0001f600", "smiley"),
    ("\U0001f916", "robot"), ("\U0001f3a9", "hat"), ("\U0001f453", "glasses"),
    ("\U0001f527", "wrench"), ("\U0001f385", "santa"), ("\U0001f44d", "thumbs up"),
    ("\U0001f302", "umbrella"), ("\u231b", "hourglass"), ("\u23f0", "clock"),
    ("\U0001f381", "gift"), ("\U0001f4a1", "light bulb"), ("\U0001f4d5", "book"),
    ("\U0001f4ce", "paperclip"), ("\U0001f512", "lock"), ("\U0001f511", "key"),
    ("\U0001f528", "hammer"), ("\U0001f4de", "telephone"), ("\U0001f3c1", "flag"),
    ("\U0001f682", "train"), ("\U0001f6b2", "bicycle"), ("\U0001f680", "rocket"),
    ("\U0001f3c6", "trophy"), ("\u26bd", "ball"), ("\U0001f3b8", "guitar"),
    ("\U0001f3ba", "trumpet"), ("\U0001f514", "bell"), ("\u2693", "anchor"),
    ("\U0001f3a7", "headphones"), ("\U0001f4c1", "folder"), ("\U0001f4cc", "pin"),
    ("\U0001f41d", "bee"), ("\U0001f40c", "snail"), ("\U0001f33b", "sunflower"),
    ("\U0001f352", "cherries"),
)  # fmt: skip
"""64 emoji, 6 bits each, with a word for each so that they can be read aloud."""
SAS_EMOJI: Final = 5
SAS_DIGITS: Final = 6


@dataclass(frozen=True, slots=True)
class ShortAuthString:
    """What two people compare to check that each has the other's real peer ID."""

    emoji: tuple[tuple[str, str], ...]
    """(emoji, word) pairs."""
    number: str
    """:data:`SAS_DIGITS` digits, in groups of three."""

    def text(self) -> str:
        return "  ".join(f"{e} {w}" for e, w in self.emoji) + f"   {self.number}"


def short_auth_string(a: PeerId, b: PeerId) -> ShortAuthString:
    """The same string on both machines: from both peer IDs, in either order.

    A different peer ID on either side (a machine in the middle, a pasted wrong ID)
    changes it: 30 bits of emoji and 6 digits (about 50 bits in all).
    """
    first, second = sorted((a.multihash, b.multihash))
    digest = hashlib.sha256(
        b"peerup-sas-1\x00" + varint.prefixed(first) + varint.prefixed(second)
    ).digest()
    bits = int.from_bytes(digest[:8], "big")
    emoji = tuple(EMOJI[(bits >> (58 - 6 * i)) & 63] for i in range(SAS_EMOJI))
    number = int.from_bytes(digest[8:16], "big") % 10**SAS_DIGITS
    text = f"{number:0{SAS_DIGITS}d}"
    return ShortAuthString(emoji, f"{text[:3]} {text[3:]}")
