"""The ``run`` fixture: run one coroutine to completion on a fresh event loop.

Async tests are plain ``def`` tests that call ``run(main())`` (aioquic's way, STYLE.md
3.8), so no pytest-asyncio. ``run`` bounds the coroutine with a timeout, so a hung
test fails with a traceback instead of waiting for pytest-timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 30.0

Run = Callable[..., Any]


def run_coroutine(
    coro: Coroutine[Any, Any, T], timeout_s: float = DEFAULT_TIMEOUT_S
) -> T:
    """``asyncio.run(coro)``, failing with TimeoutError after ``timeout_s``."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout_s):
            return await coro

    return asyncio.run(bounded())


@pytest.fixture
def run() -> Run:
    """``run(coro, timeout_s=30.0)``: the coroutine's result, on a fresh event loop."""
    return run_coroutine
