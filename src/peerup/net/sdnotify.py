"""systemd's service notification protocol: READY, WATCHDOG, RELOADING, STOPPING.

Spec: sd_notify(3) and systemd.service(5) ``Type=notify``, ``WatchdogSec=``. A message
is one datagram of ``KEY=VALUE`` lines sent to the ``AF_UNIX`` socket named by
``$NOTIFY_SOCKET`` (a leading ``@`` names an abstract socket); the watchdog interval
is ``$WATCHDOG_USEC`` microseconds, for the process ``$WATCHDOG_PID`` if set. Written
by hand: the protocol is one ``sendto`` per message, and the libraries that wrap it
(python-systemd, sdnotify) add a C dependency or nothing. Without ``$NOTIFY_SOCKET``
(not started by systemd) every call is a no-op; a send that fails is logged once and
never stops the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Tells the service manager how the process is doing (see the module docs)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if path.startswith("@"):
            self.address = b"\0" + path[1:].encode()
        elif path.startswith("/"):
            self.address = path
        self.watchdog_s: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6
        self._task: asyncio.Task[None] | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, message: str) -> bool:
        """Send ``message`` (``READY=1``, ``STATUS=…``); False if not sent."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message.encode(), self.address)
        except OSError as exc:
            if not self._warned:
                log.warning("cannot notify the service manager: %s", exc)
                self._warned = True
            return False
        return True

    def ready(self, status: str) -> None:
        """Started: READY, and the watchdog pings from now on."""
        self.notify(f"READY=1\nSTATUS={status}\nMAINPID={os.getpid()}")
        if self.watchdog_s is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watchdog())

    def reloading(self) -> None:
        monotonic_us = int(time.monotonic() * 1e6)
        self.notify(f"RELOADING=1\nMONOTONIC_USEC={monotonic_us}")

    def reloaded(self, status: str) -> None:
        self.notify(f"READY=1\nSTATUS={status}")

    def stopping(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.notify("STOPPING=1\nSTATUS=stopping")

    async def _watchdog(self) -> None:
        """WATCHDOG=1 at half the interval, from the event loop: if the loop hangs,
        the pings stop and systemd restarts the service."""
        assert self.watchdog_s is not None
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                self.notify("WATCHDOG=1")
                await asyncio.sleep(self.watchdog_s / 2)
