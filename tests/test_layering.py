"""Imports point down only: core <- proto <- net <- app <- cli (STYLE.md rule 4).

An AST scan of every module under src/peerup. ``config`` sits beside ``app`` (it may use
core only); the top-level ``interop`` and ``cli`` may use everything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "peerup"
LAYERS = {"core": 0, "proto": 1, "net": 2, "config": 2, "app": 3, "cli": 4, "interop": 4}
FORBIDDEN_IN_PURE = {"asyncio", "socket", "time", "random", "os", "selectors", "threading"}


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py"))


def _layer(path: Path) -> str | None:
    rel = path.relative_to(SRC)
    name = rel.parts[0].removesuffix(".py")
    return name if name in LAYERS else None


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
            if node.module == "peerup":
                out += [f"peerup.{a.name}" for a in node.names]
    return out


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down(path: Path) -> None:
    layer = _layer(path)
    if layer is None:
        return
    for name in _imports(path):
        parts = name.split(".")
        if parts[0] == "peerup" and len(parts) > 1 and parts[1] in LAYERS:
            target = parts[1]
            if layer == "config":
                assert target in ("core", "config"), f"config must use core only: {name}"
            else:
                assert LAYERS[target] <= LAYERS[layer], f"{layer} imports upward: {name}"
                if layer == "net":
                    assert target != "config", f"net must not read config: {name}"
        if layer in ("core", "proto"):
            assert parts[0] not in FORBIDDEN_IN_PURE, f"{layer} is sans-IO but imports {name}"


def test_scan_sees_every_layer() -> None:
    seen = {_layer(p) for p in _modules()}
    assert {"core", "proto", "net", "app", "cli", "config"} <= seen
