"""The compiled data path (src/peerup/native.py, setup.py, scripts/build-native).

Under CI the data path must run compiled, since that is what the benchmarks measure
and what an install with a C compiler runs. The fallback to the sources is checked on
a copy of the package, so the running test process is not disturbed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from peerup import native

SRC = Path(__file__).resolve().parents[1] / "src"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _require_compiled() -> None:
    status = native.status()
    if status.compiled:
        return
    if _in_ci():
        pytest.fail(f"CI runs the compiled data path, but: {status.reason}")
    pytest.skip(
        f"the data path is not compiled here ({status.reason}); scripts/build-native"
    )


def _version_json(pythonpath: Path, **env: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "peerup", "version", "--json"],
        env={**os.environ, "PYTHONPATH": str(pythonpath), **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    result: dict[str, object] = json.loads(out)
    return result


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    """A copy of src/peerup with its compiled modules."""
    shutil.copytree(
        SRC / "peerup",
        tmp_path / "peerup",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return tmp_path


def test_every_compiled_module_is_compiled() -> None:
    _require_compiled()
    for name in native.MODULES:
        module = sys.modules[name]
        assert module.__file__ is not None and not module.__file__.endswith(".py"), name


def test_a_fresh_build_runs_compiled(package_copy: Path) -> None:
    _require_compiled()
    assert _version_json(package_copy)["compiled"] is True


def test_an_edited_source_runs_from_source_and_says_why(package_copy: Path) -> None:
    _require_compiled()
    edited = package_copy / "peerup" / "proto" / "yamux.py"
    edited.write_text(edited.read_text() + "# an edit\n")

    result = _version_json(package_copy)

    assert result["compiled"] is False
    assert "proto.yamux" in str(result["data_path"])
    assert "scripts/build-native" in str(result["data_path"])


def test_a_missing_compiled_module_runs_all_from_source(package_copy: Path) -> None:
    _require_compiled()
    for ext in (package_copy / "peerup" / "net").glob("stream.*.so"):
        ext.unlink()

    result = _version_json(package_copy)

    assert result["compiled"] is False
    assert "net.stream" in str(result["data_path"])


def test_peerup_pure_runs_the_sources(package_copy: Path) -> None:
    result = _version_json(package_copy, PEERUP_PURE="1")

    assert result["compiled"] is False
    assert "PEERUP_PURE" in str(result["data_path"]) or "not compiled" in str(
        result["data_path"]
    )


def test_a_build_without_its_record_runs_from_source(package_copy: Path) -> None:
    _require_compiled()
    (package_copy / "peerup" / native.RECORD).unlink()

    assert _version_json(package_copy)["compiled"] is False


def test_without_compiled_modules_the_sources_run(package_copy: Path) -> None:
    for ext in (package_copy / "peerup").rglob("*.so"):
        ext.unlink()

    result = _version_json(package_copy)

    assert result == {
        "version": result["version"],
        "compiled": False,
        "data_path": "not compiled: installed without mypyc or a C compiler",
    }
