"""The audit log (app/audit.py): hash-chained JSON lines that `peerup audit verify`
checks. A changed, removed, reordered or cut record is found and named; rotation keeps
one chain; real actions (auth add/remove through the CLI, a daemon's start, services
and refused handshakes) write their records."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pairing_harness as harness
from peerup.app import audit
from peerup.app.daemon import Daemon
from peerup.config import load
from peerup.config.schema import ServiceConfig
from peerup.core.errors import Error
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.peer_id import PeerId
from peerup.net.host import Host


def filled(tmp_path: Path, n: int = 5) -> Path:
    log = audit.AuditLog(tmp_path / audit.FILE_NAME)
    for i in range(n):
        log.append("peer_authorized", peer=f"peer-{i}")
    return log.path


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_an_intact_log_verifies_and_is_private(tmp_path: Path) -> None:
    path = filled(tmp_path)
    verdict = audit.verify([path])
    assert verdict.ok and verdict.records == 5
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = json.loads(lines(path)[0])
    assert first["prev"] == audit.GENESIS and first["seq"] == 1


def test_a_changed_record_is_found(tmp_path: Path) -> None:
    path = filled(tmp_path)
    text = path.read_text().replace("peer-2", "peer-X")
    path.write_text(text)
    verdict = audit.verify([path])
    assert not verdict.ok and verdict.records == 2
    assert verdict.problem is not None and ":3: record #3 was changed" in verdict.problem


def test_a_removed_record_is_found(tmp_path: Path) -> None:
    path = filled(tmp_path)
    kept = lines(path)
    path.write_bytes(b"".join(kept[:2] + kept[3:]))
    verdict = audit.verify([path])
    assert not verdict.ok and "#4 does not follow" in (verdict.problem or "")


def test_reordered_records_are_found(tmp_path: Path) -> None:
    path = filled(tmp_path)
    kept = lines(path)
    kept[1], kept[2] = kept[2], kept[1]
    path.write_bytes(b"".join(kept))
    verdict = audit.verify([path])
    assert not verdict.ok and "does not follow" in (verdict.problem or "")


def test_a_cut_last_record_is_reported_and_the_next_write_goes_on(tmp_path: Path) -> None:
    path = filled(tmp_path)
    path.write_bytes(path.read_bytes()[:-20])  # a writer killed mid-line
    verdict = audit.verify([path])
    assert not verdict.ok and "incomplete last record" in (verdict.problem or "")
    audit.AuditLog(path).append("daemon_started")
    # The partial line stays visible (not a record); the chain resumes after #4.
    verdict = audit.verify([path])
    assert not verdict.ok and ":5: not a record" in (verdict.problem or "")
    last = json.loads(lines(path)[-1])
    assert last["seq"] == 5


def test_rotation_keeps_one_chain(tmp_path: Path) -> None:
    log = audit.AuditLog(tmp_path / audit.FILE_NAME, max_bytes=600, keep=3)
    for i in range(12):
        log.append("peer_authorized", peer=f"peer-{i}")
    files = audit.rotated(log.path, keep=3)
    assert len(files) >= 3
    verdict = audit.verify(files)
    assert verdict.ok and verdict.records == sum(len(lines(f)) for f in files)
    # Dropping a middle file breaks the chain where the next one starts.
    broken = audit.verify([files[0], files[2]])
    assert not broken.ok and "does not follow" in (broken.problem or "")


def peerup(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEERUP_")}
    return subprocess.run(
        [sys.executable, "-m", "peerup", *args],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip


def test_cli_actions_and_a_daemon_write_records_that_verify(tmp_path: Path) -> None:
    cfg, _ = harness.make_node(tmp_path, "home", [], listen=["/ip4/127.0.0.1/tcp/0"])
    friend = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key)
    assert peerup("auth", "add", str(friend), "--config", str(cfg)).returncode == 0
    assert peerup("auth", "remove", str(friend), "--config", str(cfg)).returncode == 0
    load.add_service(cfg, ServiceConfig("web", "127.0.0.1:9"))

    async def main() -> None:
        daemon = Daemon(load.load_node(cfg))
        await daemon.start()
        try:
            # A stranger is refused at the handshake: one record.
            stranger = Host(Ed25519PrivateKey.generate())
            with contextlib.suppress(Error, OSError):  # refused: how it ends varies
                await stranger.connect(daemon.node.host.addrs_with_id()[0])
            await stranger.aclose()
            for _ in range(50):
                if "handshake_refused" in (cfg.parent / audit.FILE_NAME).read_text():
                    break
                await asyncio.sleep(0.05)
        finally:
            await daemon.aclose()

    asyncio.run(main())
    records = [json.loads(line) for line in lines(cfg.parent / audit.FILE_NAME)]
    events = [r["event"] for r in records]
    assert events[:2] == ["peer_authorized", "peer_removed"], events
    assert records[0]["peer"] == str(friend)
    assert "service_exposed" in events and "daemon_started" in events
    assert "handshake_refused" in events, events
    done = peerup("audit", "verify", "--config", str(cfg))
    assert done.returncode == 0, done.stderr
    assert f"ok: {len(records)} records" in done.stdout
    # Tampered: the command fails and names the record.
    path = cfg.parent / audit.FILE_NAME
    path.write_text(path.read_text().replace("peer_removed", "peer_authorized", 1))
    bad = peerup("audit", "verify", str(path))
    assert bad.returncode == 1 and "record #2 was changed" in bad.stderr
