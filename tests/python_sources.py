"""Run a test on the Python sources of the compiled modules (src/peerup/native.py).

A few unit tests hand a compiled class a fake collaborator, or patch a method of one
instance; compiled (native) classes refuse both. Decorated with
:func:`in_python_sources`, such a test runs as written when the sources run, and under
a compiled build runs again in a child pytest with ``PEERUP_PURE=1``, where the same
sources run interpreted. The test passes only if the child ran it and it passed.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from peerup import native

ROOT = Path(__file__).resolve().parents[1]
F = TypeVar("F", bound=Callable[..., Any])


def in_python_sources(test: F) -> F:
    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not native.status().compiled:
            return test(*args, **kwargs)
        nodeid = os.environ["PYTEST_CURRENT_TEST"].rsplit(" ", 1)[0]
        env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
        env["PEERUP_PURE"] = "1"
        child = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", nodeid],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,  # under the parent pytest timeout (300 s)
        )
        out = child.stdout + child.stderr
        assert child.returncode == 0, f"{nodeid} on the Python sources:\n{out}"
        assert re.search(r"^1 passed", out, re.MULTILINE), out
        return None

    return wrapper  # type: ignore[return-value]
