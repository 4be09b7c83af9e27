"""The audit log: security events as hash-chained JSON lines (issue 15, item 3).

One record per line, appended: ``{"seq", "ts", "event", …fields, "prev", "hash"}``,
where ``hash`` is the SHA-256 (hex) of the record's canonical JSON (sorted keys, no
spaces) without ``hash``, and ``prev`` is the previous record's ``hash`` (64 zeros for
the first record ever). Changing, removing, reordering or inserting a record breaks
the chain at that point, and :func:`verify` names the first record where it breaks.
Anyone who can rewrite the whole file can rewrite the whole chain: the chain makes
tampering evident to someone who kept a record's hash (``peerup audit verify`` prints
the last one), it does not prevent it.

Events: ``peer_authorized``, ``peer_removed`` (CLI and pairing), ``handshake_refused``
(at most the first refusal per source per interval, as the log has it:
net/refusals.py), ``service_exposed``, ``service_removed``, ``pairing``,
``config_applied``, ``config_rolled_back``, ``daemon_started``, ``relay_started``.

Writes: one ``write`` of a whole line on an ``O_APPEND`` descriptor, then ``fsync``
(security events are few; a flood of refusals is summed up before it gets here). A
process killed mid-write leaves at most a partial last line, which :func:`verify`
reports as such and the next writer starts a new line after. The file is created
0600. Rotation: past ``max_bytes`` the file becomes ``<name>.1`` (older ones shift up
to ``keep``) and the new file's first record chains to the last one of the old, so
:func:`verify` over the rotated files checks one chain.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

log = logging.getLogger(__name__)

FILE_NAME: Final = "audit.jsonl"
GENESIS: Final = "0" * 64
MAX_BYTES: Final = 8 * 1024 * 1024
KEEP: Final = 5


def _canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()


def record_hash(record: dict[str, Any]) -> str:
    """The hash a record must carry: over everything but ``hash`` itself."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(_canonical(body)).hexdigest()


def rotated(path: Path, keep: int = KEEP) -> list[Path]:
    """``path`` and its rotated files that exist, oldest first."""
    older = [path.with_name(f"{path.name}.{i}") for i in range(keep, 0, -1)]
    return [p for p in [*older, path] if p.exists()]


class AuditLog:
    """Appends records to one audit file (see the module docstring)."""

    def __init__(self, path: Path, *, max_bytes: int = MAX_BYTES, keep: int = KEEP):
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self._prev: str | None = None
        self._seq = 0

    def _load_tail(self) -> None:
        """The last complete record's hash and number (of the newest file that has
        one), where the chain goes on."""
        self._prev, self._seq = GENESIS, 0
        for path in reversed(rotated(self.path, self.keep)):
            for line in reversed(path.read_bytes().splitlines()):
                try:
                    record = json.loads(line)
                    self._prev, self._seq = str(record["hash"]), int(record["seq"])
                    return
                except (ValueError, KeyError, TypeError):
                    continue  # a partial last line: the chain goes on before it

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Write one record; errors are logged, never raised (an audit failure must
        not stop the daemon), and the record is returned either way."""
        try:
            if self._prev is None:
                self._load_tail()
            self._rotate_if_full()
            assert self._prev is not None
            record: dict[str, Any] = {
                "seq": self._seq + 1,
                "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "event": event,
                **fields,
                "prev": self._prev,
            }
            record["hash"] = record_hash(record)
            self._write(_canonical(record) + b"\n")
            self._prev, self._seq = record["hash"], record["seq"]
            return record
        except (OSError, ValueError, TypeError) as exc:
            log.error("audit log %s: cannot write %s: %s", self.path, event, exc)
            return {"event": event, **fields}

    def refused(self, source: str, reason: str) -> None:
        """A refused connection (Host.on_refused: the first per source per interval)."""
        self.append("handshake_refused", source=source, reason=reason)

    def _write(self, line: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size and not self._ends_with_newline(fd):
                line = b"\n" + line  # after a partial line a killed writer left
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    @staticmethod
    def _ends_with_newline(fd: int) -> bool:
        size = os.fstat(fd).st_size
        return os.pread(fd, 1, size - 1) == b"\n"

    def _rotate_if_full(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if self.path.stat().st_size < self.max_bytes:
                return
            for i in range(self.keep - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i}")
                if older.exists():
                    older.rename(self.path.with_name(f"{self.path.name}.{i + 1}"))
            self.path.rename(self.path.with_name(f"{self.path.name}.1"))


@dataclass(frozen=True, slots=True)
class Verdict:
    """What :func:`verify` found."""

    ok: bool
    records: int
    last_hash: str | None
    problem: str | None = None
    """Where the chain breaks first: file, line, and how."""


def verify(paths: list[Path]) -> Verdict:
    """Check the chain across ``paths`` (oldest first)."""
    prev: str | None = None
    seq = 0
    count = 0
    for path in paths:
        lines = path.read_bytes().split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        for number, line in enumerate(lines, 1):
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not an object")
                got_hash, got_prev, got_seq = record["hash"], record["prev"], record["seq"]
            except (ValueError, KeyError, TypeError):
                last = number == len(lines) and path == paths[-1]
                what = "an incomplete last record (a write cut short)" if last else (
                    "not a record"
                )
                return Verdict(False, count, prev, f"{where}: {what}")
            if record_hash(record) != got_hash:
                return Verdict(False, count, prev, f"{where}: record #{got_seq} was "
                               "changed (its hash does not match its content)")  # fmt: skip
            if prev is not None and got_prev != prev:
                return Verdict(False, count, prev, f"{where}: record #{got_seq} does not "
                               "follow the one before it (a record was removed, inserted "
                               "or moved)")  # fmt: skip
            if prev is not None and got_seq != seq + 1:
                return Verdict(False, count, prev, f"{where}: record #{got_seq} comes "
                               f"after #{seq} (records missing)")  # fmt: skip
            prev, seq = got_hash, got_seq
            count += 1
    return Verdict(True, count, prev)
