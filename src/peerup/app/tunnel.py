"""Service tunnels: the wire names of exposed services and of their status side protocol.

A service is carried as raw TCP bytes with half-close on a stream whose protocol ID is
``/peerup/<service>/1.0.0``, as the Go original names it. The bytes are moved by
``net/tcp_splice.py`` (a TCP socket and a stream) and, at a relay, by
``net/stream_splice.py`` (two streams); both use callbacks, not copy tasks.
"""

from __future__ import annotations

from typing import Final

SERVICE_STATUS_PROTOCOL: Final = "/peerup/service-status/1.0.0"
"""Our diagnostic side protocol: asked only after a service stream failed, to tell the
user why (service down, peer not allowed). Peers without it (the Go original) simply
answer ``na`` and the user gets the generic message."""


def service_protocol(name: str) -> str:
    """The wire protocol ID of a service, as the Go original names it."""
    return f"/peerup/{name}/1.0.0"
