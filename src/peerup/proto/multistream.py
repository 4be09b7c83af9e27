"""multistream-select 1.0.0: agree on one protocol for a connection or stream.

Spec: multiformats/multistream-select README, and libp2p/specs
connections/README.md "Protocol Negotiation". Each message is a varint length, the
UTF-8 text and ``\\n``. Flow::

    initiator -> /multistream/1.0.0\\n  <proposal>\\n
    responder -> /multistream/1.0.0\\n  <proposal>\\n   (accepted)  or  na\\n
    initiator -> <next proposal>\\n ...                (after na)

Optimistic (lazy) mode: an initiator with a single proposal may send application data
right after its proposal without waiting; the responder's confirmation is consumed
when it arrives (spec: connections/optimistic-multistream.md). Bytes that follow the
last negotiation message are handed on as ``leftover``, never dropped.
Not supported: ``ls`` listing (answered with ``na``), multistream-select 2.0.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Final

from peerup.core import varint
from peerup.core.errors import LocalProtocolError, RemoteProtocolError

PROTOCOL_ID: Final = "/multistream/1.0.0"
NA: Final = "na"
MAX_MESSAGE_BYTES: Final = 1024


class Role(enum.Enum):
    INITIATOR = "initiator"
    RESPONDER = "responder"


class NegotiationState(enum.Enum):
    AWAIT_HEADER = enum.auto()
    AWAIT_RESPONSE = enum.auto()
    AWAIT_PROPOSAL = enum.auto()
    DONE = enum.auto()
    FAILED = enum.auto()


@dataclass(frozen=True, slots=True)
class ProtocolSelected:
    """Both sides agreed on ``protocol``; ``leftover`` is application data after it."""

    protocol: str
    leftover: bytes


@dataclass(frozen=True, slots=True)
class ProtocolRejected:
    """The responder answered ``na`` to one proposal (the initiator tries the next)."""

    protocol: str


@dataclass(frozen=True, slots=True)
class ProtocolRefused:
    """We (the responder) answered ``na``: the peer asked for ``protocol``, which we
    do not speak. The peer may propose another."""

    protocol: str


@dataclass(frozen=True, slots=True)
class NegotiationFailed:
    """No protocol was agreed: every proposal was refused."""

    reason: str


Event = ProtocolSelected | ProtocolRejected | ProtocolRefused | NegotiationFailed


def encode_message(text: str) -> bytes:
    """One multistream message: varint length + text + newline."""
    body = text.encode() + b"\n"
    return varint.encode(len(body)) + body


def proposal_at_start(
    data: bytes, supported: Collection[str]
) -> tuple[str, int] | None:
    """A responder's usual case: ``data`` starts with the header and one proposal of
    a ``supported`` protocol (each message whole). Returns the protocol and where the
    two messages end; the answer that accepts it is ``data[:end]`` itself. None for
    anything else (split messages, unknown protocols, ``ls``...)."""
    start = len(_HEADER_MESSAGE)
    if not data.startswith(_HEADER_MESSAGE) or len(data) <= start:
        return None
    size = data[start]  # a one-byte varint: a message under 128 bytes
    end = start + 1 + size
    if size >= 0x80 or size < 2 or len(data) < end or data[end - 1] != 0x0A:
        return None
    try:
        protocol = data[start + 1 : end - 1].decode()
    except UnicodeDecodeError:
        return None
    if protocol not in supported:
        return None
    return protocol, end


@functools.lru_cache(maxsize=256)
def opening_message(protocol: str) -> bytes:
    """Header plus ``protocol``: what an initiator sends first, and the answer that
    accepts it (cached: the same few protocols are proposed on every new stream)."""
    return _HEADER_MESSAGE + encode_message(protocol)


_HEADER_MESSAGE: Final = encode_message(PROTOCOL_ID)


class MultistreamNegotiator:
    """One side of a multistream-select negotiation.

    Args:
        role: initiator proposes, responder accepts or refuses.
        protocols: the initiator's proposals in order of preference, or the set of
            protocols the responder supports.
        optimistic: initiator only; send header and the single proposal at once and
            let the caller write data before the answer arrives.
    """

    def __init__(
        self,
        role: Role,
        protocols: Sequence[str] | Collection[str],
        *,
        optimistic: bool = False,
    ) -> None:
        if not protocols:
            raise LocalProtocolError("multistream: no protocols given")
        if optimistic and (role is not Role.INITIATOR or len(protocols) != 1):
            raise LocalProtocolError("optimistic mode needs an initiator, 1 proposal")
        self.role = role
        self.optimistic = optimistic
        self._buf = bytearray()
        self.state = NegotiationState.AWAIT_HEADER
        self.selected: str | None = None
        if role is Role.INITIATOR:
            self._proposals = list(protocols)
            # Also the answer that accepts the first proposal (see _fast_path).
            self._accepted = opening_message(self._proposals[0])
            self._out = bytearray(self._accepted)
        else:
            self._proposals = []
            self._supported = (
                protocols if isinstance(protocols, frozenset) else frozenset(protocols)
            )
            self._out = bytearray(_HEADER_MESSAGE)

    def data_to_send(self) -> bytes:
        """Drain the bytes to write."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed received bytes; returns the events they complete.

        Raises:
            RemoteProtocolError: malformed message or wrong header.
        """
        if self.state in (NegotiationState.DONE, NegotiationState.FAILED):
            raise LocalProtocolError("multistream: negotiation already finished")
        if self.state is NegotiationState.AWAIT_HEADER and not self._buf:
            selected = self._fast_path(data)
            if selected is not None:
                return [selected]
        self._buf += data
        events: list[Event] = []
        try:
            while self.state not in (NegotiationState.DONE, NegotiationState.FAILED):
                message = self._next_message()
                if message is None:
                    break
                event = self._handle(message)
                if event is not None:
                    events.append(event)
        except RemoteProtocolError:
            self.state = NegotiationState.FAILED
            raise
        return events

    def _fast_path(self, data: bytes) -> ProtocolSelected | None:
        """The usual case in one step, without the general parser: the header and the
        first proposal (responder), or the header and the acceptance of our first
        proposal (initiator), whole at the start of ``data``. Anything else (split
        messages, ``na``, unknown protocols) returns None for the general path."""
        if self.role is Role.INITIATOR:
            accepted = self._accepted
            if not data.startswith(accepted):
                return None
            self.state = NegotiationState.DONE
            self.selected = self._proposals[0]
            return ProtocolSelected(self.selected, data[len(accepted) :])
        found = proposal_at_start(data, self._supported)
        if found is None:
            return None
        protocol, end = found
        self._out += data[len(_HEADER_MESSAGE) : end]  # our acceptance: the same back
        self.state = NegotiationState.DONE
        self.selected = protocol
        return ProtocolSelected(protocol, data[end:])

    def _next_message(self) -> str | None:
        got = varint.try_read_prefixed(self._buf, MAX_MESSAGE_BYTES)
        if got is None:
            return None
        body, end = got
        del self._buf[:end]
        if not body.endswith(b"\n"):
            raise RemoteProtocolError("multistream message without trailing newline")
        try:
            return body[:-1].decode()
        except UnicodeDecodeError:
            raise RemoteProtocolError("multistream message is not UTF-8") from None

    def _handle(self, message: str) -> Event | None:
        if self.state is NegotiationState.AWAIT_HEADER:
            if message != PROTOCOL_ID:
                raise RemoteProtocolError(f"multistream: bad header {message[:64]!r}")
            self.state = (
                NegotiationState.AWAIT_RESPONSE
                if self.role is Role.INITIATOR
                else NegotiationState.AWAIT_PROPOSAL
            )
            return None
        if self.state is NegotiationState.AWAIT_PROPOSAL:
            if message in self._supported:
                self._out += encode_message(message)
                return self._finish(message)
            self._out += encode_message(NA)
            return ProtocolRefused(message)
        # initiator awaiting the answer to self._proposals[0]
        proposal = self._proposals[0]
        if message == proposal:
            return self._finish(proposal)
        if message != NA:
            raise RemoteProtocolError(
                f"multistream: answer {message[:64]!r} to proposal {proposal!r}"
            )
        self._proposals.pop(0)
        if not self._proposals or self.optimistic:
            self.state = NegotiationState.FAILED
            return NegotiationFailed(f"peer does not support {proposal}")
        self._out += encode_message(self._proposals[0])
        return ProtocolRejected(proposal)

    def _finish(self, protocol: str) -> ProtocolSelected:
        self.state = NegotiationState.DONE
        self.selected = protocol
        leftover = bytes(self._buf)
        self._buf.clear()
        return ProtocolSelected(protocol, leftover)
