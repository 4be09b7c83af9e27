"""Wire benchmark (issue "wire"): peer-up's TCP + Noise + yamux stack on loopback.

Two peers in separate processes on 127.0.0.1. For every pair (listener <- dialer):
- one-stream throughput: ``sink:N`` (dialer uploads) and ``source:N`` (dialer downloads);
- 10 concurrent echo streams: ``concurrent:10:N/10`` (N bytes in total, each way);
- ``latency:K``: K new streams each echoing 1 byte (open -> byte back), then K 1-byte
  round trips on one open stream;
- cold connect: ``connect_ms`` of fresh dial processes (first dial of a new process);
- warm connect (only where our dialer dials): this process dials the listener many
  times in a row, a fresh Host each time, and times dial -> muxer ready and
  dial -> first byte echoed on a new stream.
Each dial process is repeated and the median of the repeats is reported.

Baselines in the same run: plain asyncio TCP streams (no crypto), plain asyncio with
ChaCha20-Poly1305 64 KiB frames (``_plain.py``), go-libp2p and js-libp2p with their own
dialers, and our dialer against them ("cross").

Usage: python benchmarks/wire.py [--bytes N] [--repeats R] [--quick]
Writes benchmarks/results/wire.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from typing import Any

import _common as c

TARGETS = {
    "one_stream_mb_per_s_min": 250.0,
    "new_connection_ms_max": 5.0,
    "new_stream_echo_ms_max": 1.0,
}

DEFAULT_PAIRS = "ours<-ours,go<-go,js<-js,go<-ours,js<-ours"


def parse_pairs(text: str) -> list[tuple[str, str]]:
    pairs = []
    for item in filter(None, text.split(",")):
        listener, dialer = item.split("<-")
        pairs.append((listener.strip(), dialer.strip()))
    return pairs


def steps_for(args: argparse.Namespace) -> str:
    per_stream = args.bytes // 10
    return (
        f"sink:{args.bytes},source:{args.bytes},concurrent:10:{per_stream},"
        f"latency:{args.latency_k}"
    )


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over repeated dial results of every metric we report."""
    return {
        "ok_runs": sum(1 for r in runs if r.get("ok")),
        "runs": len(runs),
        "sink_mb_per_s": c.median_or_none(c.step_field(runs, "sink", "mb_per_s")),
        "source_mb_per_s": c.median_or_none(c.step_field(runs, "source", "mb_per_s")),
        "concurrent10_mb_per_s": c.median_or_none(
            c.step_field(runs, "concurrent", "mb_per_s")
        ),
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
        "errors": [
            r.get("error")
            or {k: v.get("error") for k, v in r["steps"].items() if not v.get("ok")}
            for r in runs
            if not r.get("ok")
        ],
    }


def bench_pair(
    listener: str, dialer: str, target: str, args: argparse.Namespace
) -> dict[str, Any]:
    runs = []
    for i in range(args.repeats):
        res = c.run_dial(dialer, target, steps_for(args), timeout_s=args.dial_timeout)
        runs.append(res)
        print(
            f"  {listener}<-{dialer} run {i + 1}/{args.repeats}: ok={res.get('ok')}"
            f" {json.dumps(res.get('steps', {}))[:300]}",
            flush=True,
        )
    out = aggregate(runs)
    cold = []
    for _ in range(args.cold_connects):
        res = c.run_dial(dialer, target, "ping:1", timeout_s=60)
        if res.get("ok") and res.get("connect_ms") is not None:
            cold.append(float(res["connect_ms"]))
    out["cold_connect_ms"] = c.summarize(cold)
    if dialer == "ours" and args.connects > 0:
        out["warm"] = asyncio.run(c.libp2p_connect_loop(target, args.connects))
    out["raw_runs"] = runs
    return out


def bench_plain(crypto: bool, args: argparse.Namespace) -> dict[str, Any]:
    flag = ["--crypto"] if crypto else []
    name = "plain-chacha" if crypto else "plain"
    script = str(c.BENCH_DIR / "_plain.py")
    with c.PeerProcess(
        [sys.executable, script, "serve", *flag], f"{name}-serve"
    ) as server:
        port = server.ready["port"]
        runs = []
        for _ in range(args.repeats):
            out = subprocess.run(
                [
                    sys.executable,
                    script,
                    "client",
                    "--port",
                    str(port),
                    *flag,
                    "--steps",
                    steps_for(args),
                ],
                stdout=subprocess.PIPE,
                stderr=c.log_file(f"{name}-client"),
                timeout=args.dial_timeout,
            )
            try:
                runs.append(json.loads(out.stdout.decode().strip().splitlines()[-1]))
            except (ValueError, IndexError):
                runs.append(
                    {
                        "ok": False,
                        "error": f"no result (rc={out.returncode})",
                        "steps": {},
                    }
                )
        result = aggregate(runs)
        if not crypto and args.connects > 0:
            result["warm"] = asyncio.run(c.tcp_connect_loop(port, args.connects))
        result["raw_runs"] = runs
    return result


def row(name: str, r: dict[str, Any]) -> list[Any]:
    warm = r.get("warm") or {}
    wc = warm.get("connect_ms") or {}
    we = warm.get("first_echo_ms") or {}
    return [
        name,
        r.get("sink_mb_per_s"),
        r.get("source_mb_per_s"),
        r.get("concurrent10_mb_per_s"),
        (r.get("cold_connect_ms") or {}).get("median"),
        wc.get("median"),
        wc.get("p90"),
        we.get("median"),
        r.get("new_stream_echo_median_ms"),
        r.get("new_stream_echo_p90_ms"),
        r.get("open_stream_rtt_median_ms"),
        r.get("open_stream_rtt_p90_ms"),
        f"{r.get('ok_runs')}/{r.get('runs')}",
    ]


HEADERS = [
    "listener <- dialer",
    "sink MB/s",
    "source MB/s",
    "10-stream MB/s",
    "cold conn ms",
    "conn ms",
    "conn p90",
    "conn+echo ms",
    "new-stream ms",
    "new-stream p90",
    "rtt ms",
    "rtt p90",
    "ok",
]


def check_targets(ours: dict[str, Any]) -> list[dict[str, Any]]:
    one = [
        x
        for x in (ours.get("sink_mb_per_s"), ours.get("source_mb_per_s"))
        if x is not None
    ]
    conn = ((ours.get("warm") or {}).get("connect_ms") or {}).get("median")
    new_stream = ours.get("new_stream_echo_median_ms")
    return [
        {
            "target": "one-stream throughput >= 250 MB/s (min of sink, source)",
            "value": min(one) if one else None,
            "pass": bool(one) and min(one) >= TARGETS["one_stream_mb_per_s_min"],
        },
        {
            "target": "new connection < 5 ms (in-process median, dial -> muxer ready)",
            "value": conn,
            "pass": conn is not None and conn < TARGETS["new_connection_ms_max"],
        },
        {
            "target": "new stream + 1-byte echo < 1 ms (median)",
            "value": new_stream,
            "pass": new_stream is not None
            and new_stream < TARGETS["new_stream_echo_ms_max"],
        },
    ]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--bytes",
        type=int,
        default=200_000_000,
        help="bytes per throughput step (default 200 MB)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="dial processes per pair"
    )
    parser.add_argument(
        "--latency-k", type=int, default=200, help="samples in latency:K"
    )
    parser.add_argument(
        "--connects",
        type=int,
        default=200,
        help="in-process sequential dials (our dialer)",
    )
    parser.add_argument(
        "--cold-connects",
        type=int,
        default=5,
        help="extra fresh dial processes for cold connect_ms",
    )
    parser.add_argument(
        "--pairs",
        default=DEFAULT_PAIRS,
        help=f"listener<-dialer list (default {DEFAULT_PAIRS})",
    )
    parser.add_argument(
        "--no-plain", action="store_true", help="skip asyncio baselines"
    )
    parser.add_argument("--dial-timeout", type=float, default=300.0)
    parser.add_argument(
        "--quick", action="store_true", help="20 MB, 1 repeat, 50 connects: a smoke run"
    )
    args = parser.parse_args()
    if args.quick:
        args.bytes, args.repeats, args.connects, args.cold_connects = (
            20_000_000,
            1,
            50,
            2,
        )
        args.latency_k = 50

    started = time.perf_counter()
    results: dict[str, Any] = {}
    if not args.no_plain:
        print("baseline: plain asyncio TCP", flush=True)
        results["asyncio TCP"] = bench_plain(False, args)
        print(
            "baseline: plain asyncio TCP + ChaCha20-Poly1305 64 KiB frames", flush=True
        )
        results["asyncio TCP+ChaCha20"] = bench_plain(True, args)

    pairs = parse_pairs(args.pairs)
    skipped = []
    for listener_impl in dict.fromkeys(p[0] for p in pairs):
        dialers = [d for (li, d) in pairs if li == listener_impl]
        needed = {listener_impl, *dialers}
        missing = [i for i in needed if not c.peer_available(i)]
        if missing:
            skipped.append(f"{listener_impl} listener: {missing} not built")
            continue
        with c.start_peer(listener_impl, "listen") as listener:
            for dialer in dialers:
                print(f"pair {listener_impl} <- {dialer}", flush=True)
                results[f"{listener_impl} <- {dialer}"] = bench_pair(
                    listener_impl, dialer, listener.multiaddr, args
                )

    ours = results.get("ours <- ours", {})
    targets = check_targets(ours) if ours else []
    doc = {
        "benchmark": "wire",
        "machine": c.machine_info(),
        "params": {
            "bytes": args.bytes,
            "repeats": args.repeats,
            "latency_k": args.latency_k,
            "connects": args.connects,
            "cold_connects": args.cold_connects,
            "steps": steps_for(args),
        },
        "results": results,
        "targets": targets,
        "skipped": skipped,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    path = c.write_result("wire", doc)

    print()
    print(
        f"wire: {args.bytes / 1e6:g} MB per throughput step, median of {args.repeats} "
        f"dial processes; latency:{args.latency_k}; {args.connects} in-process dials"
    )
    print(c.table(HEADERS, [row(name, r) for name, r in results.items()]))
    print()
    print(
        "cold conn = connect_ms of a fresh dial process; conn / conn+echo = in-process "
        "(fresh Host per dial; only where our dialer or plain asyncio dials)"
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
