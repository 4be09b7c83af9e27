"""A set of tasks owned by one object, cancelled and awaited together on ``aclose``.

Used instead of bare ``create_task`` so that no task outlives the connection, host or
service that started it (STYLE.md 3.2). ``asyncio.TaskGroup`` is not used directly
because its owner's lifetime is not one ``async with`` block, and because one failing
child (a misbehaving peer's stream handler) must not cancel its siblings.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from peerup.core.errors import Error

log = logging.getLogger(__name__)


class TaskSet:
    """Spawn tasks, log their failures, cancel them all on :meth:`aclose`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def spawn(
        self, coro: Coroutine[Any, Any, Any], name: str | None = None
    ) -> asyncio.Task[Any]:
        """Start ``coro`` as a task owned by this set."""
        if self._closed:
            coro.close()
            raise RuntimeError(f"{self.name}: closed, cannot start {name or coro}")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        if isinstance(exc, Error | OSError | TimeoutError):
            log.debug("%s: task %s ended: %r", self.name, task.get_name(), exc)
        else:
            log.warning("%s: task %s crashed", self.name, task.get_name(), exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    async def aclose(self) -> None:
        """Cancel every task and wait for them to finish. Idempotent."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
