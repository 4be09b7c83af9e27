"""What went wrong, in the user's words: one translation for every command.

``proxy``, ``ping``, ``traceroute``, ``status`` and the daemon's logs all name a
failure the same way: its cause (who refused, what is missing) and the fix. The
wire gives us circuit-v2 statuses (libp2p/specs relay/circuit-v2.md "Status"),
multistream ``na`` (a protocol the far side does not speak), and a connection that
a peer gate ends right after the handshake (:class:`RefusedAtHandshake`); this module
turns them into a :class:`Failure`. Raw codes such as ``PERMISSION_DENIED`` never
reach the user's first line; they stay in ``detail`` for logs and ``--json``.

On circuits our relay answers ``PERMISSION_DENIED`` to CONNECT when the *target*
refused the dialer (the relay refuses the dialer itself at its handshake, which is
:class:`RelayRefusedUs`), ``NO_RESERVATION`` when the target holds no reservation
(its daemon is not running or not connected to this relay).
"""

from __future__ import annotations

import enum
import errno
import os
from dataclasses import dataclass

from peerup.core.errors import (
    ConnectError,
    Error,
    NegotiationError,
    PeerIdMismatch,
    RefusedAtHandshake,
    RelayError,
    RelayRefusedUs,
    RelayUnreachable,
)
from peerup.core.errors import TimeoutError as PeerupTimeout
from peerup.proto.relay_v2 import Status


class Cause(enum.Enum):
    """Why something could not be reached, most specific first (see _RANK)."""

    RELAY_REFUSED_US = "relay refused this machine"
    PEER_REFUSED_US = "peer refused this machine"
    WRONG_PEER = "wrong peer at that address"
    UNKNOWN_SERVICE = "no such service"
    SERVICE_DISABLED = "service disabled"
    SERVICE_NOT_ALLOWED = "service not allowed"
    SERVICE_DOWN = "service down"
    PEER_OFFLINE = "peer offline"
    RELAY_FULL = "relay limit reached"
    RELAY_UNREACHABLE = "relay unreachable"
    PEER_UNREACHABLE = "peer unreachable"
    NO_ADDRESS = "no address known"
    TIMEOUT = "timed out"
    CUT = "connection cut"
    LOCAL_PORT = "local port unavailable"


_RANK = {cause: i for i, cause in enumerate(Cause)}


@dataclass(frozen=True, slots=True)
class Failure:
    """One failure as the user is told it: ``message`` names the cause, ``hint`` the
    fix, ``detail`` the underlying error (for logs and ``--json``)."""

    cause: Cause
    message: str
    hint: str | None = None
    detail: str = ""

    def line(self) -> str:
        """The text after ``error: ``: message and hint."""
        return self.message + (f" (hint: {self.hint})" if self.hint else "")

    def as_json(self) -> dict[str, str | None]:
        return {
            "cause": self.cause.name.lower(),
            "error": self.message,
            "hint": self.hint,
            "detail": self.detail,
        }


class Failed(Error):
    """An operation the user asked for failed: its message and hint are the
    explained :class:`Failure` (the CLI prints them as its ``error:`` line)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.hint = failure.hint
        self.failure = failure


def relay_refused_us(relay: str, me: str, detail: str = "") -> Failure:
    return Failure(
        Cause.RELAY_REFUSED_US,
        f"the relay refused this machine ({relay})",
        f"ask its operator to run `peerup relay authorize {me}`",
        detail,
    )


def explain_dial(exc: BaseException, peer: str, me: str) -> Failure:
    """Why dialing ``peer`` (a name or peer ID, as the user wrote it) failed.

    ``me`` is this machine's peer ID, for the commands the hints name.
    """
    detail = str(exc)
    found = [_explain_one(c, peer, me, detail) for c in _causes(exc)]
    return min(found, key=lambda f: _RANK[f.cause])


def _causes(exc: BaseException) -> list[BaseException]:
    """The errors behind ``exc``: for a dial over several addresses, the error of
    each one (the summary itself says nothing more), else ``exc``."""
    if isinstance(exc, ConnectError) and exc.causes and type(exc) is ConnectError:
        out: list[BaseException] = []
        for cause in exc.causes:
            out += _causes(cause)
        return out
    return [exc]


def _explain_one(exc: BaseException, peer: str, me: str, detail: str) -> Failure:
    if isinstance(exc, RelayRefusedUs):
        return relay_refused_us(exc.relay, me, detail)
    if isinstance(exc, RefusedAtHandshake):
        return peer_refused_us(peer, me, detail)
    if isinstance(exc, RelayError):
        if exc.status == Status.PERMISSION_DENIED:
            return peer_refused_us(peer, me, detail)
        if exc.status == Status.NO_RESERVATION:
            return Failure(
                Cause.PEER_OFFLINE,
                f"{peer} is offline: it holds no reservation on the relay",
                f"start `peerup daemon` on {peer}, with the same relay in its config",
                detail,
            )
        if exc.status in (Status.RESOURCE_LIMIT_EXCEEDED, Status.RESERVATION_REFUSED):
            return Failure(
                Cause.RELAY_FULL,
                "the relay is at one of its limits (circuits or reservations)",
                "try again later, or ask its operator to raise the limits",
                detail,
            )
        if exc.status == Status.CONNECTION_FAILED:
            return Failure(
                Cause.PEER_UNREACHABLE,
                f"the relay could not reach {peer}",
                f"check that `peerup daemon` on {peer} is running",
                detail,
            )
    if isinstance(exc, RelayUnreachable):
        return Failure(
            Cause.RELAY_UNREACHABLE,
            f"cannot reach the relay {exc.relay}",
            "check the relay's address in config.yaml and that it runs",
            detail,
        )
    if isinstance(exc, PeerIdMismatch):
        return Failure(
            Cause.WRONG_PEER,
            f"another peer answered at {peer}'s address",
            "check the peer ID or the multiaddr",
            detail,
        )
    if isinstance(exc, (PeerupTimeout, TimeoutError)):
        return Failure(
            Cause.TIMEOUT,
            f"no answer from {peer} or the relay on the way, in time",
            "check that the relay's address in config.yaml is right and reachable "
            "(`peerup status` shows whether the daemon holds its reservation)",
            detail,
        )
    if isinstance(exc, ConnectError) and "no known address" in str(exc):
        return Failure(
            Cause.NO_ADDRESS,
            f"no way to reach {peer}: no relay configured and no address known",
            "add a relay (`relays:` in config.yaml, or `peerup init --relay`) "
            "or give the peer's multiaddr",
            detail,
        )
    return Failure(
        Cause.PEER_UNREACHABLE, f"{peer} is offline or unreachable", None, detail
    )


def peer_refused_us(peer: str, me: str, detail: str = "") -> Failure:
    return Failure(
        Cause.PEER_REFUSED_US,
        f"{peer} refused this machine (not in its authorized_keys)",
        f"on {peer}, run `peerup auth add {me}`",
        detail,
    )


def service_failure(answer: str, peer: str, service: str, detail: str) -> Failure:
    """A far node's answer on the service-status side protocol, as a Failure."""
    if answer == "unknown":
        return Failure(
            Cause.UNKNOWN_SERVICE,
            f"{peer} has no service {service!r}",
            f"on {peer}, `peerup service list` shows what it offers",
            detail,
        )
    if answer == "disabled":
        return Failure(
            Cause.SERVICE_DISABLED,
            f"service {service!r} is disabled on {peer}",
            f"on {peer}, run `peerup service enable {service}`",
            detail,
        )
    if answer == "denied":
        return Failure(
            Cause.SERVICE_NOT_ALLOWED,
            f"{peer} does not allow this machine to use {service!r} "
            "(not in the service's allowed_peers)",
            f"on {peer}, add this machine to the service's allowed_peers",
            detail,
        )
    if answer == "down":
        return Failure(
            Cause.SERVICE_DOWN,
            f"service {service!r} on {peer} is down: "
            "nothing listens on its local address",
            f"start the service on {peer}, or fix its local_address",
            detail,
        )
    return Failure(Cause.CUT, f"the connection to {peer} was cut", None, detail)


def unsupported_service(peer: str, service: str, exc: NegotiationError) -> Failure:
    """The far side answered ``na`` and could not say more (a peer without our
    service-status protocol, such as the Go original)."""
    return Failure(
        Cause.UNKNOWN_SERVICE,
        f"{peer} has no service {service!r} (or it is disabled there)",
        f"on {peer}, `peerup service list` shows what it offers",
        str(exc),
    )


_LOCAL_LISTEN_HINTS = {
    errno.EADDRINUSE: "another program (or another proxy) has that port: pick "
    "another, or 0 for any free one",
    errno.EACCES: "ports below 1024 need root: pick one from 1024 up",
    errno.EADDRNOTAVAIL: "this machine has no such address: use 127.0.0.1, or one "
    "of its own addresses",
}


def local_listen_error(bind: str, port: int, exc: OSError) -> Failed:
    """A proxy's local port could not be opened, in the user's words (asyncio words
    bind errors as "error while attempting to bind on address …")."""
    reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
    return Failed(
        Failure(
            Cause.LOCAL_PORT,
            f"cannot listen on {bind}:{port}: {reason}",
            _LOCAL_LISTEN_HINTS.get(exc.errno or 0),
            str(exc),
        )
    )
