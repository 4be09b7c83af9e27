"""The root of peer-up's error tree.

Every error raised by peer-up derives from :class:`Error`. The tree::

    Error
    ├── ProtocolError            a wire protocol was violated
    │   ├── LocalProtocolError   we (the caller) misused a protocol object
    │   └── RemoteProtocolError  the peer sent something invalid
    ├── TransportError
    │   ├── ConnectError         a dial failed (refused, unreachable, no address)
    │   │   └── RelayUnreachable the relay on the way could not be reached
    │   ├── TimeoutError         an operation ran past its deadline
    │   └── ConnectionClosed     the connection or stream is gone
    │       └── RefusedAtHandshake  the peer hung up right after the handshake
    ├── NegotiationError         multistream-select found no common protocol
    ├── SecurityError            handshake failed, bad signature, peer ID mismatch
    ├── RelayError               a relay refused (carries the circuit-v2 status)
    │   └── RelayRefusedUs       the relay does not allow this machine at all
    ├── ConfigError              a config or state file is wrong (carries the field path)
    ├── NotFound                 what the command names is not there (exit 1, not 2)
    └── ApiError                 the daemon's local API answered with an error

Protocol errors carry the wire code to send (yamux go-away code, relay status) where one
exists, so the layer that catches them can close the connection with the right reason.
"""

from __future__ import annotations


class Error(Exception):
    """Base of every peer-up error."""


class ProtocolError(Error):
    """A wire protocol was violated.

    Attributes:
        code: the protocol's own error code to put on the wire, when it has one.
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class LocalProtocolError(ProtocolError):
    """The caller used a protocol object in a way its state does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break the protocol."""


class TransportError(Error):
    """Something below the protocols failed."""


class ConnectError(TransportError):
    """A dial did not produce a connection.

    Attributes:
        causes: the error of each address tried, in order.
    """

    def __init__(self, message: str, causes: tuple[Error, ...] = ()) -> None:
        super().__init__(message)
        self.causes = causes


class RelayUnreachable(ConnectError):
    """The relay a circuit goes through could not be reached."""

    def __init__(self, relay: str, cause: Error) -> None:
        super().__init__(f"cannot reach the relay {relay}: {cause}", (cause,))
        self.relay = relay


class TimeoutError(TransportError):  # noqa: A001 - deliberately our own name
    """An operation ran past its deadline."""


class ConnectionClosed(TransportError):
    """The connection or stream was closed or reset."""


class RefusedAtHandshake(ConnectionClosed):
    """The peer ended a connection we dialed right after the security handshake,
    before sending a single muxed frame.

    That is how a libp2p peer gate (ours, go-libp2p's connection gater) refuses a
    peer it does not allow: the wire carries no reason, so this shape is the signal.
    """


class StreamReset(ConnectionClosed):
    """The stream was reset (by the peer or locally) rather than ended cleanly."""


class NegotiationError(Error):
    """multistream-select found no protocol both sides speak."""


class SecurityError(Error):
    """The security handshake failed or authenticated the wrong peer."""


class PeerIdMismatch(SecurityError):
    """The peer proved an identity other than the one we dialed."""


class RelayError(Error):
    """A relay refused a reservation or a circuit.

    Attributes:
        status: the circuit-v2 ``Status`` code the relay answered.
    """

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class RelayRefusedUs(RelayError):
    """The relay refused this machine itself: it is not in the relay's allowlist
    (the relay hung up right after the handshake, see :class:`RefusedAtHandshake`).

    Attributes:
        relay: the relay's address, as text.
    """

    def __init__(self, relay: str) -> None:
        super().__init__(
            "the relay refused this machine (not in its relay_authorized_keys)",
            status=202,  # PERMISSION_DENIED
        )
        self.relay = relay


class ConfigError(Error):
    """A config or state file is invalid.

    Attributes:
        path: the file the problem is in, if any.
        field: the dotted key path of the bad field, if any.
        line: the 1-based line number, if known.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        field: str | None = None,
        line: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.path = path
        self.field = field
        self.line = line
        self.hint = hint
        self.reason = message
        where = ""
        if path:
            where = path + (f":{line}" if line else "") + ": "
        if field:
            where += f"{field}: "
        super().__init__(where + message)


class NotFound(Error):
    """What the user named (a peer in a list, a name, a service) is not there."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class ApiError(Error):
    """The daemon's local API answered with an error (and its hint, if any)."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint
