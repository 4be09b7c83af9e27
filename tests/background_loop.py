"""An event loop in a thread, for daemons and far nodes, while ``main()`` (which runs
its own loop) is called in the test's thread; and its pytest fixture."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

TIMEOUT_S = 30.0


class Background:
    """An event loop in a thread; ``closers`` run (newest first) at ``close``."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.closers: list[Callable[[], Coroutine[Any, Any, None]]] = []

    def call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(TIMEOUT_S)

    def close(self) -> None:
        for closer in reversed(self.closers):
            self.call(closer())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT_S)
        self.loop.close()


@pytest.fixture
def background() -> Iterator[Background]:
    bg = Background()
    yield bg
    bg.close()
