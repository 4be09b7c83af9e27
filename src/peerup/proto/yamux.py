"""Yamux 1.0.0 stream multiplexing, sans-IO.

Spec: hashicorp/yamux spec.md, as profiled by libp2p/specs yamux/README.md. A frame is
a 12-byte header ``version(0) type flags(16) stream_id(32) length(32)`` (big-endian)
followed, for DATA frames, by ``length`` bytes. Types: DATA, WINDOW_UPDATE, PING,
GO_AWAY. Flags: SYN, ACK, FIN, RST. The connection's dialer uses odd stream IDs, the
listener even ones.

Flow control: every stream starts with a 256 KiB window each way. The receiver grows
it with WINDOW_UPDATE only for bytes the *application* has consumed
(:meth:`YamuxSession.acknowledge_received_data`), as h2 does; a reader that stops
reading therefore stalls the writer instead of buffering without bound or resetting.
We grant a larger window up front, by a WINDOW_UPDATE carried with SYN/ACK, and grow
it at re-grants, up to ``max_stream_window_bytes`` (default 16 MiB, the cap go-yamux
grows to): a writer (py-libp2p's, for one) may then go on while our reader pauses.
What we grant beyond the 256 KiB every stream has comes from one pool per session
(``max_session_window_bytes``, default 64 MiB) and goes back to it when the stream
ends. A new stream takes at most a quarter of what is left, so idle streams never use
it all up; a stream that carries data takes more at its next re-grant. So a peer can
have at most the pool plus 256 KiB per open stream in flight to us. (Bytes already
delivered are the application's to hold or consume: a stream's share goes back to
the pool when the stream ends even if the application has not read them all.)

Limits: at most ``max_inbound_streams`` open streams from the peer; further SYNs are
answered with RST, and a peer that keeps opening after ``max_refused_streams``
refusals gets GO_AWAY(protocol error). PINGs are answered at most
``ping_answers_per_s`` a second (a token bucket holding ``ping_answer_burst``): the
spec asks for an answer to every PING, but a peer that pings without reading would
have us queue answers without end. Pings beyond the rate go unanswered, and a peer
that goes ``max_unanswered_pings`` beyond it gets GO_AWAY(protocol error).
:attr:`YamuxSession.answers` counts the frames the peer made us queue (PING answers,
stream ACKs and refusals), so that a driver can stop reading from a peer that keeps
making us write while it does not read. Keepalive: a PING every
``keepalive_interval_s``; no answer within ``keepalive_timeout_s`` ends the session.
Not supported: the yamux "lazy SYN" on the first DATA frame when opening (we send
WINDOW_UPDATE+SYN at once; peers accept both).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

from peerup.core.errors import LocalProtocolError, RemoteProtocolError

PROTOCOL_ID: Final = "/yamux/1.0.0"
VERSION: Final = 0
INITIAL_WINDOW_BYTES: Final = 256 * 1024
HEADER_BYTES: Final = 12
MAX_FRAME_PAYLOAD_BYTES: Final = 65519 - 12
"""A data frame with its header fills exactly one Noise frame (65519 bytes of
plaintext), so the receiver decrypts whole yamux frames and never reassembles one."""

TYPE_DATA: Final = 0
TYPE_WINDOW_UPDATE: Final = 1
TYPE_PING: Final = 2
TYPE_GO_AWAY: Final = 3

FLAG_SYN: Final = 1
FLAG_ACK: Final = 2
FLAG_FIN: Final = 4
FLAG_RST: Final = 8

GO_AWAY_NORMAL: Final = 0
GO_AWAY_PROTOCOL_ERROR: Final = 1
GO_AWAY_INTERNAL_ERROR: Final = 2

_HEADER = struct.Struct(">BBHII")
_COALESCE_BYTES: Final = 16 * 1024
"""Queued DATA frames up to this size absorb the same stream's next write (copying
more than this to save a 12-byte header is not worth it)."""
_MAX_U32: Final = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class YamuxConfig:
    """Tunables of a yamux session."""

    max_stream_window_bytes: int = 16 * 1024 * 1024
    """Receive window a stream grows to (256 KiB to 4 GiB - 1): the most a peer may
    have in flight on one stream before we acknowledge consumed bytes."""
    max_session_window_bytes: int = 64 * 1024 * 1024
    """Window granted beyond each stream's initial 256 KiB, summed over the session's
    open streams (see the module docstring): with ``max_inbound_streams``, it bounds
    what a peer can have in flight to us."""
    max_inbound_streams: int = 1024
    """Streams the peer may have open at once; more are refused with RST."""
    max_refused_streams: int = 4096
    """Refusals after which the peer is cut off with GO_AWAY (protocol error)."""
    ping_answers_per_s: float = 10.0
    """PINGs of the peer answered per second, on average (keepalives come every
    15-30 s; see the module docstring)."""
    ping_answer_burst: int = 100
    """PINGs answered in a row before the rate applies."""
    max_unanswered_pings: int = 1000
    """PINGs beyond the rate after which the peer is cut off with GO_AWAY (protocol
    error): a flood, not a keepalive."""
    keepalive_interval_s: float | None = 30.0
    """Idle time between keepalive pings; None disables them."""
    keepalive_timeout_s: float = 30.0
    """How long a keepalive ping may go unanswered before the session is dead."""
    max_frame_payload_bytes: int = MAX_FRAME_PAYLOAD_BYTES
    """Largest DATA frame payload we send (smaller for a connection carried inside
    another connection's stream, so that each of our frames fits one of its frames)."""
    defer_accept_ack: bool = False
    """Do not answer a peer's SYN at once: the ACK (with our window grant) waits for
    :meth:`YamuxSession.send_ack`, for our first frame on the stream, or for the peer
    to use half of the initial window, whichever comes first. Lets a driver send the
    ACK in the same write as the stream's first reply."""


class StreamState(enum.Enum):
    """Stream states, named as in the yamux spec."""

    INIT = enum.auto()
    SYN_SENT = enum.auto()
    SYN_RECEIVED = enum.auto()
    ESTABLISHED = enum.auto()
    LOCAL_CLOSE = enum.auto()
    REMOTE_CLOSE = enum.auto()
    CLOSED = enum.auto()
    RESET = enum.auto()


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The peer opened a stream."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class DataReceived:
    """Bytes arrived on a stream; acknowledge them once the application consumed them."""

    stream_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The peer half-closed the stream (FIN): no more data will arrive."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The stream was reset by the peer, or refused by it before acceptance."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class SendWindowUpdated:
    """The peer granted send window on a stream whose window could not take one full
    frame (so a writer waiting for room for a whole frame learns of it too)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class PongReceived:
    """Answer to our ping ``opaque`` (ours or a keepalive), ``rtt_s`` after it was
    sent."""

    opaque: int
    rtt_s: float


@dataclass(frozen=True, slots=True)
class GoAwayReceived:
    """The peer will accept no new streams; ``code`` says why (0 = normal)."""

    code: int


@dataclass(frozen=True, slots=True)
class KeepaliveTimedOut:
    """A keepalive ping went unanswered: treat the connection as dead."""

    waited_s: float


Event = (
    StreamOpened
    | DataReceived
    | StreamEnded
    | StreamReset
    | SendWindowUpdated
    | PongReceived
    | GoAwayReceived
    | KeepaliveTimedOut
)


def _writable(state: StreamState) -> bool:
    # Identity tests: a set of enum members would hash them in Python on every write.
    return state is not StreamState.LOCAL_CLOSE and state is not StreamState.CLOSED


class _Stream:
    __slots__ = (
        "state",
        "send_window",
        "recv_window",
        "window",
        "unacked",
        "needs_ack",
    )

    def __init__(self, state: StreamState, window: int) -> None:
        self.state = state
        self.send_window = INITIAL_WINDOW_BYTES
        self.recv_window = window
        self.window = window
        """The receive window granted in all: 256 KiB plus what came from the pool."""
        self.unacked = 0
        self.needs_ack = False
        """An accepted stream whose ACK (and window grant) is not yet queued."""


def encode_header(kind: int, flags: int, stream_id: int, length: int) -> bytes:
    """One 12-byte yamux header."""
    return _HEADER.pack(VERSION, kind, flags, stream_id, length)


class YamuxSession:
    """One yamux session (both directions of a connection).

    Args:
        is_client: True for the side that dialed the connection (odd stream IDs).
        config: tunables.
        now: the current time, seconds on any monotonic clock.
    """

    def __init__(
        self, is_client: bool, config: YamuxConfig | None = None, now: float = 0.0
    ) -> None:
        self.config = config or YamuxConfig()
        if self.config.max_stream_window_bytes < INITIAL_WINDOW_BYTES:
            raise LocalProtocolError("max_stream_window_bytes below 256 KiB")
        if self.config.max_stream_window_bytes > _MAX_U32:
            raise LocalProtocolError("max_stream_window_bytes above 4 GiB - 1")
        if self.config.max_session_window_bytes < 0:
            raise LocalProtocolError("max_session_window_bytes below 0")
        self.is_client = is_client
        self._next_id = 1 if is_client else 2
        self._streams: dict[int, _Stream] = {}
        self._inbound_open = 0
        self._refused = 0
        self._buf = bytearray()
        self.outbox: list[bytes] = []
        """Frames queued for the peer (read it to see whether there is anything to
        send; drain it with :meth:`frames_to_send` or :meth:`data_to_send`)."""
        self._tail_stream = 0
        self._tail_index = 0
        """``outbox[_tail_index]`` is a small DATA frame of ``_tail_stream``: while it is
        still the last item, more data or a FIN for that stream joins it (0: none)."""
        self._ping_sent: dict[int, float] = {}
        self._next_opaque = 1
        self._keepalive_at: float | None = (
            now + self.config.keepalive_interval_s
            if self.config.keepalive_interval_s
            else None
        )
        self._keepalive_interval = self.config.keepalive_interval_s or 0.0
        self._pool = self.config.max_session_window_bytes
        """Window still to grant beyond the streams' initial 256 KiB."""
        self._keepalive_opaque: int | None = None
        self._ping_tokens = float(self.config.ping_answer_burst)
        """Answers the peer may have now; below 0, the pings it sent beyond the rate."""
        self._ping_tokens_at = now
        self.answers = 0
        """Frames queued because the peer asked for them (PING answers, stream ACKs
        and refusals): a driver watches it while the peer does not read."""
        self.is_local_go_away = False
        self.remote_go_away: int | None = None
        self.is_terminated = False

    # --- output -----------------------------------------------------------------

    def frames_to_send(self) -> list[bytes]:
        """Drain the queued frames as a list (each item is one or more whole frames)."""
        out, self.outbox = self.outbox, []
        self._tail_stream = 0
        return out

    def data_to_send(self) -> bytes:
        """Drain the frames queued for the peer."""
        if not self.outbox:
            return b""
        out = b"".join(self.outbox) if len(self.outbox) > 1 else self.outbox[0]
        self.outbox.clear()
        self._tail_stream = 0
        return out

    # --- commands ---------------------------------------------------------------

    def open_stream(self) -> int:
        """Open a new outbound stream and return its ID."""
        if self.is_terminated or self.is_local_go_away:
            raise LocalProtocolError("yamux: session is closing")
        if self.remote_go_away is not None:
            raise LocalProtocolError("yamux: peer sent GO_AWAY, no new streams")
        stream_id = self._next_id
        if stream_id > _MAX_U32:
            raise LocalProtocolError("yamux: stream IDs exhausted")
        self._next_id += 2
        window = self._reserve_window()
        self._streams[stream_id] = _Stream(StreamState.SYN_SENT, window)
        self.outbox.append(
            encode_header(
                TYPE_WINDOW_UPDATE, FLAG_SYN, stream_id, window - INITIAL_WINDOW_BYTES
            )
        )
        return stream_id

    def send_ack(self, stream_id: int) -> None:
        """Queue the ACK of an accepted stream if it is still owed (deferred ACKs)."""
        stream = self._streams.get(stream_id)
        if stream is not None and stream.needs_ack:
            self._queue_ack(stream_id, stream)

    def send_window(self, stream_id: int) -> int:
        """How many bytes may be sent on the stream right now."""
        stream = self._streams.get(stream_id)
        return stream.send_window if stream is not None else 0

    def stream_state(self, stream_id: int) -> StreamState:
        """The stream's state (CLOSED once forgotten)."""
        stream = self._streams.get(stream_id)
        return stream.state if stream is not None else StreamState.CLOSED

    def send_data(
        self, stream_id: int, data: bytes | memoryview, whole: bool = False
    ) -> int:
        """Queue as much of ``data`` as the send window allows.

        Small writes to one stream share a DATA frame while it is unsent; ``whole``
        keeps ``data`` in frames of its own, and a ``data`` that fits one frame is
        not split at the window's edge: 0 until the window takes all of it (a carried
        connection's Noise frames, each found whole by the far end).

        Returns:
            How many bytes were queued; 0 means wait for :class:`SendWindowUpdated`.

        Raises:
            LocalProtocolError: the stream is unknown, reset, or closed for writing.
        """
        stream = self._streams.get(stream_id)
        if stream is None or not _writable(stream.state):
            stream = self._writable(stream_id)  # raises with the reason
        n = len(data)
        if n > stream.send_window:
            if whole and n <= self.config.max_frame_payload_bytes:
                return 0
            n = stream.send_window
            if n <= 0:
                return 0
        elif not n:
            return 0
        if stream.needs_ack:
            self._queue_ack(stream_id, stream)
        out = self.outbox
        max_payload = self.config.max_frame_payload_bytes
        if whole:
            self._tail_stream = 0  # joins no frame; none joins it
        if self._tail_stream == stream_id and self._tail_index == len(out) - 1:
            # Still unsent: small writes to one stream (a multistream header, then
            # the first bytes) travel as one frame.
            last = out[-1]
            size = len(last) - HEADER_BYTES + n
            if size <= _COALESCE_BYTES and size <= max_payload:
                out[-1] = b"".join(
                    (
                        encode_header(TYPE_DATA, 0, stream_id, size),
                        last[HEADER_BYTES:],
                        data[:n],
                    )
                )
                stream.send_window -= n
                return n
        elif n <= _COALESCE_BYTES and n <= max_payload:
            # One small frame (the usual case for interactive traffic).
            out.append(
                _HEADER.pack(VERSION, TYPE_DATA, 0, stream_id, n)
                + (data if n == len(data) else data[:n])
            )
            stream.send_window -= n
            if not whole:
                self._tail_stream = stream_id
                self._tail_index = len(out) - 1
            return n
        flags = 0
        view = memoryview(data)
        pos = 0
        while pos < n:
            chunk = min(n - pos, max_payload)
            # Header and payload as one object: one copy, and one Noise frame later.
            out.append(
                b"".join(
                    (
                        encode_header(TYPE_DATA, flags, stream_id, chunk),
                        view[pos : pos + chunk],
                    )
                )
            )
            flags = 0
            pos += chunk
        stream.send_window -= n
        if chunk <= _COALESCE_BYTES and not whole:
            self._tail_stream = stream_id
            self._tail_index = len(out) - 1
        return n

    def close_stream(self, stream_id: int) -> None:
        """Half-close our side (FIN). Idempotent on an already half-closed stream."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.state in (
            StreamState.LOCAL_CLOSE,
            StreamState.RESET,
        ):
            return
        if stream.needs_ack:
            self._queue_ack(stream_id, stream)
        if self._tail_stream == stream_id and self._tail_index == len(self.outbox) - 1:
            # The FIN rides on the stream's last, still unsent, DATA frame.
            last = self.outbox[-1]
            self.outbox[-1] = b"".join(
                (
                    encode_header(
                        TYPE_DATA, FLAG_FIN, stream_id, len(last) - HEADER_BYTES
                    ),
                    last[HEADER_BYTES:],
                )
            )
            self._tail_stream = 0
        else:
            self.outbox.append(
                encode_header(TYPE_WINDOW_UPDATE, FLAG_FIN, stream_id, 0)
            )
        if stream.state is StreamState.REMOTE_CLOSE:
            self._forget(stream_id, StreamState.CLOSED)
        else:
            stream.state = StreamState.LOCAL_CLOSE

    def reset_stream(self, stream_id: int) -> None:
        """Abort the stream in both directions (RST). Idempotent."""
        if self._streams.get(stream_id) is None:
            return
        self.outbox.append(encode_header(TYPE_WINDOW_UPDATE, FLAG_RST, stream_id, 0))
        self._forget(stream_id, StreamState.RESET)

    def acknowledge_received_data(self, stream_id: int, n: int) -> bool:
        """The application consumed ``n`` bytes: re-grant window when worthwhile.

        Returns whether a window update was queued (so the caller knows whether
        there is anything to flush).
        """
        stream = self._streams.get(stream_id)
        if stream is None or n <= 0:
            return False
        stream.unacked += n
        # Re-grant in batches of half a window: fewer frames, same throughput.
        if stream.unacked >= stream.window >> 1:
            if stream.state in (StreamState.REMOTE_CLOSE, StreamState.RESET):
                return False
            if stream.needs_ack:
                self._queue_ack(stream_id, stream)
            delta = stream.unacked
            stream.unacked = 0
            if self._pool and stream.window < self.config.max_stream_window_bytes:
                # A stream that carries data grows its window from the pool.
                grow = min(
                    self.config.max_stream_window_bytes - stream.window, self._pool
                )
                self._pool -= grow
                stream.window += grow
                delta += grow
            stream.recv_window += delta
            self.outbox.append(encode_header(TYPE_WINDOW_UPDATE, 0, stream_id, delta))
            return True
        return False

    def ping(self, now: float) -> int:
        """Send a ping; the answer comes as :class:`PongReceived` with this opaque."""
        opaque = self._next_opaque
        self._next_opaque = (self._next_opaque % _MAX_U32) + 1
        self._ping_sent[opaque] = now
        self.outbox.append(encode_header(TYPE_PING, FLAG_SYN, 0, opaque))
        return opaque

    def go_away(self, code: int = GO_AWAY_NORMAL) -> None:
        """Tell the peer we accept no new streams (idempotent, except that a protocol
        error is still reported after an earlier normal GO_AWAY)."""
        if not self.is_local_go_away or code != GO_AWAY_NORMAL:
            self.is_local_go_away = True
            self.outbox.append(encode_header(TYPE_GO_AWAY, 0, 0, code))

    # --- time -------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timeout` must next be called."""
        if self._keepalive_opaque is not None:
            return (
                self._ping_sent[self._keepalive_opaque]
                + self.config.keepalive_timeout_s
            )
        return self._keepalive_at

    def handle_timeout(self, now: float) -> list[Event]:
        """Run keepalive: send a ping, or report the session dead."""
        if self.is_terminated:
            return []
        if self._keepalive_opaque is not None:
            sent_at = self._ping_sent[self._keepalive_opaque]
            if now - sent_at >= self.config.keepalive_timeout_s:
                self.is_terminated = True
                return [KeepaliveTimedOut(now - sent_at)]
            return []
        if self._keepalive_at is not None and now >= self._keepalive_at:
            self._keepalive_opaque = self.ping(now)
        return []

    # --- input ------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float = 0.0) -> list[Event]:
        """Parse frames; returns their events.

        Raises:
            RemoteProtocolError: the peer broke the protocol. GO_AWAY with the code is
                already queued in :meth:`data_to_send`; close the connection after
                sending it.
        """
        if self.is_terminated:
            return []
        buf = self._buf
        if buf:
            buf += data
            src: bytes | bytearray = buf
        else:
            if len(data) > HEADER_BYTES:
                # The common case in short: exactly one DATA frame, no flags, for an
                # open stream within its window. Anything else takes the loop below.
                version, kind, flags, stream_id, length = _HEADER.unpack_from(data)
                if (
                    kind == TYPE_DATA
                    and not flags
                    and not version
                    and length == len(data) - HEADER_BYTES
                ):
                    stream = self._streams.get(stream_id)
                    if (
                        stream is not None
                        and not stream.needs_ack
                        and length <= stream.recv_window
                        and (
                            stream.state is StreamState.ESTABLISHED
                            or stream.state is StreamState.LOCAL_CLOSE
                        )
                    ):
                        stream.recv_window -= length
                        if self._keepalive_at is not None:
                            self._keepalive_at = now + self._keepalive_interval
                        return [DataReceived(stream_id, data[HEADER_BYTES:])]
            src = data
        events: list[Event] = []
        pos = 0
        end = len(src)
        try:
            while end - pos >= HEADER_BYTES:
                version, kind, flags, stream_id, length = _HEADER.unpack_from(src, pos)
                if version != VERSION:
                    raise RemoteProtocolError(f"yamux: bad version {version}")
                if kind == TYPE_DATA:
                    if end - pos - HEADER_BYTES < length:
                        # Refuse an over-window frame from its header, before buffering
                        # a body that could be up to 4 GiB.
                        known = self._streams.get(stream_id)
                        cap = (
                            known.recv_window
                            if known is not None
                            else self.config.max_stream_window_bytes
                        )
                        if length > cap:
                            raise RemoteProtocolError(
                                f"yamux: stream {stream_id} frame of {length} bytes "
                                f"exceeds its window"
                            )
                        break
                    body = bytes(src[pos + HEADER_BYTES : pos + HEADER_BYTES + length])
                    pos += HEADER_BYTES + length
                    self._on_stream_frame(events, flags, stream_id, length, body)
                else:
                    pos += HEADER_BYTES
                    if kind == TYPE_WINDOW_UPDATE:
                        self._on_stream_frame(events, flags, stream_id, length, None)
                    elif kind == TYPE_PING:
                        self._on_ping(events, flags, stream_id, length, now)
                    elif kind == TYPE_GO_AWAY:
                        self.remote_go_away = length
                        events.append(GoAwayReceived(length))
                    else:
                        raise RemoteProtocolError(f"yamux: unknown frame type {kind}")
        except RemoteProtocolError as exc:
            exc.code = GO_AWAY_PROTOCOL_ERROR
            self.go_away(GO_AWAY_PROTOCOL_ERROR)
            self.is_terminated = True
            raise
        if src is buf:
            del buf[:pos]
        elif pos < end:
            buf += src[pos:]
        if self._keepalive_at is not None:
            # Any traffic proves liveness; push the next keepalive back.
            self._keepalive_at = now + self._keepalive_interval
        return events

    def _on_stream_frame(
        self,
        events: list[Event],
        flags: int,
        stream_id: int,
        length: int,
        body: bytes | None,
    ) -> None:
        if stream_id == 0:
            raise RemoteProtocolError("yamux: stream frame on stream 0")
        stream = self._streams.get(stream_id)
        if flags & FLAG_SYN:
            if stream is not None:
                raise RemoteProtocolError(f"yamux: SYN for open stream {stream_id}")
            if (stream_id % 2 == 1) == self.is_client:
                raise RemoteProtocolError(f"yamux: SYN with our parity ({stream_id})")
            stream = self._accept(events, stream_id)
            if stream is None:
                return
        elif stream is None:
            # A frame for a stream we reset or refused: drop it silently.
            return
        if flags & FLAG_ACK and stream.state is StreamState.SYN_SENT:
            stream.state = StreamState.ESTABLISHED
        if flags & FLAG_RST:
            self._forget(stream_id, StreamState.RESET)
            events.append(StreamReset(stream_id))
            return
        if body is not None:
            if length > stream.recv_window:
                raise RemoteProtocolError(
                    f"yamux: stream {stream_id} sent {length} bytes over its window"
                )
            if stream.state in (StreamState.REMOTE_CLOSE, StreamState.CLOSED):
                raise RemoteProtocolError(f"yamux: data after FIN on {stream_id}")
            stream.recv_window -= length
            if (
                stream.needs_ack
                and stream.window - stream.recv_window >= INITIAL_WINDOW_BYTES // 2
            ):
                # The opener is using up its initial window: grant ours now.
                self._queue_ack(stream_id, stream)
            if length:
                events.append(DataReceived(stream_id, body))
        elif length:
            was_short = stream.send_window < self.config.max_frame_payload_bytes
            stream.send_window += length
            if stream.send_window > _MAX_U32:
                raise RemoteProtocolError(f"yamux: window overflow on {stream_id}")
            if was_short:
                events.append(SendWindowUpdated(stream_id))
        if flags & FLAG_FIN:
            if stream.state in (StreamState.REMOTE_CLOSE, StreamState.CLOSED):
                return
            events.append(StreamEnded(stream_id))
            if stream.state is StreamState.LOCAL_CLOSE:
                self._forget(stream_id, StreamState.CLOSED)
            else:
                stream.state = StreamState.REMOTE_CLOSE

    def _accept(self, events: list[Event], stream_id: int) -> _Stream | None:
        self.answers += 1
        over_limit = self._inbound_open >= self.config.max_inbound_streams
        if over_limit or self.is_local_go_away:
            self.outbox.append(
                encode_header(TYPE_WINDOW_UPDATE, FLAG_RST, stream_id, 0)
            )
            self._refused += 1
            if self._refused > self.config.max_refused_streams:
                raise RemoteProtocolError(
                    f"yamux: stream limit: peer kept opening streams past "
                    f"{self.config.max_inbound_streams} ({self._refused} refused)"
                )
            return None
        stream = _Stream(StreamState.ESTABLISHED, self._reserve_window())
        self._streams[stream_id] = stream
        self._inbound_open += 1
        # The ACK carries our larger window, so the opener can send at once. Deferred
        # on request (see YamuxConfig.defer_accept_ack); the window is counted from
        # now either way, since the peer may only ever send less than it.
        if self.config.defer_accept_ack:
            stream.needs_ack = True
        else:
            self._queue_ack(stream_id, stream)
        events.append(StreamOpened(stream_id))
        return stream

    def _on_ping(
        self, events: list[Event], flags: int, stream_id: int, opaque: int, now: float
    ) -> None:
        if stream_id != 0:
            raise RemoteProtocolError("yamux: ping on a stream")
        if flags & FLAG_SYN:
            config = self.config
            burst = float(config.ping_answer_burst)
            tokens = self._ping_tokens
            elapsed = now - self._ping_tokens_at
            if elapsed > 0.0:
                self._ping_tokens_at = now
                if tokens < burst:
                    tokens = min(burst, tokens + elapsed * config.ping_answers_per_s)
            tokens -= 1.0
            self._ping_tokens = tokens
            if tokens >= 0.0:
                self.answers += 1
                self.outbox.append(encode_header(TYPE_PING, FLAG_ACK, 0, opaque))
            elif tokens < -config.max_unanswered_pings:
                raise RemoteProtocolError(
                    f"yamux: ping flood: more than {config.max_unanswered_pings} "
                    f"pings beyond {config.ping_answers_per_s:g}/s"
                )
        elif flags & FLAG_ACK:
            sent_at = self._ping_sent.pop(opaque, None)
            if sent_at is None:
                return
            if opaque == self._keepalive_opaque:
                self._keepalive_opaque = None
                if self.config.keepalive_interval_s:
                    self._keepalive_at = now + self.config.keepalive_interval_s
            # Keepalive answers are reported too: each is a fresh RTT sample.
            events.append(PongReceived(opaque, max(0.0, now - sent_at)))

    # --- helpers ----------------------------------------------------------------

    def _writable(self, stream_id: int) -> _Stream:
        stream = self._streams.get(stream_id)
        if stream is None:
            raise LocalProtocolError(f"yamux: stream {stream_id} is closed or reset")
        if not _writable(stream.state):
            raise LocalProtocolError(f"yamux: stream {stream_id} closed for writing")
        return stream

    def _reserve_window(self) -> int:
        """A new stream's receive window: 256 KiB, plus up to a quarter of the pool."""
        extra = min(
            self.config.max_stream_window_bytes - INITIAL_WINDOW_BYTES, self._pool >> 2
        )
        self._pool -= extra
        return INITIAL_WINDOW_BYTES + extra

    def _queue_ack(self, stream_id: int, stream: _Stream) -> None:
        stream.needs_ack = False
        self.outbox.append(
            encode_header(
                TYPE_WINDOW_UPDATE,
                FLAG_ACK,
                stream_id,
                stream.window - INITIAL_WINDOW_BYTES,
            )
        )

    def _forget(self, stream_id: int, final: StreamState) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        stream.state = final
        self._pool += stream.window - INITIAL_WINDOW_BYTES
        if (stream_id % 2 == 1) != self.is_client:
            self._inbound_open -= 1

    @property
    def inbound_stream_count(self) -> int:
        """Streams the peer opened that are still open."""
        return self._inbound_open

    @property
    def stream_count(self) -> int:
        """Streams currently open (in either direction)."""
        return len(self._streams)
