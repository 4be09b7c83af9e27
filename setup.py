"""Build peer-up, compiling its data path with mypyc where a C compiler is present.

The metadata is in pyproject.toml; this file only adds the extension modules. The
modules listed in src/peerup/native.py (multistream, Noise, yamux, the connection
driver and the splices) are compiled as one mypyc group. Without mypyc or a working
C compiler, or with PEERUP_PURE=1, peer-up installs as plain Python: each extension
is optional, so a failed compile leaves the sources to run.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.extension import Extension

ROOT = Path(__file__).resolve().parent


def _load_native() -> Any:
    # The module list lives in the package; load that one file without importing peerup.
    spec = importlib.util.spec_from_file_location(
        "_peerup_native", ROOT / "src" / "peerup" / "native.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


_SOURCES: dict[str, str] = {}
"""The hashes of the sources, taken just before mypyc reads them."""


class BuildNative(build_ext):
    """build_ext that records which sources the compiled modules were built from.

    peerup/native.py reads the record at import and runs the sources instead of the
    compiled modules when any source differs (an edit in a source checkout). Outputs
    of an earlier build are removed first, so a failed (optional) compile leaves no
    extension behind and no record is written.
    """

    def run(self) -> None:
        if not self.extensions:
            super().run()
            return
        native = _load_native()
        record = Path(self.get_ext_fullpath(native.GROUP)).parent / native.RECORD
        outputs = [Path(self.get_ext_fullpath(ext.name)) for ext in self.extensions]
        staged = [
            Path(self.build_lib, self.get_ext_filename(e.name)) for e in self.extensions
        ]
        for path in (record, *outputs, *staged):
            path.unlink(missing_ok=True)
        self.force = True
        super().run()
        if all(path.exists() for path in outputs):
            record.write_text(native.encode_record(_SOURCES))


def _extensions() -> list[Extension]:
    if os.environ.get("PEERUP_PURE") == "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        return []
    native = _load_native()
    paths = ["src/" + m.replace(".", "/") + ".py" for m in native.MODULES]
    _SOURCES.update(native.source_hashes(ROOT / "src" / "peerup"))
    try:
        extensions = mypycify(
            paths, opt_level="3", group_name=native.GROUP, target_dir="build/mypyc"
        )
    except (Exception, SystemExit) as e:  # mypyc exits on type errors
        print(
            f"warning: not compiling the data path: mypyc failed ({e})", file=sys.stderr
        )
        return []
    for ext in extensions:
        ext.optional = True  # no compiler: install the pure-Python package
    return extensions


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildNative})
