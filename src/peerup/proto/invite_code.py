"""Invite codes: what a pairing code carries, in binary, in text and as a URI.

Spec: peer-up's own (issue 13); the text is Crockford's base32
(crockford.com/base32.html). Binary, followed by a CRC-32 of it (4 bytes, big-endian)::

    version u8 (2) | kind u8 (0: peer invite) | flags u8 (bit 0: network name follows)
    invite ID (4 bytes) | secret (10 bytes, 80 bits) | expires_at u32 (Unix seconds)
    inviter: compact peer ID | relay count u8, each: varint length + multiaddr bytes
    without its /p2p/, then the relay's compact peer ID | [u8 length + network name]

A compact peer ID is ``0x01`` + the 32-byte Ed25519 key (the usual identity multihash),
or ``0x00`` + varint length + multihash. Relays may be IPv4, IPv6 or DNS multiaddrs,
up to :data:`MAX_RELAYS`. Text: the bytes in Crockford base32 (no I, L, O, U), in
groups of 5 joined by ``-``, unused low bits zero. Reading ignores case, ``-`` and
blanks, and takes O for 0 and I, L for 1. Every single mistyped character is caught
before any network use: a character is 5 bits, CRC-32 catches every error burst of up
to 32 bits, and non-zero padding is refused; :class:`CodeError` then says it is a typo
and, when exactly one substitution explains it, where. URI: ``peerup://invite/<text>``
(upper-cased for QR codes: it then fits QR's compact alphanumeric mode).
The handshake that uses the secret is proto/pairing.py. Not here: storage, expiry
policy (app/pairing.py).
"""

from __future__ import annotations

import enum
import functools
import zlib
from dataclasses import dataclass
from typing import Final

from peerup.core import varint
from peerup.core.errors import Error, LocalProtocolError, RemoteProtocolError
from peerup.core.multiaddr import Multiaddr
from peerup.core.peer_id import PeerId

CODE_VERSION: Final = 2
SECRET_BYTES: Final = 10
INVITE_ID_BYTES: Final = 4
MAX_RELAYS: Final = 8
URI_PREFIX: Final = "peerup://invite/"
GROUP_CHARS: Final = 5
ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
"""Crockford's base32: no I, L, O (read as 1, 1, 0) and no U."""
_VALUES: Final = {c: i for i, c in enumerate(ALPHABET)} | {"O": 0, "I": 1, "L": 1}
_BLANKS: Final = frozenset("- \t\r\n")
_ED25519_PREFIX: Final = bytes((0x00, 0x24, 0x08, 0x01, 0x12, 0x20))
"""An Ed25519 peer ID's multihash before its 32 key bytes: identity multihash of 36
bytes, PublicKey{Type: Ed25519, Data: 32 bytes}."""
_CRC_BYTES: Final = 4


class InviteKind(enum.IntEnum):
    """What a code lets its holder do."""

    PEER = 0
    """Pair with the inviter (each side authorizes the other)."""
    RELAY = 1
    """Enroll at a relay (``peerup relay invite``): the inviter is the relay itself,
    ``relays`` its own addresses; on success it adds the joiner to its allowlist."""


class CodeProblem(enum.Enum):
    """Why a code's text was refused."""

    TYPO = "typo"
    """A character is wrong, missing or extra (the checksum says so)."""
    MALFORMED = "malformed"
    """The checksum holds but the content does not parse (another program's code?)."""
    VERSION = "version"
    """Made by a peer-up whose code version this one does not read."""


class CodeError(Error):
    """An invite code that cannot be read, and why.

    Attributes:
        problem: typo, malformed, or another version.
        position: for a typo, the 1-based position of the wrong character among the
            code's characters (blanks and ``-`` not counted), when one is known.
        suggestion: the character that would fix it, when one substitution alone does.
        hint: what to do.
    """

    def __init__(
        self,
        problem: CodeProblem,
        message: str,
        *,
        position: int | None = None,
        suggestion: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.problem = problem
        self.position = position
        self.suggestion = suggestion
        self.hint = hint


# --- base32 ---------------------------------------------------------------------------


def encode_base32(raw: bytes) -> str:
    """``raw`` in Crockford base32, unused low bits zero, no separators."""
    nbits = len(raw) * 8
    nchars = -(-nbits // 5)
    value = int.from_bytes(raw, "big") << (nchars * 5 - nbits)
    return "".join(
        ALPHABET[(value >> (5 * (nchars - 1 - i))) & 31] for i in range(nchars)
    )


def group(text: str) -> str:
    """``text`` in groups of :data:`GROUP_CHARS` joined by ``-``."""
    return "-".join(text[i : i + GROUP_CHARS] for i in range(0, len(text), GROUP_CHARS))


def _clean(text: str) -> str:
    """The code's characters: URI prefix, blanks and ``-`` removed, upper case."""
    text = text.strip()
    if text.lower().startswith(URI_PREFIX):
        text = text[len(URI_PREFIX) :]
    return "".join(c for c in text if c not in _BLANKS).upper()


def _where(position: int) -> str:
    grp, offset = divmod(position - 1, GROUP_CHARS)
    return f"character {position} (group {grp + 1}, character {offset + 1})"


def _codeword(chars: str) -> tuple[int, int, int]:
    """``(value, byte count, padding bits)`` of Crockford characters.

    Raises:
        CodeError: a character outside the alphabet, or a length no code has.
    """
    value = 0
    for i, c in enumerate(chars):
        v = _VALUES.get(c)
        if v is None:
            raise CodeError(
                CodeProblem.TYPO,
                f"{_where(i + 1)} is {c!r}, which no invite code contains",
                position=i + 1,
                hint="a code has only the digits and the letters A-Z except I, L, O, U "
                "(copy it again, or check that character)",
            )
        value = value << 5 | v
    nbits = len(chars) * 5
    nbytes = nbits // 8
    pad = nbits - nbytes * 8
    if pad >= 5 or nbytes <= _CRC_BYTES:
        raise CodeError(
            CodeProblem.TYPO,
            "the code is too short or too long: a character is missing or extra",
            hint="copy the whole code again (`peerup invite` printed it)",
        )
    return value, nbytes, pad


def _syndrome(value: int, nbytes: int, pad: int) -> int:
    """CRC-32 of the body XOR the CRC field: 0 for an intact codeword (padding apart).

    CRC-32 is affine over messages of one length, so this is too: the syndrome of
    ``value ^ error`` is ``syndrome(value) ^ syndrome(error) ^ syndrome(0)``.
    """
    raw = (value >> pad).to_bytes(nbytes, "big")
    return zlib.crc32(raw[:-_CRC_BYTES]) ^ int.from_bytes(raw[-_CRC_BYTES:], "big")


def _checks(value: int, nbytes: int, pad: int) -> bytes | None:
    """The payload when the padding is zero and the CRC holds, else None."""
    if value & ((1 << pad) - 1) or _syndrome(value, nbytes, pad):
        return None
    return (value >> pad).to_bytes(nbytes, "big")[:-_CRC_BYTES]


@functools.lru_cache(maxsize=32)
def _typo_table(nchars: int) -> dict[int, list[tuple[int, int]]]:
    """For codes of ``nchars`` characters: the syndrome change of each single-character
    substitution (position, XOR of the 5-bit values), by syndrome."""
    nbits = nchars * 5
    nbytes = nbits // 8
    pad = nbits - nbytes * 8
    zero = _syndrome(0, nbytes, pad)
    bit = [
        _syndrome(1 << k, nbytes, pad) ^ zero if k >= pad else 0 for k in range(nbits)
    ]
    table: dict[int, list[tuple[int, int]]] = {}
    for i in range(nchars):
        shift = 5 * (nchars - 1 - i)
        for delta in range(1, 32):
            error = delta << shift
            if error & ((1 << pad) - 1):
                continue  # it would set padding bits, which is caught as such
            syndrome = 0
            for k in range(5):
                if delta >> k & 1:
                    syndrome ^= bit[shift + k]
            table.setdefault(syndrome, []).append((i, delta))
    return table


def _locate_typo(
    chars: str, value: int, nbytes: int, pad: int
) -> tuple[int, str] | None:
    """The one single-character substitution that makes the checksum hold, if exactly
    one does: ``(1-based position, character)``."""
    if value & ((1 << pad) - 1):
        return None  # padding set: the last character, but which one is meant?
    # syndrome(value ^ error) == 0 exactly when the table's entry for error (its
    # syndrome XOR syndrome(0)) equals syndrome(value).
    found = _typo_table(len(chars)).get(_syndrome(value, nbytes, pad), [])
    if len(found) != 1:
        return None
    i, delta = found[0]
    current = (value >> (5 * (len(chars) - 1 - i))) & 31
    return i + 1, ALPHABET[current ^ delta]


def decode_text(text: str) -> bytes:
    """The payload of a code's text (checksum checked and removed).

    Raises:
        CodeError: TYPO, with the position and the fix when one substitution explains it.
    """
    chars = _clean(text)
    if not chars:
        raise CodeError(CodeProblem.TYPO, "the invite code is empty")
    value, nbytes, pad = _codeword(chars)
    body = _checks(value, nbytes, pad)
    if body is not None:
        return body
    located = _locate_typo(chars, value, nbytes, pad)
    if located is None:
        raise CodeError(
            CodeProblem.TYPO,
            "the code has a typo: its checksum does not match (a character is wrong, "
            "missing or extra)",
            hint="compare it with the code `peerup invite` printed, group by group",
        )
    position, fix = located
    raise CodeError(
        CodeProblem.TYPO,
        f"the code has a typo at {_where(position)}: {chars[position - 1]!r} should "
        f"probably be {fix!r}",
        position=position,
        suggestion=fix,
        hint="check that character against the code `peerup invite` printed",
    )


# --- the code -------------------------------------------------------------------------


def encode_peer_id(peer: PeerId) -> bytes:
    """A peer ID in the code's compact form."""
    mh = peer.multihash
    if len(mh) == len(_ED25519_PREFIX) + 32 and mh.startswith(_ED25519_PREFIX):
        return b"\x01" + mh[len(_ED25519_PREFIX) :]
    return b"\x00" + varint.prefixed(mh)


def _decode_peer_id(raw: bytes, pos: int) -> tuple[PeerId, int]:
    tag = _byte(raw, pos)
    pos += 1
    if tag == 1:
        key = _take(raw, pos, 32)
        return PeerId(_ED25519_PREFIX + key), pos + 32
    if tag == 0:
        length, pos = varint.decode(raw, pos)
        mh = _take(raw, pos, length)
        try:
            return PeerId(mh), pos + length
        except ValueError as exc:
            raise RemoteProtocolError(f"bad peer ID: {exc}") from None
    raise RemoteProtocolError(f"unknown peer ID form {tag}")


def _byte(raw: bytes, pos: int) -> int:
    if pos >= len(raw):
        raise RemoteProtocolError("code ends too early")
    return raw[pos]


def _take(raw: bytes, pos: int, n: int) -> bytes:
    if pos + n > len(raw):
        raise RemoteProtocolError("code ends too early")
    return raw[pos : pos + n]


@dataclass(frozen=True, slots=True)
class Enrollment:
    """A relay enrollment inside a peer invite (``relay authorize --may-invite``):
    the joiner enrolls with it at the code's first relay before pairing."""

    invite_id: bytes
    secret: bytes
    expires_at: int

    def __post_init__(self) -> None:
        if len(self.invite_id) != INVITE_ID_BYTES or len(self.secret) != SECRET_BYTES:
            raise LocalProtocolError("an enrollment has a 4-byte ID and a 10-byte secret")
        if not 0 <= self.expires_at < 2**32:
            raise LocalProtocolError("expires_at does not fit 32 bits")


@dataclass(frozen=True, slots=True)
class InviteCode:
    """What an invite code carries."""

    invite_id: bytes
    """Which of the inviter's pending invites this is (not secret)."""
    secret: bytes
    """The one-time secret SPAKE2 is keyed with (:data:`SECRET_BYTES`)."""
    expires_at: int
    """Unix seconds."""
    inviter: PeerId
    relays: tuple[Multiaddr, ...]
    """Where the inviter can be reached: relay addresses, each ending in ``/p2p/``."""
    network_name: str | None = None
    kind: InviteKind = InviteKind.PEER
    version: int = CODE_VERSION
    enrollment: Enrollment | None = None
    """A peer invite's delegated enrollment at ``relays[0]``, if any."""

    def __post_init__(self) -> None:
        if self.enrollment is not None and (
            self.kind is not InviteKind.PEER or not self.relays
        ):
            raise LocalProtocolError("only a peer invite with a relay carries an enrollment")
        if len(self.invite_id) != INVITE_ID_BYTES:
            raise LocalProtocolError(f"an invite ID is {INVITE_ID_BYTES} bytes")
        if len(self.secret) != SECRET_BYTES:
            raise LocalProtocolError(f"an invite secret is {SECRET_BYTES} bytes")
        if not 0 <= self.expires_at < 2**32:
            raise LocalProtocolError("expires_at does not fit 32 bits")
        if len(self.relays) > MAX_RELAYS:
            raise LocalProtocolError(f"at most {MAX_RELAYS} relays fit a code")
        for relay in self.relays:
            if relay.peer_id is None or relay.is_circuit:
                raise LocalProtocolError(f"relay {relay} must end in /p2p/<relay ID>")
        if self.network_name is not None and not (
            0 < len(self.network_name.encode()) < 256
        ):
            raise LocalProtocolError("the network name must be 1-255 bytes")

    def is_expired(self, now: float) -> bool:
        return now >= self.expires_at

    def enrollment_code(self) -> InviteCode | None:
        """The relay enrollment code this peer invite carries, if any."""
        if self.enrollment is None:
            return None
        relay = self.relays[0]
        assert relay.peer_id is not None  # checked in __post_init__
        e = self.enrollment
        return InviteCode(
            e.invite_id, e.secret, e.expires_at, relay.peer_id, (relay,),
            kind=InviteKind.RELAY,
        )  # fmt: skip

    def circuit_addrs(self) -> list[Multiaddr]:
        """The inviter's address through each relay."""
        circuit = Multiaddr((("p2p-circuit", None),))
        return [r.encapsulate(circuit).with_peer_id(self.inviter) for r in self.relays]

    def to_bytes(self) -> bytes:
        """The binary form, checksum included."""
        flags = (1 if self.network_name is not None else 0) | (
            2 if self.enrollment is not None else 0
        )
        out = bytearray((self.version, self.kind, flags))
        out += self.invite_id + self.secret + self.expires_at.to_bytes(4, "big")
        out += encode_peer_id(self.inviter)
        out.append(len(self.relays))
        for relay in self.relays:
            peer = relay.peer_id
            assert peer is not None  # checked in __post_init__
            out += varint.prefixed(relay.without_peer_id().to_bytes())
            out += encode_peer_id(peer)
        if self.network_name is not None:
            name = self.network_name.encode()
            out.append(len(name))
            out += name
        if self.enrollment is not None:
            e = self.enrollment
            out += e.invite_id + e.secret + e.expires_at.to_bytes(4, "big")
        return bytes(out) + zlib.crc32(out).to_bytes(_CRC_BYTES, "big")

    @classmethod
    def from_payload(cls, raw: bytes) -> InviteCode:
        """Parse the binary form without its checksum.

        Raises:
            CodeError: MALFORMED or VERSION.
        """
        if raw and raw[0] != CODE_VERSION:
            raise CodeError(
                CodeProblem.VERSION,
                f"this invite code has version {raw[0]}; this peer-up reads version "
                f"{CODE_VERSION}",
                hint="use the same peer-up version on both machines",
            )
        try:
            return cls._parse(raw)
        except (RemoteProtocolError, LocalProtocolError, ValueError) as exc:
            raise CodeError(
                CodeProblem.MALFORMED,
                f"the invite code's checksum is right but its content is not: {exc}",
                hint="was it made by another program, or another peer-up version?",
            ) from None

    @classmethod
    def _parse(cls, raw: bytes) -> InviteCode:
        version, kind_value, flags = _take(raw, 0, 3)
        try:
            kind = InviteKind(kind_value)
        except ValueError:
            raise RemoteProtocolError(f"unknown invite kind {kind_value}") from None
        pos = 3
        invite_id = _take(raw, pos, INVITE_ID_BYTES)
        pos += INVITE_ID_BYTES
        secret = _take(raw, pos, SECRET_BYTES)
        pos += SECRET_BYTES
        expires_at = int.from_bytes(_take(raw, pos, 4), "big")
        pos += 4
        inviter, pos = _decode_peer_id(raw, pos)
        count = _byte(raw, pos)
        pos += 1
        relays = []
        for _ in range(count):
            length, pos = varint.decode(raw, pos)
            transport = Multiaddr.from_bytes(_take(raw, pos, length))
            pos += length
            peer, pos = _decode_peer_id(raw, pos)
            relays.append(transport.with_peer_id(peer))
        network_name = None
        if flags & 1:
            length = _byte(raw, pos)
            pos += 1
            try:
                network_name = _take(raw, pos, length).decode()
            except UnicodeDecodeError:
                raise RemoteProtocolError("network name is not UTF-8") from None
            pos += length
        enrollment = None
        if flags & 2:
            e_id = _take(raw, pos, INVITE_ID_BYTES)
            pos += INVITE_ID_BYTES
            e_secret = _take(raw, pos, SECRET_BYTES)
            pos += SECRET_BYTES
            e_expires = int.from_bytes(_take(raw, pos, 4), "big")
            pos += 4
            enrollment = Enrollment(e_id, e_secret, e_expires)
        if flags & ~3:
            raise RemoteProtocolError(f"unknown flags {flags:#x}")
        if pos != len(raw):
            raise RemoteProtocolError(f"{len(raw) - pos} unexpected bytes at the end")
        return cls(
            invite_id,
            secret,
            expires_at,
            inviter,
            tuple(relays),
            network_name,
            kind,
            version,
            enrollment,
        )

    def to_text(self) -> str:
        """The human form: Crockford base32 in groups of five."""
        return group(encode_base32(self.to_bytes()))

    def uri(self) -> str:
        """``peerup://invite/<text>``."""
        return URI_PREFIX + self.to_text()

    @classmethod
    def parse(cls, text: str) -> InviteCode:
        """Read a code as typed or pasted: its text or its URI, any case, any blanks.

        Raises:
            CodeError: a typo (with where, when known), or content that does not parse.
        """
        return cls.from_payload(decode_text(text))
