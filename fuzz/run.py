#!/usr/bin/env python3
"""Run the fuzz targets: bounded coverage-guided runs (atheris), or a plain replay.

    python3 fuzz/run.py                       every target, 5 s each, over its corpus
    python3 fuzz/run.py --seconds 60 yamux    one target for a minute
    python3 fuzz/run.py --replay              every corpus file once, no atheris needed
    python3 fuzz/run.py --grow --seconds 120 pb   fuzz and keep what is new in the corpus
    python3 fuzz/run.py --seed                write our encoders' seeds into the corpus
    python3 fuzz/run.py --merge               minimise every corpus (libFuzzer -merge=1)

A run fails on any finding: an exception other than the ones the decoder documents, a
broken invariant, an input slower than ``--timeout`` seconds, an allocation past the
address-space cap (fuzz/fuzz.py) or a process over ``RSS_LIMIT_MB``. The offending
input is printed in hex with the fuzzer's traceback. CI runs this through
tests/fuzz/test_fuzz_targets.py (marker ``fuzz``).

The corpus lives in fuzz/corpus/<target>/, one input per file named by its SHA-1, as
libFuzzer names them. Bounded runs read it but write what they find to a temporary
directory, so CI leaves the tree as it was; ``--grow`` writes to the corpus itself.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

FUZZ_DIR = Path(__file__).resolve().parent
CORPUS_DIR = FUZZ_DIR / "corpus"
DRIVER = FUZZ_DIR / "fuzz.py"
ROOT = FUZZ_DIR.parent

DEFAULT_SECONDS = 5
"""Per target in CI: 23 targets stay under two and a half minutes on one core."""
INPUT_TIMEOUT_S = 5
"""An input a decoder takes this long over is a finding (a hang, or worse than linear
work); the slowest corpus input takes a few milliseconds."""
RSS_LIMIT_MB = 512
"""The whole fuzzing process; it starts near 60 MB."""


def _load_targets() -> ModuleType:
    """fuzz/targets.py, imported as ``targets`` (as fuzz/fuzz.py imports it)."""
    if str(FUZZ_DIR) not in sys.path:
        sys.path.insert(0, str(FUZZ_DIR))
    import targets

    return targets


def atheris_missing() -> str | None:
    """Why atheris cannot run here, or None when it can."""
    try:
        importlib.import_module("atheris")
    except ImportError as exc:
        return f"atheris is not importable ({exc}); pip install atheris"
    return None


@dataclass(frozen=True)
class Outcome:
    target: str
    ok: bool
    seconds: float
    runs: str
    report: str
    """Empty when ok; else the fuzzer's log tail and each finding's input in hex."""


def corpus_files(name: str) -> list[Path]:
    folder = CORPUS_DIR / name
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


def fuzz_target(
    name: str,
    seconds: float,
    *,
    grow: bool = False,
    input_timeout_s: int = INPUT_TIMEOUT_S,
) -> Outcome:
    """Fuzz one target for ``seconds`` over its corpus in a child process."""
    corpus = CORPUS_DIR / name
    corpus.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"peerup-fuzz-{name}-") as tmp:
        new = corpus if grow else Path(tmp, "new")
        new.mkdir(exist_ok=True)
        artifacts = Path(tmp, "artifacts")
        artifacts.mkdir()
        cmd = [
            sys.executable,
            str(DRIVER),
            name,
            f"-max_total_time={int(seconds)}",
            f"-timeout={input_timeout_s}",
            f"-rss_limit_mb={RSS_LIMIT_MB}",
            f"-artifact_prefix={artifacts}/",
            "-print_final_stats=1",
            str(new),
            *([] if grow else [str(corpus)]),
        ]
        env = {**os.environ, "PEERUP_PURE": "1"}
        start = time.monotonic()
        proc = subprocess.run(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            # Beyond -max_total_time: start-up, the corpus's first pass, a timeout.
            timeout=seconds + 60 + input_timeout_s,
        )
        took = time.monotonic() - start
        log = proc.stdout
        runs = next(
            (
                line.rsplit(":", 1)[1].strip()
                for line in log.splitlines()
                if line.startswith("stat::number_of_executed_units:")
            ),
            "?",
        )
        found = sorted(artifacts.iterdir())
        if proc.returncode == 0 and not found:
            return Outcome(name, True, took, runs, "")
        parts = [f"{name}: fuzzer exited with {proc.returncode}", _tail(log)]
        for path in found:
            data = path.read_bytes()
            parts.append(
                f"{path.name.split('-')[0]} input ({len(data)} bytes): {data.hex()}"
            )
        return Outcome(name, False, took, runs, "\n".join(parts))


def _tail(log: str, lines: int = 60) -> str:
    # Drop libFuzzer's progress lines; keep the traceback and the summary.
    kept = [
        line
        for line in log.splitlines()
        if not line.startswith("#") and "pulse" not in line
    ]
    return "\n".join(kept[-lines:])


def replay(name: str) -> list[str]:
    """Run each corpus file and each current seed through the target once, in this
    process (compiled or not, as installed); returns one report per failure."""
    target = _load_targets().TARGETS[name]
    inputs = [(p.name, p.read_bytes()) for p in corpus_files(name)]
    inputs += [(f"seed {i}", s) for i, s in enumerate(target.seeds())]
    failures = []
    for label, data in inputs:
        try:
            target.run(data)
        except Exception as exc:  # noqa: BLE001 - anything escaping is the finding
            failures.append(
                f"{name} {label}: {type(exc).__name__}: {exc}\n  input: {data.hex()}"
            )
    return failures


def write_seeds(name: str) -> int:
    """Store the target's encoder-made seeds in its corpus; returns how many were new."""
    folder = CORPUS_DIR / name
    folder.mkdir(parents=True, exist_ok=True)
    added = 0
    for data in _load_targets().TARGETS[name].seeds():
        path = folder / hashlib.sha1(data).hexdigest()
        if not path.exists():
            path.write_bytes(data)
            added += 1
    return added


def merge(name: str) -> tuple[int, int]:
    """Keep a minimal subset of the corpus with the same coverage (libFuzzer -merge=1)."""
    folder = CORPUS_DIR / name
    before = len(corpus_files(name))
    with tempfile.TemporaryDirectory(prefix=f"peerup-merge-{name}-") as tmp:
        out = Path(tmp, "out")
        out.mkdir()
        subprocess.run(
            [
                sys.executable,
                str(DRIVER),
                name,
                "-merge=1",
                f"-timeout={INPUT_TIMEOUT_S}",
                str(out),
                str(folder),
            ],
            cwd=ROOT,
            env={**os.environ, "PEERUP_PURE": "1"},
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not any(out.iterdir()):
            raise RuntimeError(f"{name}: merge produced nothing; corpus left as it was")
        shutil.rmtree(folder)
        shutil.copytree(out, folder)
    return before, len(corpus_files(name))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help="target names (default: all)")
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--replay", action="store_true")
    mode.add_argument("--grow", action="store_true")
    mode.add_argument("--seed", action="store_true")
    mode.add_argument("--merge", action="store_true")
    parser.add_argument("--list", action="store_true", help="list the targets")
    args = parser.parse_args(argv)
    all_targets = _load_targets().TARGETS
    if args.list:
        for t in all_targets.values():
            print(f"{t.name:24} {t.doc}")
        return 0
    names = args.targets or list(all_targets)
    unknown = [n for n in names if n not in all_targets]
    if unknown:
        parser.error(f"unknown targets: {' '.join(unknown)}")
    if args.seed:
        for name in names:
            print(f"{name}: {write_seeds(name)} new seeds")
        return 0
    if args.replay:
        failures = [f for name in names for f in replay(name)]
        print("\n".join(failures) or f"replayed {len(names)} targets: ok")
        return 1 if failures else 0
    missing = atheris_missing()
    if missing:
        print(f"fuzz/run.py: {missing}", file=sys.stderr)
        return 2
    if args.merge:
        for name in names:
            before, after = merge(name)
            print(f"{name}: {before} -> {after} files")
        return 0
    failed = 0
    for name in names:
        out = fuzz_target(name, args.seconds, grow=args.grow)
        print(
            f"{name:24} {'ok' if out.ok else 'FAIL'}  {out.seconds:5.1f} s  "
            f"{out.runs} runs",
            flush=True,
        )
        if not out.ok:
            failed += 1
            print(out.report, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
