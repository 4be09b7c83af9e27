"""Relays in config.yaml apply live: a removed relay is dropped, a changed address
switches, a new one is kept. The daemon in-process with its config watcher; the
relays are real hosts on loopback TCP.

A dropped relay is no longer retried, listed by ``status``, advertised as a circuit
address or used to reach peers; its connection is closed, or, while circuits through
it are open, closed when the last one ends.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from peerup.app.daemon import Daemon
from peerup.app.node import Node
from peerup.app.relay_service import RelayResources, RelayService
from peerup.config import files, load
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.multiaddr import Multiaddr
from peerup.net.host import Host

OPEN = RelayResources.for_interop(
    unlimited=True, limit_duration_s=None, limit_data_bytes=None
)
WAIT_S = 5.0


async def start_relay(ports: int = 1) -> tuple[Host, list[Multiaddr]]:
    """A relay host listening on ``ports`` loopback ports; its addresses with /p2p/."""
    host = Host(Ed25519PrivateKey.generate())
    addrs = []
    for _ in range(ports):
        bound = await host.listen("/ip4/127.0.0.1/tcp/0")
        addrs.append(bound[0].with_peer_id(host.peer_id))
    RelayService(host, OPEN).start()
    return host, addrs


def write_config(base: Path, relays: list[Multiaddr]) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    key_path = base / "identity.key"
    if not key_path.exists():
        files.write_atomic(key_path, Ed25519PrivateKey.generate().to_protobuf())
        files.write_atomic(base / "authorized_keys", "# test\n")
    text = load.render_node_config(
        identity_key="identity.key",
        listen=["/ip4/127.0.0.1/tcp/0"],
        relays=[str(r) for r in relays],
        network_name=None,
    )
    files.write_atomic(base / "config.yaml", text)
    return base / "config.yaml"


async def wait_for(what: str, check: object) -> None:
    """Poll ``check()`` (a callable) until true; fail after WAIT_S."""
    assert callable(check)
    try:
        async with asyncio.timeout(WAIT_S):
            while not check():
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


def listed(daemon: Daemon) -> dict[str, bool]:
    """``status``'s relays: address -> reserved."""
    return {r["relay"]: r["reserved"] for r in daemon.status()["relays"]}


def circuits(daemon: Daemon) -> list[str]:
    return [str(a) for a in daemon.node.host.addrs if a.is_circuit]


def test_removed_relay_is_dropped_and_no_longer_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        r1, (a1,) = await start_relay()
        r2, (a2,) = await start_relay()
        cfg = write_config(tmp_path / "n", [a1, a2])
        daemon = Daemon(load.load_node(cfg), watch_interval_s=0.05)
        await daemon.start()
        await wait_for("both reserved", lambda: listed(daemon) == {
            str(a1): True, str(a2): True})  # fmt: skip
        assert len(circuits(daemon)) == 2
        target = Node(Ed25519PrivateKey.generate()).peer_id
        assert len([a for a in daemon.node.known_addrs(target) if a.is_circuit]) == 2

        write_config(tmp_path / "n", [a1])  # the watcher sees the new mtime
        await wait_for("a2 dropped", lambda: listed(daemon) == {str(a1): True})
        assert circuits(daemon) == [f"{a1}/p2p-circuit"]
        assert daemon.node.relay_addrs == [a1]
        assert [a.split_circuit()[0] for a in daemon.node.known_addrs(target)] == [a1]
        # Nothing else used the connection to r2: it is closed.
        await wait_for("r2 disconnected", lambda:
                       daemon.node.host.connection_to(r2.peer_id) is None)  # fmt: skip
        assert f"relay removed: {a2}" in caplog.text

        # r2 going away now costs no reservation attempt and no log line about it.
        caplog.clear()
        await r2.aclose()
        await asyncio.sleep(0.5)  # a retry would come within milliseconds
        assert str(a2) not in caplog.text
        assert r2.peer_id.short() not in caplog.text
        assert listed(daemon) == {str(a1): True}

        # Adding it back (r2 restarted on the same port and key is not needed: a new
        # relay) is picked up too.
        r3, (a3,) = await start_relay()
        write_config(tmp_path / "n", [a1, a3])
        await wait_for("a3 reserved", lambda: listed(daemon) == {
            str(a1): True, str(a3): True})  # fmt: skip
        assert f"relay added: {a3}" in caplog.text

        await daemon.aclose()
        for relay in (r1, r3):
            await relay.aclose()

    caplog.set_level(logging.INFO)
    asyncio.run(main())


def test_changed_relay_address_switches_to_the_new_one(tmp_path: Path) -> None:
    """Same relay peer, another port: the old connection is closed, the reservation
    and the circuit address move to the new address."""

    async def main() -> None:
        relay, (old, new) = await start_relay(ports=2)
        cfg = write_config(tmp_path / "n", [old])
        daemon = Daemon(load.load_node(cfg), watch_interval_s=0.05)
        await daemon.start()
        await wait_for("reserved", lambda: listed(daemon) == {str(old): True})
        conn = daemon.node.host.connection_to(relay.peer_id)
        assert conn is not None and conn.remote_addr == old.without_peer_id()

        write_config(tmp_path / "n", [new])
        await wait_for("switched", lambda: listed(daemon) == {str(new): True})
        assert conn.is_closed
        now = daemon.node.host.connection_to(relay.peer_id)
        assert now is not None and now.remote_addr == new.without_peer_id()
        assert circuits(daemon) == [f"{new}/p2p-circuit"]
        assert daemon.node.relay_addrs == [new]

        await daemon.aclose()
        await relay.aclose()

    asyncio.run(main())


def test_removed_relay_connection_stays_until_its_circuits_end(tmp_path: Path) -> None:
    """A circuit open through the removed relay keeps working; the relay is no longer
    a way to reach peers, and its connection closes when that circuit ends."""

    async def main() -> None:
        r1, (a1,) = await start_relay()
        r2, (a2,) = await start_relay()
        home = Node(Ed25519PrivateKey.generate())
        await home.reserve_now(a2)  # home is reachable through r2 only
        cfg = write_config(tmp_path / "n", [a1, a2])
        daemon = Daemon(load.load_node(cfg), watch_interval_s=0.05)
        await daemon.start()
        await wait_for("both reserved", lambda: all(listed(daemon).values())
                       and len(listed(daemon)) == 2)  # fmt: skip
        circuit = await daemon.node.connect(home.peer_id)
        assert circuit.is_relayed
        via = {a.split_circuit()[0] for a in daemon.node.host.peer_addrs[home.peer_id]}
        assert via == {a1, a2}

        write_config(tmp_path / "n", [a1])
        await wait_for("a2 dropped", lambda: listed(daemon) == {str(a1): True})
        # No longer a way to reach peers...
        assert all(
            a.split_circuit()[0] != a2
            for a in daemon.node.host.peer_addrs[home.peer_id]
        )
        # ...but the circuit already open through it still works.
        rtts = await daemon.node.host.ping(circuit, 1)
        assert len(rtts) == 1
        relay_conn = daemon.node.host.connection_to(r2.peer_id)
        assert relay_conn is not None and relay_conn.is_open

        circuit.close("done")
        await wait_for("r2 connection closed", lambda: relay_conn.is_closed)

        await daemon.aclose()
        await home.aclose()
        for relay in (r1, r2):
            await relay.aclose()

    asyncio.run(main())
