"""Invite and join (app/pairing.py): the pure policy, the invites file, and pairing
between real daemons through a real relay on loopback (neither daemon listens, so every
connection is relayed): then a proxy works with no `auth add`; wrong, expired, reused and
revoked codes; the third failure burns a code; a peer that knows the relay but not the
code gets nothing and changes nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import stat
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from pairing_harness import (
    add_web,
    authorize_on_relay,
    echo_service,
    echo_through,
    make_node,
    start_relay,
)
from peerup.app import pairing
from peerup.app.allowlist import Allowlist
from peerup.app.daemon import Daemon, client_for
from peerup.app.relay_server import RelayServer
from peerup.config import load
from peerup.config.invite_store import KEEP_ENDED_S, InviteState, InviteStore
from peerup.core.errors import ConfigError, Error, NegotiationError
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.multiaddr import Multiaddr
from peerup.core.peer_id import PeerId
from peerup.net.host import Host
from peerup.net.relay_client import RelayClient
from peerup.proto import pairing as proto
from peerup.proto.invite_code import InviteCode
from peerup.proto.pairing import PeerCard, Reason

NOW = 1_800_000_000.0


def peer(seed: int) -> PeerId:
    return PeerId.from_public_key(
        Ed25519PrivateKey.from_seed(bytes([seed]) * 32).public_key
    )


# --- the policy ---------------------------------------------------------------------------


def test_each_attempt_counts_and_the_third_failure_burns_the_invite() -> None:
    invite = pairing.new_invite(NOW, 600, "home")
    invites = [invite]
    for n in range(1, pairing.MAX_ATTEMPTS + 1):
        invites, got = pairing.begin_attempt(invites, invite.id, NOW + n)
        assert not isinstance(got, Reason) and got.attempts == n
        invites, after = pairing.attempt_failed(invites, invite.id, NOW + n)
        assert after is not None
        expected = (
            InviteState.BURNT if n == pairing.MAX_ATTEMPTS else InviteState.PENDING
        )
        assert after.state is expected
    invites, got = pairing.begin_attempt(invites, invite.id, NOW + 10)
    assert got is Reason.BURNT


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"state": InviteState.USED}, Reason.USED),
        ({"state": InviteState.REVOKED}, Reason.REVOKED),
        ({"expires_at": int(NOW)}, Reason.EXPIRED),
        ({"attempts": pairing.MAX_ATTEMPTS}, Reason.BURNT),
    ],
)
def test_an_invite_that_ended_is_refused_with_why(
    change: dict[str, object], reason: Reason
) -> None:
    invite = dataclasses.replace(pairing.new_invite(NOW - 10, 600, None), **change)  # type: ignore[arg-type]
    invites, got = pairing.begin_attempt([invite], invite.id, NOW)
    assert got is reason and invites == [invite]  # nothing counted
    assert pairing.begin_attempt([invite], b"nope", NOW)[1] is Reason.UNKNOWN_INVITE


def test_an_invite_revoked_during_a_pairing_is_not_used() -> None:
    invite = pairing.new_invite(NOW, 600, None)
    invites, _ = pairing.revoke([invite], invite.id_hex[:3], NOW)
    invites, refusal = pairing.mark_used(invites, invite.id, peer(1), NOW)
    assert refusal is Reason.REVOKED


def test_revoke_needs_an_unambiguous_prefix() -> None:
    a = dataclasses.replace(pairing.new_invite(NOW, 600, None), id=b"\xaa\x01\x00\x00")
    b = dataclasses.replace(pairing.new_invite(NOW, 600, None), id=b"\xaa\x02\x00\x00")
    with pytest.raises(ValueError, match="matches 2"):
        pairing.revoke([a, b], "aa", NOW)
    invites, got = pairing.revoke([a, b], "aa02", NOW)
    assert got is not None and got[1] and got[0].state is InviteState.REVOKED
    _, again = pairing.revoke(invites, "aa02", NOW)
    assert again is not None and not again[1]
    assert pairing.revoke([a, b], "ff", NOW)[1] is None


def test_names_are_kept_made_unique_or_dropped() -> None:
    p, q = peer(1), peer(2)
    assert pairing.choose_name("home", p, ()) == "home"
    assert pairing.choose_name("laptop", p, (("home", p),)) == "home"  # has one
    assert pairing.choose_name("home", p, (("home", q),)) == "home-2"
    assert pairing.choose_name("home", p, (("home", q), ("home-2", q))) == "home-3"
    assert pairing.choose_name("bad name!", p, ()) is None
    assert pairing.choose_name(str(q), p, ()) is None  # looks like a peer ID
    assert pairing.choose_name(None, p, ()) is None


def test_the_invites_file_is_private_and_forgets_old_invites(tmp_path: Path) -> None:
    store = InviteStore(tmp_path)
    old = pairing.new_invite(NOW - KEEP_ENDED_S - 700, 600, None)
    new = pairing.new_invite(NOW, 600, "home")
    store.transact(lambda inv: ([*inv, old, new], None), now=NOW)
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert store.load() == [new]
    store.path.write_text("{}")
    with pytest.raises(ConfigError, match="invalid invites file"):
        store.load()


# --- daemons through a relay ----------------------------------------------------------------


@dataclass
class World:
    base: Path
    relay: RelayServer
    relay_addr: Multiaddr
    home: Daemon
    home_cfg: Path
    lap: Daemon
    lap_cfg: Path
    web_port: int

    def home_files(self) -> tuple[str, str]:
        return _texts(self.home_cfg)

    def lap_files(self) -> tuple[str, str]:
        return _texts(self.lap_cfg)

    async def invite(self, **body: object) -> dict[str, object]:
        return await api(self.home, "POST", "/v1/invites", {"ttl_s": 600, **body})

    async def join_with(
        self, code: InviteCode, *, clock: float | None = None
    ) -> pairing.JoinResult:
        """Join from the laptop's host, writing nothing (for failures)."""

        def record(_peer: PeerId, _card: PeerCard) -> pairing.Recorded:
            raise AssertionError("a failed pairing must write nothing")

        return await pairing.join(
            self.lap.node.host,
            code,
            PeerCard("lap"),
            record,
            clock=(lambda: clock) if clock is not None else time.time,
        )


def _texts(cfg: Path) -> tuple[str, str]:
    return cfg.read_text(), (cfg.parent / "authorized_keys").read_text()


async def api(daemon: Daemon, method: str, path: str, body: dict | None = None) -> dict:  # type: ignore[type-arg]
    return await asyncio.to_thread(client_for(daemon.config).call, method, path, body)


@asynccontextmanager
async def world(tmp_path: Path, *, lap_on_relay: bool = True) -> AsyncIterator[World]:
    relay, relay_addr = await start_relay(tmp_path)
    home_cfg, home_id = make_node(
        tmp_path, "home", [str(relay_addr)], network_name="house"
    )
    lap_cfg, lap_id = make_node(tmp_path, "lap", [str(relay_addr)])
    authorize_on_relay(relay, home_id, *([lap_id] if lap_on_relay else []))
    server, web_port = await echo_service()
    add_web(home_cfg, web_port)
    home = Daemon(load.load_node(home_cfg), watch_interval_s=0.05)
    lap = Daemon(load.load_node(lap_cfg), watch_interval_s=0.05)
    await home.start()
    await lap.start()
    async with asyncio.timeout(10):
        await home.node.relay_client.wait_reserved(relay_addr)
    try:
        yield World(tmp_path, relay, relay_addr, home, home_cfg, lap, lap_cfg, web_port)
    finally:
        await lap.aclose()
        await home.aclose()
        await relay.aclose()
        server.close()


def test_paired_through_the_relay_then_a_proxy_works_with_no_auth_add(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with world(tmp_path) as w:
            issued = await w.invite(name="home")
            result = await api(
                w.lap, "POST", "/v1/join", {"code": issued["code"], "name": "lap"}
            )
            assert result["is_paired"], result
            assert result["name"] == "home"
            assert result["services"] == ["web"]
            assert result["network_name"] == "house"

            # Both sides wrote the other in, verified=invite, under its name.
            home_peer, lap_peer = w.home.peer_id, w.lap.peer_id
            assert dict(load.load_node(w.lap_cfg).names) == {"home": home_peer}
            assert dict(load.load_node(w.home_cfg).names) == {"lap": lap_peer}
            for cfg, other in ((w.home_cfg, lap_peer), (w.lap_cfg, home_peer)):
                allowlist = Allowlist(cfg.parent / "authorized_keys")
                allowlist.load()
                [entry] = allowlist.entries()
                assert entry.peer_id == other and entry.verified == "invite"

            # The name works at once (the daemon reloaded), through the relay.
            proxy = await api(
                w.lap,
                "POST",
                "/v1/connect",
                {"peer": "home", "service": "web", "port": 0},
            )
            port = int(proxy["listen"].rsplit(":", 1)[1])
            assert await echo_through(port) == b"ping"
            conn = w.lap.node.host.connection_to(home_peer)
            assert conn is not None and conn.is_relayed
            assert conn.only_protocols is None  # a fresh, full connection

            # And home reaches the laptop too, by its name.
            pong = await api(w.home, "POST", "/v1/ping", {"peer": "lap", "count": 1})
            assert pong["received"] == 1, pong

            [listed] = (await api(w.home, "GET", "/v1/invites"))["invites"]
            assert listed["status"] == "used" and listed["peer"] == str(lap_peer)

            # The code works once.
            again = await w.join_with(InviteCode.parse(str(issued["code"])))
            assert not again.is_paired and again.reason == "used"

    asyncio.run(main())


def test_a_wrong_code_counts_and_the_third_failure_burns_it(tmp_path: Path) -> None:
    async def main() -> None:
        async with world(tmp_path) as w:
            before = (w.home_files(), w.lap_files())
            issued = await w.invite()
            code = InviteCode.parse(str(issued["code"]))
            wrong = dataclasses.replace(code, secret=b"w" * 10)
            for n in range(1, pairing.MAX_ATTEMPTS + 1):
                result = await w.join_with(wrong)
                assert result.reason == "wrong_code", result
                assert "wrong code" in result.message
                [listed] = (await api(w.home, "GET", "/v1/invites"))["invites"]
                assert listed["attempts"] == n
            assert listed["status"] == "burnt"
            # The right code, too late. No invite is pending: the gate refuses a
            # stranger outright, and the joiner hears that.
            result = await w.join_with(code)
            assert result.reason == "unreachable"
            assert "no invite is pending" in result.message
            # While another invite keeps pairing open, it hears exactly why.
            await w.invite()
            result = await w.join_with(code)
            assert result.reason == "burnt"
            assert f"{pairing.MAX_ATTEMPTS} wrong attempts" in result.message
            assert (w.home_files(), w.lap_files()) == before
            kinds = [e.kind for e in w.home.pairing.service.events]
            assert kinds == ["failed"] * pairing.MAX_ATTEMPTS + ["refused"]

    asyncio.run(main())


def test_the_right_code_still_works_after_a_wrong_one(tmp_path: Path) -> None:
    async def main() -> None:
        async with world(tmp_path) as w:
            issued = await w.invite()
            code = InviteCode.parse(str(issued["code"]))
            wrong = await w.join_with(dataclasses.replace(code, secret=b"w" * 10))
            assert wrong.reason == "wrong_code"
            result = await api(w.lap, "POST", "/v1/join", {"code": issued["code"]})
            assert result["is_paired"], result

    asyncio.run(main())


def test_expired_codes_are_refused_and_change_nothing(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with world(tmp_path) as w:
            before = (w.home_files(), w.lap_files())
            issued = await w.invite()
            code = InviteCode.parse(str(issued["code"]))
            # Expired by the joiner's own clock: refused without any network.
            late = await w.join_with(code, clock=code.expires_at + 3600)
            assert late.reason == "expired" and "expired" in late.message
            # Expired by the inviter's: its answer says so.
            store = w.home.pairing.service.store
            past = int(time.time()) - 60
            store.transact(
                lambda inv: (
                    [dataclasses.replace(i, expires_at=past) for i in inv],
                    None,
                ),
                now=time.time(),
            )
            expired = await w.join_with(code, clock=0)
            assert expired.reason == "unreachable"  # no invite open: refused at once
            await w.invite()  # one open invite: the expired one is named
            expired = await w.join_with(code, clock=0)
            assert expired.reason == "expired", expired
            assert (w.home_files(), w.lap_files()) == before

    asyncio.run(main())


def test_an_ended_invite_is_named_while_another_keeps_the_gate_open(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with world(tmp_path) as w:
            first = await w.invite()
            await w.invite()  # keeps pairing admissions open
            await api(w.home, "DELETE", f"/v1/invites/{first['id']}")
            result = await w.join_with(InviteCode.parse(str(first["code"])))
            assert result.reason == "revoked"
            assert "revoked" in result.message

    asyncio.run(main())


def test_a_peer_on_the_relay_without_the_code_gets_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        async with world(tmp_path) as w:
            key = Ed25519PrivateKey.generate()
            mallory = Host(key)
            RelayClient(mallory)
            authorize_on_relay(w.relay, mallory.peer_id)
            home = w.home.peer_id
            circuit = w.relay_addr.encapsulate(
                Multiaddr.parse(f"/p2p-circuit/p2p/{home}")
            )
            before = w.home_files()

            # No invite pending: refused at the handshake, as any unknown peer.
            with pytest.raises(Error):
                await mallory.ping(circuit)

            # An invite pending: admitted to the invite protocol and nothing else.
            w.home.pairing.service.admission_s = 0.5
            issued = await w.invite()
            conn = await mallory.connect(circuit)
            for protocol in (
                "/pingpong/1.0.0",
                "/peerup/web/1.0.0",
                "/ipfs/ping/1.0.0",
            ):
                stream = conn.open_stream([protocol])
                with pytest.raises(NegotiationError):
                    await stream.read(1)
            # ... and cut off after the admission time.
            async with asyncio.timeout(5):
                await conn.closed

            # Guessing takes an invite ID it does not know: not even an attempt.
            code = InviteCode.parse(str(issued["code"]))
            guess = dataclasses.replace(
                code, invite_id=b"\0\0\0\0", secret=os.urandom(10)
            )
            outcome = await pairing.join(
                mallory, guess, PeerCard("mallory"), _never_record
            )
            assert outcome.reason == "unknown_invite", outcome
            [listed] = (await api(w.home, "GET", "/v1/invites"))["invites"]
            assert listed["attempts"] == 0 and listed["status"] == "pending"
            assert w.home_files() == before
            await mallory.aclose()

    asyncio.run(main())


def _never_record(_peer: PeerId, _card: PeerCard) -> pairing.Recorded:
    raise AssertionError("must not be called")


def test_a_joiner_the_relay_does_not_know_is_told_what_to_ask(tmp_path: Path) -> None:
    async def main() -> None:
        async with world(tmp_path, lap_on_relay=False) as w:
            issued = await w.invite()
            result = await w.join_with(InviteCode.parse(str(issued["code"])))
            assert result.reason == "unreachable"
            assert "relay refused this machine" in result.message
            assert "does not enroll it" in result.message
            assert result.hint is not None
            assert f"peerup relay authorize {w.lap.peer_id}" in result.hint
            assert "join` again" in result.hint
            [listed] = (await api(w.home, "GET", "/v1/invites"))["invites"]
            assert listed["attempts"] == 0  # the code stays good

    asyncio.run(main())


def test_an_inviter_that_is_offline_is_named_as_such(tmp_path: Path) -> None:
    async def main() -> None:
        async with world(tmp_path) as w:
            issued = await w.invite()
            await w.home.aclose()
            result = await w.join_with(InviteCode.parse(str(issued["code"])))
            assert result.reason == "unreachable"
            assert "not online" in result.message, result

    asyncio.run(main())


def test_pairing_admissions_are_bounded(tmp_path: Path) -> None:
    async def main() -> None:
        async with world(tmp_path) as w:
            service = w.home.pairing.service
            service.max_admitted = 1
            await w.invite()
            hosts = [Host(Ed25519PrivateKey.generate()) for _ in range(2)]
            for h in hosts:
                RelayClient(h)
                authorize_on_relay(w.relay, h.peer_id)
            circuit = w.relay_addr.encapsulate(
                Multiaddr.parse(f"/p2p-circuit/p2p/{w.home.peer_id}")
            )
            first = await hosts[0].connect(circuit)
            assert first.is_open
            with pytest.raises(Error):
                await hosts[1].ping(circuit)  # refused: one is pairing already
            for h in hosts:
                await h.aclose()

    asyncio.run(main())


def test_the_handshake_message_limit_is_enforced() -> None:
    assert proto.MAX_MESSAGE_BYTES == 4096
