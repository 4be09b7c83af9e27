"""The allowlist: which peers may connect, from an ``authorized_keys`` file.

Format, one entry per line, in the spirit of OpenSSH's authorized_keys::

    <peer-id> [key=value …] [# comment]

Known attributes: ``expires=<RFC 3339 date or date-time>`` (UTC when no zone is given;
a bare date means 00:00 UTC that day, as OpenSSH's ``expiry-time`` means its start) and
``verified=<text>`` (how the peer was checked, e.g. ``sas``). A value with spaces is
written in double quotes. Other keys are kept and reported as warnings so a newer
file still loads. Blank lines and ``#`` lines are kept byte for byte by
``add``/``remove``. A missing file is an empty allowlist; an existing one must be
private (``config.files.check_private``). ``Allowlist.check`` is pure; ``gate()``
re-reads the file when its stat changes (mtime, size, inode), so edits apply without
a restart. Not supported: OpenSSH's other options (``from=``, ``command=``), wildcards.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Final

from peerup.app import audit
from peerup.config import files
from peerup.core.access import Access
from peerup.core.errors import ConfigError
from peerup.core.peer_id import PeerId
from peerup.net.connection import Connection
from peerup.net.host import Host

log = logging.getLogger(__name__)

KNOWN_ATTRS: Final = frozenset({"expires", "verified", "may_invite"})
_RFC3339_RE: Final = re.compile(
    r"^(\d{4}-\d{2}-\d{2})"
    r"(?:[Tt ](\d{2}:\d{2}:\d{2}(?:\.\d+)?)([Zz]|[+-]\d{2}:\d{2})?)?$"
)
_ATTR_RE: Final = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)=("[^"]*"|[^\s"#]*)')


def parse_expires(text: str) -> datetime:
    """An ``expires=`` value as an aware datetime (UTC when no zone is given).

    Raises:
        ValueError: not an RFC 3339 date or date-time.
    """
    match = _RFC3339_RE.match(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not an RFC 3339 date (2025-12-31) or date-time "
            "(2025-12-31T23:59:59Z)"
        )
    day_text, time_text, zone = match.groups()
    day = date.fromisoformat(day_text)
    if time_text is None:
        return datetime.combine(day, time(), tzinfo=UTC)
    stamp = datetime.fromisoformat(f"{day_text}T{time_text}{(zone or '').upper()}")
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp


def format_expires(when: datetime) -> str:
    """``when`` as an RFC 3339 UTC date-time (naive values are taken as UTC)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class AuthorizedKey:
    """One entry of an authorized_keys file."""

    peer_id: PeerId
    attrs: tuple[tuple[str, str], ...]
    """``key=value`` attributes in file order, values unquoted."""
    comment: str | None
    """The text after ``#`` on the entry's line, stripped."""
    line: int
    """1-based line number in the file."""

    def attr(self, key: str) -> str | None:
        """The value of attribute ``key``, if present."""
        for k, v in self.attrs:
            if k == key:
                return v
        return None

    @property
    def expires_at(self) -> datetime | None:
        """When the authorization ends, if it does."""
        text = self.attr("expires")
        return None if text is None else parse_expires(text)

    @property
    def verified(self) -> str | None:
        """How the peer was verified, if recorded."""
        return self.attr("verified")

    @property
    def may_invite(self) -> int:
        """On a relay: how many more delegated enrollment codes this member may ask
        for (``relay authorize --may-invite N``); 0 when absent or not a number."""
        value = self.attr("may_invite") or ""
        return int(value) if value.isdigit() else 0

    @property
    def unknown_attrs(self) -> tuple[str, ...]:
        """Attribute keys this version does not know (kept, not enforced)."""
        return tuple(k for k, _ in self.attrs if k not in KNOWN_ATTRS)

    def is_expired(self, now: datetime) -> bool:
        """Whether the authorization has ended at ``now``."""
        expires_at = self.expires_at
        return expires_at is not None and _aware(now) >= expires_at


def parse_authorized_keys(text: str, path: str) -> list[AuthorizedKey]:
    """Parse the text of an authorized_keys file.

    Raises:
        ConfigError: bad peer ID, malformed attribute, bad ``expires``, or a peer
            listed twice; with ``path`` and ``line``.
    """
    entries: list[AuthorizedKey] = []
    seen: dict[PeerId, int] = {}
    for number, raw in enumerate(text.split("\n"), start=1):
        entry = _parse_line(raw.rstrip("\r"), path, number)
        if entry is None:
            continue
        if entry.peer_id in seen:
            raise ConfigError(
                f"{entry.peer_id} is already listed on line {seen[entry.peer_id]}",
                path=path,
                line=number,
                hint="delete one of the two lines",
            )
        seen[entry.peer_id] = number
        entries.append(entry)
    return entries


def _parse_line(line: str, path: str, number: int) -> AuthorizedKey | None:
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    # The peer ID is everything up to the first space, tab or "#" (base58 has none).
    head = re.match(r"[^\s#]*", stripped)
    peer_text = head.group(0) if head else ""
    rest = stripped[len(peer_text) :]
    try:
        peer = PeerId.from_string(peer_text)
    except ValueError as exc:
        raise ConfigError(
            str(exc),
            path=path,
            line=number,
            hint="each line starts with a peer ID (12D3KooW…); "
            "comment lines start with #",
        ) from None
    attrs: list[tuple[str, str]] = []
    comment: str | None = None
    pos = 0
    while pos < len(rest):
        if rest[pos].isspace():
            pos += 1
            continue
        if rest[pos] == "#":
            comment = rest[pos + 1 :].strip()
            break
        match = _ATTR_RE.match(rest, pos)
        end = match.end() if match else pos
        if match is None or (end < len(rest) and not rest[end].isspace()):
            token = rest[pos:].split()[0]
            raise ConfigError(
                f"expected key=value or # comment after the peer ID, got {token!r}",
                path=path,
                line=number,
                hint='write attributes as key=value (quote values with spaces: "…") '
                "and start comments with #",
            )
        key, value = match.group(1), match.group(2)
        if value.startswith('"'):
            value = value[1:-1]
        if any(k == key for k, _ in attrs):
            raise ConfigError(
                f"attribute {key!r} is given twice", path=path, line=number
            )
        if key == "expires":
            try:
                parse_expires(value)
            except ValueError as exc:
                raise ConfigError(
                    str(exc),
                    path=path,
                    line=number,
                    field="expires",
                    hint="write expires=2025-12-31 or expires=2025-12-31T23:59:59Z",
                ) from None
        attrs.append((key, value))
        pos = end
    return AuthorizedKey(peer, tuple(attrs), comment, number)


def format_entry(
    peer: PeerId,
    comment: str | None = None,
    expires: datetime | None = None,
    verified: str | None = None,
) -> str:
    """One authorized_keys line (without the newline).

    Raises:
        ValueError: ``verified`` or ``comment`` cannot be written on one line.
    """
    parts = [peer.to_base58()]
    if expires is not None:
        parts.append(f"expires={format_expires(expires)}")
    if verified is not None:
        if '"' in verified or "\n" in verified or "\r" in verified:
            raise ValueError("verified= text must not contain quotes or newlines")
        needs_quotes = not verified or any(c.isspace() or c == "#" for c in verified)
        parts.append(
            f'verified="{verified}"' if needs_quotes else f"verified={verified}"
        )
    if comment:
        if "\n" in comment or "\r" in comment:
            raise ValueError("a comment must fit on one line")
        parts.append(f"# {comment}")
    return " ".join(parts)


_Signature = tuple[int, int, int] | None
_NEVER_LOADED: Final = (-1, -1, -1)


class Allowlist:
    """The peers allowed by one authorized_keys file, reloaded when it changes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._entries: dict[PeerId, AuthorizedKey] = {}
        self._signature: _Signature = _NEVER_LOADED
        self.version = 0
        """Counts the lists put in force (by :meth:`load`, whoever called it)."""

    def load(self) -> None:
        """Read the file now (a missing file is an empty list).

        Raises:
            ConfigError: unreadable, too open, or invalid; the old list is kept.
        """
        signature = self._stat()
        entries = self._read()
        self._entries = {e.peer_id: e for e in entries}
        self._signature = signature
        self.version += 1
        for entry in entries:
            for key in entry.unknown_attrs:
                log.warning(
                    "%s:%d: unknown attribute %r kept but not enforced",
                    self.path,
                    entry.line,
                    key,
                )

    def reload_if_changed(self) -> bool:
        """Reload when the file's stat changed; True if a new list is in force.

        A file that fails to load is logged and the previous list stays in force
        until the file changes again.
        """
        signature = self._stat()
        if signature == self._signature:
            return False
        try:
            self.load()
        except ConfigError as exc:
            self._signature = signature  # do not re-parse (and re-log) every call
            log.error("keeping the previous allowlist: %s", exc)
            return False
        return True

    def entries(self) -> list[AuthorizedKey]:
        """The entries in force, in file order."""
        return sorted(self._entries.values(), key=lambda e: e.line)

    def check(self, peer: PeerId, now: datetime) -> Access:
        """Whether ``peer`` is allowed at ``now`` (pure: uses the list in memory)."""
        entry = self._entries.get(peer)
        if entry is None:
            return Access.deny("not in authorized_keys")
        expires_at = entry.expires_at
        if expires_at is not None and _aware(now) >= expires_at:
            return Access.deny(f"authorization expired on {format_expires(expires_at)}")
        return Access.allow("authorized")

    def allowed_peers(self, now: datetime) -> frozenset[PeerId]:
        """The peers allowed at ``now`` (listed, not expired)."""
        return frozenset(
            peer
            for peer, entry in self._entries.items()
            if not entry.is_expired(now)
        )

    def next_expiry(self, now: datetime) -> datetime | None:
        """The earliest ``expires=`` still ahead of ``now``, if any."""
        ahead = [
            e.expires_at
            for e in self._entries.values()
            if e.attr("expires") is not None and not e.is_expired(now)
        ]
        return min((t for t in ahead if t is not None), default=None)

    def check_fresh(self, peer: PeerId) -> Access:
        """Pick up file changes, then check ``peer`` at UTC now."""
        self.reload_if_changed()
        return self.check(peer, now=datetime.now(UTC))

    def gate(self) -> Callable[[PeerId], Access]:
        """A peer gate for the host (:meth:`check_fresh`)."""
        return self.check_fresh

    def add(
        self,
        peer: PeerId,
        comment: str | None = None,
        expires: datetime | None = None,
        verified: str | None = None,
    ) -> bool:
        """Append ``peer``; False if it is already listed (the file is unchanged).

        Every other line is kept byte for byte; the file is created if missing.

        Raises:
            ConfigError: the current file is too open or invalid.
            ValueError: ``comment`` or ``verified`` cannot be written on one line.
        """
        text = self._read_text()
        entries = parse_authorized_keys(text, str(self.path))
        if any(e.peer_id == peer for e in entries):
            return False
        line = format_entry(peer, comment, expires, verified)
        if text and not text.endswith("\n"):
            text += "\n"
        self._write(text + line + "\n")
        self._audit(
            "peer_authorized", peer, comment=comment, verified=verified,
            expires=format_expires(expires) if expires is not None else None,
        )  # fmt: skip
        return True

    def update(
        self,
        peer: PeerId,
        comment: str | None = None,
        expires: datetime | None = None,
        verified: str | None = None,
        may_invite: int | None = None,
    ) -> bool:
        """Set the comment, ``expires=``, ``verified=`` and/or ``may_invite=`` of
        ``peer``'s entry (None: keep it); False if nothing changed.

        The entry's line is rewritten with its other attributes in order; every other
        line is kept byte for byte.

        Raises:
            ConfigError: the current file is too open or invalid.
            LookupError: ``peer`` is not listed.
            ValueError: ``comment`` cannot be written on one line.
        """
        text = self._read_text()
        entries = parse_authorized_keys(text, str(self.path))
        entry = next((e for e in entries if e.peer_id == peer), None)
        if entry is None:
            raise LookupError(f"{peer} is not in {self.path}")
        attrs = list(entry.attrs)
        if verified is not None:
            format_entry(peer, verified=verified)  # refuses quotes and newlines
        for key, new in (
            ("expires", format_expires(expires) if expires is not None else None),
            ("verified", verified),
            ("may_invite", str(may_invite) if may_invite is not None else None),
        ):
            if new is None:
                continue
            if entry.attr(key) is None:
                attrs.append((key, new))
            else:
                attrs = [(k, new if k == key else v) for k, v in attrs]
        new_comment = entry.comment if comment is None else comment
        if new_comment is not None and ("\n" in new_comment or "\r" in new_comment):
            raise ValueError("a comment must fit on one line")
        if tuple(attrs) == entry.attrs and new_comment == entry.comment:
            return False
        changed = {k: v for k, v in attrs if (k, v) not in entry.attrs}
        parts = [peer.to_base58()]
        for key, value in attrs:
            quote = not value or any(c.isspace() or c == "#" for c in value)
            parts.append(f'{key}="{value}"' if quote else f"{key}={value}")
        if new_comment:
            parts.append(f"# {new_comment}")
        lines = text.split("\n")
        old = lines[entry.line - 1]
        lines[entry.line - 1] = " ".join(parts) + ("\r" if old.endswith("\r") else "")
        self._write("\n".join(lines))
        self._audit(
            "peer_updated", peer, comment=comment,
            **{k: v for k, v in changed.items() if k in KNOWN_ATTRS},
        )  # fmt: skip
        return True

    def remove(self, peer: PeerId) -> bool:
        """Delete ``peer``'s line; False if it was not listed.

        Raises:
            ConfigError: the current file is too open or invalid.
        """
        text = self._read_text()
        entries = parse_authorized_keys(text, str(self.path))
        drop = {e.line for e in entries if e.peer_id == peer}
        if not drop:
            return False
        lines = text.split("\n")
        kept = [line for number, line in enumerate(lines, 1) if number not in drop]
        self._write("\n".join(kept))
        self._audit("peer_removed", peer)
        return True

    def _audit(self, event: str, peer: PeerId, **fields: str | None) -> None:
        """A record in the audit log beside this file (app/audit.py)."""
        kept = {k: v for k, v in fields.items() if v is not None}
        audit.AuditLog(self.path.parent / audit.FILE_NAME).append(
            event, peer=str(peer), allowlist=str(self.path), **kept
        )

    def _stat(self) -> _Signature:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _read_text(self) -> str:
        if not self.path.exists():
            return ""
        raw = files.read_private(self.path)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"not UTF-8 text: {exc.reason}", path=str(self.path)
            ) from None

    def _read(self) -> list[AuthorizedKey]:
        return parse_authorized_keys(self._read_text(), str(self.path))

    def _write(self, text: str) -> None:
        files.write_atomic(self.path, text)
        self.load()


def _aware(now: datetime) -> datetime:
    return now if now.tzinfo is not None else now.replace(tzinfo=UTC)


def close_revoked(host: Host, allowlist: Allowlist) -> int:
    """Close inbound connections of peers the allowlist no longer allows (removed or
    expired), e.g. after the file changed. Connections we dialed are left alone.
    Logs one INFO line per peer cut off, with the reason.

    Returns:
        How many connections were closed.
    """
    now = datetime.now(UTC)
    closed = 0
    for peer in list(host.connections):
        access = allowlist.check(peer, now)
        if not access.is_allowed:
            closed += cut_off(host, peer, access.reason, inbound_only=True)
    return closed


def cut_off(
    host: Host, peer: PeerId, reason: str, *, inbound_only: bool = False
) -> int:
    """Close ``peer``'s connections (only those it dialed, with ``inbound_only``)
    because its authorization was revoked for ``reason``; logs one INFO line naming
    the peer and the reason when any was open.

    Returns:
        How many connections were closed.
    """
    conns = [
        c
        for c in host.connections.get(peer, [])
        if not (inbound_only and c.is_initiator)
    ]
    for conn in conns:
        conn.close(f"authorization revoked: {reason}")
    if conns:
        log.info(
            "authorization revoked for %s (%s): closed %d connection(s)",
            peer,
            reason,
            len(conns),
        )
    return len(conns)


EXPIRY_RECHECK_S: Final = 3600.0
"""An expiry further ahead is re-armed at least this often, so that a wall clock that
jumped (suspend, a clock set by hand) is caught up with."""


class LiveAuthorization:
    """Keeps what runs in line with an allowlist, not only what opens: when the list
    changes, or an entry's ``expires=`` passes, closes what it no longer allows.

    Inbound connections of any peer the list does not allow are closed. A connection
    we dialed is closed only for a peer that lost its authorization (removed, or
    expired): peers we dial without listing them (a relay, a peer whose service we
    use) keep theirs. ``spare`` picks connections to keep even then (our relays carry
    other peers' circuits; a peer admitted only to pairing is not in the list yet);
    ``on_revoked`` is told of every connected peer the list
    does not allow, to end what it runs over connections that stay (service
    connections). Each peer cut off is logged with the reason. Expiry runs on a timer
    armed at the earliest ``expires=`` (no polling); a changed file is noticed by
    :meth:`poll`, which the owner's watcher calls.
    """

    def __init__(
        self,
        host: Host,
        allowlist: Callable[[], Allowlist],
        *,
        is_enforced: Callable[[], bool],
        spare: Callable[[Connection], bool] | None = None,
        on_revoked: Callable[[PeerId, str], None] | None = None,
    ) -> None:
        self.host = host
        self._allowlist = allowlist
        self._is_enforced = is_enforced
        self._spare = spare
        self._on_revoked = on_revoked
        self._allowed: frozenset[PeerId] = frozenset()
        """Peers allowed when the list was last enforced."""
        self._enforced: tuple[Allowlist, int] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Take the list in force as what was allowed so far; arm the expiry timer."""
        allowlist = self._allowlist()
        now = datetime.now(UTC)
        self._allowed = allowlist.allowed_peers(now)
        self._enforced = (allowlist, allowlist.version)
        self._arm(allowlist, now)

    def poll(self) -> int:
        """Enforce the list if another one came into force since the last time
        (reloaded by a watcher, the gate, or an edit through the API)."""
        allowlist = self._allowlist()
        enforced = self._enforced
        if (
            enforced is not None
            and enforced[0] is allowlist
            and enforced[1] == allowlist.version
        ):
            return 0
        return self.enforce()

    def enforce(self) -> int:
        """Close what the list in force no longer allows; returns how many
        connections were closed."""
        allowlist = self._allowlist()
        now = datetime.now(UTC)
        allowed = allowlist.allowed_peers(now)
        lost = self._allowed - allowed
        self._allowed = allowed
        self._enforced = (allowlist, allowlist.version)
        if not self._is_enforced():
            self._cancel_timer()
            return 0
        closed = 0
        for peer in list(self.host.connections):
            access = allowlist.check(peer, now)
            if access.is_allowed:
                continue
            was_allowed = peer in lost
            spare = self._spare
            conns = [
                c
                for c in self.host.connections.get(peer, [])
                if (not c.is_initiator or was_allowed)
                and (spare is None or not spare(c))
            ]
            for conn in conns:
                conn.close(f"authorization revoked: {access.reason}")
            if conns:
                log.info(
                    "authorization revoked for %s (%s): closed %d connection(s)",
                    peer,
                    access.reason,
                    len(conns),
                )
            closed += len(conns)
            if self._on_revoked is not None:
                self._on_revoked(peer, access.reason)
        self._arm(allowlist, now)
        return closed

    def close(self) -> None:
        """Stop the expiry timer. Idempotent."""
        self._cancel_timer()

    def _arm(self, allowlist: Allowlist, now: datetime) -> None:
        self._cancel_timer()
        if not self._is_enforced():
            return
        expiry = allowlist.next_expiry(now)
        if expiry is None:
            return
        delay = min((expiry - now).total_seconds(), EXPIRY_RECHECK_S)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(delay, 0.0), self._expired)

    def _expired(self) -> None:
        self._timer = None
        self.enforce()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
