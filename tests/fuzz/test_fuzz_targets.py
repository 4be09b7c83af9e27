"""The fuzz targets (fuzz/): the corpus replayed in plain Python, and bounded atheris runs.

The replay runs every corpus file and every encoder seed once through its target in
this process, so on the compiled data path where it is built; it needs no atheris
and takes about a second. The ``fuzz`` tests run each target under atheris over its
corpus for ``PEERUP_FUZZ_SECONDS`` (default 5; on the Python sources, which is what
atheris can trace), about two and a half minutes in all. Without atheris they skip,
or fail when ``CI`` is set, because CI must run them.

A target whose corpus holds a known, reported finding is a strict xfail (both tests)
until the decoder is fixed: the fix makes it pass, and the strict mark then asks for
the mark's removal.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "peerup_fuzz_run", ROOT / "fuzz/run.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


run = _load_runner()
TARGETS = run._load_targets().TARGETS

KNOWN_FINDINGS: dict[str, str] = {}


def _params() -> list[object]:
    return [
        pytest.param(
            name, marks=pytest.mark.xfail(strict=True, reason=KNOWN_FINDINGS[name])
        )
        if name in KNOWN_FINDINGS
        else name
        for name in TARGETS
    ]


def test_every_target_has_a_small_corpus() -> None:
    folders = {p.name for p in run.CORPUS_DIR.iterdir() if p.is_dir()}
    assert folders == set(TARGETS), "fuzz/corpus/ folders and targets differ"
    assert all(run.corpus_files(name) for name in TARGETS)
    total = sum(p.stat().st_size for p in run.CORPUS_DIR.rglob("*") if p.is_file())
    assert total < 5 * 1024 * 1024, f"corpus is {total} bytes; minimise it (--merge)"


@pytest.mark.parametrize("name", _params())
def test_corpus_replays_without_findings(name: str) -> None:
    failures = run.replay(name)
    assert not failures, "\n".join(failures)


@pytest.mark.fuzz
@pytest.mark.parametrize("name", _params())
def test_fuzz_target_finds_nothing(name: str) -> None:
    missing = run.atheris_missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the fuzz targets, but: {missing}")
        pytest.skip(missing)
    seconds = float(os.environ.get("PEERUP_FUZZ_SECONDS", run.DEFAULT_SECONDS))
    outcome = run.fuzz_target(name, seconds)
    assert outcome.ok, outcome.report
