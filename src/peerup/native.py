"""Which modules run compiled (mypyc), and whether this process runs them compiled.

Spec: none (build and packaging). Every tunnelled connection and every byte passes
through the same few modules: multistream, Noise and yamux (``proto/``), the connection
driver, streams, the splices, the socket transport and the host (``net/``), peer IDs
and access decisions (``core/``), and the node's service and proxy handlers and the
allowlist (``app/``). Installing peer-up
with a C compiler compiles them with mypyc (see ``setup.py``): the same typed source,
as C extension modules. Without a compiler they run as plain Python; behaviour is the
same, only slower.

An extension module shadows its ``.py`` file on import. In a source checkout that
would run stale code after an edit, so the build records a hash of every source the
compiled modules were built from (:data:`RECORD`: all of :data:`LAYERS`, since mypyc
also inlines constants and checks types of what they import),
and :func:`prefer_fresh` (called by the package's ``__init__``) runs every module that
has an extension from its source if any of those sources changed, any listed module
lacks its extension, or an extension is not one the record names (they are compiled
as one group and call each other directly, so they are either all compiled or none).
``scripts/build-native`` rebuilds them. Hashes rather than file times, which a wheel
install does not keep. Hand-written because no packaging library covers this check.
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
    "peerup.net.host",
    "peerup.core.peer_id",
    "peerup.core.access",
    "peerup.app.node",
    "peerup.app.allowlist",
)
"""The modules compiled together; names as imported."""

GROUP = "peerup._native"
"""mypyc's group name: its shared library is ``peerup/_native__mypyc*.so``."""

RECORD = "_native_sources.json"
"""Written by the build next to the shared library: the hash of each source it used."""

LAYERS = ("core", "proto", "net", "config", "app")
"""The package folders whose sources the compiled modules are built from."""

_PACKAGE_DIR = Path(__file__).resolve().parent
_fallback_reason: str | None = None


@dataclass(frozen=True)
class NativeStatus:
    """Whether the data path runs compiled, and why (or why not)."""

    compiled: bool
    reason: str


def source_path(module: str, package_dir: Path = _PACKAGE_DIR) -> Path:
    """The ``.py`` file of a module of this package."""
    return package_dir.joinpath(*module.split(".")[1:]).with_suffix(".py")


def _source_hash(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()


def source_hashes(package_dir: Path) -> dict[str, str]:
    """Each source the compiled modules are built from, by path in the package."""
    out = {}
    for layer in LAYERS:
        for path in sorted((package_dir / layer).glob("*.py")):
            out[path.relative_to(package_dir).as_posix()] = _source_hash(path)
    return out


def encode_record(hashes: dict[str, str]) -> str:
    """The :data:`RECORD` text for :func:`source_hashes` taken before a build."""
    return json.dumps(hashes, indent=1, sort_keys=True) + "\n"


def _extensions() -> dict[str, Path]:
    """Every extension module in the package, by module name."""
    found = {}
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    for folder, _, files in os.walk(_PACKAGE_DIR):
        rel = Path(folder).relative_to(_PACKAGE_DIR).parts
        for name in files:
            suffix = next((s for s in suffixes if name.endswith(s)), None)
            if suffix is not None:
                module = ".".join(("peerup", *rel, name[: -len(suffix)]))
                found[module] = Path(folder, name)
    return found


def _mismatch(extensions: dict[str, Path]) -> list[str]:
    """What keeps the compiled modules from running: changed sources, missing or
    unknown extensions, no record. Empty when they match their sources."""
    try:
        recorded = json.loads((_PACKAGE_DIR / RECORD).read_text())
    except (OSError, ValueError):
        return ["no build record"]
    if not isinstance(recorded, dict):
        return ["no build record"]
    out = [
        m.removeprefix("peerup.") + " (no extension)"
        for m in MODULES
        if m not in extensions
    ]
    out += [
        m.removeprefix("peerup.") + " (not in the build)"
        for m in extensions
        if m not in MODULES and not m.startswith(GROUP)
    ]
    now = source_hashes(_PACKAGE_DIR)
    out += [
        path
        for path in sorted(recorded.keys() | now.keys())
        if recorded.get(path) != now.get(path)
    ]
    return out


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Loads the given modules from their ``.py`` files, ahead of any extension."""

    def __init__(self, modules: frozenset[str]) -> None:
        self.modules = modules

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.modules:
            return None
        source = source_path(fullname)
        if not source.exists():
            return None  # nothing to fall back to
        return importlib.util.spec_from_file_location(fullname, source)


def prefer_fresh() -> None:
    """Run the sources unless the compiled modules match them.

    Called once from ``peerup/__init__.py``, before any compiled module is imported.
    ``PEERUP_PURE=1`` runs the sources even when the compiled modules are fresh.
    """
    global _fallback_reason
    extensions = _extensions()
    if os.environ.get("PEERUP_PURE") == "1":
        _fallback_reason = "PEERUP_PURE=1 is set"
    elif not extensions:
        return  # a pure install: the normal import finds the sources
    elif not all(source_path(m).exists() for m in MODULES):
        return  # installed without sources: nothing to check or fall back to
    else:
        mismatch = _mismatch(extensions)
        if not mismatch:
            return
        shown = ", ".join(mismatch[:6]) + (", …" if len(mismatch) > 6 else "")
        _fallback_reason = (
            f"the compiled modules do not match their sources ({shown}); "
            "rebuild with scripts/build-native (or reinstall)"
        )
    sys.meta_path.insert(0, _SourceFinder(frozenset(MODULES) | frozenset(extensions)))


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
