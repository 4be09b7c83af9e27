"""Tunnel benchmark (issue "tunnelbench"): ``peerup proxy`` against ``ssh -L`` / ``ssh -J``.

Four ways to reach the same local TCP services from a local forwarded port, measured
in one run by the same client driver:

- ``peerup direct``: ``peerup proxy /ip4/127.0.0.1/tcp/HOME/p2p/<home> SVC 0`` (laptop
  daemon → home daemon over TCP + Noise + yamux);
- ``peerup relayed``: ``peerup proxy <home peer ID> SVC 0`` through our relay
  (``peerup relay serve``): laptop → relay → home, circuit v2;
- ``ssh -L``: one sshd, ``ssh -N -L port:127.0.0.1:SVC``;
- ``ssh -J``: two sshd, ``ssh -N -J <sshd a> -L …`` to sshd b.

Everything is set up with the real CLI in separate processes (relay setup/authorize/
serve, init, auth add, service add, daemon, proxy); ssh uses the throwaway sshd pair of
``relay.py`` (root needed; default ciphers, ControlMaster off). One service process
(``tunnel.py --serve``, asyncio protocols) serves echo, sink (counts bytes up to EOF,
answers the count) and source (answers ``N\\n`` with N bytes) for all four setups.

All four setups are started first and stay up. Then, one setup at a time (the others
idle): upload N bytes to sink and download N bytes from source (median of
``--repeats``, timed from connect to the last byte / the count), ``--connects`` new
connections back to back (connect, send 1 byte, read it back, close), 1-byte RTT on
one open connection (``--rtts``), and ``--conc`` concurrent connections each echoing
``--conc-bytes`` byte-exact (failures counted). CPU seconds of the path's processes
(peerup daemons + relay, or ssh + sshd trees) are read from /proc around each bulk
transfer. Last, ``--connects`` rounds of new connections interleaved across the
setups (one per setup per round, shuffled): the connect-to-first-echo targets use
these, since every setup then sees the same minutes of a drifting machine and none
runs alone with warm caches. Peer-up's direct and relayed setups use two laptop
daemons, so that both are up at once.

Usage: python benchmarks/tunnel.py [--bytes N] [--repeats R] [--quick] [--profile]
Writes benchmarks/results/tunnel.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pstats
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as c
from relay import SshPair, free_port

TARGET_CONNECT_RATIO = 1.5
CHUNK = 1024 * 1024
READY_S = 30.0
SERVICE_PREFIX = "bench-"
"""peer-up service names are ``bench-echo`` etc.: ``echo`` is a reserved name."""


# --- the service process (``tunnel.py --serve``) ---------------------------------------


class _Echo(asyncio.Protocol):
    """Echo until EOF, then close (pending writes are flushed first)."""

    def connection_made(self, transport: Any) -> None:
        self.t = transport
        transport.set_write_buffer_limits(high=4 * CHUNK)

    def data_received(self, data: bytes) -> None:
        self.t.write(data)

    def pause_writing(self) -> None:
        self.t.pause_reading()

    def resume_writing(self) -> None:
        self.t.resume_reading()

    def eof_received(self) -> bool:
        self.t.close()
        return True


class _Sink(asyncio.Protocol):
    """Count bytes until EOF, answer the count and a newline, close."""

    def connection_made(self, transport: Any) -> None:
        self.t = transport
        self.n = 0

    def data_received(self, data: bytes) -> None:
        self.n += len(data)

    def eof_received(self) -> bool:
        self.t.write(b"%d\n" % self.n)
        self.t.close()
        return True


_SOURCE_DATA = memoryview(os.urandom(CHUNK))


class _Source(asyncio.Protocol):
    """Read ``N\\n``, send N bytes (flow-controlled by pause/resume_writing), close."""

    def connection_made(self, transport: Any) -> None:
        self.t = transport
        transport.set_write_buffer_limits(high=4 * CHUNK)
        self.req = b""
        self.left = -1
        self.paused = False

    def data_received(self, data: bytes) -> None:
        if self.left >= 0:
            return
        self.req += data
        if b"\n" in self.req:
            self.left = int(self.req.split(b"\n", 1)[0])
            self._pump()
        elif len(self.req) > 32:
            self.t.abort()

    def _pump(self) -> None:
        while self.left > 0 and not self.paused:
            n = min(self.left, CHUNK)
            self.left -= n
            self.t.write(_SOURCE_DATA[:n])
        if self.left == 0:
            self.left = -2
            self.t.close()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._pump()

    def eof_received(self) -> bool:
        if self.left == -1:
            self.t.close()
        return True


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    servers = {
        name: await loop.create_server(proto, "127.0.0.1", 0, backlog=1024)
        for name, proto in (("echo", _Echo), ("sink", _Sink), ("source", _Source))
    }
    ports = {n: s.sockets[0].getsockname()[1] for n, s in servers.items()}
    print(json.dumps(ports), flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for s in servers.values():
        s.close()


# --- the client driver (same code for every setup) ---------------------------------------


def _connect(port: int, timeout_s: float) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _read_line(s: socket.socket) -> bytes:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(64)
        if not chunk:
            break
        buf += chunk
    return buf


def upload(port: int, n: int, timeout_s: float) -> float:
    """Seconds from connect to the sink's byte count, for ``n`` bytes up."""
    data = memoryview(os.urandom(CHUNK))
    t0 = time.perf_counter()
    with _connect(port, timeout_s) as s:
        left = n
        while left > 0:
            k = min(left, CHUNK)
            s.sendall(data[:k])
            left -= k
        s.shutdown(socket.SHUT_WR)
        answer = _read_line(s)
    elapsed = time.perf_counter() - t0
    if answer.strip() != str(n).encode():
        raise RuntimeError(f"sink counted {answer!r}, sent {n}")
    return elapsed


def download(port: int, n: int, timeout_s: float) -> float:
    """Seconds from connect to the source's EOF, for ``n`` bytes down."""
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    got = 0
    t0 = time.perf_counter()
    with _connect(port, timeout_s) as s:
        s.sendall(b"%d\n" % n)
        while True:
            k = s.recv_into(view)
            if not k:
                break
            got += k
            if got > n:
                raise RuntimeError(f"source sent more than {n} bytes")
    elapsed = time.perf_counter() - t0
    if got != n:
        raise RuntimeError(f"source sent {got} bytes, expected {n}")
    return elapsed


def connect_loop(
    port: int, count: int, warmup: int, timeout_s: float
) -> dict[str, Any]:
    """``count`` × (connect, send 1 byte, read it back, close); ms to the echo."""
    return interleaved_connects({"": port}, count, timeout_s, warmup)[""]


def rtt_loop(port: int, count: int, timeout_s: float) -> dict[str, Any]:
    """1-byte round trips on one open connection, ms."""
    samples = []
    with _connect(port, timeout_s) as s:
        for _ in range(10):
            s.sendall(b"r")
            s.recv(1)
        for _ in range(count):
            t0 = time.perf_counter()
            s.sendall(b"r")
            got = s.recv(1)
            samples.append((time.perf_counter() - t0) * 1000)
            if got != b"r":
                raise RuntimeError(f"echo returned {got!r}")
    return c.summarize(samples)


async def _concurrent_one(port: int, i: int, size: int, timeout_s: float) -> float:
    data = random.Random(i).randbytes(size)
    t0 = time.perf_counter()
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:

            async def send() -> None:
                writer.write(data)
                await writer.drain()
                writer.write_eof()

            sender = asyncio.create_task(send())
            got = await reader.read()
            await sender
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    if got != data:
        raise RuntimeError(f"echo mismatch: {len(got)} of {size} bytes, or corrupted")
    return (time.perf_counter() - t0) * 1000


async def concurrent(
    port: int, conns: int, size: int, timeout_s: float
) -> dict[str, Any]:
    """``conns`` connections at once, each echoing ``size`` bytes; failures counted."""
    t0 = time.perf_counter()
    results = await asyncio.gather(
        *(_concurrent_one(port, i, size, timeout_s) for i in range(conns)),
        return_exceptions=True,
    )
    elapsed = time.perf_counter() - t0
    ok = [r for r in results if isinstance(r, float)]
    errors = [f"{type(r).__name__}: {r}" for r in results if not isinstance(r, float)]
    return {
        "connections": conns,
        "bytes_each": size,
        "failures": len(errors),
        "first_errors": errors[:3],
        "seconds": round(elapsed, 3),
        "mb_per_s_each_way": round(conns * size / elapsed / 1e6, 2),
        "per_conn_ms": c.summarize(ok),
    }


# --- process bookkeeping -------------------------------------------------------------


def tree_cpu_s(roots: list[int]) -> float:
    """utime+stime (s) of ``roots`` and all their live descendants, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    cpu: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parent[int(entry)] = int(fields[1])
        cpu[int(entry)] = int(fields[11]) + int(fields[12])
    total = 0
    want = set(roots)
    for pid in cpu:
        p = pid
        while p > 1:
            if p in want:
                total += cpu[pid]
                break
            p = parent.get(p, 0)
    return total / tick


class Procs:
    """Every background process this run started; stopped in reverse order."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=c.log_file(f"tunnel-{name}"),
            cwd=c.ROOT,
            env=self.env,
            start_new_session=True,
        )
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        # The session's other members (e.g. ssh -J's ProxyJump child) go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.stdout is not None:
            proc.stdout.close()
        self.procs = [(n, p) for n, p in self.procs if p is not proc]

    def close(self) -> None:
        for _, proc in reversed(list(self.procs)):
            self.stop(proc)


def wait_line(
    proc: subprocess.Popen[bytes], pattern: str, timeout_s: float
) -> re.Match[str]:
    """The first stdout line of ``proc`` matching ``pattern`` (regex)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    fd = proc.stdout.fileno()
    line = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{proc.args!r}: no line matching {pattern!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        ch = os.read(fd, 1)
        if not ch:
            raise RuntimeError(f"{proc.args!r} exited (rc={proc.poll()})")
        if ch != b"\n":
            line += ch
            continue
        m = re.search(pattern, line.decode(errors="replace"))
        if m:
            return m
        line = b""


def wait_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.1)


# --- peer-up setup through the CLI ------------------------------------------------------


class PeerupWorld:
    """Relay, home and two laptops set up and run with the real CLI: one laptop
    reaches home directly, the other through the relay, so that both setups can be
    alive at once (their new connections are sampled interleaved)."""

    LAPTOPS = ("laptop", "laptop-relayed")

    def __init__(
        self,
        workdir: Path,
        procs: Procs,
        services: dict[str, int],
        args: argparse.Namespace,
    ) -> None:
        self.procs = procs
        self.args = args
        self.profiles: dict[str, list[Path]] = {}
        self.dir = workdir
        self.prof_dir = c.RESULTS_DIR / "profiles"
        d = self.dir
        self.relay_port, self.home_port = free_port(), free_port()
        self.cli(
            "relay",
            "setup",
            "--dir",
            str(d / "relay"),
            "--non-interactive",
            "--listen",
            f"/ip4/127.0.0.1/tcp/{self.relay_port}",
        )
        self.relay_cfg = str(d / "relay" / "relay-server.yaml")
        info = json.loads(
            self.cli("relay", "info", "--config", self.relay_cfg, "--json")
        )
        self.relay_addr = info["multiaddrs"][0]
        self.ids: dict[str, str] = {}
        self.cfgs: dict[str, str] = {}
        for name in ("home", *self.LAPTOPS):
            port = self.home_port if name == "home" else free_port()
            out = self.cli(
                "init",
                "--dir",
                str(d / name),
                "--non-interactive",
                "--json",
                "--relay",
                self.relay_addr,
                "--listen",
                f"/ip4/127.0.0.1/tcp/{port}",
            )
            self.ids[name] = json.loads(out)["peer_id"]
            self.cfgs[name] = str(d / name / "config.yaml")
            self.cli(
                "relay", "authorize", self.ids[name], name, "--config", self.relay_cfg
            )
        self.home_id = self.ids["home"]
        self.home_cfg = self.cfgs["home"]
        for laptop in self.LAPTOPS:
            self.cli(
                "auth",
                "add",
                self.ids[laptop],
                "--comment",
                laptop,
                "--config",
                self.home_cfg,
            )
            self.cli(
                "auth",
                "add",
                self.home_id,
                "--comment",
                "home",
                "--config",
                self.cfgs[laptop],
            )
        for svc, port in services.items():
            self.cli(
                "service",
                "add",
                SERVICE_PREFIX + svc,
                f"127.0.0.1:{port}",
                "--config",
                self.home_cfg,
            )
        # The relayed laptop stands for one behind CGNAT: it listens nowhere and
        # keeps its connections on the relay (no upgrade to direct, no hole punch),
        # so that this setup measures the relayed path.
        relayed_cfg = Path(self.cfgs["laptop-relayed"])
        text = re.sub(r"(?m)^listen:\n(  - .*\n)+", "listen: []\n", relayed_cfg.read_text())
        relayed_cfg.write_text(text + "direct_connections: false\n")
        assert "listen: []" in relayed_cfg.read_text(), "init's listen: changed"
        self.direct_addr = f"/ip4/127.0.0.1/tcp/{self.home_port}/p2p/{self.home_id}"
        self.relay = self.start_py(
            "relay", ["relay", "serve", "--config", self.relay_cfg]
        )
        wait_line(self.relay, r"^Access:", READY_S)
        self.home = self.start_py("home", ["daemon", "--config", self.home_cfg])
        self.laptops: dict[str, subprocess.Popen[bytes]] = {}
        for laptop in self.LAPTOPS:
            self.laptops[laptop] = self.start_py(
                laptop, ["daemon", "--config", self.cfgs[laptop]]
            )
        for name in ("home", *self.LAPTOPS):
            self.wait_reserved(self.cfgs[name])

    def cli(self, *argv: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "peerup", *argv],
            capture_output=True,
            cwd=c.ROOT,
            env=self.procs.env,
            timeout=60,
        )
        if out.returncode != 0:
            raise RuntimeError(f"peerup {' '.join(argv)}: {out.stderr.decode()[-400:]}")
        return out.stdout.decode()

    def start_py(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        prefix = [sys.executable]
        if self.args.profile and name in ("relay", "home", *self.LAPTOPS):
            self.prof_dir.mkdir(parents=True, exist_ok=True)
            out = self.prof_dir / f"{name}-{time.strftime('%H%M%S')}.prof"
            prefix += ["-m", "cProfile", "-o", str(out)]
            self.profiles.setdefault(name, []).append(out)
        return self.procs.start(name, [*prefix, "-m", "peerup", *argv])

    def status(self, cfg: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.cli("status", "--json", "--config", cfg))
        return doc

    def wait_reserved(self, cfg: str) -> None:
        deadline = time.monotonic() + READY_S
        while True:
            with contextlib.suppress(RuntimeError, ValueError):
                live = self.status(cfg).get("daemon")
                if (
                    live
                    and live["relays"]
                    and all(r["reserved"] for r in live["relays"])
                ):
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"daemon of {cfg} not reserved on the relay in {READY_S}s"
                )
            time.sleep(0.2)

    @staticmethod
    def laptop_of(relayed: bool) -> str:
        return "laptop-relayed" if relayed else "laptop"

    def start_proxies(self, relayed: bool, services: list[str]) -> dict[str, int]:
        """``peerup proxy`` on the setup's laptop, one per service: through the relay
        (home's peer ID: the laptop knows no address of home, so the relay carries
        it) or direct (home's multiaddr)."""
        laptop = self.laptop_of(relayed)
        target = self.home_id if relayed else self.direct_addr
        ports = {}
        for svc in services:
            proc = self.procs.start(
                f"proxy-{laptop}-{svc}",
                [
                    sys.executable,
                    "-m",
                    "peerup",
                    "proxy",
                    target,
                    SERVICE_PREFIX + svc,
                    "0",
                    "--config",
                    self.cfgs[laptop],
                ],
            )
            m = wait_line(proc, r"^proxy [\d.]+:(\d+) ->", READY_S)
            ports[svc] = int(m.group(1))
        return ports

    def stop_proxies(self) -> None:
        for name, proc in list(self.procs.procs):
            if name.startswith("proxy-"):
                self.procs.stop(proc)

    def paths_to_home(self, relayed: bool) -> list[str]:
        live = self.status(self.cfgs[self.laptop_of(relayed)]).get("daemon") or {}
        return [
            p["path"] for p in live.get("peers", []) if p["peer_id"] == self.home_id
        ]

    def pids(self, relayed: bool) -> list[int]:
        laptop = self.laptops[self.laptop_of(relayed)]
        return [self.relay.pid, self.home.pid, laptop.pid]


# --- one setup ----------------------------------------------------------------------------


def measure(
    name: str, ports: dict[str, int], pids: list[int], args: argparse.Namespace
) -> dict[str, Any]:
    print(f"{name}: ports {ports}", flush=True)
    out: dict[str, Any] = {}
    t = args.timeout
    for direction, fn, port in (
        ("upload", upload, ports["sink"]),
        ("download", download, ports["source"]),
    ):
        walls, cpus = [], []
        for _ in range(args.repeats):
            cpu0 = tree_cpu_s(pids)
            walls.append(fn(port, args.bytes, t))
            cpus.append(tree_cpu_s(pids) - cpu0)
        wall = sorted(walls)[len(walls) // 2]
        out[f"{direction}_mb_per_s"] = round(args.bytes / wall / 1e6, 2)
        out[f"{direction}_walls_s"] = [round(w, 3) for w in walls]
        out[f"{direction}_path_cpu_s"] = round(sorted(cpus)[len(cpus) // 2], 2)
        print(
            f"  {direction}: {out[f'{direction}_mb_per_s']} MB/s {out[f'{direction}_walls_s']} "
            f"(path CPU {out[f'{direction}_path_cpu_s']} s)",
            flush=True,
        )
    out["connect_echo_back_to_back"] = connect_loop(ports["echo"], args.connects, 5, t)
    print(
        f"  connect+echo, back to back: {out['connect_echo_back_to_back']['ms']}",
        flush=True,
    )
    out["rtt_ms"] = rtt_loop(ports["echo"], args.rtts, t)
    print(f"  rtt: {out['rtt_ms']}", flush=True)
    out["concurrent"] = asyncio.run(
        concurrent(ports["echo"], args.conc, args.conc_bytes, t)
    )
    print(f"  concurrent: {json.dumps(out['concurrent'])}", flush=True)
    return out


def first_echo(port: int, timeout_s: float) -> None:
    with _connect(port, timeout_s) as s:
        s.sendall(b"x")
        if s.recv(1) != b"x":
            raise RuntimeError("first echo failed")


def start_peerup(
    world: PeerupWorld, relayed: bool, args: argparse.Namespace
) -> dict[str, Any]:
    """Proxies on the setup's laptop; the first connection dials home (through the
    relay when relayed)."""
    t0 = time.perf_counter()
    ports = world.start_proxies(relayed, ["echo", "sink", "source"])
    first_echo(ports["echo"], args.timeout)
    first_ms = (time.perf_counter() - t0) * 1000
    return {"ports": ports, "pids": world.pids(relayed), "first_ms": first_ms}


def start_ssh(
    ssh: SshPair,
    procs: Procs,
    services: dict[str, int],
    jump: bool,
    args: argparse.Namespace,
) -> dict[str, Any]:
    name = "ssh -J" if jump else "ssh -L"
    ports = {svc: free_port() for svc in services}
    cmd = ["ssh", "-F", f"{ssh.dir}/ssh_config", "-N", "-o", "ExitOnForwardFailure=yes"]
    if jump:
        cmd += ["-J", f"127.0.0.1:{ssh.ports['a']}"]
    for svc, port in ports.items():
        cmd += ["-L", f"127.0.0.1:{port}:127.0.0.1:{services[svc]}"]
    cmd += ["-p", str(ssh.ports["b"]), "127.0.0.1"]
    t0 = time.perf_counter()
    proc = procs.start(name.replace(" ", ""), cmd)
    for port in ports.values():
        wait_port(port, READY_S)
    first_echo(ports["echo"], args.timeout)
    first_ms = (time.perf_counter() - t0) * 1000
    sshd = [p.pid for p in ssh.procs] if jump else [ssh.procs[1].pid]
    return {"ports": ports, "pids": [proc.pid, *sshd], "first_ms": first_ms}


def interleaved_connects(
    ports: dict[str, int], count: int, timeout_s: float, warmup: int = 5
) -> dict[str, dict[str, Any]]:
    """``count`` rounds; each round makes one new connection (connect, 1 byte echoed,
    close) through every setup, in a shuffled order. All setups see the same minutes
    of the machine (a shared VM drifts by 1.5x within minutes), and none has its
    processes alone and cache-warm between its own connections."""
    samples: dict[str, list[float]] = {name: [] for name in ports}
    errors: dict[str, list[str]] = {name: [] for name in ports}
    order = list(ports)
    rng = random.Random(0)
    for i in range(warmup + count):
        rng.shuffle(order)
        for name in order:
            try:
                t0 = time.perf_counter()
                with _connect(ports[name], timeout_s) as s:
                    s.sendall(b"x")
                    got = s.recv(1)
                    t1 = time.perf_counter()
                if got != b"x":
                    raise RuntimeError(f"echo returned {got!r}")
            except (OSError, RuntimeError) as exc:
                errors[name].append(f"{type(exc).__name__}: {exc}")
                continue
            if i >= warmup:
                samples[name].append((t1 - t0) * 1000)
    return {
        name: {
            "ms": c.summarize(samples[name]),
            "errors": len(errors[name]),
            "first_errors": errors[name][:3],
        }
        for name in ports
    }


# --- profiles -------------------------------------------------------------------------------


def summarize_profiles(
    profiles: dict[str, list[Path]], top: int
) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, files in profiles.items():
        existing = [str(f) for f in files if f.exists()]
        if not existing:
            continue
        st = pstats.Stats(*existing)
        rows = []
        for func, (_, ncalls, tt, ct, _) in sorted(
            st.stats.items(),
            key=lambda kv: kv[1][2],
            reverse=True,  # type: ignore[attr-defined]
        )[:top]:
            fn = f"{Path(func[0]).name}:{func[1]}({func[2]})"
            rows.append(f"tottime {tt:7.2f}s cum {ct:7.2f}s calls {ncalls:>9} {fn}")
        out[name] = rows
    return out


# --- main -------------------------------------------------------------------------------------


def targets_of(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for ours, base in (("peerup direct", "ssh -L"), ("peerup relayed", "ssh -J")):
        a, b = results.get(ours), results.get(base)
        if not a or not b or "error" in a or "error" in b:
            continue
        am, bm = a["connect_echo"]["ms"]["median"], b["connect_echo"]["ms"]["median"]
        out.append(
            {
                "target": (
                    f"{ours}: connect-to-first-echo median (interleaved) "
                    f"<= {TARGET_CONNECT_RATIO}x {base}"
                ),
                "value": f"{am:.3f} ms vs {bm:.3f} ms ({am / bm:.2f}x)",
                "pass": am <= TARGET_CONNECT_RATIO * bm,
            }
        )
        for d in ("upload", "download"):
            av, bv = a[f"{d}_mb_per_s"], b[f"{d}_mb_per_s"]
            out.append(
                {
                    "target": f"{ours}: {d} MB/s >= {base}",
                    "value": f"{av} vs {bv} MB/s ({av / bv:.2f}x)",
                    "pass": av >= bv,
                }
            )
        out.append(
            {
                "target": f"{ours}: {a['concurrent']['connections']} concurrent echoes, 0 failures",
                "value": a["concurrent"]["failures"],
                "pass": a["concurrent"]["failures"] == 0 and not a.get("path_error"),
            }
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bytes", type=int, default=200_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connects", type=int, default=200)
    parser.add_argument("--rtts", type=int, default=1000)
    parser.add_argument("--conc", type=int, default=100)
    parser.add_argument("--conc-bytes", type=int, default=256 * 1024)
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="per socket operation / connection"
    )
    parser.add_argument(
        "--setups", default="ssh -L,peerup direct,ssh -J,peerup relayed"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run relay and daemons under cProfile; print their top functions",
    )
    parser.add_argument(
        "--quick", action="store_true", help="20 MB, 1 repeat, 50 connects, 200 rtts"
    )
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve())
        return 0
    if args.quick:
        args.bytes, args.repeats, args.connects, args.rtts = 20_000_000, 1, 50, 200

    setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    started = time.perf_counter()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs = Procs(env)
    results: dict[str, Any] = {}
    skipped: list[str] = []
    world: PeerupWorld | None = None
    ssh: SshPair | None = None
    workdir = Path(tempfile.mkdtemp(prefix="peerup-bench-tunnel-"))
    profiles: dict[str, list[str]] = {}
    try:
        svc_proc = procs.start(
            "services", [sys.executable, str(Path(__file__).resolve()), "--serve"]
        )
        services: dict[str, int] = c.read_json_line(svc_proc, READY_S)
        if any(s.startswith("ssh") for s in setups):
            if os.geteuid() == 0 and os.access("/usr/sbin/sshd", os.X_OK):
                ssh = SshPair()
            else:
                skipped.append("ssh: needs root and /usr/sbin/sshd")
        if any(s.startswith("peerup") for s in setups):
            world = PeerupWorld(workdir, procs, services, args)
        errors = (RuntimeError, TimeoutError, OSError, subprocess.SubprocessError)
        up: dict[str, dict[str, Any]] = {}
        for setup in setups:
            try:
                if setup.startswith("ssh") and ssh is not None:
                    up[setup] = start_ssh(ssh, procs, services, setup == "ssh -J", args)
                elif setup.startswith("peerup") and world is not None:
                    up[setup] = start_peerup(world, setup == "peerup relayed", args)
            except errors as exc:
                results[setup] = {"error": f"{type(exc).__name__}: {exc}"}
                print(f"  {setup} failed to start: {exc}", flush=True)
        # One setup at a time (the others idle): throughput, back-to-back connects,
        # RTT, concurrency.
        for setup, st in list(up.items()):
            try:
                out = measure(setup, st["ports"], st["pids"], args)
            except errors as exc:
                results[setup] = {"error": f"{type(exc).__name__}: {exc}"}
                print(f"  {setup} failed: {exc}", flush=True)
                del up[setup]
                continue
            out["first_connection_ms_incl_proxy_start"] = round(st["first_ms"], 1)
            if setup.startswith("peerup") and world is not None:
                relayed = setup == "peerup relayed"
                out["paths_seen"] = world.paths_to_home(relayed)
                want = "relayed" if relayed else "direct"
                if out["paths_seen"] != [want]:
                    out["path_error"] = (
                        f"expected one {want} connection to home, "
                        f"saw {out['paths_seen']}"
                    )
            results[setup] = out
        # New connections, all setups interleaved: the connect-to-first-echo targets.
        if up:
            print(f"interleaved connects: {', '.join(up)}", flush=True)
            inter = interleaved_connects(
                {name: st["ports"]["echo"] for name, st in up.items()},
                args.connects,
                args.timeout,
            )
            for name, r in inter.items():
                results[name]["connect_echo"] = r
                print(f"  {name}: {r['ms']}", flush=True)
    finally:
        procs.close()
        if ssh is not None:
            ssh.close()
        shutil.rmtree(workdir, ignore_errors=True)
        if world is not None and args.profile:
            profiles = summarize_profiles(world.profiles, 25)

    targets = targets_of(results)
    doc = {
        "benchmark": "tunnel",
        "machine": c.machine_info(),
        "params": {
            k: getattr(args, k)
            for k in ("bytes", "repeats", "connects", "rtts", "conc", "conc_bytes")
        },
        "results": results,
        "targets": targets,
        "skipped": skipped,
        "profiles": profiles,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    path = c.write_result("tunnel", doc)

    print()
    print(
        f"tunnel: {args.bytes / 1e6:g} MB up/down (median of {args.repeats}), "
        f"{args.connects} connects, {args.rtts} RTTs, {args.conc} x "
        f"{args.conc_bytes // 1024} KiB concurrent echoes; same client and services for all"
    )
    rows = []
    for name, r in results.items():
        if "error" in r:
            rows.append([name] + [None] * 12 + [r["error"][:50]])
            continue
        ce, conc = r["connect_echo"], r["concurrent"]
        b2b = r["connect_echo_back_to_back"]
        rows.append(
            [
                name,
                r["upload_mb_per_s"],
                r["download_mb_per_s"],
                r["upload_path_cpu_s"],
                r["download_path_cpu_s"],
                ce["ms"]["median"],
                ce["ms"]["p90"],
                b2b["ms"]["median"],
                r["rtt_ms"]["median"],
                r["rtt_ms"]["p90"],
                conc["mb_per_s_each_way"],
                conc["per_conn_ms"]["p90"],
                f"{conc['failures']}/{conc['connections']}",
                r.get("path_error") or ",".join(r.get("paths_seen", [])) or "-",
            ]
        )
    print(
        c.table(
            [
                "setup",
                "up MB/s",
                "down MB/s",
                "up CPU s",
                "down CPU s",
                "conn+echo ms",
                "p90",
                "b2b ms",
                "rtt ms",
                "p90",
                "100-conc MB/s",
                "conc p90 ms",
                "conc fail",
                "path",
            ],
            rows,
        )
    )
    print()
    print(
        "CPU s = CPU seconds of the path's processes (peerup: relay + both daemons; "
        "ssh: client + sshd trees) during one bulk transfer (median)"
    )
    print(
        "conn+echo = new connection to the first echoed byte, median and p90, setups "
        "interleaved; b2b = the same, each setup's connections back to back"
    )
    for t in targets:
        print(f"  [{'PASS' if t['pass'] else 'FAIL'}] {t['target']}: {t['value']}")
    for s in skipped:
        print(f"  skipped: {s}")
    for name, rows_ in profiles.items():
        print(f"\nprofile {name} (top by own time):")
        for row in rows_:
            print("  " + row)
    print()
    print(json.dumps(doc, indent=1))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
