"""Relay enrollment (app/relay_enrollment.py) through ``main()``: ``relay invite``
codes, ``join`` on fresh machines, group introductions, with a real relay that enforces
its allowlist and daemons on loopback in a background loop. No ``auth add`` and no
``relay authorize`` anywhere."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_harness import Cli

from background_loop import Background
from pairing_harness import write_relay
from peerup.app.allowlist import Allowlist
from peerup.app.daemon import Daemon, client_for
from peerup.app.relay_server import RelayServer
from peerup.config import files, identity_store, load
from peerup.core.errors import Error
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.multiaddr import Multiaddr
from peerup.core.peer_id import PeerId
from peerup.net.host import Host
from peerup.net.relay_client import RelayClient
from peerup.proto import pairing
from peerup.proto.invite_code import InviteCode, InviteKind


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Net:
    bg: Background
    config: Path
    port: int
    relay: RelayServer | None = None

    @property
    def addr(self) -> Multiaddr:
        assert self.relay is not None
        return self.relay.share_addrs()[0]

    def start(self) -> None:
        async def start() -> RelayServer:
            relay = RelayServer(load.load_relay(self.config))
            await relay.start()
            return relay

        self.relay = self.bg.call(start())

    def stop(self) -> None:
        if self.relay is not None:
            self.bg.call(self.relay.aclose())
            self.relay = None

    def allowed(self) -> list[PeerId]:
        allowlist = Allowlist(load.load_relay(self.config).authorized_keys)
        allowlist.load()
        return [e.peer_id for e in allowlist.entries()]


@pytest.fixture
def net(workdir: Path) -> Iterator[Net]:
    port = free_port()
    path = write_relay(workdir / "relay")
    text = path.read_text().replace("/tcp/0", f"/tcp/{port}")
    files.write_atomic(path, text)
    n = Net(Background(), path, port)
    n.start()
    try:
        yield n
    finally:
        n.stop()
        n.bg.close()


def codes(cli: Cli, net: Net, count: int, *extra: str) -> list[str]:
    result = cli(
        "relay", "invite", "--count", str(count), "--non-interactive",
        "--config", net.config, *extra,
    )  # fmt: skip
    assert result.code == 0, result.err
    return result.out.splitlines()


def join(cli: Cli, workdir: Path, name: str, code: str) -> tuple[int, str, Path]:
    config = workdir / name / "config.yaml"
    result = cli(
        "join", code, "--name", name, "--non-interactive", "--config", config,
        "--listen", "/ip4/127.0.0.1/tcp/0",
    )  # fmt: skip
    return result.code, result.out + result.err, config


def peer_of(config: Path) -> PeerId:
    key = identity_store.load(load.load_node(config).identity_key)
    return PeerId.from_public_key(key.public_key)


def authorized(config: Path) -> set[PeerId]:
    allowlist = Allowlist(config.parent / "authorized_keys")
    allowlist.load()
    return {e.peer_id for e in allowlist.entries()}


def wait_for(check: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_relay_invite_non_interactive_prints_one_code_per_line(
    cli: Cli, net: Net
) -> None:
    lines = codes(cli, net, 3, "--ttl", "10m", "--expires", "30d")
    assert len(lines) == 3
    parsed = [InviteCode.parse(line) for line in lines]
    assert all(c.kind is InviteKind.RELAY for c in parsed)
    assert all(c.inviter == net.addr.peer_id for c in parsed)
    assert all(c.relays == (net.addr,) for c in parsed)
    listed = cli("relay", "invite", "list", "--json", "--config", net.config).json()
    assert [i["status"] for i in listed["invites"]] == ["pending"] * 3
    assert len({i["group"] for i in listed["invites"]}) == 1
    assert listed["invites"][0]["authorization_s"] == 30 * 86400


def test_fresh_machines_enroll_and_reach_each_other_through_the_relay(
    cli: Cli, net: Net, workdir: Path
) -> None:
    first, second, third = codes(cli, net, 3)
    code_a, out_a, cfg_a = join(cli, workdir, "alpha", first)
    assert code_a == 0, out_a
    assert "Enrolled at relay" in out_a
    code_b, out_b, cfg_b = join(cli, workdir, "beta", second)
    assert code_b == 0, out_b
    assert "introduced (authorized and named): alpha" in out_b
    a, b = peer_of(cfg_a), peer_of(cfg_b)
    assert set(net.allowed()) == {a, b}
    assert authorized(cfg_b) == {a}
    assert dict(load.load_node(cfg_b).names) == {"alpha": a}
    assert load.load_node(cfg_a).relays == (str(net.addr),)

    daemons: list[Daemon] = []

    async def start(cfg: Path) -> Daemon:
        d = Daemon(load.load_node(cfg), watch_interval_s=0.05)
        await d.start()
        daemons.append(d)
        async with asyncio.timeout(10):
            await d.node.relay_client.wait_reserved(net.addr)
        return d

    async def stop() -> None:
        for d in daemons:
            await d.aclose()

    net.bg.closers.append(stop)
    da = net.bg.call(start(cfg_a))
    db = net.bg.call(start(cfg_b))
    # alpha enrolled first; the relay introduced beta when alpha's daemon connected.
    wait_for(lambda: b in authorized(cfg_a))
    assert dict(load.load_node(cfg_a).names) == {"beta": b}

    def ping(daemon: Daemon, peer: str) -> dict[str, object]:
        call = client_for(daemon.config).call
        return call("POST", "/v1/ping", {"peer": peer, "count": 1})  # type: ignore[no-any-return]

    assert ping(db, "alpha")["received"] == 1
    assert ping(da, "beta")["received"] == 1

    # A third machine joins while both daemons run: the relay pushes it to them.
    code_c, out_c, cfg_c = join(cli, workdir, "gamma", third)
    assert code_c == 0, out_c
    c = peer_of(cfg_c)
    assert authorized(cfg_c) == {a, b}
    wait_for(lambda: c in authorized(cfg_a) and c in authorized(cfg_b))


def test_a_wrong_code_changes_nothing_and_counts_and_a_used_code_is_refused(
    cli: Cli, net: Net, workdir: Path
) -> None:
    good, spare = codes(cli, net, 2)
    code = InviteCode.parse(good)
    wrong = dataclasses.replace(code, secret=b"w" * 10).to_text()
    before = net.allowed()
    rc, out, cfg = join(cli, workdir, "alpha", wrong)
    assert rc == 1 and "wrong code" in out, out
    assert net.allowed() == before == []
    listed = cli("relay", "invite", "list", "--json", "--config", net.config).json()
    tries = {i["id"]: i["attempts"] for i in listed["invites"]}
    assert tries[code.invite_id.hex()] == 1
    assert authorized(cfg) == set()

    rc, out, _ = join(cli, workdir, "alpha", good)
    assert rc == 0, out
    assert net.allowed() == [peer_of(cfg)]

    rc, out, _ = join(cli, workdir, "beta", good)  # `spare` keeps enrollment open
    assert rc == 1 and "already used" in out, out
    cli("relay", "invite", "revoke", InviteCode.parse(spare).invite_id.hex()[:6],
        "--config", net.config)  # fmt: skip
    rc, out, _ = join(cli, workdir, "gamma", spare)
    assert rc == 1 and "no enrollment code is open" in out, out
    assert len(net.allowed()) == 1


def test_codes_survive_a_relay_restart(cli: Cli, net: Net, workdir: Path) -> None:
    first, second = codes(cli, net, 2)
    net.stop()
    net.start()
    rc, out, cfg_a = join(cli, workdir, "alpha", first)
    assert rc == 0, out
    net.stop()
    net.start()
    rc, out, cfg_b = join(cli, workdir, "beta", second)
    assert rc == 0, out
    assert authorized(cfg_b) == {peer_of(cfg_a)}  # the group outlived restarts too


def test_unknown_peers_are_admitted_to_enrollment_only_and_bounded(
    cli: Cli, net: Net
) -> None:
    assert net.relay is not None
    net.relay.enrollment.service.max_admitted = 1  # type: ignore[union-attr]
    addr = net.addr

    async def main() -> None:
        hosts = [Host(Ed25519PrivateKey.generate()) for _ in range(2)]
        clients = [RelayClient(h) for h in hosts]
        try:
            # No code open: refused at the handshake (the relay closes at once).
            refused = await hosts[0].connect(addr)
            async with asyncio.timeout(5):
                await refused.closed
            codes(cli, net, 1)
            conn = await hosts[0].connect(addr)
            await asyncio.sleep(0.2)
            assert conn.is_open
            assert net.relay is not None
            [seen] = net.relay.host.connections[hosts[0].peer_id]
            assert seen.only_protocols == frozenset({pairing.PROTOCOL_ID})
            with pytest.raises(Error):  # admitted, but to enrollment only
                await clients[0].reserve(addr)
            # The bound: one is enrolling already, so the next one is refused.
            other = await hosts[1].connect(addr)
            async with asyncio.timeout(5):
                await other.closed
        finally:
            for h in hosts:
                await h.aclose()

    net.bg.call(main())
