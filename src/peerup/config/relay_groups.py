"""Relay enrollment state on disk: the relay's groups and members, and on a machine,
the relays it enrolled at.

On a relay, ``relay-groups.json`` beside relay-server.yaml (mode 0600) says which group
each ``relay invite`` run made (and how long the authorization it grants lasts) and
which machines enrolled into which group, under the name each proposed; the pending
codes themselves are in ``relay-invites.json`` (config/invite_store.py). On a machine,
``relay-enrollments.json`` beside config.yaml lists the relays it enrolled at with a
group code: only those are trusted to introduce group members (app/pairing.py). Every
change is a read-modify-write under ``flock``, written atomically (config/files.py), as
in invite_store. Not supported: sharing a file between machines.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar

from peerup.config import files
from peerup.core.errors import ConfigError

GROUPS_FILE: Final = "relay-groups.json"
ENROLLMENTS_FILE: Final = "relay-enrollments.json"
FORMAT_VERSION: Final = 1
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Group:
    """Codes made by one ``relay invite`` run (or added to it with ``--group``)."""

    id: str
    created_at: float
    authorization_s: float | None = None
    """How long an enrolled machine stays authorized (``expires=``); None: for good."""


@dataclass(frozen=True, slots=True)
class Member:
    """A machine enrolled with a code of ``group``."""

    peer: str
    group: str
    name: str | None
    enrolled_at: float
    invite: str
    """The hex ID of the code it used."""


@dataclass(frozen=True, slots=True)
class Groups:
    groups: tuple[Group, ...] = ()
    members: tuple[Member, ...] = ()

    def group(self, group_id: str) -> Group | None:
        return next((g for g in self.groups if g.id == group_id), None)

    def of_group(self, group_id: str) -> list[Member]:
        return [m for m in self.members if m.group == group_id]

    def groups_of(self, peer: str) -> list[str]:
        return sorted({m.group for m in self.members if m.peer == peer})


@dataclass(frozen=True, slots=True)
class Enrollment:
    """A relay this machine enrolled at."""

    relay: str
    group: str | None
    enrolled_at: float


@dataclass
class _JsonFile:
    """One private JSON document with a version, edited under a lock."""

    path: Path
    what: str
    _cache: tuple[tuple[int, int, int] | None, dict[str, object]] | None = field(
        default=None
    )

    def signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def read(self) -> dict[str, object]:
        """The document (empty when missing; re-read only when the file changed).

        Raises:
            ConfigError: unreadable, too open, or not such a file.
        """
        signature = self.signature()
        if self._cache is not None and self._cache[0] == signature:
            return self._cache[1]
        doc: dict[str, object] = {}
        if signature is not None:
            try:
                raw = json.loads(files.read_private(self.path))
                if not isinstance(raw, dict) or raw.get("version") != FORMAT_VERSION:
                    raise ValueError(f"not a version {FORMAT_VERSION} {self.what}")
                doc = raw
            except ValueError as exc:
                raise ConfigError(
                    f"invalid {self.what}: {exc}", path=str(self.path)
                ) from None
        self._cache = (signature, doc)
        return doc

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        lock = self.path.parent / f".{self.path.stem}.lock"
        lock.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def write(self, doc: dict[str, object]) -> None:
        files.write_atomic(
            self.path, json.dumps({**doc, "version": FORMAT_VERSION}, indent=2) + "\n"
        )


def _float_or_none(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def _items(doc: dict[str, object], key: str) -> list[dict[str, object]]:
    items = doc.get(key, [])
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ValueError(f"{key} is not a list of objects")
    return items


class GroupStore:
    """A relay's groups and members (``relay-groups.json``)."""

    def __init__(self, directory: Path) -> None:
        self._file = _JsonFile(Path(directory) / GROUPS_FILE, "relay groups file")

    @property
    def path(self) -> Path:
        return self._file.path

    def load(self) -> Groups:
        """Raises ConfigError: the file is invalid."""
        doc = self._file.read()
        try:
            return Groups(
                tuple(
                    Group(
                        str(g["id"]),
                        float(g["created_at"]),  # type: ignore[arg-type]
                        _float_or_none(g.get("authorization_s")),
                    )
                    for g in _items(doc, "groups")
                ),
                tuple(
                    Member(
                        str(m["peer"]),
                        str(m["group"]),
                        _str_or_none(m.get("name")),
                        float(m["enrolled_at"]),  # type: ignore[arg-type]
                        str(m.get("invite", "")),
                    )
                    for m in _items(doc, "members")
                ),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"invalid relay groups file: {exc}", path=str(self.path)
            ) from None

    def transact(self, mutate: Callable[[Groups], tuple[Groups, T]]) -> T:
        """Apply ``mutate`` under the lock; write the result if it changed."""
        with self._file.locked():
            old = self.load()
            new, result = mutate(old)
            if new != old:
                self._file.write(
                    {
                        "groups": [
                            {
                                "id": g.id,
                                "created_at": g.created_at,
                                "authorization_s": g.authorization_s,
                            }
                            for g in new.groups
                        ],
                        "members": [
                            {
                                "peer": m.peer,
                                "group": m.group,
                                "name": m.name,
                                "enrolled_at": m.enrolled_at,
                                "invite": m.invite,
                            }
                            for m in new.members
                        ],
                    }
                )
            return result


class EnrollmentStore:
    """The relays a machine enrolled at (``relay-enrollments.json``)."""

    def __init__(self, directory: Path) -> None:
        self._file = _JsonFile(
            Path(directory) / ENROLLMENTS_FILE, "relay enrollments file"
        )

    def load(self) -> list[Enrollment]:
        """Raises ConfigError: the file is invalid."""
        doc = self._file.read()
        try:
            return [
                Enrollment(
                    str(e["relay"]),
                    _str_or_none(e.get("group")),
                    float(e["enrolled_at"]),  # type: ignore[arg-type]
                )
                for e in _items(doc, "relays")
            ]
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"invalid relay enrollments file: {exc}", path=str(self._file.path)
            ) from None

    def is_enrolled_at(self, relay: str) -> bool:
        return any(e.relay == relay for e in self.load())

    def add(self, enrollment: Enrollment) -> None:
        with self._file.locked():
            kept = [e for e in self.load() if e.relay != enrollment.relay]
            self._file.write(
                {
                    "relays": [
                        {
                            "relay": e.relay,
                            "group": e.group,
                            "enrolled_at": e.enrolled_at,
                        }
                        for e in [*kept, enrollment]
                    ]
                }
            )
