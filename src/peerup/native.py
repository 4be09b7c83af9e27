"""Which modules run compiled (mypyc), and whether this process runs them compiled.

Spec: none (build and packaging). Every tunnelled connection and every byte passes
through the same few modules: multistream, Noise and yamux (``proto/``), the connection
driver, streams, the TCP splice and the socket transport (``net/``). Installing peer-up
with a C compiler compiles them with mypyc (see ``setup.py``): the same typed source,
as C extension modules. Without a compiler they run as plain Python; behaviour is the
same, only slower.

An extension module shadows its ``.py`` file on import. In a source checkout that
would run stale code after an edit, so the build records a hash of each source it
compiled (:data:`RECORD`), and :func:`prefer_fresh` (called by the package's
``__init__``) runs all of them from source if any compiled module is missing or its
source no longer matches (they are compiled as one group and call each other
directly, so they are either all compiled or none). ``scripts/build-native`` rebuilds
them. Hashes rather than file times, which a wheel install does not keep. Hand-written
because no packaging library covers this check.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

MODULES: tuple[str, ...] = (
    "peerup.proto.multistream",
    "peerup.proto.noise",
    "peerup.proto.yamux",
    "peerup.net.connection",
    "peerup.net.sock_transport",
    "peerup.net.stream",
    "peerup.net.stream_splice",
    "peerup.net.stream_transport",
    "peerup.net.tcp_splice",
)
"""The modules compiled together; names as imported."""

GROUP = "peerup._native"
"""mypyc's group name: its shared library is ``peerup/_native__mypyc*.so``."""

RECORD = "_native_sources.json"
"""Written by the build next to the shared library: each compiled module's source hash."""

_PACKAGE_DIR = Path(__file__).resolve().parent
_fallback_reason: str | None = None


@dataclass(frozen=True)
class NativeStatus:
    """Whether the data path runs compiled, and why (or why not)."""

    compiled: bool
    reason: str


def source_path(module: str, package_dir: Path = _PACKAGE_DIR) -> Path:
    """The ``.py`` file of one of :data:`MODULES`."""
    return package_dir.joinpath(*module.split(".")[1:]).with_suffix(".py")


def _source_hash(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()


def encode_record(package_dir: Path, modules: Sequence[str]) -> str:
    """The :data:`RECORD` for ``modules`` as their sources are now (used by setup.py)."""
    hashes = {m: _source_hash(source_path(m, package_dir)) for m in modules}
    return json.dumps(hashes, indent=1, sort_keys=True) + "\n"


def _extension_path(module: str) -> Path | None:
    source = source_path(module)
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = source.with_name(source.stem + suffix)
        if candidate.exists():
            return candidate
    return None


def _stale(modules: Sequence[str]) -> list[str]:
    """Modules with no compiled form, or whose source differs from the compiled one."""
    try:
        recorded = json.loads((_PACKAGE_DIR / RECORD).read_text())
    except (OSError, ValueError):
        recorded = {}
    return [
        m
        for m in modules
        if _extension_path(m) is None
        or not isinstance(recorded, dict)
        or recorded.get(m) != _source_hash(source_path(m))
    ]


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Loads :data:`MODULES` from their ``.py`` files, ahead of any extension."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MODULES:
            return None
        return importlib.util.spec_from_file_location(fullname, source_path(fullname))


def prefer_fresh() -> None:
    """Run the sources if any compiled module is missing or older than its source.

    Called once from ``peerup/__init__.py``, before any of :data:`MODULES` is imported.
    ``PEERUP_PURE=1`` runs the sources even when the compiled modules are fresh.
    """
    global _fallback_reason
    if not any(_extension_path(m) for m in MODULES):
        return  # a pure install: the normal import finds the sources
    if os.environ.get("PEERUP_PURE") == "1":
        _fallback_reason = "PEERUP_PURE=1 is set"
    else:
        stale = _stale(MODULES)
        if not stale:
            return
        names = ", ".join(m.removeprefix("peerup.") for m in stale)
        _fallback_reason = (
            f"compiled modules are missing or do not match their sources ({names}); "
            "rebuild with scripts/build-native"
        )
    sys.meta_path.insert(0, _SourceFinder())


def status() -> NativeStatus:
    """Whether the data path runs compiled in this process (imports it to see)."""
    loaded = [importlib.import_module(m) for m in MODULES]
    compiled = [m for m in loaded if not (m.__file__ or "").endswith(".py")]
    if len(compiled) == len(loaded):
        return NativeStatus(True, "compiled with mypyc")
    if _fallback_reason is not None:
        return NativeStatus(False, f"running the Python sources: {_fallback_reason}")
    if compiled:
        names = ", ".join(m.__name__ for m in compiled)
        return NativeStatus(False, f"only partly compiled ({names})")
    return NativeStatus(False, "not compiled: installed without mypyc or a C compiler")
