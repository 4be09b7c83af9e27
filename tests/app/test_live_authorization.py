"""Authorization is enforced on what runs, not only on what opens.

An ``expires=`` that passes, a peer removed from ``authorized_keys`` (also on a
connection that we dialed), and a peer removed from a service's ``allowed_peers``
each end the tunnels they no longer allow within a second, logged. Two daemons
in-process over loopback TCP; the tunnel is a real TCP client through a proxy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import pairing_harness as harness
from pairing_harness import echo_service
from peerup.app.allowlist import Allowlist
from peerup.app.daemon import Daemon
from peerup.config import files, load
from peerup.config.schema import ServiceConfig
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.peer_id import PeerId

CUT_WITHIN_S = 1.0


def make_node(base: Path, name: str) -> tuple[Path, PeerId]:
    """A node listening on loopback, with no relay (pairing_harness's)."""
    return harness.make_node(base, name, [], listen=["/ip4/127.0.0.1/tcp/0"])


class Pair:
    """Home (serves "web") and laptop (proxies to it), both daemons."""

    def __init__(self, tmp: Path) -> None:
        self.home_cfg, self.home_id = make_node(tmp, "home")
        self.lap_cfg, self.lap_id = make_node(tmp, "laptop")
        self.home_keys = self.home_cfg.parent / "authorized_keys"
        self.home: Daemon
        self.laptop: Daemon
        self.echo_port = 0

    def authorize(self, expires: datetime | None = None) -> None:
        Allowlist(self.home_keys).add(self.lap_id, expires=expires)
        Allowlist(self.lap_cfg.parent / "authorized_keys").add(self.home_id)

    async def start(self, allowed_peers: tuple[PeerId, ...] = ()) -> None:
        _, self.echo_port = await echo_service()
        load.add_service(
            self.home_cfg,
            ServiceConfig("web", f"127.0.0.1:{self.echo_port}", True, allowed_peers),
        )
        self.home = Daemon(load.load_node(self.home_cfg))
        self.laptop = Daemon(load.load_node(self.lap_cfg))
        await self.home.start()
        await self.laptop.start()
        home_addr = self.home.node.host.listen_addrs[0]
        lap_addr = self.laptop.node.host.listen_addrs[0]
        self.laptop.node.host.add_addrs(self.home_id, [home_addr])
        self.home.node.host.add_addrs(self.lap_id, [lap_addr])

    async def tunnel(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A TCP connection through the laptop's proxy to home's web, proven to
        work."""
        server, _ = await self.laptop.node.start_proxy(self.home_id, "web", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello")
        async with asyncio.timeout(5):
            assert await reader.readexactly(5) == b"hello"
        return reader, writer

    async def aclose(self) -> None:
        for daemon in ("laptop", "home"):
            if hasattr(self, daemon):  # started
                await getattr(self, daemon).aclose()


@asynccontextmanager
async def pair(tmp: Path) -> AsyncIterator[Pair]:
    p = Pair(tmp)
    try:
        yield p
    finally:
        await p.aclose()


async def cut_after(reader: asyncio.StreamReader, seconds: float) -> float:
    """How long until the tunnel ends (reset or closed), waiting at most
    ``seconds``; fails if it is still carrying data then."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(65536):
                pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"the tunnel still runs {seconds:g} s later")
    return loop.time() - start


def revocation_logged(caplog: pytest.LogCaptureFixture, peer: PeerId) -> bool:
    return any(
        "revoked" in r.getMessage() and str(peer) in r.getMessage()
        for r in caplog.records
    )


def test_an_expiry_that_passes_cuts_the_running_tunnel_on_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="peerup")

    async def main() -> None:
        async with pair(tmp_path) as p:
            # RFC 3339 has whole seconds: expire at the second after next.
            expires = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0)
            p.authorize(expires)
            await p.start()
            reader, _ = await p.tunnel()
            assert not p.home.node.host.connections[p.lap_id][0].is_initiator
            left = (expires - datetime.now(UTC)).total_seconds()
            elapsed = await cut_after(reader, left + CUT_WITHIN_S + 1)
            assert left - 0.1 <= elapsed <= left + CUT_WITHIN_S
            assert p.home.node.host.connection_to(p.lap_id) is None
            assert revocation_logged(caplog, p.lap_id), caplog.text

    asyncio.run(main())


@pytest.mark.parametrize("how", ["removed", "expired"])
def test_revocation_cuts_tunnels_on_a_connection_that_we_dialed(
    how: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Home dialed the laptop; the laptop's tunnel to home runs over that connection.
    Home taking the laptop's authorization back ends it all the same."""
    caplog.set_level(logging.INFO, logger="peerup")

    async def main() -> None:
        async with pair(tmp_path) as p:
            expires = None
            if how == "expired":
                expires = (datetime.now(UTC) + timedelta(seconds=2)).replace(
                    microsecond=0
                )
            p.authorize(expires)
            await p.start()
            dialed = await p.home.node.connect(p.lap_id)
            assert dialed.is_initiator
            reader, _ = await p.tunnel()
            assert p.home.node.host.connections[p.lap_id] == [dialed]
            if how == "removed":
                # An edit of the file, as an editor or another tool would make it.
                files.write_atomic(p.home_keys, "# nobody\n")
                left = 0.0
            else:
                left = (expires - datetime.now(UTC)).total_seconds()  # type: ignore[operator]
            elapsed = await cut_after(reader, left + CUT_WITHIN_S + 1)
            assert elapsed <= left + CUT_WITHIN_S
            assert dialed.is_closed
            assert "authorization revoked" in dialed.close_reason
            assert revocation_logged(caplog, p.lap_id)

    asyncio.run(main())


def test_a_peer_removed_from_allowed_peers_loses_its_running_tunnels(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="peerup")

    async def main() -> None:
        async with pair(tmp_path) as p:
            p.authorize()
            await p.start(allowed_peers=(p.lap_id,))
            reader, _ = await p.tunnel()
            other = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key)
            # One write of config.yaml with the new allowed_peers.
            draft = p.home_cfg.with_name("draft.yaml")
            files.write_atomic(draft, p.home_cfg.read_text())
            load.remove_service(draft, "web")
            load.add_service(
                draft,
                ServiceConfig("web", f"127.0.0.1:{p.echo_port}", True, (other,)),
            )
            files.write_atomic(p.home_cfg, draft.read_text())
            elapsed = await cut_after(reader, CUT_WITHIN_S + 1)
            assert elapsed <= CUT_WITHIN_S
            # Only its service connections: the peer stays connected.
            assert p.home.node.host.connection_to(p.lap_id) is not None
            assert p.home.node.service_connections(p.lap_id) == 0

    asyncio.run(main())
    assert any(
        "reset 1 connection(s)" in r.getMessage() and "allowed_peers" in r.getMessage()
        for r in caplog.records
    ), caplog.text


@pytest.mark.parametrize("how", ["removed", "disabled"])
def test_a_removed_or_disabled_service_loses_its_running_tunnels(
    how: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`peerup service remove|disable` with the daemon running: the service's open
    connections are reset within a second (RST, not a clean end), and logged."""
    caplog.set_level(logging.INFO, logger="peerup")

    async def main() -> None:
        async with pair(tmp_path) as p:
            p.authorize()
            await p.start()
            reader, _ = await p.tunnel()
            if how == "removed":
                load.remove_service(p.home_cfg, "web")
            else:
                load.set_service_enabled(p.home_cfg, "web", False)
            loop = asyncio.get_running_loop()
            start = loop.time()
            with pytest.raises(ConnectionResetError):
                async with asyncio.timeout(CUT_WITHIN_S + 1):
                    while await reader.read(65536):
                        pass
                    pytest.fail("the tunnel ended cleanly: it must be reset")
            assert loop.time() - start <= CUT_WITHIN_S
            assert p.home.node.service_connections(p.lap_id) == 0
            # The peer itself keeps its connection; only the service went.
            assert p.home.node.host.connection_to(p.lap_id) is not None

    asyncio.run(main())
    assert any(
        "reset 1 connection(s)" in r.getMessage()
        and f"service 'web' was {how}" in r.getMessage()
        for r in caplog.records
    ), caplog.text


def test_an_entry_that_will_expire_later_keeps_its_tunnel_meanwhile(
    tmp_path: Path,
) -> None:
    """The expiry timer is armed for the earliest expiry, and nothing before it."""

    async def main() -> None:
        async with pair(tmp_path) as p:
            p.authorize(datetime.now(UTC) + timedelta(hours=1))
            await p.start()
            reader, writer = await p.tunnel()
            await asyncio.sleep(1.0)
            writer.write(b"again")
            async with asyncio.timeout(5):
                assert await reader.readexactly(5) == b"again"
            timer = p.home.live._timer
            assert timer is not None
            loop = asyncio.get_running_loop()
            assert 3500 < timer.when() - loop.time() <= 3600

    asyncio.run(main())
