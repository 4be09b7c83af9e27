"""Port mapping against a real router daemon, miniupnpd (Debian's ``miniupnpd-nftables``),
in the NAT lab (``../shared/natlab``).

One lab for the module: ``home`` behind a port-restricted NAT whose router runs
miniupnpd (UPnP IGD, NAT-PMP and PCP), ``sym`` behind a symmetric NAT with no port
mapping on its router, and a relay. Without the mapping, symmetric x port-restricted
is the pair no hole punch gets through (tests/natlab/test_natlab_holepunch.py: it
stays relayed). Here:

- home's daemon maps its listen port through PCP and says so in ``status`` and
  ``doctor``; sym's daemon says its router offers no UPnP/NAT-PMP/PCP and what to do;
- a session sym starts through the relay goes direct, to the mapped address, and sym
  can dial home's mapped address directly: the done-when "with miniupnpd on one
  router, that side is directly reachable even from a symmetric-NAT peer";
- UPnP IGD and NAT-PMP each map (and remove) a port on the same miniupnpd;
- stopping home's daemon removes its mapping from the router.

The router side, set up here: miniupnpd's nftables backend adds its rules to chains
that must exist (``table inet filter``: ``miniupnpd``, ``prerouting_miniupnpd``,
``postrouting_miniupnpd``, each jumped to from a base chain); the lab's own filter lets
DNATed traffic in (``ct status dnat accept``). miniupnpd refuses to map when its WAN
address is in a reserved range, as the lab's documentation addresses are; it learns
by STUN (tests/natlab/lab_portmap.py answers on the relay) that the address is public.

Needs root and ``miniupnpd`` (scripts/setup-system installs both); skipped without,
failed under CI. Run it under the lab's lock (``flock /tmp/peerup-natlab.lock``).
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

from e2e.e2e_harness import Proc, child_env, wait_until
from natlab.natlab_common import LabBase, natlab, require_lab
from peerup.app.api import ApiClient
from peerup.config import files, load
from peerup.config.schema import ServiceConfig
from peerup.core.errors import ApiError
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.peer_id import PeerId

LAB_TCP = Path(__file__).with_name("lab_tcp.py")
LAB_PORTMAP = Path(__file__).with_name("lab_portmap.py")
MINIUPNPD = "/usr/sbin/miniupnpd"
SITES = {"home": "port-restricted", "sym": "symmetric"}
TOPOLOGY = ",".join(f"{k}={v}" for k, v in SITES.items()) + ",rtt=20ms"
HOME_PUBLIC = "198.51.100.10"
HOME_LAN = "10.1.0.2"
RELAY_IP = "203.0.113.10"
RELAY_PORT = 7777
STUN_PORT = 3478
SERVICE_PORT = 7100
MAPPED = f"/ip4/{HOME_PUBLIC}/tcp/4001"
ROUTER_CHAINS = """\
table inet filter {
  chain forward { type filter hook forward priority 0; policy accept; jump miniupnpd; }
  chain miniupnpd { }
  chain prerouting {
    type nat hook prerouting priority -100; policy accept; jump prerouting_miniupnpd;
  }
  chain postrouting {
    type nat hook postrouting priority 100; policy accept; jump postrouting_miniupnpd;
  }
  chain prerouting_miniupnpd { }
  chain postrouting_miniupnpd { }
}
"""
MINIUPNPD_CONF = f"""\
ext_ifname=wan
listening_ip=lan
http_port=0
enable_natpmp=yes
enable_upnp=yes
secure_mode=yes
system_uptime=no
ext_perform_stun=yes
ext_stun_host={RELAY_IP}
ext_stun_port={STUN_PORT}
uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b
allow 1024-65535 10.0.0.0/8 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
"""


@dataclass
class Site:
    name: str
    peer_id: PeerId
    api: ApiClient
    config: Path
    daemon: Proc | None = None

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.api.call(method, path, body)


@dataclass
class Lab(LabBase):
    sites: dict[str, Site] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


    def router_rules(self) -> str:
        done = subprocess.run(
            self.argv("home-nat", "nft", "list", "chain", "inet", "filter",
                      "prerouting_miniupnpd"),
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout



@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    require_lab(MINIUPNPD)
    workdir = Path(tempfile.mkdtemp(prefix="pm", dir="/tmp"))
    os.chmod(workdir, 0o755)
    started = time.monotonic()
    up = natlab("up", TOPOLOGY)
    assert up.returncode == 0, up.stdout + up.stderr
    result = Lab(workdir)
    try:
        _start(result)
        result.timings["lab ready"] = time.monotonic() - started
        yield result
    finally:
        for proc in reversed(result.procs):
            proc.stop(5)
        natlab("down")
        shutil.rmtree(workdir, ignore_errors=True)


def _start(lab: Lab) -> None:
    stun = lab.start(
        "stun", "relay", sys.executable, str(LAB_PORTMAP), "stun", RELAY_IP,
        str(STUN_PORT),
    )  # fmt: skip
    stun.wait_for_output("ready")
    chains = lab.workdir / "router.nft"
    chains.write_text(ROUTER_CHAINS)
    added = subprocess.run(
        lab.argv("home-nat", "nft", "-f", str(chains)),
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    conf = lab.workdir / "miniupnpd.conf"
    conf.write_text(MINIUPNPD_CONF + f"lease_file={lab.workdir / 'upnp.leases'}\n")
    router = lab.start(
        "miniupnpd", "home-nat", MINIUPNPD, "-d", "-f", str(conf), "-P",
        str(lab.workdir / "miniupnpd.pid"),
    )  # fmt: skip
    router.wait_for_output("Listening for NAT-PMP/PCP traffic", 15)
    assert "Port forwarding is now enabled" in router.stdout() + router.stderr(), (
        router.logs()
    )
    relay = lab.start(
        "relay", "relay", sys.executable, "-m", "peerup.interop", "relay",
        "--host", RELAY_IP, "--port", str(RELAY_PORT), "--unlimited",
        "--key", str(lab.workdir / "relay.key"),
    )  # fmt: skip
    relay.wait_for_output(r'"event": ?"ready"')
    ready = json.loads(relay.stdout().splitlines()[0])
    relay_addr = f"/ip4/{RELAY_IP}/tcp/{RELAY_PORT}/p2p/{ready['peer_id']}"
    keys = {name: Ed25519PrivateKey.generate() for name in SITES}
    ids = {name: PeerId.from_public_key(k.public_key) for name, k in keys.items()}
    for name, key in keys.items():
        base = lab.workdir / name
        files.write_atomic(base / "identity.key", key.to_protobuf())
        others = "".join(f"{ids[o]} # {o}\n" for o in SITES if o != name)
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
        site = Site(name, ids[name], api, base / "config.yaml")
        lab.sites[name] = site
        lab.start(
            f"{name}-talk", name, sys.executable, str(LAB_TCP), "serve",
            str(SERVICE_PORT),
        )  # fmt: skip
        site.daemon = lab.start(
            f"{name}-daemon", name, sys.executable, "-m", "peerup", "daemon",
            "--config", str(base / "config.yaml"),
        )  # fmt: skip
    for site in lab.sites.values():

        def reserved(site: Site = site) -> bool:
            try:
                relays = site.call("GET", "/v1/status")["relays"]
            except ApiError:
                return False
            return bool(relays and relays[0]["reserved"])

        wait_until(f"{site.name}'s daemon to hold its reservation", reserved, 30, 0.1)


def _port_mapping(site: Site, state: str) -> dict[str, Any] | None:
    mapping = site.call("GET", "/v1/doctor")["port_mapping"]
    return dict(mapping) if mapping["state"] == state else None


def _conns(site: Site, peer: PeerId) -> list[dict[str, Any]]:
    peers = site.call("GET", "/v1/peers")["peers"]
    return [p for p in peers if p["peer_id"] == str(peer)]


def test_daemons_report_their_routers_port_mapping(lab: Lab) -> None:
    home, sym = lab.sites["home"], lab.sites["sym"]
    mapping = wait_until("home's mapping", lambda: _port_mapping(home, "mapped"), 15)
    ready = lab.timings["lab ready"]
    print(f"\nhome: {mapping['line']} (lab up to daemons reserved: {ready:.1f} s)")
    assert mapping["line"].startswith(
        f"PCP mapped {HOME_PUBLIC}:4001 -> :4001, lease 1h"
    ), mapping
    assert mapping["external_addr"] == MAPPED
    status = home.call("GET", "/v1/status")
    assert f"{MAPPED}/p2p/{home.peer_id}" in status["listen_addrs"]
    assert status["port_mapping"]["state"] == "mapped"
    assert f"dnat ip to {HOME_LAN}:4001" in lab.router_rules()
    # sym's router has no miniupnpd: PCP's port is closed, no IGD answers.
    mapping = wait_until("sym's verdict", lambda: _port_mapping(sym, "unsupported"), 15)
    print(f"sym: {mapping['line']}; fix: {mapping['fix']}")
    assert mapping["line"].startswith("no UPnP/NAT-PMP/PCP on this router"), mapping
    assert mapping["fix"].startswith("enable UPnP"), mapping
    # What a person reads: `peerup doctor` and `peerup status`.
    for site, command, expected in (
        (home, "doctor", f"Port mapping: PCP mapped {HOME_PUBLIC}:4001 -> :4001"),
        (home, "status", f"port mapping: PCP mapped {HOME_PUBLIC}:4001"),
        (sym, "doctor", "  fix: enable UPnP"),
    ):
        shown = subprocess.run(
            [sys.executable, "-m", "peerup", command, "--config", str(site.config)],
            capture_output=True, text=True, timeout=30, env=child_env(),
        )  # fmt: skip
        assert expected in shown.stdout, shown.stdout + shown.stderr


class Client:
    """lab_tcp.py's client in a site's namespace, one command at a time."""

    def __init__(self, lab: Lab, host: str, port: int) -> None:
        self.popen = subprocess.Popen(
            lab.argv(host, sys.executable, str(LAB_TCP), "client", str(port)),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env(),
        )  # fmt: skip

    def __call__(self, command: str) -> str:
        assert self.popen.stdin is not None and self.popen.stdout is not None
        self.popen.stdin.write(command + "\n")
        self.popen.stdin.flush()
        return self.popen.stdout.readline().strip()

    def close(self) -> None:
        self.popen.kill()
        self.popen.wait()


def test_symmetric_peer_reaches_the_mapped_side_directly(lab: Lab) -> None:
    home, sym = lab.sites["home"], lab.sites["sym"]
    wait_until("home's mapping", lambda: _port_mapping(home, "mapped"), 15)
    # A session sym starts through the relay moves to a direct connection: home
    # (DCUtR's B) lists its mapped address, sym's dial to it passes the router's DNAT.
    proxy = sym.call(
        "POST", "/v1/connect", {"peer": str(home.peer_id), "service": "talk", "port": 0}
    )
    client = Client(lab, "sym", int(proxy["listen"].rsplit(":", 1)[1]))
    try:
        assert client("open s1") == "ok"
        assert client("echo s1 1000").startswith("ok"), lab.logs()
        relayed_at = time.monotonic()

        def direct() -> dict[str, Any] | None:
            for conn in _conns(sym, home.peer_id):
                if conn["path"] == "direct" and conn["new_streams"]:
                    return conn
            return None

        conn = wait_until("sym -> home to go direct", direct, 15, 0.02)
        print(f"\nsym -> home direct {time.monotonic() - relayed_at:.2f} s after the "
              f"first relayed echo, to {conn['remote_addr']}")  # fmt: skip
        assert conn["remote_addr"] == MAPPED, conn
        assert client("open s2") == "ok"
        assert client("echo s2 100000").startswith("ok")
        assert client("echo s1 100000").startswith("ok")  # the relayed one carries on
        assert client("close s1") == "ok" and client("close s2") == "ok"
    finally:
        client.close()
        sym.call("DELETE", f"/v1/connect/{proxy['id']}")
    # A fresh dial to the mapped address, with no relay in between.
    sym.call("POST", "/v1/disconnect", {"peer": str(home.peer_id)})
    home.call("POST", "/v1/disconnect", {"peer": str(sym.peer_id)})
    wait_until("the pair to be disconnected", lambda: not _conns(sym, home.peer_id), 10)
    started = time.monotonic()
    target = f"{MAPPED}/p2p/{home.peer_id}"
    pinged = sym.call("POST", "/v1/ping", {"peer": target, "count": 1})
    print(f"direct dial + ping to {MAPPED}: {time.monotonic() - started:.2f} s")
    assert pinged["received"] == 1 and pinged["path"] == "direct", pinged
    paths = [(c["path"], c["remote_addr"]) for c in _conns(sym, home.peer_id)]
    assert paths == [("direct", MAPPED)], paths


def test_upnp_and_natpmp_map_and_remove_on_miniupnpd(lab: Lab) -> None:
    for method, port, name in (("upnp", 4100, "UPnP"), ("natpmp", 4101, "NAT-PMP")):
        started = time.monotonic()
        proc = subprocess.Popen(
            lab.argv("home", sys.executable, str(LAB_PORTMAP), "map", method, str(port)),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env(),
        )  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None
        try:
            mapped = json.loads(proc.stdout.readline())
            took = time.monotonic() - started
            print(
                f"\n{method}: {mapped['line']} ({took:.2f} s, process start included)"
            )
            assert mapped["line"].startswith(
                f"{name} mapped {HOME_PUBLIC}:{port} -> :{port}"
            ), mapped
            assert f"dport {port} dnat ip to {HOME_LAN}:{port}" in lab.router_rules()
            proc.stdin.write("\n")
            proc.stdin.flush()
            stopped = json.loads(proc.stdout.readline())
            assert stopped["outcome"] == "stopped", stopped
            assert f"dport {port} " not in lab.router_rules()
        finally:
            proc.kill()
            proc.wait()


def test_stopping_the_daemon_removes_its_mapping(lab: Lab) -> None:
    home = lab.sites["home"]
    wait_until("home's mapping", lambda: _port_mapping(home, "mapped"), 15)
    assert "dport 4001 " in lab.router_rules()
    assert home.daemon is not None
    assert home.daemon.stop(10) == 0, home.daemon.logs()
    rules = lab.router_rules()
    assert "dport 4001 " not in rules, rules


def test_no_process_logged_a_traceback(lab: Lab) -> None:
    for proc in lab.procs:
        assert "Traceback" not in proc.stderr(), proc.logs()
