"""``peerup demo``: run the one-machine demo (app/demo.py) and print each step."""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from pathlib import Path

from peerup.app import demo
from peerup.cli import common


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "demo",
        help="relay + two nodes + a tunnel, then a new machine joins with one code; "
        "all on this machine",
    )
    p.add_argument(
        "--keep", action="store_true", help="leave it running; print commands"
    )
    p.add_argument("--dir", type=Path, help="with --keep: where to put the demo files")
    common.add_json_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace, io: common.CliIO) -> int:
    def report(step: demo.DemoStep) -> None:
        if not args.json:
            io.out(f"  [{step.ms:8.2f} ms] {step.name:8} {step.detail}")

    async def main() -> demo.DemoResult:
        start = time.perf_counter()
        if not args.json:
            io.out("peer-up demo: relay + home + laptop, then a new phone joins, on loopback")
        keep_dir = args.dir if args.keep else None
        if args.keep and keep_dir is None:
            import tempfile

            keep_dir = Path(tempfile.mkdtemp(prefix="peerup-demo-"))
        async with demo.running_demo(report, keep_dir) as result:
            if not args.json:
                total = (time.perf_counter() - start) * 1000
                io.out(
                    f"{'OK' if result.ok else 'FAILED'}: tunnel works over the "
                    f"{result.path} path ({total:.0f} ms in all)"
                )
            if args.keep:
                io.out(f"Running. Files in {result.workdir}. Try:")
                for cmd in result.commands:
                    io.out(f"  {cmd}")
                io.out("Ctrl-C to stop.")
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, stop.set)
                await stop.wait()
            return result

    result = common.run(main())
    if args.json:
        io.json(result)
    return 0 if result.ok else 1
