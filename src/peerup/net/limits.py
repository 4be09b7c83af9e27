"""File descriptors: the process's limit, how many are free, and ``EMFILE`` as one line.

Spec: none (POSIX ``getrlimit``/``setrlimit``, Linux ``/proc/self/fd``). Every TCP
connection, listener and local service connection holds a descriptor. systemd starts
services with a soft limit of 1,024 (and a hard limit far above), which 2,000 silent
connections once filled; :func:`raise_open_file_limit` lifts the soft limit to the
hard one at daemon and relay start. :class:`FdGauge` tells the host how many are free,
so that it can keep a reserve for authorized peers and local services (see
``HostConfig.reserved_fds``); it counts ``/proc/self/fd`` at most every
``recount_s`` and adds the connections accepted since, so an accept costs no system
call. Where ``/proc`` or ``resource`` is missing (not Linux) nothing is limited.
:func:`quiet_accept_errors` turns asyncio's traceback for a failed ``accept()``
(``EMFILE``: out of descriptors) into one warning line every 10 s at most.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Final

try:
    import resource
except ImportError:  # not POSIX
    resource = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

_FD_DIR: Final = "/proc/self/fd"
_ACCEPT_ERROR: Final = "socket.accept() out of system resource"
ACCEPT_ERROR_LOG_INTERVAL_S: Final = 10.0
"""At most one line per this interval about failed accepts (asyncio retries every
second, per listener)."""
UNLIMITED: Final = 1 << 30
"""What :meth:`FdGauge.free` says where descriptors cannot be counted."""


def open_file_limit() -> int:
    """The soft limit on open descriptors (:data:`UNLIMITED` if unknown)."""
    if resource is None:
        return UNLIMITED
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return UNLIMITED if soft == resource.RLIM_INFINITY else soft


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft limit on open descriptors to the hard limit; returns (before,
    after). Logs the change; a refusal by the system is logged and ignored."""
    if resource is None:
        return UNLIMITED, UNLIMITED
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard or soft == resource.RLIM_INFINITY:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError) as exc:
        log.warning(
            "cannot raise the open files limit from %d to %d: %s", soft, hard, exc
        )
        return soft, soft
    log.info("open files limit raised from %d to %d", soft, hard)
    return soft, hard


def count_open_fds() -> int | None:
    """Descriptors this process has open, or None where that cannot be told."""
    try:
        return len(os.listdir(_FD_DIR)) - 1  # less the one listdir itself used
    except OSError:
        return None


class FdGauge:
    """How many descriptors are free, cheaply enough to ask on every accept."""

    def __init__(self, recount_s: float = 0.25) -> None:
        self.recount_s = recount_s
        self._counted_at = float("-inf")
        self._open = 0
        self._since = 0
        self._limit = UNLIMITED
        self._countable = True

    def free(self, now: float) -> int:
        """Descriptors free at ``now``; counts again every ``recount_s``."""
        if not self._countable:
            return UNLIMITED
        if now - self._counted_at >= self.recount_s:
            count = count_open_fds()
            if count is None:
                self._countable = False
                return UNLIMITED
            self._open, self._since, self._counted_at = count, 0, now
            self._limit = open_file_limit()
        return self._limit - self._open - self._since

    def opened(self) -> None:
        """A descriptor was opened since the last count (an accepted connection)."""
        self._since += 1


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Log asyncio's "out of system resource" on ``accept()`` as one warning line
    (asyncio retries the listener a second later) instead of a traceback, at most
    one every ``ACCEPT_ERROR_LOG_INTERVAL_S`` with the count of the others; any other
    exception goes to the handler in place before. Idempotent per loop. (uvloop
    drops such connections itself, silently.)"""
    previous = loop.get_exception_handler()
    if getattr(previous, "_peerup_quiet_accept", False):
        return
    logged_at = [float("-inf"), 0.0]  # when last logged, times not logged since

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == _ACCEPT_ERROR:
            now = loop.time()
            if now - logged_at[0] < ACCEPT_ERROR_LOG_INTERVAL_S:
                logged_at[1] += 1
                return
            exc = context.get("exception")
            since = f" ({logged_at[1]:.0f} more times before)" if logged_at[1] else ""
            logged_at[0], logged_at[1] = now, 0.0
            log.warning(
                "not accepting connections for a second: %s%s",
                exc.strerror if isinstance(exc, OSError) and exc.strerror else exc,
                since,
            )
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    handler._peerup_quiet_accept = True  # type: ignore[attr-defined]
    loop.set_exception_handler(handler)
