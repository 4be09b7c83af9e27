"""Commit-confirmed config changes (config/confirm.py, ``peerup config apply
--confirm-timeout``): a change that cuts the session reverts by itself when nobody
confirms it, a confirmed one stays, ``rollback`` goes back, an invalid file changes
nothing. Two daemons in-process over loopback; the CLI runs as real processes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pairing_harness as harness
from peerup.app.allowlist import Allowlist
from peerup.app.daemon import Daemon
from peerup.config import confirm, files, load
from peerup.config.schema import ServiceConfig

peerup = harness.run_peerup


async def works(port: int) -> bool:
    try:
        async with asyncio.timeout(5):
            return await harness.echo_through(port) == b"ping"
    except (OSError, asyncio.IncompleteReadError, TimeoutError):
        return False


async def wait_for(port: int, want: bool, seconds: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if await works(port) == want:
            return time.monotonic() - start
        await asyncio.sleep(0.1)
    raise AssertionError(f"the tunnel did not become {'up' if want else 'down'}")


def test_an_unconfirmed_change_that_cuts_the_session_reverts_by_itself(
    tmp_path: Path,
) -> None:
    listen = ["/ip4/127.0.0.1/tcp/0"]
    home_cfg, home_id = harness.make_node(tmp_path, "home", [], listen=listen)
    lap_cfg, lap_id = harness.make_node(tmp_path, "laptop", [], listen=listen)
    Allowlist(home_cfg.parent / "authorized_keys").add(lap_id)
    Allowlist(lap_cfg.parent / "authorized_keys").add(home_id)

    async def main() -> None:
        _, echo_port = await harness.echo_service()
        load.add_service(home_cfg, ServiceConfig("web", f"127.0.0.1:{echo_port}"))
        before = home_cfg.read_text()
        # The new config drops the service the session uses.
        draft = tmp_path / "draft.yaml"
        files.write_atomic(draft, before)
        load.remove_service(draft, "web")
        home, laptop = Daemon(load.load_node(home_cfg)), Daemon(load.load_node(lap_cfg))
        await home.start()
        await laptop.start()
        try:
            laptop.node.host.add_addrs(home_id, home.node.host.listen_addrs)
            server, _ = await laptop.node.start_proxy(home_id, "web", 0)
            port = server.sockets[0].getsockname()[1]
            assert await works(port)

            done = await asyncio.to_thread(
                peerup, "config", "apply", draft, "--confirm-timeout", "2s",
                "--config", home_cfg,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            assert "unless `peerup config confirm` runs within 2 s" in done.stdout
            await wait_for(port, False, 3)  # the change cut the session
            # Nobody confirms: about 2 s after the apply, the old config is back.
            await wait_for(port, True, 5)
            assert home_cfg.read_text() == before
            assert not confirm.pending_path(home_cfg).exists()
            audit = (home_cfg.parent / "audit.jsonl").read_text()
            assert "config_rolled_back" in audit

            # Confirmed in time, the change stays.
            done = await asyncio.to_thread(
                peerup, "config", "apply", draft, "--confirm-timeout", "2s",
                "--config", home_cfg,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            assert (await asyncio.to_thread(
                peerup, "config", "confirm", "--config", home_cfg
            )).returncode == 0  # fmt: skip
            await asyncio.sleep(3)
            assert home_cfg.read_text() == draft.read_text()
            assert not await works(port)
        finally:
            await laptop.aclose()
            await home.aclose()

    asyncio.run(main())


def test_an_invalid_file_changes_nothing_and_names_its_line(tmp_path: Path) -> None:
    cfg, _ = harness.make_node(tmp_path, "home", [])
    before = cfg.read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(before + "limits:\n  max_streams_per_peer: lots\n")
    done = peerup("config", "apply", bad, "--confirm-timeout", "1m", "--config", cfg)
    assert done.returncode == 1
    assert f"{bad}:{len(bad.read_text().splitlines())}" in done.stderr
    assert cfg.read_text() == before
    assert not confirm.pending_path(cfg).exists()


def test_rollback_goes_to_the_last_known_good(tmp_path: Path) -> None:
    cfg, _ = harness.make_node(tmp_path, "home", [])
    missing = peerup("config", "rollback", "--config", cfg)
    assert missing.returncode == 1 and "no last-known-good copy" in missing.stderr
    good = cfg.read_text()
    now = time.time()
    assert not confirm.maybe_mark_good(cfg, now, now + 1)  # not run long enough
    assert confirm.maybe_mark_good(cfg, now, now + confirm.GOOD_AFTER_S)
    load.set_name(cfg, "other", harness.make_node(tmp_path, "x", [])[1])
    assert cfg.read_text() != good
    done = peerup("config", "rollback", "--config", cfg)
    assert done.returncode == 0, done.stderr
    assert cfg.read_text() == good
