"""The inviter's pending invites: ``invites.json`` beside config.yaml, mode 0600.

``peerup invite`` adds an invite here, so that it outlives the command: the daemon (or
the command itself, when no daemon runs) serves every pending invite in the file, and
``invite list`` / ``invite revoke`` read and edit it. Each invite has its ID, its secret
(the file is a secret, like a key), its expiry, the name the inviter offers, how many
attempts were made and its state. Every change is a read-modify-write under an
exclusive ``flock`` on ``.invites.lock`` in the same directory, written atomically
(config/files.py), so the daemon, a waiting ``invite`` and ``invite revoke`` never lose
each other's changes and a killed writer leaves the old file or the new one. Invites
that ended (used, burnt, revoked) or expired are kept for :data:`KEEP_ENDED_S` after
their expiry, so that a late ``join`` hears why, then dropped. Not supported: sharing
one file between machines (``flock`` is local).
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, TypeVar

from peerup.config import files
from peerup.core.errors import ConfigError

FILE_NAME: Final = "invites.json"
LOCK_NAME: Final = ".invites.lock"
FORMAT_VERSION: Final = 1
KEEP_ENDED_S: Final = 24 * 3600.0
T = TypeVar("T")


class InviteState(enum.Enum):
    PENDING = "pending"
    USED = "used"
    """A machine paired with it."""
    BURNT = "burnt"
    """Too many wrong attempts."""
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class StoredInvite:
    """One invite as the inviter keeps it."""

    id: bytes
    secret: bytes
    created_at: float
    expires_at: int
    """Unix seconds, as in the code."""
    name: str | None = None
    """The name this machine offers the joiner (its card)."""
    attempts: int = 0
    """Pairing attempts started with this invite (each one a SPAKE2 exchange)."""
    state: InviteState = InviteState.PENDING
    peer: str | None = None
    """The peer that used it."""
    ended_at: float | None = None
    group: str | None = None
    """A relay enrollment invite's group (app/relay_enrollment.py); None otherwise."""

    @property
    def id_hex(self) -> str:
        return self.id.hex()

    def is_expired(self, now: float) -> bool:
        return now >= self.expires_at

    def is_open(self, now: float) -> bool:
        """Pending and not expired: admits joiners."""
        return self.state is InviteState.PENDING and not self.is_expired(now)

    def status(self, now: float) -> str:
        """``pending``, ``expired``, ``used``, ``burnt`` or ``revoked``."""
        if self.state is InviteState.PENDING and self.is_expired(now):
            return "expired"
        return self.state.value

    def ended(
        self, state: InviteState, now: float, peer: str | None = None
    ) -> StoredInvite:
        return replace(self, state=state, ended_at=now, peer=peer or self.peer)

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id.hex(),
            "secret": self.secret.hex(),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "name": self.name,
            "attempts": self.attempts,
            "state": self.state.value,
            "peer": self.peer,
            "ended_at": self.ended_at,
            **({"group": self.group} if self.group is not None else {}),
        }

    @classmethod
    def from_json(cls, item: object) -> StoredInvite:
        if not isinstance(item, dict):
            raise ValueError("an invite is not an object")
        name = item.get("name")
        peer = item.get("peer")
        ended_at = item.get("ended_at")
        group = item.get("group")
        return cls(
            id=bytes.fromhex(str(item["id"])),
            secret=bytes.fromhex(str(item["secret"])),
            created_at=float(item["created_at"]),
            expires_at=int(item["expires_at"]),
            name=str(name) if name is not None else None,
            attempts=int(item.get("attempts", 0)),
            state=InviteState(item.get("state", "pending")),
            peer=str(peer) if peer is not None else None,
            ended_at=float(ended_at) if ended_at is not None else None,
            group=str(group) if group is not None else None,
        )


class InviteStore:
    """The invites file of one config directory (``file_name``: a relay keeps its
    enrollment invites in another file, app/relay_enrollment.py)."""

    def __init__(self, directory: Path, file_name: str = FILE_NAME) -> None:
        self.path = Path(directory) / file_name
        self.lock_path = Path(directory) / f".{file_name.removesuffix('.json')}.lock"

    def signature(self) -> tuple[int, int, int] | None:
        """The file's (mtime, size, inode), to notice changes cheaply; None if missing."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def load(self) -> list[StoredInvite]:
        """The invites in the file (none when it is missing).

        Raises:
            ConfigError: unreadable, too open, or not an invites file.
        """
        if not self.path.exists():
            return []
        raw = files.read_private(self.path)
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
                raise ValueError(f"not a version {FORMAT_VERSION} invites file")
            items = doc.get("invites", [])
            if not isinstance(items, list):
                raise ValueError("invites is not a list")
            return [StoredInvite.from_json(item) for item in items]
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"invalid invites file: {exc}",
                path=str(self.path),
                hint="remove it to drop every pending invite",
            ) from None

    def transact(
        self,
        mutate: Callable[[list[StoredInvite]], tuple[list[StoredInvite], T]],
        *,
        now: float,
    ) -> T:
        """Apply ``mutate`` to the invites under the lock and write the result if it
        changed; ended invites past :data:`KEEP_ENDED_S` are dropped. Returns what
        ``mutate`` returned with the new list."""
        with self._locked():
            old = self.load()
            new, result = mutate(list(old))
            kept = [i for i in new if now < i.expires_at + KEEP_ENDED_S]
            if kept != old:
                self._write(kept)
            return result

    def _write(self, invites: list[StoredInvite]) -> None:
        doc = {"version": FORMAT_VERSION, "invites": [i.to_json() for i in invites]}
        files.write_atomic(self.path, json.dumps(doc, indent=2) + "\n")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.lock_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock
