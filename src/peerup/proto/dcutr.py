"""DCUtR ``/libp2p/dcutr``: the HolePunch message codec and the hole punch's timing.

Spec: libp2p/specs relay/DCUtR.md ("The Protocol", "RPC messages"). The spec's letters:
``B`` is the peer that *received* the relayed connection (it starts the exchange, the
INITIATOR here) and ``A`` the peer that dialed through the relay (the RESPONDER).
One attempt, each message varint-length-prefixed on one stream::

    B -> A  CONNECT{ObsAddrs: B's addresses}     B starts its RTT clock
    A -> B  CONNECT{ObsAddrs: A's addresses}     B: rtt = now - start
    B -> A  SYNC                                 B dials A after rtt / 2
                                                 A dials B at once on SYNC

Both sides dial at about the same moment, so their SYNs cross and open each side's
NAT for the other: a TCP simultaneous open. Both called ``connect()``, so the spec
assigns the roles of everything above TCP: ``A`` is the client (multistream dialer,
Noise initiator, yamux client) and ``B`` the server. :class:`DialNow` carries that as
``is_client``. After a failed dial ``B`` tries again with a fresh CONNECT (the RTT is
measured anew each time), up to :data:`MAX_ATTEMPTS` attempts in all (spec: "retry
twice"). The spec reuses the stream for retries; go-libp2p's responder closes it
after one attempt, so after the peer's end of stream the caller opens a new stream
and calls :meth:`DcutrSession.new_stream`.

The object is sans-IO (STYLE.md 3.1): bytes in through ``receive_data``, bytes out
through ``data_to_send``, the clock passed in, and the dial as an action event
(:class:`DialNow`) that the IO layer (net/holepunch.py) carries out and reports back
with ``dial_failed`` / ``dial_succeeded``. Which addresses are worth dialing is the
caller's choice; this module passes on every address it can parse.
Not supported: QUIC hole punching (B's random UDP packets), address prediction.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from peerup.core import pb, varint
from peerup.core.errors import LocalProtocolError, RemoteProtocolError
from peerup.core.multiaddr import Multiaddr

PROTOCOL_ID: Final = "/libp2p/dcutr"
MAX_MESSAGE_BYTES: Final = 4096
"""Spec: "Implementations SHOULD refuse encoded RPC messages ... larger than 4 KiB"."""
MAX_ATTEMPTS: Final = 3
"""Spec: the inbound peer retries twice, three attempts in all."""


class MessageType(enum.IntEnum):
    """``HolePunch.Type``."""

    CONNECT = 100
    SYNC = 300


@dataclass(frozen=True, slots=True)
class HolePunch:
    """``message HolePunch { optional Type type = 1; repeated bytes ObsAddrs = 2; }``"""

    type: MessageType
    addrs: tuple[Multiaddr, ...] = ()

    def encode(self) -> bytes:
        """The protobuf body (without the length prefix)."""
        parts = [pb.encode_varint_field(1, int(self.type))]
        parts += [pb.encode_bytes_field(2, a.to_bytes()) for a in self.addrs]
        return b"".join(parts)

    def encode_prefixed(self) -> bytes:
        """The message as sent on the stream."""
        return varint.prefixed(self.encode())

    @classmethod
    def decode(cls, raw: bytes) -> HolePunch:
        """Decode a protobuf body; addresses we cannot parse (other transports, newer
        protocols) are skipped, since the peer may list more than we can dial.

        Raises:
            RemoteProtocolError: malformed protobuf, missing or unknown type.
        """
        msg = pb.Reader(raw, "HolePunch")
        kind = msg.uint(1)
        if kind is None:
            raise RemoteProtocolError("HolePunch: missing type")
        try:
            mtype = MessageType(kind)
        except ValueError:
            raise RemoteProtocolError(f"HolePunch: unknown type {kind}") from None
        addrs = []
        for blob in msg.repeated_bytes(2):
            try:
                addrs.append(Multiaddr.from_bytes(blob))
            except RemoteProtocolError:
                continue
        return cls(mtype, tuple(addrs))


class Role(enum.Enum):
    INITIATOR = enum.auto()
    """``B``: received the relayed connection; sends CONNECT first, then SYNC."""
    RESPONDER = enum.auto()
    """``A``: dialed through the relay; answers CONNECT, dials on SYNC."""


class DcutrState(enum.Enum):
    IDLE = enum.auto()
    """Nothing under way (A: waiting for a CONNECT)."""
    CONNECT_SENT = enum.auto()
    """B: our CONNECT is out, the RTT clock runs."""
    SYNC_WAIT = enum.auto()
    """A: our CONNECT answered theirs; waiting for SYNC."""
    DIAL_SCHEDULED = enum.auto()
    """B: SYNC sent; the dial is due at ``next_deadline()`` (half the RTT)."""
    DIALING = enum.auto()
    """A :class:`DialNow` was emitted; waiting for the caller's outcome."""
    DONE = enum.auto()
    """A dial succeeded."""
    FAILED = enum.auto()
    """Given up (see :class:`HolePunchFailed`); the stream should be reset."""


@dataclass(frozen=True, slots=True)
class DialNow:
    """Action: dial ``addrs`` now, all of them, from the port we listen on."""

    addrs: tuple[Multiaddr, ...]
    is_client: bool
    """The role above TCP on the resulting connection (A: client, B: server)."""
    attempt: int
    """1-based attempt number."""
    rtt_s: float | None
    """The relayed round trip this attempt measured (B: CONNECT to CONNECT; A: its
    CONNECT to SYNC)."""


@dataclass(frozen=True, slots=True)
class HolePunchFailed:
    """The hole punch is over without a connection; ``reason`` says why."""

    reason: str
    attempts: int


Event = DialNow | HolePunchFailed


class DcutrSession:
    """One side of DCUtR on one relayed connection (see the module docstring)."""

    def __init__(
        self,
        role: Role,
        own_addrs: Sequence[Multiaddr],
        *,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.role = role
        self.own_addrs = tuple(own_addrs)
        self.max_attempts = max_attempts
        self.state = DcutrState.IDLE
        self.attempt = 0
        self.rtt_s: float | None = None
        """The RTT measured by the latest attempt."""
        self.peer_addrs: tuple[Multiaddr, ...] = ()
        """What the peer's latest CONNECT listed."""
        self.peer_closed = False
        """The peer ended its side of the stream (a retry needs a new stream)."""
        self._buffer = bytearray()
        self._outbox = bytearray()
        self._sent_at = 0.0
        self._dial_at: float | None = None

    # --- commands -----------------------------------------------------------------

    def start(self, now: float) -> None:
        """B: send CONNECT and start the RTT clock (the first attempt, or a retry).

        Raises:
            LocalProtocolError: not the initiator, or not IDLE.
        """
        if self.role is not Role.INITIATOR or self.state is not DcutrState.IDLE:
            raise LocalProtocolError(
                f"cannot start DCUtR as {self.role.name} in {self.state.name}"
            )
        self.attempt += 1
        self._send(HolePunch(MessageType.CONNECT, self.own_addrs))
        self._sent_at = now
        self.state = DcutrState.CONNECT_SENT

    def new_stream(self) -> None:
        """The caller moved to a fresh stream (the peer closed the last one)."""
        self._buffer.clear()
        self._outbox.clear()
        self.peer_closed = False

    def dial_succeeded(self) -> None:
        """The dial of the last :class:`DialNow` produced a direct connection."""
        self.state = DcutrState.DONE
        self._dial_at = None

    def dial_failed(self, now: float, reason: str) -> list[Event]:
        """The dial of the last :class:`DialNow` failed. B starts the next attempt
        (a new CONNECT is queued) or gives up; A waits for B's next CONNECT."""
        if self.state is not DcutrState.DIALING:
            return []
        if self.role is Role.RESPONDER:
            self.state = DcutrState.IDLE
            return []
        if self.attempt >= self.max_attempts:
            return self._fail(f"{self.attempt} attempts failed; the last: {reason}")
        self.state = DcutrState.IDLE
        self.start(now)
        return []

    # --- input ----------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Feed bytes read from the stream; returns what to do.

        Raises:
            RemoteProtocolError: malformed or oversized message (the state is then
                FAILED; reset the stream).
        """
        if self.state in (DcutrState.DONE, DcutrState.FAILED):
            return []
        self._buffer += data
        events: list[Event] = []
        pos = 0
        try:
            while True:
                got = varint.try_read_prefixed(self._buffer, MAX_MESSAGE_BYTES, pos)
                if got is None:
                    break
                raw, pos = got
                new = self._on_message(HolePunch.decode(raw), now)
                events += new
                if any(isinstance(ev, HolePunchFailed) for ev in new):
                    break
        except RemoteProtocolError:
            self.state = DcutrState.FAILED
            raise
        finally:
            del self._buffer[:pos]
        return events

    def receive_eof(self) -> list[Event]:
        """The peer ended its side of the stream."""
        self.peer_closed = True
        if self.state in (DcutrState.CONNECT_SENT, DcutrState.SYNC_WAIT):
            return self._fail(f"the peer closed the stream in {self.state.name}")
        return []

    def _on_message(self, msg: HolePunch, now: float) -> list[Event]:
        if self.role is Role.INITIATOR:
            if (
                self.state is not DcutrState.CONNECT_SENT
                or msg.type is not MessageType.CONNECT
            ):
                return self._fail(f"unexpected {msg.type.name} in {self.state.name}")
            self.rtt_s = max(0.0, now - self._sent_at)
            self.peer_addrs = msg.addrs
            if not msg.addrs:
                return self._fail("the peer's CONNECT lists no address we can dial")
            self._send(HolePunch(MessageType.SYNC))
            # Spec step 4: SYNC needs half a round trip to reach A, who dials on it.
            self._dial_at = now + self.rtt_s / 2
            self.state = DcutrState.DIAL_SCHEDULED
            return []
        if msg.type is MessageType.CONNECT and self.state in (
            DcutrState.IDLE,
            DcutrState.DIALING,
        ):
            # A retry may come while our last dial is still out: answer it.
            self.attempt += 1
            if not msg.addrs:
                # As go-libp2p does: nothing to dial, so no point in syncing.
                return self._fail("the peer's CONNECT lists no address we can dial")
            self.peer_addrs = msg.addrs
            self._send(HolePunch(MessageType.CONNECT, self.own_addrs))
            self._sent_at = now
            self.state = DcutrState.SYNC_WAIT
            return []
        if msg.type is MessageType.SYNC and self.state is DcutrState.SYNC_WAIT:
            self.rtt_s = max(0.0, now - self._sent_at)
            self.state = DcutrState.DIALING
            return [DialNow(self.peer_addrs, True, self.attempt, self.rtt_s)]
        return self._fail(f"unexpected {msg.type.name} in {self.state.name}")

    # --- timers ----------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timeout` has work (B's dial), or None."""
        return self._dial_at

    def handle_timeout(self, now: float) -> list[Event]:
        if self._dial_at is None or now < self._dial_at:
            return []
        self._dial_at = None
        self.state = DcutrState.DIALING
        return [DialNow(self.peer_addrs, False, self.attempt, self.rtt_s)]

    # --- output ---------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        out = bytes(self._outbox)
        self._outbox.clear()
        return out

    def _send(self, msg: HolePunch) -> None:
        self._outbox += msg.encode_prefixed()

    def _fail(self, reason: str) -> list[Event]:
        self.state = DcutrState.FAILED
        self._dial_at = None
        return [HolePunchFailed(reason, self.attempt)]
