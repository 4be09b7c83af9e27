"""Relay benchmark (issue "relay"): circuit relay v2 on loopback, against ssh -J.

Setups ``relay:listener:dialer`` (default: ours:ours:ours, go:go:go, js:js:js and
go:ours:ours), each relay started with ``--unlimited``, the listener reserved on it,
the dialer dialing the listener's ``/p2p-circuit`` address:
- relayed throughput: ``sink:N``, ``source:N``, ``echo:N`` (median of repeated dials);
- relayed new-stream latency and open-stream RTT: ``latency:K``;
- cold relayed connect: ``connect_ms`` and ``first_byte_since_dial_ms`` of an
  ``echo:1`` step from fresh dial processes;
- in-process relayed connect (our dialer, any relay): this process dials the circuit
  many times, (a) from a fresh Host each time (new TCP + Noise to the relay, HOP
  CONNECT, Noise + yamux over the circuit) and (b) from one host that keeps its relay
  connection and redials only the circuit.
Baseline: ``ssh -J`` through one local sshd to a second one (default ciphers,
ControlMaster off): upload, download and echo of N bytes, and ``ssh -J … true``.

Relay memory per idle circuit: our relay, one listener reserved on it, and
``--circuit-procs`` x ``--circuit-hosts`` peerup hosts (``_circuit_holder.py``), each
first connected to the relay, then holding one idle circuit to the listener. The relay's
VmRSS is read before, after the relay connections, and after the circuits.

Usage: python benchmarks/relay.py [--bytes N] [--repeats R] [--quick] [--no-ssh]
Writes benchmarks/results/relay.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as c

DEFAULT_SETUPS = "ours:ours:ours,go:go:go,js:js:js,go:ours:ours"
TARGET_KB_PER_CIRCUIT = 30.0


# --- libp2p relays ---------------------------------------------------------------------


class RelaySetup:
    """A relay process and a listener reserved on it."""

    def __init__(self, relay: str, listener: str, relay_args: list[str]) -> None:
        self.relay = c.start_peer(relay, "relay", *relay_args, name=f"{relay}-relay")
        try:
            self.listener = c.start_peer(
                listener,
                "listen",
                "--relay",
                self.relay.multiaddr,
                name=f"{listener}-listen",
            )
        except BaseException:
            self.relay.stop()
            raise
        self.circuit = self.listener.multiaddr

    def __enter__(self) -> RelaySetup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.stop()
        self.relay.stop()


def bench_setup(
    relay: str, listener: str, dialer: str, args: argparse.Namespace
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with RelaySetup(relay, listener, ["--unlimited"]) as setup:
        if "/p2p-circuit" not in setup.circuit:
            raise RuntimeError(f"listener did not advertise a circuit: {setup.circuit}")
        steps = f"sink:{args.bytes},source:{args.bytes},echo:{args.bytes},latency:{args.latency_k}"
        runs = []
        for i in range(args.repeats):
            res = c.run_dial(dialer, setup.circuit, steps, timeout_s=args.dial_timeout)
            runs.append(res)
            print(
                f"  run {i + 1}/{args.repeats}: ok={res.get('ok')} relayed={res.get('relayed')}"
                f" {json.dumps(res.get('steps', {}))[:300]}",
                flush=True,
            )
        cold = [
            c.run_dial(dialer, setup.circuit, "echo:1", timeout_s=60)
            for _ in range(args.cold_connects)
        ]
        out = {
            "ok_runs": sum(1 for r in runs if r.get("ok") and r.get("relayed")),
            "runs": len(runs),
            "sink_mb_per_s": c.median_or_none(c.step_field(runs, "sink", "mb_per_s")),
            "source_mb_per_s": c.median_or_none(
                c.step_field(runs, "source", "mb_per_s")
            ),
            "echo_mb_per_s": c.median_or_none(c.step_field(runs, "echo", "mb_per_s")),
            "new_stream_echo_median_ms": c.median_or_none(
                c.step_field(runs, "latency", "new_stream_echo", "median_ms")
            ),
            "new_stream_echo_p90_ms": c.median_or_none(
                c.step_field(runs, "latency", "new_stream_echo", "p90_ms")
            ),
            "open_stream_rtt_median_ms": c.median_or_none(
                c.step_field(runs, "latency", "open_stream_rtt", "median_ms")
            ),
            "open_stream_rtt_p90_ms": c.median_or_none(
                c.step_field(runs, "latency", "open_stream_rtt", "p90_ms")
            ),
            "cold_connect_ms": c.summarize(
                float(r["connect_ms"])
                for r in cold
                if r.get("ok") and r.get("connect_ms")
            ),
            "cold_first_byte_ms": c.summarize(
                c.step_field(cold, "echo", "first_byte_since_dial_ms")
            ),
            "cold_failures": sum(1 for r in cold if not r.get("ok")),
            "errors": [
                r.get("error")
                or {k: v.get("error") for k, v in r["steps"].items() if not v.get("ok")}
                for r in runs
                if not r.get("ok")
            ],
            "raw_runs": runs,
        }
        if args.connects > 0:
            out["fresh_host"] = asyncio.run(
                c.libp2p_connect_loop(setup.circuit, args.connects, relayed=True)
            )
            out["kept_relay_conn"] = asyncio.run(
                c.relayed_redial_loop(setup.circuit, args.connects)
            )
    return out


# --- ssh -J baseline -------------------------------------------------------------------


SSHD_CONFIG = """\
Port {port}
ListenAddress 127.0.0.1
HostKey {dir}/host_{name}
AuthorizedKeysFile {dir}/authorized_keys
PidFile {dir}/sshd_{name}.pid
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
AllowTcpForwarding yes
LogLevel ERROR
MaxStartups 100:30:200
"""

SSH_CONFIG = """\
Host *
  User {user}
  IdentityFile {dir}/id
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  GlobalKnownHostsFile /dev/null
  LogLevel ERROR
  ControlMaster no
  ControlPath none
  BatchMode yes
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SshPair:
    """Two throwaway sshd on 127.0.0.1 and an ssh command that jumps through the first."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="peerup-bench-ssh-")
        self.procs: list[subprocess.Popen[bytes]] = []
        d = self.dir
        for name in ("a", "b"):
            subprocess.run(
                [
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-f",
                    f"{d}/host_{name}",
                ],
                check=True,
                timeout=30,
            )
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{d}/id"],
            check=True,
            timeout=30,
        )
        shutil.copy(f"{d}/id.pub", f"{d}/authorized_keys")
        Path("/run/sshd").mkdir(
            mode=0o755, exist_ok=True
        )  # sshd's privilege-separation dir
        self.ports = {}
        for name in ("a", "b"):
            port = free_port()
            self.ports[name] = port
            cfg = Path(d) / f"sshd_{name}.conf"
            cfg.write_text(SSHD_CONFIG.format(port=port, dir=d, name=name))
            self.procs.append(
                subprocess.Popen(
                    ["/usr/sbin/sshd", "-D", "-e", "-f", str(cfg)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=c.log_file(f"sshd-{name}"),
                )
            )
        user = os.environ.get("USER") or "root"
        (Path(d) / "ssh_config").write_text(SSH_CONFIG.format(dir=d, user=user))
        self.base = [
            "ssh",
            "-F",
            f"{d}/ssh_config",
            "-J",
            f"127.0.0.1:{self.ports['a']}",
            "-p",
            str(self.ports["b"]),
            "127.0.0.1",
        ]
        deadline = time.monotonic() + 15
        while True:
            if (
                subprocess.run(
                    [*self.base, "true"],
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=30,
                ).returncode
                == 0
            ):
                break
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError("ssh -J never worked; see results/logs/sshd-*.log")
            time.sleep(0.2)

    def command(self, remote: str) -> str:
        import shlex

        return " ".join(shlex.quote(x) for x in [*self.base, remote])

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SshPair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def timed_shell(cmd: str, timeout_s: float) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd], capture_output=True, timeout=timeout_s
    )
    elapsed = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{cmd!r} failed: {out.stderr.decode()[-300:]}")
    return elapsed, out.stdout.decode().strip()


def bench_ssh(args: argparse.Namespace) -> dict[str, Any]:
    n = args.bytes
    with SshPair() as ssh:
        cipher = subprocess.run(
            ["ssh", "-F", f"{ssh.dir}/ssh_config", "-G", "127.0.0.1"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        ciphers = next(
            (
                ln.split(" ", 1)[1]
                for ln in cipher.splitlines()
                if ln.startswith("ciphers ")
            ),
            None,
        )
        connect = []
        for _ in range(args.cold_connects * 2):
            t, _ = timed_shell(f"{ssh.command('true')} </dev/null", 60)
            connect.append(t * 1000)
        conn_s = sorted(connect)[len(connect) // 2] / 1000
        cases = {
            "upload": (
                f"head -c {n} /dev/zero | {ssh.command('cat > /dev/null')}",
                None,
            ),
            "download": (f"{ssh.command(f'head -c {n} /dev/zero')} | wc -c", str(n)),
            "echo": (f"head -c {n} /dev/zero | {ssh.command('cat')} | wc -c", str(n)),
        }
        out: dict[str, Any] = {
            "ciphers_offered": ciphers,
            "connect_ms": c.summarize(connect),
        }
        for name, (cmd, expect) in cases.items():
            walls = []
            for _ in range(args.repeats):
                wall, got = timed_shell(cmd, args.dial_timeout)
                if expect is not None and got != expect:
                    raise RuntimeError(
                        f"ssh {name}: got {got!r} bytes, expected {expect}"
                    )
                walls.append(wall)
            wall = sorted(walls)[len(walls) // 2]
            out[f"{name}_mb_per_s_wall"] = round(n / wall / 1e6, 2)
            # The wall time includes one ssh -J connection setup; the libp2p steps are
            # timed on an open connection, so subtract the median connect time too.
            out[f"{name}_mb_per_s"] = round(n / max(wall - conn_s, 1e-6) / 1e6, 2)
            out[f"{name}_walls_s"] = [round(w, 3) for w in walls]
    return out


# --- relay memory per idle circuit --------------------------------------------------------


def bench_memory(relay_impl: str, args: argparse.Namespace) -> dict[str, Any]:
    procs: list[subprocess.Popen[bytes]] = []
    total = args.circuit_procs * args.circuit_hosts
    with RelaySetup(relay_impl, "ours", ["--unlimited"]) as setup:
        time.sleep(1.0)  # let the reservation's identify exchanges finish
        rss0 = c.rss_kb(setup.relay.pid)
        listener0 = c.rss_kb(setup.listener.pid)
        script = str(c.BENCH_DIR / "_circuit_holder.py")
        try:
            for _ in range(args.circuit_procs):
                procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            script,
                            "--relay",
                            setup.relay.multiaddr,
                            "--target",
                            setup.circuit,
                            "--hosts",
                            str(args.circuit_hosts),
                            "--hold-s",
                            "600",
                        ],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=c.log_file("circuit-holder"),
                        cwd=c.ROOT,
                    )
                )
            phase1 = [c.read_json_line(p, 180) for p in procs]
            relay_conns = sum(int(x.get("ok", 0)) for x in phase1)
            time.sleep(args.settle_s)
            rss1 = c.rss_kb(setup.relay.pid)
            for p in procs:
                assert p.stdin is not None
                p.stdin.write(b"circuits\n")
                p.stdin.flush()
            phase2 = [c.read_json_line(p, 300) for p in procs]
            circuits = sum(int(x.get("ok", 0)) for x in phase2)
            time.sleep(args.settle_s)
            rss2 = c.rss_kb(setup.relay.pid)
            listener2 = c.rss_kb(setup.listener.pid)
        finally:
            for p in procs:
                if p.poll() is None and p.stdin is not None:
                    try:
                        p.stdin.write(b"stop\n")
                        p.stdin.close()
                    except OSError:
                        pass
            for p in procs:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
                if p.stdout is not None:
                    p.stdout.close()
    errors = [e for x in phase1 + phase2 for e in x.get("errors", [])][:5]
    return {
        "relay": relay_impl,
        "dialer_hosts": total,
        "relay_connections_ok": relay_conns,
        "circuits_ok": circuits,
        "relay_rss_kb": {
            "idle": rss0,
            "after_connections": rss1,
            "after_circuits": rss2,
        },
        "kb_per_relay_connection": round((rss1 - rss0) / max(relay_conns, 1), 2),
        "kb_per_circuit": round((rss2 - rss1) / max(circuits, 1), 2),
        "kb_per_connection_plus_circuit": round((rss2 - rss0) / max(circuits, 1), 2),
        "listener_kb_per_relayed_connection": round(
            (listener2 - listener0) / max(circuits, 1), 2
        ),
        "phase_seconds": {
            "connect": [x.get("seconds") for x in phase1],
            "circuits": [x.get("seconds") for x in phase2],
        },
        "errors": errors,
    }


# --- main ----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bytes", type=int, default=200_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-k", type=int, default=200)
    parser.add_argument(
        "--connects",
        type=int,
        default=200,
        help="in-process relayed dials per setup (our dialer)",
    )
    parser.add_argument("--cold-connects", type=int, default=5)
    parser.add_argument(
        "--setups",
        default=DEFAULT_SETUPS,
        help=f"relay:listener:dialer list (default {DEFAULT_SETUPS})",
    )
    parser.add_argument("--no-ssh", action="store_true")
    parser.add_argument(
        "--memory-relays",
        default="ours,go,js",
        help="relays to measure memory per circuit on ('' to skip)",
    )
    parser.add_argument("--circuit-procs", type=int, default=10)
    parser.add_argument("--circuit-hosts", type=int, default=100)
    parser.add_argument("--settle-s", type=float, default=3.0)
    parser.add_argument("--dial-timeout", type=float, default=300.0)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="20 MB, 1 repeat, 30 connects, 100 circuits: a smoke run",
    )
    args = parser.parse_args()
    if args.quick:
        args.bytes, args.repeats, args.connects, args.cold_connects = (
            20_000_000,
            1,
            30,
            2,
        )
        args.latency_k, args.circuit_procs, args.settle_s = 50, 1, 1.0

    started = time.perf_counter()
    results: dict[str, Any] = {}
    skipped: list[str] = []
    for item in filter(None, args.setups.split(",")):
        relay, listener, dialer = item.split(":")
        missing = sorted(
            {i for i in (relay, listener, dialer) if not c.peer_available(i)}
        )
        if missing:
            skipped.append(f"{item}: {missing} not built")
            continue
        name = f"{relay} relay: {listener} <- {dialer}"
        print(name, flush=True)
        try:
            results[name] = bench_setup(relay, listener, dialer, args)
        except (RuntimeError, TimeoutError) as exc:
            results[name] = {"error": str(exc)}
            print(f"  failed: {exc}", flush=True)

    ssh: dict[str, Any] | None = None
    if not args.no_ssh:
        if (
            shutil.which("ssh")
            and os.access("/usr/sbin/sshd", os.X_OK)
            and os.geteuid() == 0
        ):
            print("baseline: ssh -J", flush=True)
            try:
                ssh = bench_ssh(args)
            except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
                ssh = {"error": str(exc)}
        else:
            skipped.append(
                "ssh -J: needs root, ssh and /usr/sbin/sshd "
                "(apt-get install -y openssh-server)"
            )

    memory = []
    for relay_impl in filter(None, args.memory_relays.split(",")):
        if not c.peer_available(relay_impl):
            skipped.append(f"memory {relay_impl}: not built")
            continue
        print(
            f"memory per circuit: {relay_impl} relay, "
            f"{args.circuit_procs * args.circuit_hosts} circuits",
            flush=True,
        )
        try:
            memory.append(bench_memory(relay_impl, args))
        except (RuntimeError, TimeoutError, OSError) as exc:
            memory.append({"relay": relay_impl, "error": str(exc)})
            print(f"  failed: {exc}", flush=True)

    ours_mem = next(
        (m for m in memory if m.get("relay") == "ours" and "kb_per_circuit" in m), None
    )
    targets = []
    if ours_mem is not None:
        value = ours_mem["kb_per_circuit"]
        targets.append(
            {
                "target": f"our relay: KB per idle circuit < {TARGET_KB_PER_CIRCUIT:g}",
                "value": value,
                "pass": value < TARGET_KB_PER_CIRCUIT,
            }
        )
    doc = {
        "benchmark": "relay",
        "machine": c.machine_info(),
        "params": {
            k: getattr(args, k)
            for k in (
                "bytes",
                "repeats",
                "latency_k",
                "connects",
                "cold_connects",
                "circuit_procs",
                "circuit_hosts",
                "settle_s",
            )
        },
        "results": results,
        "ssh_jump": ssh,
        "memory": memory,
        "targets": targets,
        "skipped": skipped,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    path = c.write_result("relay", doc)

    print()
    print(
        f"relay: {args.bytes / 1e6:g} MB per throughput step, median of {args.repeats} "
        f"dial processes; latency:{args.latency_k}; {args.connects} in-process dials"
    )
    rows = []
    for name, r in results.items():
        fresh = r.get("fresh_host") or {}
        kept = r.get("kept_relay_conn") or {}
        rows.append(
            [
                name,
                r.get("sink_mb_per_s"),
                r.get("source_mb_per_s"),
                r.get("echo_mb_per_s"),
                (r.get("cold_connect_ms") or {}).get("median"),
                (r.get("cold_first_byte_ms") or {}).get("median"),
                (fresh.get("connect_ms") or {}).get("median"),
                (fresh.get("first_echo_ms") or {}).get("median"),
                (fresh.get("first_echo_ms") or {}).get("p90"),
                (kept.get("connect_ms") or {}).get("median"),
                (kept.get("first_echo_ms") or {}).get("median"),
                r.get("new_stream_echo_median_ms"),
                r.get("new_stream_echo_p90_ms"),
                r.get("open_stream_rtt_median_ms"),
                f"{r.get('ok_runs')}/{r.get('runs')}"
                if "runs" in r
                else r.get("error", "")[:40],
            ]
        )
    if ssh and "error" not in ssh:
        rows.append(
            [
                "ssh -J (2 sshd)",
                ssh["upload_mb_per_s"],
                ssh["download_mb_per_s"],
                ssh["echo_mb_per_s"],
                ssh["connect_ms"]["median"],
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                "-",
            ]
        )
    print(
        c.table(
            [
                "setup",
                "sink MB/s",
                "source MB/s",
                "echo MB/s",
                "cold conn ms",
                "cold 1st byte",
                "fresh conn ms",
                "fresh 1st echo",
                "p90",
                "kept conn ms",
                "kept 1st echo",
                "new-stream ms",
                "p90",
                "rtt ms",
                "ok",
            ],
            rows,
        )
    )
    print()
    print(
        "cold = fresh dial process (connect_ms; first_byte_since_dial_ms of echo:1); "
        "fresh = in-process, new Host per dial; kept = in-process, relay connection kept"
    )
    if ssh:
        if "error" in ssh:
            print(f"ssh -J failed: {ssh['error']}")
        else:
            print(
                f"ssh -J: MB/s excluding the median connect time; wall-clock incl. connect: "
                f"up {ssh['upload_mb_per_s_wall']}, down {ssh['download_mb_per_s_wall']}, "
                f"echo {ssh['echo_mb_per_s_wall']}; connect = `ssh -J … true` "
                f"(ciphers offered: {ssh['ciphers_offered']})"
            )
    if memory:
        print()
        print(
            c.table(
                [
                    "relay",
                    "circuits",
                    "idle RSS KB",
                    "+conns RSS KB",
                    "+circuits RSS KB",
                    "KB/relay conn",
                    "KB/circuit",
                    "KB/(conn+circuit)",
                    "listener KB/conn",
                ],
                [
                    [
                        m.get("relay"),
                        m.get("circuits_ok"),
                        (m.get("relay_rss_kb") or {}).get("idle"),
                        (m.get("relay_rss_kb") or {}).get("after_connections"),
                        (m.get("relay_rss_kb") or {}).get("after_circuits"),
                        m.get("kb_per_relay_connection"),
                        m.get("kb_per_circuit"),
                        m.get("kb_per_connection_plus_circuit"),
                        m.get("listener_kb_per_relayed_connection"),
                    ]
                    for m in memory
                ],
            )
        )
    for t in targets:
        print(
            f"  [{'PASS' if t['pass'] else 'FAIL'}] {t['target']}: {c.fmt(t['value'])}"
        )
    for s in skipped:
        print(f"  skipped: {s}")
    print()
    print(
        json.dumps(
            {k: v for k, v in doc.items() if k != "results"}
            | {
                "results": {
                    n: {k: v for k, v in r.items() if k != "raw_runs"}
                    for n, r in results.items()
                }
            },
            indent=1,
        )
    )
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
