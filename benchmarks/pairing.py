"""Pairing benchmark (issue 13): from an invite code typed to a working tunnel, through
our relay on loopback. Target: under 1 s.

Every round pairs a new laptop with "home" (which offers an echo service as ``web``);
both reach each other only through the relay (neither listens), and the relay already
lets the laptop in (a peer invite does not enroll at the relay). Measured from the
moment the code is handed over to the first echoed byte through ``proxy home web``:

- ``daemon``: both daemons run (in this process, with their real API sockets): the
  laptop's ``POST /v1/join`` (what ``peerup join`` asks its daemon), then
  ``POST /v1/connect`` by name, then a byte through the local port;
- ``cli``: home's daemon and the relay run as processes; the laptop has no daemon and
  runs ``peerup join <code>`` and then ``peerup proxy home web 0`` as a user would (two
  new Python processes: interpreter start-up included, from bytecode caches as after
  an install).

Usage: python benchmarks/pairing.py [--rounds N] [--quick]
Writes benchmarks/results/pairing.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as c

sys.path.insert(0, str(c.ROOT / "tests"))

from pairing_harness import (  # noqa: E402
    add_web,
    authorize_on_relay,
    echo_service,
    echo_through,
    make_node,
    start_relay,
)
from peerup.app.daemon import Daemon, client_for  # noqa: E402
from peerup.config import load  # noqa: E402

TARGET_MS = 1000.0
PEERUP = [sys.executable, "-m", "peerup"]


async def _api(daemon: Daemon, method: str, path: str, body: dict[str, Any]) -> Any:
    return await asyncio.to_thread(client_for(daemon.config).call, method, path, body)


async def bench_daemons(rounds: int) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="pb", dir="/tmp"))
    relay, relay_addr = await start_relay(base)
    home_cfg, home_id = make_node(base, "home", [str(relay_addr)])
    authorize_on_relay(relay, home_id)
    server, port = await echo_service()
    add_web(home_cfg, port)
    home = Daemon(load.load_node(home_cfg), watch_interval_s=0.5)
    await home.start()
    steps: dict[str, list[float]] = {
        "join": [],
        "proxy": [],
        "first_byte": [],
        "total": [],
    }
    paths = set()
    try:
        await asyncio.wait_for(home.node.relay_client.wait_reserved(relay_addr), 10)
        for i in range(rounds):
            lap_cfg, lap_id = make_node(base, f"lap{i}", [str(relay_addr)])
            authorize_on_relay(relay, lap_id)
            lap = Daemon(load.load_node(lap_cfg), watch_interval_s=0.5)
            await lap.start()
            try:
                issued = await _api(home, "POST", "/v1/invites", {"name": "home"})
                t0 = time.perf_counter()
                joined = await _api(lap, "POST", "/v1/join", {"code": issued["code"]})
                t1 = time.perf_counter()
                if not joined["is_paired"]:
                    raise RuntimeError(f"join failed: {joined}")
                proxy = await _api(
                    lap,
                    "POST",
                    "/v1/connect",
                    {"peer": "home", "service": "web", "port": 0},
                )
                t2 = time.perf_counter()
                local = int(proxy["listen"].rsplit(":", 1)[1])
                if await echo_through(local, b"x") != b"x":
                    raise RuntimeError("no echo")
                t3 = time.perf_counter()
                conn = lap.node.host.connection_to(home.peer_id)
                paths.add(
                    "relayed" if conn is not None and conn.is_relayed else "direct"
                )
            finally:
                await lap.aclose()
            steps["join"].append((t1 - t0) * 1000)
            steps["proxy"].append((t2 - t1) * 1000)
            steps["first_byte"].append((t3 - t2) * 1000)
            steps["total"].append((t3 - t0) * 1000)
    finally:
        await home.aclose()
        await relay.aclose()
        server.close()
    return {
        "steps_ms": {k: c.summarize(v) for k, v in steps.items()},
        "path": sorted(paths),
    }


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PEERUP, *(str(a) for a in args)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=c.ROOT,
    )


def bench_cli(rounds: int) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="pc", dir="/tmp"))
    samples: dict[str, list[float]] = {"join": [], "proxy_first_byte": [], "total": []}

    # The relay and home's daemon as processes, as on real machines.
    relay_dir = base / "relay"
    relay_port = _free_port()
    _check(_run("relay", "setup", "--dir", relay_dir, "--non-interactive",
                "--listen", f"/ip4/127.0.0.1/tcp/{relay_port}"))  # fmt: skip
    relay_cfg = relay_dir / "relay-server.yaml"
    info = json.loads(
        _check(_run("relay", "info", "--json", "--config", relay_cfg)).stdout
    )
    relay_addr = info["multiaddrs"][0]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(
            _start(["relay", "serve", "--config", str(relay_cfg)], base / "relay.log")
        )
        home_cfg, home_id = make_node(base, "home", [relay_addr])
        _check(_run("relay", "authorize", str(home_id), "home", "--config", relay_cfg))
        echo = subprocess.Popen(
            [sys.executable, "-c", _ECHO],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        procs.append(echo)
        assert echo.stdout is not None
        port = int(echo.stdout.readline())
        add_web(home_cfg, port)
        procs.append(_start(["daemon", "--config", str(home_cfg)], base / "home.log"))
        _wait_reserved(home_cfg)
        for i in range(rounds):
            lap_cfg, lap_id = make_node(base, f"lap{i}", [relay_addr])
            _check(_run("relay", "authorize", str(lap_id), "--config", relay_cfg))
            code = _check(
                _run(
                    "invite",
                    "--non-interactive",
                    "--name",
                    "home",
                    "--config",
                    home_cfg,
                )
            ).stdout.strip()
            t0 = time.perf_counter()
            _check(_run("join", code, "--non-interactive", "--config", lap_cfg))
            t1 = time.perf_counter()
            proxy = subprocess.Popen(
                [*PEERUP, "proxy", "home", "web", "0", "--config", str(lap_cfg)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                cwd=c.ROOT,
            )
            try:
                assert proxy.stdout is not None
                line = proxy.stdout.readline().decode()
                match = re.search(r"proxy 127\.0\.0\.1:(\d+)", line)
                if match is None:
                    raise RuntimeError(f"proxy said {line!r}")
                if asyncio.run(echo_through(int(match[1]), b"x")) != b"x":
                    raise RuntimeError("no echo")
                t2 = time.perf_counter()
            finally:
                proxy.terminate()
                proxy.wait(10)
            samples["join"].append((t1 - t0) * 1000)
            samples["proxy_first_byte"].append((t2 - t1) * 1000)
            samples["total"].append((t2 - t0) * 1000)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    return {"steps_ms": {k: c.summarize(v) for k, v in samples.items()}}


_ECHO = """
import socket, threading
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(64)
print(s.getsockname()[1], flush=True)
def serve(conn):
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)
while True:
    conn, _ = s.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [*PEERUP, *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            cwd=c.ROOT,
        )


def _check(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, done.args))}: {done.stderr.strip()}")
    return done


def _wait_reserved(config: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done = _run("status", "--json", "--config", config)
        if done.returncode == 0:
            live = json.loads(done.stdout).get("daemon")
            if live and live["relays"] and all(r["reserved"] for r in live["relays"]):
                return
        time.sleep(0.2)  # polling a process we started, with a deadline
    raise RuntimeError("home's daemon did not reserve on the relay in time")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    # The CLI processes run as an installed peerup does, from bytecode caches (pip
    # writes them at install): a PYTHONDONTWRITEBYTECODE set around us would time
    # compiling every module on every start instead. One start fills the caches.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    _check(_run("version"))
    print(f"pairing, {rounds} rounds each", flush=True)
    daemons = asyncio.run(bench_daemons(rounds))
    cli = bench_cli(max(1, rounds // 2))
    startup = []
    for _ in range(max(3, rounds // 2)):
        t0 = time.perf_counter()
        _check(_run("version"))
        startup.append((time.perf_counter() - t0) * 1000)
    cli["process_start_ms"] = c.summarize(startup)
    doc = {
        "machine": c.machine_info(),
        "rounds": rounds,
        "target_ms": TARGET_MS,
        "daemon": daemons,
        "cli": cli,
    }
    rows = [
        ["daemons: join (API)", *_cols(daemons["steps_ms"]["join"])],
        ["daemons: proxy opened", *_cols(daemons["steps_ms"]["proxy"])],
        ["daemons: first echoed byte", *_cols(daemons["steps_ms"]["first_byte"])],
        ["daemons: code -> tunnel", *_cols(daemons["steps_ms"]["total"])],
        ["cli: `peerup join` process", *_cols(cli["steps_ms"]["join"])],
        ["cli: `peerup proxy` + byte", *_cols(cli["steps_ms"]["proxy_first_byte"])],
        ["cli: code -> tunnel", *_cols(cli["steps_ms"]["total"])],
        ["baseline: `peerup version` process", *_cols(cli["process_start_ms"])],
    ]
    print()
    print(c.table(["step (ms)", "median", "p90", "min", "max"], rows))
    print(
        f"\npath: {', '.join(daemons['path'])}; target: code -> tunnel < {TARGET_MS:.0f} ms"
    )
    for name, result in (("daemons", daemons), ("cli", cli)):
        total = result["steps_ms"]["total"]
        verdict = "met" if total["max"] < TARGET_MS else "NOT met"
        print(f"  {name}: {verdict} (median {total['median']:.0f} ms, "
              f"slowest {total['max']:.0f} ms)")  # fmt: skip
    print("  (the cli rows include two interpreter start-ups; the baseline row is one)")
    print(json.dumps(doc, indent=2))
    print(f"written to {c.write_result('pairing', doc)}")
    return 0


def _cols(s: dict[str, Any]) -> list[Any]:
    return [s["median"], s["p90"], s["min"], s["max"]]


if __name__ == "__main__":
    raise SystemExit(main())
