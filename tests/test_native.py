"""The compiled data path (src/peerup/native.py, setup.py, scripts/build-native).

Under CI the data path must run compiled, since that is what the benchmarks measure
and what an install with a C compiler runs. The fallback to the sources is checked on
a copy of the package, so the running test process is not disturbed.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
import tomllib
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
        env={**os.environ, "PYTHONPATH": str(pythonpath), "PEERUP_PURE": "", **env},
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


@pytest.mark.parametrize(
    "edited",
    [
        "proto/yamux.py",  # a compiled module
        # mypyc inlines constants and checks types of what compiled modules import,
        # so an edit there makes the build stale too.
        "core/errors.py",
    ],
)
def test_an_edited_source_runs_all_from_source_and_says_why(
    package_copy: Path, edited: str
) -> None:
    _require_compiled()
    path = package_copy / "peerup" / edited
    path.write_text(path.read_text() + "# an edit\n")

    result = _version_json(package_copy)

    assert result["compiled"] is False
    assert edited in str(result["data_path"])
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
    assert result["data_path"] == "running the Python sources: PEERUP_PURE=1 is set"


def test_an_extension_the_build_does_not_name_runs_all_from_source(
    package_copy: Path,
) -> None:
    """E.g. a module compiled by an earlier build and later dropped from the list."""
    _require_compiled()
    (compiled,) = (package_copy / "peerup" / "net").glob("stream.*.so")
    shutil.copy(
        compiled, compiled.with_name(compiled.name.replace("stream", "tasks", 1))
    )

    result = _version_json(package_copy)

    assert result["compiled"] is False
    assert "net.tasks (not in the build)" in str(result["data_path"])


def test_an_install_without_sources_runs_compiled(package_copy: Path) -> None:
    _require_compiled()
    for module in native.MODULES:
        native.source_path(module, package_copy / "peerup").unlink()

    assert _version_json(package_copy)["compiled"] is True


def test_the_mypy_overrides_name_the_compiled_modules() -> None:
    """pyproject.toml warns on unreachable code in exactly the compiled modules."""
    config = tomllib.loads((SRC.parent / "pyproject.toml").read_text())
    overrides = [
        o for o in config["tool"]["mypy"]["overrides"] if o.get("warn_unreachable")
    ]
    assert [sorted(o["module"]) for o in overrides] == [sorted(native.MODULES)]


def test_a_failed_compile_leaves_no_stale_extension(tmp_path: Path) -> None:
    """setup.py without a working compiler: the extensions are optional, so the build
    succeeds as pure Python, and no extension or record from an earlier build is left
    to pass for this one."""
    pytest.importorskip("mypyc.build")
    root = tmp_path / "checkout"
    shutil.copytree(SRC, root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(SRC.parent / name, root / name)
    package = root / "src" / "peerup"
    stale = sorted(package.rglob("*.so"))
    if not stale:  # not built here: plant one where the build puts it
        suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
        (package / "proto" / f"yamux{suffix}").write_bytes(b"stale")
    (package / native.RECORD).write_text("{}")

    build = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=root,
        env={**os.environ, "CC": "/bin/false", "PEERUP_PURE": ""},
        capture_output=True,
        text=True,
        timeout=240,
    )

    assert build.returncode == 0, build.stdout + build.stderr
    assert sorted(package.rglob("*.so")) == []
    assert not (package / native.RECORD).exists()
    assert _version_json(root / "src")["compiled"] is False


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
