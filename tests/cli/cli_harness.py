"""The result type of the ``cli`` fixture (conftest.py), importable by the tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class CliResult:
    code: int
    out: str
    err: str
    questions: list[str] = field(default_factory=list)

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]

    def json(self) -> Any:
        return json.loads(self.out)


Cli = Callable[..., CliResult]
