"""Hole punching through real kernel NATs: the NAT lab (``../shared/natlab``).

One lab for the whole module, one site per NAT of interest, every site 40 ms from every
other (``rtt=40ms``): a relay (our interop relay role) at 203.0.113.10 and a
``peerup daemon`` per site, each listening on 0.0.0.0:4001, holding a reservation and
offering service ``talk`` (a TCP echo server in its namespace). For each pair, the
"laptop" opens a proxy to the "home" site's ``talk`` through its daemon's API and a
client in the laptop's namespace starts a TCP session through it, which makes the
relayed connection; then:

- where a TCP hole punch can work (the lab's own table: full-cone, restricted and
  port-restricted in every pairing, whose mappings are endpoint-independent, and a
  symmetric NAT against full-cone or restricted, whose filters let in the punch from
  the other port that the symmetric NAT picked), the laptop's daemon has a direct
  connection that takes new streams within 2 s of the session's first echo, the
  session started relayed carries on, and a new session goes direct;
- symmetric x port-restricted (the symmetric side's NAT maps the punch to another
  port than the one the relay observed, and the port-restricted side lets in only the
  port it sent to) stays relayed, says why, and nothing fails for the user; ``peerup
  doctor`` on either side says which NAT is to blame;
- DCUtR with go-libp2p's holepunch service (the interop peer, ``--holepunch``), in
  both roles.

Time to direct per pair is printed (``-s``) and written to ``natlab-holepunch.txt``
beside the lab's work directory. ``PEERUP_NATLAB_ROUNDS=20`` repeats each pair,
``PEERUP_NATLAB_LINK=loss=1`` adds link settings to the topology. Needs root;
skipped without it, failed under CI (which must run it). Do not run at the same time
as another NAT lab test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from e2e.e2e_harness import child_env, skip_or_fail, wait_until
from natlab.natlab_common import ROOT, LabBase, natlab, require_lab
from peerup.app.api import ApiClient
from peerup.config import files, load
from peerup.config.schema import ServiceConfig
from peerup.core.errors import ApiError
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.peer_id import PeerId

LAB_TCP = Path(__file__).with_name("lab_tcp.py")
SITES = {
    "fc1": "full-cone",
    "fc2": "full-cone",
    "rc1": "restricted",
    "rc2": "restricted",
    "prc1": "port-restricted",
    "prc2": "port-restricted",
    "sym": "symmetric",
}
GO_SITE, GO_SITE_TYPE = "gprc", "port-restricted"
"""Where the go-libp2p test peer runs (no daemon there)."""
GO_PEER = ROOT / "interop" / "go" / "bin" / "peer"
TOPOLOGY = (
    ",".join(f"{k}={v}" for k, v in SITES.items())
    + f",{GO_SITE}={GO_SITE_TYPE},rtt=40ms"
    + "".join(f",{x}" for x in os.environ.get("PEERUP_NATLAB_LINK", "").split(",") if x)
)
RELAY_IP = "203.0.113.10"
RELAY_PORT = 7777
SERVICE_PORT = 7100
DIRECT_WITHIN_S = 2.0
PUNCHABLE = [  # (laptop, home): the laptop dials home through the relay
    ("fc2", "fc1"),
    ("rc1", "fc2"),
    ("fc1", "prc1"),
    ("rc2", "rc1"),
    ("prc1", "rc2"),
    ("prc2", "prc1"),
    # A symmetric NAT's punch leaves from a port the relay never saw; an address-
    # dependent or independent filter on the other side lets it in all the same.
    ("sym", "fc1"),
    ("rc2", "sym"),
]
STAYS_RELAYED = [("sym", "prc2")]
RESULTS: list[str] = []
ROUNDS = max(1, int(os.environ.get("PEERUP_NATLAB_ROUNDS", "1")))


@dataclass
class Site:
    name: str
    peer_id: PeerId
    config: Path
    api: ApiClient

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.api.call(method, path, body)


@dataclass
class Lab(LabBase):
    sites: dict[str, Site] = field(default_factory=dict)
    relay_addr: str = ""
    go_key: Path = Path()
    go_id: PeerId | None = None




@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    require_lab()
    workdir = Path(tempfile.mkdtemp(prefix="hp", dir="/tmp"))
    os.chmod(workdir, 0o755)
    up = natlab("up", TOPOLOGY)
    assert up.returncode == 0, up.stdout + up.stderr
    result = Lab(workdir)
    try:
        _start(result)
        yield result
    finally:
        for proc in reversed(result.procs):
            proc.stop(5)
        natlab("down")
        report = workdir.parent / "natlab-holepunch.txt"
        if RESULTS:
            report.write_text("\n".join(RESULTS) + "\n")
            print("\n" + "\n".join(RESULTS))
        shutil.rmtree(workdir, ignore_errors=True)


def _start(lab: Lab) -> None:
    relay_key = lab.workdir / "relay.key"
    relay = lab.start(
        "relay",
        "relay",
        sys.executable,
        "-m",
        "peerup.interop",
        "relay",
        "--host",
        RELAY_IP,
        "--port",
        str(RELAY_PORT),
        "--unlimited",
        "--key",
        str(relay_key),
    )
    relay.wait_for_output(r'"event": ?"ready"')
    ready = json.loads(relay.stdout().splitlines()[0])
    relay_addr = f"/ip4/{RELAY_IP}/tcp/{RELAY_PORT}/p2p/{ready['peer_id']}"
    lab.relay_addr = relay_addr
    go_key = Ed25519PrivateKey.generate()
    lab.go_key = lab.workdir / "go.key"
    files.write_atomic(lab.go_key, go_key.to_protobuf())
    lab.go_id = PeerId.from_public_key(go_key.public_key)
    keys = {name: Ed25519PrivateKey.generate() for name in SITES}
    ids = {name: PeerId.from_public_key(k.public_key) for name, k in keys.items()}
    for name, key in keys.items():
        base = lab.workdir / name
        files.write_atomic(base / "identity.key", key.to_protobuf())
        others = "".join(f"{ids[o]} # {o}\n" for o in SITES if o != name)
        others += f"{lab.go_id} # go-libp2p\n"
        files.write_atomic(base / "authorized_keys", others)
        files.write_atomic(
            base / "config.yaml",
            load.render_node_config(
                identity_key="identity.key",
                listen=["/ip4/0.0.0.0/tcp/4001"],
                relays=[relay_addr],
                network_name=None,
            ),
        )
        load.add_service(
            base / "config.yaml", ServiceConfig("talk", f"127.0.0.1:{SERVICE_PORT}")
        )
        api = ApiClient(base / "daemon.sock", base / "daemon.cookie", timeout_s=15)
        lab.sites[name] = Site(name, ids[name], base / "config.yaml", api)
        lab.start(
            f"{name}-talk",
            name,
            sys.executable,
            str(LAB_TCP),
            "serve",
            str(SERVICE_PORT),
        )
        lab.start(
            f"{name}-daemon",
            name,
            sys.executable,
            "-m",
            "peerup",
            "daemon",
            "--config",
            str(base / "config.yaml"),
        )
    for site in lab.sites.values():

        def reserved(site: Site = site) -> bool:
            try:
                relays = site.call("GET", "/v1/status")["relays"]
            except ApiError:
                return False
            return bool(relays and relays[0]["reserved"])

        wait_until(f"{site.name}'s daemon to hold its reservation", reserved, 30, 0.1)


class Client:
    """lab_tcp.py client in the laptop's namespace, one command at a time."""

    def __init__(self, lab: Lab, host: str, port: int) -> None:
        self.popen = subprocess.Popen(
            lab.argv(host, sys.executable, str(LAB_TCP), "client", str(port)),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(),
        )

    def __call__(self, command: str) -> str:
        assert self.popen.stdin is not None and self.popen.stdout is not None
        self.popen.stdin.write(command + "\n")
        self.popen.stdin.flush()
        return self.popen.stdout.readline().strip()

    def close(self) -> None:
        try:
            self("quit")
        except (BrokenPipeError, OSError):
            pass
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


def _conns(site: Site, peer: PeerId) -> list[dict[str, Any]]:
    return [
        p for p in site.call("GET", "/v1/peers")["peers"] if p["peer_id"] == str(peer)
    ]


def _upgrade(site: Site, peer: PeerId) -> dict[str, Any] | None:
    for conn in _conns(site, peer):
        if conn["upgrade"]:
            return dict(conn["upgrade"])
    return None


def _doctor_for(
    site: Site, peer: PeerId
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``site``'s doctor: its NAT, and its advice on ``peer`` once it has a fix."""
    report = site.call("GET", "/v1/doctor")
    for advice in report["peers"]:
        if advice["peer_id"] == str(peer) and advice["fix"]:
            return report["nat"], advice
    return None


def _open_session(lab: Lab, laptop: Site, home: Site) -> tuple[Client, str, float]:
    """A proxy on the laptop to home's ``talk`` and a first echo through it: (client,
    proxy id, when the first echo came back)."""
    proxy = laptop.call(
        "POST", "/v1/connect", {"peer": str(home.peer_id), "service": "talk", "port": 0}
    )
    client = Client(lab, laptop.name, int(proxy["listen"].rsplit(":", 1)[1]))
    assert client("open s1") == "ok"
    answer = client("echo s1 1000")
    assert answer.startswith("ok"), answer + lab.logs()
    return client, str(proxy["id"]), time.monotonic()


def _disconnect(laptop: Site, home: Site) -> None:
    """Close every connection of the pair, so that the next round starts relayed."""
    laptop.call("POST", "/v1/disconnect", {"peer": str(home.peer_id)})
    home.call("POST", "/v1/disconnect", {"peer": str(laptop.peer_id)})
    wait_until(
        "the pair to be disconnected",
        lambda: not _conns(laptop, home.peer_id) and not _conns(home, laptop.peer_id),
        10,
        0.05,
    )


def _direct_round(lab: Lab, laptop: Site, home: Site) -> tuple[float, str]:
    """One relayed session moved to direct: (seconds from its first echo until the
    laptop's new streams go direct, home's account of the upgrade)."""
    client, proxy_id, relayed_at = _open_session(lab, laptop, home)
    try:

        def direct() -> dict[str, Any] | None:
            for conn in _conns(laptop, home.peer_id):
                if conn["path"] == "direct" and conn["new_streams"]:
                    return conn
            return None

        wait_until(f"{laptop.name} -> {home.name} to go direct", direct, 15, 0.02)
        to_direct = time.monotonic() - relayed_at
        upgrade = wait_until(
            "home's upgrade result", lambda: _upgrade(home, laptop.peer_id), 5, 0.05
        )
        assert upgrade["outcome"] in ("hole punched", "direct"), upgrade
        # A new session goes direct; the one started relayed carries on.
        assert client("open s2") == "ok"
        assert client("echo s2 4096").startswith("ok")
        paths = {c["path"]: c for c in _conns(laptop, home.peer_id)}
        # s1 (and, under loss, maybe the hole punch's own stream still closing).
        assert paths["relayed"]["streams"] >= 1, paths
        assert paths["direct"]["streams"] >= 1, paths
        for size in (1000, 100_000):
            answer = client(f"echo s1 {size}")
            assert answer.startswith("ok"), answer
        assert client("close s1") == "ok"
        assert client("close s2") == "ok"
        proxies = laptop.call("GET", "/v1/proxies")["proxies"]
        [stats] = [p for p in proxies if p["id"] == proxy_id]
        assert stats["failures"] == 0, stats
        return to_direct, str(upgrade["line"])
    finally:
        client.close()
        laptop.call("DELETE", f"/v1/connect/{proxy_id}")


@pytest.mark.parametrize(("laptop_name", "home_name"), PUNCHABLE)
def test_punchable_pair_goes_direct_within_2_s(
    lab: Lab, laptop_name: str, home_name: str
) -> None:
    """``PEERUP_NATLAB_ROUNDS=20`` repeats each pair (the issue asks for 19 of 20)."""
    laptop, home = lab.sites[laptop_name], lab.sites[home_name]
    times, lines = [], []
    for round_ in range(ROUNDS):
        if round_:
            _disconnect(laptop, home)
        to_direct, line = _direct_round(lab, laptop, home)
        times.append(to_direct)
        lines.append(line)
    in_time = sum(t < DIRECT_WITHIN_S for t in times)
    ordered = sorted(times)
    RESULTS.append(
        f"{SITES[laptop_name]:>15} -> {SITES[home_name]:<15} direct in "
        f"{in_time}/{ROUNDS} within {DIRECT_WITHIN_S:g} s; min/median/max "
        f"{ordered[0]:.2f}/{ordered[len(ordered) // 2]:.2f}/{ordered[-1]:.2f} s "
        f"after the first relayed echo; home: {lines[-1]}"
    )
    needed = ROUNDS if ROUNDS < 20 else ROUNDS * 19 // 20
    assert in_time >= needed, (times, lines, lab.logs())


@pytest.mark.parametrize(("laptop_name", "home_name"), STAYS_RELAYED)
def test_symmetric_against_port_restricted_stays_relayed_quietly(
    lab: Lab, laptop_name: str, home_name: str
) -> None:
    laptop, home = lab.sites[laptop_name], lab.sites[home_name]
    client, proxy_id, _ = _open_session(lab, laptop, home)
    try:
        upgrade = wait_until(
            "home to give up on a direct connection",
            lambda: _upgrade(home, laptop.peer_id),
            30,
            0.1,
        )
        RESULTS.append(
            f"{SITES[laptop_name]:>15} -> {SITES[home_name]:<15} {upgrade['line']}"
        )
        assert upgrade["outcome"] == "relayed", upgrade
        assert "hole punch" in upgrade["reason"], upgrade
        assert [c["path"] for c in _conns(laptop, home.peer_id)] == ["relayed"]
        for name in ("s1", "s2"):
            if name == "s2":
                assert client("open s2") == "ok"
            answer = client(f"echo {name} 10000")
            assert answer.startswith("ok"), answer
            assert client(f"close {name}") == "ok"
        stats = [
            p
            for p in laptop.call("GET", "/v1/proxies")["proxies"]
            if p["id"] == proxy_id
        ]
        assert stats[0]["failures"] == 0 and stats[0]["last_failure"] is None, stats
        # doctor, on both sides: which NAT is to blame.
        nat, advice = wait_until(
            "the symmetric side's account of the hole punch",
            lambda: _doctor_for(laptop, home.peer_id),
            10,
            0.1,
        )
        RESULTS.append(f"  doctor on {laptop_name}: {nat['summary']}; {advice['fix']}")
        assert nat["mapping"] in ("port changed", "endpoint-dependent"), nat
        assert advice["path"] == "relayed" and "this side's NAT" in advice["fix"]
        nat, advice = _doctor_for(home, laptop.peer_id) or ({}, {})
        RESULTS.append(f"  doctor on {home_name}: {nat['summary']}; {advice['fix']}")
        assert nat["mapping"] in ("port preserved", "endpoint-independent"), nat
        assert "peer's probably" in advice["fix"], advice
    finally:
        client.close()
        laptop.call("DELETE", f"/v1/connect/{proxy_id}")


def _go_peer(lab: Lab) -> Path:
    if not GO_PEER.exists():
        skip_or_fail(f"{GO_PEER} is missing (interop/go/setup.sh builds it)")
    return GO_PEER


def test_go_libp2p_leading_the_hole_punch_gets_us_direct(lab: Lab) -> None:
    """go-libp2p as B (it holds the reservation; our daemon dials it through the
    relay): its holepunch service runs DCUtR, our daemon answers and dials as the
    client, and our new streams to it go direct within 2 s."""
    laptop = lab.sites["prc2"]
    go = lab.start(
        "go-listen",
        GO_SITE,
        str(_go_peer(lab)),
        "listen",
        "--listen",
        "/ip4/0.0.0.0/tcp/4001",
        "--relay",
        lab.relay_addr,
        "--holepunch",
        "--key",
        str(lab.go_key),
    )
    try:
        go.wait_for_output(r'"event":"ready"', 30)
        circuit = json.loads(go.stdout().splitlines()[0])["multiaddr"]
        # go-libp2p has no /pingpong/1.0.0: the ping fails, over a relayed
        # connection that it made and that stays.
        laptop.call("POST", "/v1/ping", {"peer": circuit, "count": 1})
        relayed_at = time.monotonic()
        assert lab.go_id is not None
        paths = [c["path"] for c in _conns(laptop, lab.go_id)]
        assert "relayed" in paths, paths

        def direct() -> bool:
            return any(
                c["path"] == "direct" and c["new_streams"]
                for c in _conns(laptop, lab.go_id)  # type: ignore[arg-type]
            )

        wait_until("a direct connection to go-libp2p", direct, 15, 0.02)
        to_direct = time.monotonic() - relayed_at
        RESULTS.append(
            f"{'go-libp2p B':>15} <- {SITES['prc2'] + ' A (us)':<15} direct: "
            f"{to_direct:.2f} s after the relayed ping"
        )
        assert to_direct < DIRECT_WITHIN_S, (to_direct, go.logs())
    finally:
        go.stop(5)


def test_go_libp2p_answering_our_hole_punch_gets_direct(lab: Lab) -> None:
    """go-libp2p as A (it dials our daemon through the relay): our daemon runs DCUtR
    as B, go-libp2p answers and dials as the client; its connection list shows the
    direct connection within 2 s."""
    home = lab.sites["prc1"]
    target = f"{lab.relay_addr}/p2p-circuit/p2p/{home.peer_id}"
    done = subprocess.run(
        lab.argv(
            GO_SITE,
            str(_go_peer(lab)),
            "dial",
            target,
            "--steps",
            "ping:1,direct:10,ping:1",
            "--listen",
            "/ip4/0.0.0.0/tcp/4002",
            "--holepunch",
            "--key",
            str(lab.go_key),
        ),
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["ok"] and result["relayed"], (result, done.stderr[-3000:])
    step = result["steps"]["direct"]
    RESULTS.append(
        f"{'go-libp2p A':>15} -> {SITES['prc1'] + ' B (us)':<15} direct: "
        f"{step['ms'] / 1000:.2f} s after the relayed ping "
        f"({step['since_dial_ms'] / 1000:.2f} s after its dial)"
    )
    assert step["ms"] / 1000 < DIRECT_WITHIN_S, step
    upgrade = _upgrade(home, lab.go_id)  # type: ignore[arg-type]
    assert upgrade is None or upgrade["outcome"] == "hole punched", upgrade


def test_no_daemon_logged_a_traceback(lab: Lab) -> None:
    """Hole punches that fail are outcomes, not crashes: nothing in any log."""
    for proc in lab.procs:
        assert "Traceback" not in proc.stderr(), proc.logs()
