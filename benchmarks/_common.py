"""Shared helpers for the benchmark scripts: peer processes, statistics, tables, results.

The peers are the interop test peers of ``interop/CONTRACT.md`` (ours, go-libp2p,
js-libp2p), started as separate processes on loopback. Every process started here is
stopped by the helper that started it (SIGTERM, then SIGKILL after a grace period), and
every wait has a deadline, so a benchmark always ends by itself.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
LOG_DIR = RESULTS_DIR / "logs"

PEER_CMDS: dict[str, list[str]] = {
    "ours": [sys.executable, "-m", "peerup.interop"],
    "go": [str(ROOT / "interop/go/bin/peer")],
    "js": ["node", str(ROOT / "interop/js/peer.mjs")],
}


def peer_available(impl: str) -> bool:
    """Whether the test peer of ``impl`` is built on this machine."""
    if impl == "ours":
        return True
    if impl == "go":
        return os.access(ROOT / "interop/go/bin/peer", os.X_OK)
    if impl == "js":
        return (
            shutil.which("node") is not None
            and (ROOT / "interop/js/node_modules").is_dir()
        )
    return False


def log_file(name: str) -> Any:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    return open(LOG_DIR / f"{name}.log", "ab")


def read_json_line(proc: subprocess.Popen[bytes], timeout_s: float) -> dict[str, Any]:
    """The next NDJSON line of ``proc``'s stdout, waiting at most ``timeout_s``."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    buf = b""
    fd = proc.stdout.fileno()
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no output line from {proc.args!r} within {timeout_s}s")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 1)  # byte by byte: never swallow a later line
        if not chunk:
            raise RuntimeError(f"{proc.args!r} exited (rc={proc.poll()}) before a line")
        buf += chunk
    doc: dict[str, Any] = json.loads(buf)
    return doc


class PeerProcess:
    """A background peer process (listen or relay role) that printed its ready line."""

    def __init__(
        self, cmd: Sequence[str], name: str, ready_timeout_s: float = 30.0
    ) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log_file(name),
            cwd=ROOT,
        )
        try:
            self.ready = read_json_line(self.proc, ready_timeout_s)
        except BaseException:
            self.stop()
            raise
        self.multiaddr: str = self.ready.get("multiaddr", "")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> PeerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_peer(
    impl: str, role: str, *args: str, name: str | None = None
) -> PeerProcess:
    return PeerProcess([*PEER_CMDS[impl], role, *args], name or f"{impl}-{role}")


def run_dial(
    impl: str, target: str, steps: str, timeout_s: float = 300.0
) -> dict[str, Any]:
    """Run one ``dial`` process; its result line (``ok`` false with ``error`` on failure)."""
    cmd = [*PEER_CMDS[impl], "dial", target, "--steps", steps]
    with log_file(f"{impl}-dial") as err:
        try:
            out = subprocess.run(
                cmd, stdout=subprocess.PIPE, stderr=err, cwd=ROOT, timeout=timeout_s
            )
        except subprocess.TimeoutExpired:
            return {
                "ok": False,
                "error": f"dial timed out after {timeout_s}s",
                "steps": {},
            }
    for line in out.stdout.decode(errors="replace").splitlines():
        try:
            doc: dict[str, Any] = json.loads(line)
        except ValueError:
            continue
        if doc.get("event") == "result":
            return doc
    return {"ok": False, "error": f"no result line (rc={out.returncode})", "steps": {}}


# --- statistics ----------------------------------------------------------------------


def summarize(samples: Iterable[float]) -> dict[str, Any]:
    """median / p90 / min / max of ``samples`` (already in the unit to report)."""
    xs = sorted(samples)
    if not xs:
        return {"median": None, "p90": None, "min": None, "max": None, "samples": 0}
    return {
        "median": round(statistics.median(xs), 3),
        "p90": round(xs[min(len(xs) - 1, int(len(xs) * 0.9))], 3),
        "min": round(xs[0], 3),
        "max": round(xs[-1], 3),
        "samples": len(xs),
    }


def median_or_none(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return round(statistics.median(vals), 3) if vals else None


def step_field(results: list[dict[str, Any]], step: str, *path: str) -> list[float]:
    """``results[i]["steps"][step][path...]`` for every successful run that has it."""
    out = []
    for res in results:
        node: Any = res.get("steps", {}).get(step)
        if not node or not node.get("ok"):
            continue
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, (int, float)):
            out.append(float(node))
    return out


# --- output --------------------------------------------------------------------------


def fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.3f}" if abs(x) < 10 else f"{x:.1f}"
    return str(x)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_result(name: str, doc: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        info["git"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    # Compiled or the Python sources (the daemons this process starts inherit its
    # environment, PEERUP_PURE included).
    from peerup import native

    info["data_path"] = native.status().reason
    return info


def rss_kb(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (VmRSS from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


# --- in-process connection loops (run inside the benchmark process) --------------------

ECHO = "/echo/1.0.0"


async def libp2p_connect_loop(
    target: str,
    count: int,
    *,
    warmup: int = 5,
    relayed: bool = False,
    timeout_s: float = 10.0,
) -> dict[str, Any]:
    """Dial ``target`` ``count`` times in a row, each time from a fresh peerup Host.

    A fresh host (new identity, no cached connection) makes every dial a new TCP
    connection + Noise XX + yamux (through a relay: a new connection to the relay, HOP
    CONNECT, then Noise + yamux over the circuit). Returns summaries in ms of
    ``connect`` (dial start -> muxer ready) and ``first_echo`` (dial start -> 1 byte
    echoed on a new /echo stream).
    """
    import asyncio

    from peerup.core.keys import Ed25519PrivateKey
    from peerup.core.multiaddr import Multiaddr
    from peerup.net.host import Host
    from peerup.net.relay_client import RelayClient

    ma = Multiaddr.parse(target)
    connect_ms: list[float] = []
    first_ms: list[float] = []
    errors: list[str] = []
    for i in range(warmup + count):
        host = Host(Ed25519PrivateKey.generate())
        if relayed:
            RelayClient(host)
        try:
            async with asyncio.timeout(timeout_s):
                t0 = time.perf_counter()
                conn = await host.connect(ma)
                t1 = time.perf_counter()
                stream = conn.open_stream([ECHO])
                await stream.write(b"x")
                got = await stream.read(1)
                t2 = time.perf_counter()
                if got != b"x":
                    raise RuntimeError(f"echo returned {got!r}")
                await stream.aclose()
        except Exception as exc:  # a benchmark loop records the failure and goes on
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        finally:
            await host.aclose()
        if i >= warmup:
            connect_ms.append((t1 - t0) * 1000)
            first_ms.append((t2 - t0) * 1000)
    return {
        "connect_ms": summarize(connect_ms),
        "first_echo_ms": summarize(first_ms),
        "errors": len(errors),
        "first_errors": errors[:3],
    }


async def relayed_redial_loop(
    target: str, count: int, *, warmup: int = 5, timeout_s: float = 10.0
) -> dict[str, Any]:
    """Like ``libp2p_connect_loop`` through a relay, but one host keeps its relay
    connection: each round closes the relayed connection and dials the circuit again,
    so only HOP CONNECT + STOP + Noise + yamux over the circuit are timed."""
    import asyncio

    from peerup.core.keys import Ed25519PrivateKey
    from peerup.core.multiaddr import Multiaddr
    from peerup.net.host import Host
    from peerup.net.relay_client import RelayClient

    ma = Multiaddr.parse(target)
    target_peer = ma.peer_id
    assert target_peer is not None
    connect_ms: list[float] = []
    first_ms: list[float] = []
    errors: list[str] = []
    async with Host(Ed25519PrivateKey.generate()) as host:
        RelayClient(host)
        for i in range(warmup + count):
            try:
                async with asyncio.timeout(timeout_s):
                    t0 = time.perf_counter()
                    conn = await host.connect(ma)
                    t1 = time.perf_counter()
                    if not conn.is_relayed:
                        raise RuntimeError("connection is not relayed")
                    stream = conn.open_stream([ECHO])
                    await stream.write(b"x")
                    got = await stream.read(1)
                    t2 = time.perf_counter()
                    if got != b"x":
                        raise RuntimeError(f"echo returned {got!r}")
                    await stream.aclose()
                    await conn.aclose()
                    if host.connection_to(target_peer) is not None:
                        raise RuntimeError("closed relayed connection is still in use")
            except Exception as exc:  # recorded, the loop goes on
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            if i >= warmup:
                connect_ms.append((t1 - t0) * 1000)
                first_ms.append((t2 - t0) * 1000)
    return {
        "connect_ms": summarize(connect_ms),
        "first_echo_ms": summarize(first_ms),
        "errors": len(errors),
        "first_errors": errors[:3],
    }


async def tcp_connect_loop(port: int, count: int, *, warmup: int = 5) -> dict[str, Any]:
    """Plain asyncio TCP connect (and connect + 1-byte echo) to a ``_plain.py`` server."""
    import asyncio

    connect_ms: list[float] = []
    first_ms: list[float] = []
    for i in range(warmup + count):
        async with asyncio.timeout(10):
            t0 = time.perf_counter()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            t1 = time.perf_counter()
            writer.write(b"Ex")
            got = await reader.read(1)
            t2 = time.perf_counter()
            writer.close()
            await writer.wait_closed()
        if got != b"x":
            raise RuntimeError(f"plain echo returned {got!r}")
        if i >= warmup:
            connect_ms.append((t1 - t0) * 1000)
            first_ms.append((t2 - t0) * 1000)
    return {
        "connect_ms": summarize(connect_ms),
        "first_echo_ms": summarize(first_ms),
        "errors": 0,
    }
