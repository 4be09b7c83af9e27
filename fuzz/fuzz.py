#!/usr/bin/env python3
"""Run one fuzz target (fuzz/targets.py) under atheris, the libFuzzer engine for Python.

    python3 fuzz/fuzz.py TARGET [libFuzzer flags] [CORPUS_DIR ...]
    python3 fuzz/fuzz.py pb -max_total_time=60 /tmp/new fuzz/corpus/pb

New inputs go to the first corpus directory; a finding is written to a
``crash-``/``timeout-``/``oom-`` file (see ``-artifact_prefix``) and the exit status
is non-zero. fuzz/run.py wraps this with the flags CI uses.

peer-up runs its data path compiled with mypyc where it can (src/peerup/native.py);
atheris traces Python bytecode only, so this driver runs the Python sources
(``PEERUP_PURE=1``). The replay (``fuzz/run.py --replay``, and the pytest test) runs
the same inputs through whatever the installation runs, compiled or not.

A hostile input that makes a decoder allocate without bound must be found even where
libFuzzer's ``-malloc_limit_mb`` cannot see Python's allocations (no sanitizer
runtime): the address space is capped, so such an allocation raises MemoryError,
which escapes the target and is reported like any other finding.
"""

from __future__ import annotations

import os
import resource
import sys

os.environ.setdefault("PEERUP_PURE", "1")

import atheris  # noqa: E402 - after PEERUP_PURE, which the next import reads

# Imported before the instrumentation hook: the package's __init__ installs the
# finder that picks sources over extensions, and atheris must wrap that finder.
import peerup  # noqa: E402,F401

with atheris.instrument_imports(include=["peerup"]):
    import targets  # noqa: E402 - imports (and so instruments) every decoder

TARGET_ENV = "PEERUP_FUZZ_TARGET"

ADDRESS_SPACE_HEADROOM_BYTES = 1 << 30
"""Address space allowed above what the fuzzer uses at start: far above what any
decoder needs for a 4 KiB input, far below what the machine has."""


def cap_address_space() -> None:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[0])
    limit = pages * resource.getpagesize() + ADDRESS_SPACE_HEADROOM_BYTES
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))


def main() -> None:
    argv = sys.argv
    # libFuzzer runs this script again for -merge and -fork with the flags alone, so
    # the target's name travels to those children in the environment.
    if len(argv) > 1 and argv[1] in targets.TARGETS:
        os.environ[TARGET_ENV] = argv[1]
        argv = [argv[0], *argv[2:]]
    name = os.environ.get(TARGET_ENV, "")
    if name not in targets.TARGETS:
        sys.exit(
            f"usage: {sys.argv[0]} TARGET [libFuzzer flags] [corpus dirs]\n"
            f"targets: {' '.join(targets.TARGETS)}"
        )
    cap_address_space()
    atheris.Setup(argv, targets.TARGETS[name].run)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
