"""Connection: the asyncio driver that upgrades a byte pipe to a muxed libp2p connection.

Spec: libp2p/specs connections/README.md "Upgrading connections". Phases::

    SECURITY_NEGOTIATION  multistream-select /noise (plaintext)
    HANDSHAKE             Noise XX; then the peer gate decides, before any muxer
    MUXER_NEGOTIATION     multistream-select /yamux/1.0.0 inside Noise, skipped when
                          the muxer was agreed in the Noise handshake (early data)
    MUXED                 yamux frames inside Noise frames

This is the only place where bytes, protocol objects and asyncio meet (STYLE.md 3.2):
``data_received`` feeds the protocol objects and writes what they produce; it makes no
policy decisions. The transport is any ``asyncio.Transport``: TCP, the in-memory pipe,
or a relayed circuit stream. Deliberately not supported: security protocols other than
Noise, muxers other than yamux (mplex is deprecated).

yamux's clock is ``time.perf_counter`` rather than the loop's: uvloop's ``loop.time()``
counts whole milliseconds and is read once per loop pass, so ping RTTs (status,
traceroute) came out as 0.0 or 1.0 ms. Timer deadlines are turned into delays for the
loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Final, cast

from peerup.core.access import Access
from peerup.core.errors import (
    ConnectionClosed,
    Error,
    LocalProtocolError,
    NegotiationError,
    RefusedAtHandshake,
    StreamReset,
)
from peerup.core.errors import TimeoutError as PeerupTimeout
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.multiaddr import Multiaddr
from peerup.core.peer_id import PeerId
from peerup.net.stream import Stream
from peerup.proto import multistream, noise, yamux

log = logging.getLogger(__name__)

SECURITY_PROTOCOLS: Final = (noise.PROTOCOL_ID,)
CARRIED_NOISE_PLAINTEXT_BYTES: Final = (
    yamux.MAX_FRAME_PAYLOAD_BYTES - 2 - noise.TAG_BYTES
)
"""Noise plaintext per frame of a connection carried in a stream (a relay circuit):
each of its Noise frames then fits one DATA frame of the carrying stream and is sent
as one, so the far end decrypts each frame where it lands instead of first joining
the two halves of a frame split across outer frames (a copy of every byte)."""
MUXERS: Final = (yamux.PROTOCOL_ID,)
REFUSAL_WINDOW_S: Final = 10.0
"""A dialed connection that the peer ends within this long after the handshake,
before sending a single muxed frame, was refused by its gate (every libp2p peer we
know sends identify or a ping at once)."""


@dataclass(frozen=True, slots=True)
class ConnectionConfig:
    """Tunables of every connection."""

    handshake_timeout_s: float = 10.0
    """From the first byte to a ready muxer; a stalled handshake is cut off."""
    yamux: yamux.YamuxConfig = field(default_factory=yamux.YamuxConfig)
    write_buffer_high_bytes: int = 1024 * 1024
    """Bytes the socket may buffer before writers wait (asyncio high-water mark)."""
    hold_answer_s: float = 0.02
    """Longest an inbound stream's negotiation answer and yamux ACK wait for the
    stream's first reply bytes to share their write (see ``hold_answer``)."""
    max_answers_while_unread: int = 256
    """Frames the peer may make us queue (PING answers, stream ACKs and refusals:
    ``YamuxSession.answers``) while the socket's write buffer is over its high-water
    mark, i.e. while the peer does not read. Beyond, we stop reading from the peer
    until the buffer drains, so a peer that sends and never reads cannot grow our
    memory (window updates and our own data are bounded otherwise and do not count)."""


class Phase(enum.Enum):
    SECURITY_NEGOTIATION = enum.auto()
    HANDSHAKE = enum.auto()
    MUXER_NEGOTIATION = enum.auto()
    MUXED = enum.auto()
    CLOSED = enum.auto()


@dataclass(slots=True)
class ConnectionCallbacks:
    """What a connection asks of its owner (the host)."""

    gate: Callable[[PeerId], Access]
    supported_protocols: Callable[[], Collection[str]]
    on_ready: Callable[[Connection], None]
    on_stream: Callable[[Stream], None]
    on_closed: Callable[[Connection, str], None]
    on_protocol_refused: Callable[[Stream, str], None]
    """An inbound stream asked for a protocol we do not speak (answered ``na``)."""
    on_made: Callable[[Connection], None] | None = None
    """The transport is connected (its address known), before anything is sent; the
    owner may close the connection here (limits on pending handshakes)."""


class Connection(asyncio.Protocol):
    """One secured, muxed connection to a peer."""

    def __init__(
        self,
        identity: Ed25519PrivateKey,
        is_initiator: bool,
        callbacks: ConnectionCallbacks,
        config: ConnectionConfig,
        *,
        expected_peer: PeerId | None = None,
        is_relayed: bool = False,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.identity = identity
        self.is_initiator = is_initiator
        self.callbacks = callbacks
        self.config = config
        self.expected_peer = expected_peer
        self.is_relayed = is_relayed
        self.phase = Phase.SECURITY_NEGOTIATION
        self.ready: asyncio.Future[Connection] = self.loop.create_future()
        self.closed: asyncio.Future[str] = self.loop.create_future()
        self.remote_peer: PeerId = expected_peer or PeerId(b"\0\0")
        self._peer_known = expected_peer is not None
        self.remote_addr: Multiaddr | None = None
        self.local_addr: Multiaddr | None = None
        self.muxer_via_handshake = False
        self.only_protocols: frozenset[str] | None = None
        """Set by the peer gate's answer: the only protocols the peer may open streams
        for (an unknown peer admitted to pairing while an invite is pending)."""
        self.streams: dict[int, Stream] = {}
        self.opened_at = self.loop.time()
        self.rtt_s: float | None = None
        self.muxed_bytes_received = 0
        self._transport: asyncio.Transport | None = None
        self._max_plaintext = noise.MAX_PLAINTEXT_BYTES
        self._over_stream = False
        self._negotiator: multistream.MultistreamNegotiator | None = None
        self._handshake: noise.NoiseHandshake | None = None
        self._cipher: noise.NoiseTransport | None = None
        self.session: yamux.YamuxSession | None = None
        self._paused = False
        self._answers_at_pause = 0
        self._reading_stopped = False
        """Reading paused: the peer kept asking for answers while not reading ours."""
        self._writable_callbacks: list[Callable[[], None]] = []
        self._drain_waiter: asyncio.Future[None] | None = None
        self._flush_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._hold_timer: asyncio.TimerHandle | None = None
        self._held: dict[int, bytes] = {}
        self._opened: list[Stream] = []
        self.in_batch = False
        """True while a read that brought several frames is being dispatched (see
        at_batch_end)."""
        self._batch_hooks: list[Callable[[], None]] = []
        self._pings: dict[int, asyncio.Future[float]] = {}
        self._close_reason = ""
        self._failure: Error | None = None
        self._muxed_at: float | None = None
        self._closed_locally = False
        self.refused_at_handshake = False
        """The peer refused us at the handshake (see _refused_at_handshake)."""
        self.gate_refusal: str | None = None
        """Why our peer gate refused the peer, if it did."""

    def __repr__(self) -> str:
        via = "relayed" if self.is_relayed else "direct"
        return f"<Connection {self.name} {via} {self.phase.name}>"

    @property
    def name(self) -> str:
        """How logs name this connection: the peer's short ID once the handshake told
        us who it is, its address before."""
        if self._peer_known:
            return self.remote_peer.short()
        addr = self.remote_addr
        if addr is None:
            return "an unknown address"
        endpoint = addr.tcp_endpoint()
        return f"{endpoint[0]}:{endpoint[1]}" if endpoint is not None else str(addr)

    # --- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        transport = self._transport
        transport.set_write_buffer_limits(high=self.config.write_buffer_high_bytes)
        if transport.get_extra_info("stream") is not None:
            # Carried in a stream (see CARRIED_NOISE_PLAINTEXT_BYTES).
            self._over_stream = True
            self._max_plaintext = CARRIED_NOISE_PLAINTEXT_BYTES
        self.remote_addr = _sockaddr_to_multiaddr(transport.get_extra_info("peername"))
        self.local_addr = _sockaddr_to_multiaddr(transport.get_extra_info("sockname"))
        on_made = self.callbacks.on_made
        if on_made is not None:
            on_made(self)
            if self.phase is Phase.CLOSED:
                return
        self._timer = self.loop.call_later(
            self.config.handshake_timeout_s, self._handshake_timed_out
        )
        role = (
            multistream.Role.INITIATOR
            if self.is_initiator
            else multistream.Role.RESPONDER
        )
        self._negotiator = multistream.MultistreamNegotiator(role, SECURITY_PROTOCOLS)
        self._write_plain(self._negotiator.data_to_send())

    def data_received(self, data: bytes) -> None:
        try:
            if self.phase is Phase.MUXED:
                assert self._cipher is not None and self.session is not None
                plains = self._cipher.receive_frames(data)
                now = time.perf_counter()
                if len(plains) == 1:
                    self.muxed_bytes_received += len(plains[0])
                    events = self.session.receive_data(plains[0], now)
                    if len(events) <= 1:
                        # One event: nothing to gather into one write (see in_batch).
                        self._on_muxed(events)
                    else:
                        self._on_muxed_batch(events, [], now)
                else:
                    self._on_muxed_batch([], plains, now)
                # Read again (a method, not the narrowed attribute): a callback may
                # have closed the connection.
                if not self.is_open:
                    return
                if self._opened:
                    self._answer_opened()
                if self.session.outbox:
                    self._flush()
                if self._paused and not self._reading_stopped:
                    self._stop_reading_if_flooded()
            elif self.phase is not Phase.CLOSED:
                self._upgrade(data)
        except Error as exc:
            self._failure = exc
            self._fail(f"{type(exc).__name__}: {exc}")

    def _on_muxed_batch(
        self, events: list[yamux.Event], plains: list[bytes], now: float
    ) -> None:
        """Dispatch what one read brought as one batch (see :meth:`at_batch_end`):
        ``events`` already parsed, then the Noise plaintexts ``plains``."""
        assert self.session is not None
        self.in_batch = True
        try:
            self._on_muxed(events)
            for plain in plains:
                if self.phase is not Phase.MUXED:
                    break
                self.muxed_bytes_received += len(plain)
                self._on_muxed(self.session.receive_data(plain, now))
        finally:
            self.in_batch = False
            if self._batch_hooks:
                self._run_batch_hooks()

    def eof_received(self) -> bool | None:
        self._fail("peer closed the connection")
        return None

    # --- receive batches ----------------------------------------------------------

    def at_batch_end(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the frames of the current read are all dispatched
        (only while ``in_batch``): what they delivered can then leave in one write."""
        self._batch_hooks.append(callback)

    def flush_at_end_of(self, other: Connection) -> None:
        """Hold this connection's writes until ``other`` (e.g. the other side of a
        relayed stream) finished dispatching its current read, then flush once."""
        if other.in_batch and not self._flush_scheduled:
            self._flush_scheduled = True
            other.at_batch_end(self._flush)

    def _run_batch_hooks(self) -> None:
        hooks, self._batch_hooks = self._batch_hooks, []
        for hook in hooks:
            try:
                hook()
            except Exception:
                log.exception("%r: receive-batch callback failed", self)

    def connection_lost(self, exc: Exception | None) -> None:
        reason = self._close_reason or (str(exc) if exc else "connection lost")
        self._teardown(reason)

    def pause_writing(self) -> None:
        self._paused = True
        if self.session is not None:
            self._answers_at_pause = self.session.answers

    def resume_writing(self) -> None:
        self._paused = False
        if self._reading_stopped:
            self._reading_stopped = False
            transport = self._transport
            if transport is not None and not transport.is_closing():
                transport.resume_reading()
        callbacks, self._writable_callbacks = self._writable_callbacks, []
        for callback in callbacks:
            callback()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _stop_reading_if_flooded(self) -> None:
        """While the peer does not read (our write buffer is over its high-water
        mark), stop reading from it once it made us queue more than
        ``max_answers_while_unread`` answers; :meth:`resume_writing` reads again."""
        session, transport = self.session, self._transport
        if session is None or transport is None:
            return
        answers = session.answers - self._answers_at_pause
        if answers <= self.config.max_answers_while_unread:
            return
        self._reading_stopped = True
        transport.pause_reading()
        log.info(
            "%s: stopped reading: it asked for %d answers while not reading ours "
            "(%d bytes unsent); reading again once they drain",
            self.name,
            answers,
            transport.get_write_buffer_size(),
        )

    # --- upgrade ------------------------------------------------------------------

    def _upgrade(self, data: bytes) -> None:
        if self.phase is Phase.SECURITY_NEGOTIATION:
            assert self._negotiator is not None
            events = self._negotiator.receive_data(data)
            self._write_plain(self._negotiator.data_to_send())
            for ev in events:
                if isinstance(ev, multistream.NegotiationFailed):
                    raise NegotiationError(f"security: {ev.reason}")
                if isinstance(ev, multistream.ProtocolSelected):
                    self._start_handshake(ev.leftover)
        elif self.phase is Phase.HANDSHAKE:
            self._feed_handshake(data)
        elif self.phase is Phase.MUXER_NEGOTIATION:
            assert self._cipher is not None
            self._feed_muxer_negotiation(self._cipher.receive_data(data))

    def _start_handshake(self, leftover: bytes) -> None:
        self.phase = Phase.HANDSHAKE
        role = (
            noise.HandshakeRole.INITIATOR
            if self.is_initiator
            else noise.HandshakeRole.RESPONDER
        )
        self._handshake = noise.NoiseHandshake(
            role, self.identity, muxers=MUXERS, expected_peer=self.expected_peer
        )
        self._write_plain(self._handshake.data_to_send())
        if leftover:
            self._feed_handshake(leftover)

    def _feed_handshake(self, data: bytes) -> None:
        hs = self._handshake
        assert hs is not None
        done = hs.receive_data(data)
        if not done:
            self._write_plain(hs.data_to_send())
            return
        result = done[0]
        self.remote_peer = result.remote_peer
        self._peer_known = True
        # The gate judges who may reach us: inbound connections (TCP accepted, or
        # relayed via STOP). Peers we dial ourselves were chosen by our own config.
        access = (
            self.callbacks.gate(result.remote_peer)
            if not self.is_initiator
            else Access.allow("outbound")
        )
        if not access.is_allowed:
            # Logged by the owner (on_closed), summed up under a flood.
            self.gate_refusal = access.reason
            self._close_reason = f"peer refused: {access.reason}"
            self._abort(self._close_reason)
            return
        self.only_protocols = access.only_protocols
        self._write_plain(hs.data_to_send())
        self._cipher = hs.transport()
        self._handshake = None
        plain = self._cipher.receive_data(result.leftover) if result.leftover else b""
        if result.muxer is not None:
            self.muxer_via_handshake = True
            self._start_muxer(plain)
            return
        self.phase = Phase.MUXER_NEGOTIATION
        role = (
            multistream.Role.INITIATOR
            if self.is_initiator
            else multistream.Role.RESPONDER
        )
        self._negotiator = multistream.MultistreamNegotiator(role, MUXERS)
        self._write_secure(self._negotiator.data_to_send())
        if plain:
            self._feed_muxer_negotiation(plain)

    def _feed_muxer_negotiation(self, plain: bytes) -> None:
        neg = self._negotiator
        assert neg is not None
        events = neg.receive_data(plain)
        self._write_secure(neg.data_to_send())
        for ev in events:
            if isinstance(ev, multistream.NegotiationFailed):
                raise NegotiationError(f"muxer: {ev.reason}")
            if isinstance(ev, multistream.ProtocolSelected):
                self._start_muxer(ev.leftover)

    def _start_muxer(self, leftover: bytes) -> None:
        self.phase = Phase.MUXED
        self._muxed_at = self.loop.time()
        self._negotiator = None
        # ACKs of inbound streams are sent by _on_muxed, or held (hold_answer).
        self.session = yamux.YamuxSession(
            self.is_initiator,
            dataclasses.replace(
                self.config.yamux,
                defer_accept_ack=True,
                max_frame_payload_bytes=min(
                    self.config.yamux.max_frame_payload_bytes,
                    self._max_plaintext - yamux.HEADER_BYTES,
                ),
            ),
            time.perf_counter(),
        )
        # One ping now, so that the connection has an RTT (status) before anyone
        # pings; keepalive answers keep it current.
        self.session.ping(time.perf_counter())
        if self._timer is not None:
            self._timer.cancel()
        self._arm_timer()
        if not self.ready.done():
            self.ready.set_result(self)
        self.callbacks.on_ready(self)
        if self.phase is not Phase.MUXED:
            return  # the owner refused it (a limit)
        if leftover:
            self._on_muxed(self.session.receive_data(leftover, time.perf_counter()))
            self._answer_opened()
        self._flush()

    def _handshake_timed_out(self) -> None:
        if self.phase is not Phase.MUXED:
            self._fail(f"handshake timeout after {self.config.handshake_timeout_s:g}s")

    # --- muxed --------------------------------------------------------------------

    def _on_muxed(self, events: list[yamux.Event]) -> None:
        streams = self.streams
        for ev in events:
            if type(ev) is yamux.DataReceived:
                stream = streams.get(ev.stream_id)
                if stream is not None:
                    stream._feed(ev.data)
                elif self.session is not None:
                    self.session.acknowledge_received_data(ev.stream_id, len(ev.data))
            elif isinstance(ev, yamux.SendWindowUpdated):
                stream = streams.get(ev.stream_id)
                if stream is not None:
                    stream._window_opened()
            elif isinstance(ev, yamux.StreamOpened):
                supported = self.callbacks.supported_protocols()
                if self.only_protocols is not None:
                    supported = self.only_protocols.intersection(supported)
                stream = Stream(self, ev.stream_id, None, supported=supported)
                streams[ev.stream_id] = stream
                self._opened.append(stream)
            elif isinstance(ev, yamux.StreamEnded):
                stream = streams.get(ev.stream_id)
                if stream is not None:
                    stream._end()
                    self._forget_if_done(ev.stream_id)
            elif isinstance(ev, yamux.StreamReset):
                stream = streams.pop(ev.stream_id, None)
                if stream is not None:
                    stream._reset(StreamReset("stream reset by peer"))
            elif isinstance(ev, yamux.PongReceived):
                self.rtt_s = ev.rtt_s
                fut = self._pings.pop(ev.opaque, None)
                if fut is not None and not fut.done():
                    fut.set_result(ev.rtt_s)
            elif isinstance(ev, yamux.GoAwayReceived):
                log.debug("%r: peer sent GO_AWAY(%d)", self, ev.code)
            elif isinstance(ev, yamux.KeepaliveTimedOut):
                self._fail(f"keepalive ping unanswered for {ev.waited_s:.0f}s")

    def _answer_opened(self) -> None:
        """Answer the streams opened by what one read brought (all of it: the opener's
        first data may be in a later Noise frame than its SYN)."""
        opened, self._opened = self._opened, []
        session = self.session
        if session is None or self.phase is not Phase.MUXED:
            return
        for stream in opened:
            # With its multistream answer (or our header if nothing was proposed
            # yet), and its yamux ACK, unless both are held for its first reply.
            stream.opened()
            if stream.stream_id not in self._held:
                session.send_ack(stream.stream_id)

    def on_protocol_refused(self, stream: Stream, protocol: str) -> None:
        """We answered ``na`` to ``protocol`` on an inbound stream."""
        self.callbacks.on_protocol_refused(stream, protocol)

    def on_stream_negotiated(self, stream: Stream) -> None:
        """An inbound stream agreed on its protocol: hand it to the host."""
        if self.session is not None and stream.stream_id % 2 != (
            1 if self.is_initiator else 0
        ):
            self.callbacks.on_stream(stream)

    def _forget_if_done(self, stream_id: int) -> None:
        # Once yamux forgets a stream no event can arrive for it; the application
        # keeps its Stream object (and any unread data) through its own reference.
        if self.session is not None and self.session.stream_state(stream_id) in (
            yamux.StreamState.CLOSED,
            yamux.StreamState.RESET,
        ):
            self.streams.pop(stream_id, None)

    # --- commands used by Stream ---------------------------------------------------

    def open_stream(
        self,
        protocols: list[str],
        *,
        optimistic: bool = True,
        data_expected: bool = False,
    ) -> Stream:
        """Open an outbound stream proposing ``protocols`` (optimistic for one).

        The opening frame is written at the end of this loop pass, so the opener's
        first write in the same pass joins it. ``data_expected`` (a proxy that just
        accepted a TCP client, which usually speaks at once) waits one more pass, so
        that bytes arriving right behind the accept still share the opening frame.
        """
        session = self._session()
        stream_id = session.open_stream()
        if optimistic and len(protocols) == 1:
            # The usual case: header and proposal now, and the peer's answer is the
            # same bytes back (Stream._feed builds a negotiator only if it is not).
            stream = Stream(self, stream_id, None, expect=protocols[0])
            opening = multistream.opening_message(protocols[0])
        else:
            neg = multistream.MultistreamNegotiator(
                multistream.Role.INITIATOR, protocols
            )
            stream = Stream(self, stream_id, neg)
            opening = neg.data_to_send()
        self.streams[stream_id] = stream
        session.send_data(stream_id, opening)
        if data_expected:
            self.loop.call_soon(self._schedule_flush)
        else:
            self._schedule_flush()
        return stream

    def send_stream_data(
        self,
        stream_id: int,
        data: bytes | memoryview,
        *,
        flush: bool = True,
        whole: bool = False,
    ) -> int:
        """Queue what the window allows; returns how much. ``flush=False`` defers the
        write to the end of this loop pass, so small control messages (multistream
        replies) share one encrypted frame with whatever follows them. ``whole``: see
        :meth:`YamuxSession.send_data`."""
        session = self._session()
        if self._held:
            self._release(stream_id)
        try:
            n = session.send_data(stream_id, data, whole)
        except LocalProtocolError as exc:
            raise ConnectionClosed(str(exc)) from None
        if n:
            if flush:
                self._flush()
            else:
                self._schedule_flush()
        return n

    def hold_answer(self, stream_id: int, data: bytes) -> None:
        """Keep an inbound stream's negotiation answer, and its yamux ACK, until the
        stream's first reply bytes, so both leave in one write; at the latest after
        ``config.hold_answer_s``. Only for an opener that is not waiting for them (it
        sent data right behind its proposal)."""
        self._held[stream_id] = data
        if self._hold_timer is None:
            self._hold_timer = self.loop.call_later(
                self.config.hold_answer_s, self._release_all_held
            )

    def _release(self, stream_id: int) -> None:
        data = self._held.pop(stream_id, None)
        if data is not None and self.session is not None:
            # send_data queues the owed ACK first, then the answer.
            self.session.send_data(stream_id, data)

    def _release_all_held(self) -> None:
        self._hold_timer = None
        for stream_id in list(self._held):
            self._release(stream_id)
        self._flush()

    def acknowledge(self, stream_id: int, n: int) -> None:
        if (
            self.session is not None
            and n
            and self.session.acknowledge_received_data(stream_id, n)
        ):
            self._schedule_flush()

    def close_stream(self, stream_id: int) -> None:
        if self.session is not None and self.phase is Phase.MUXED:
            if self._held:
                self._release(stream_id)
            self.session.close_stream(stream_id)
            self._forget_if_done(stream_id)
            self._schedule_flush()

    def reset_stream(self, stream_id: int) -> None:
        if self.session is not None and self.phase is Phase.MUXED:
            self._held.pop(stream_id, None)
            self.session.reset_stream(stream_id)
            self.streams.pop(stream_id, None)
            self._schedule_flush()

    async def drain(self) -> None:
        """Wait while the socket's write buffer is above its high-water mark.

        Every writer awaits the same future, so all of them resume together.
        """
        if self.phase is Phase.CLOSED:
            raise self.closed_error()
        if not self._paused:
            return
        if self._drain_waiter is None or self._drain_waiter.done():
            self._drain_waiter = self.loop.create_future()
        await asyncio.shield(self._drain_waiter)
        if self.is_closed:
            raise self.closed_error()

    async def ping(self, timeout_s: float = 10.0) -> float:
        """Yamux-level ping; returns the RTT in seconds."""
        session = self._session()
        fut: asyncio.Future[float] = self.loop.create_future()
        opaque = session.ping(time.perf_counter())
        self._pings[opaque] = fut
        self._flush()
        try:
            async with asyncio.timeout(timeout_s):
                rtt = await fut
        except TimeoutError:
            self._pings.pop(opaque, None)
            raise PeerupTimeout(f"ping unanswered after {timeout_s:g}s") from None
        self.rtt_s = rtt
        return rtt

    def _session(self) -> yamux.YamuxSession:
        if self.session is None or self.phase is not Phase.MUXED:
            if self.refused_at_handshake:
                raise self.closed_error()
            raise ConnectionClosed(
                f"connection not open ({self._close_reason or self.phase.name})"
            )
        return self.session

    # --- output ---------------------------------------------------------------------

    def _write_plain(self, data: bytes) -> None:
        if data and self._transport is not None:
            self._transport.write(data)

    def _write_secure(self, data: bytes) -> None:
        if data and self._transport is not None and self._cipher is not None:
            self._transport.write(self._cipher.encrypt(data))

    def _flush(self) -> None:
        self._flush_scheduled = False
        session = self.session
        if session is None or self._transport is None or self.phase is Phase.CLOSED:
            return
        if not session.outbox:
            return
        frames = session.frames_to_send()
        assert self._cipher is not None
        limit = self._max_plaintext
        if len(frames) == 1:
            if len(frames[0]) <= limit:
                self._transport.write(self._cipher.encrypt_chunks(frames))
                return
        elif sum(map(len, frames)) <= limit:
            # Small frames (an ACK, a reply, a FIN...): one Noise frame.
            self._transport.write(self._cipher.encrypt_chunks([b"".join(frames)]))
            return
        # Pack small frames together; a full data frame is one Noise frame by itself.
        chunks: list[bytes | memoryview] = []
        small: list[bytes] = []
        small_len = 0
        for frame in frames:
            if small and small_len + len(frame) > limit:
                chunks.append(b"".join(small))
                small, small_len = [], 0
            if len(frame) > limit:
                view = memoryview(frame)
                chunks.extend(view[i : i + limit] for i in range(0, len(view), limit))
                continue
            small.append(frame)
            small_len += len(frame)
        if small:
            chunks.append(small[0] if len(small) == 1 else b"".join(small))
        out = self._cipher.encrypt_chunks(chunks)
        if not self._over_stream or len(chunks) == 1:
            self._transport.write(out)
            return
        # One piece per Noise frame, so that each becomes one frame of the stream.
        view = memoryview(out)
        pieces = []
        pos = 0
        for chunk in chunks:
            end = pos + 2 + len(chunk) + noise.TAG_BYTES
            pieces.append(view[pos:end])
            pos = end
        self._transport.writelines(pieces)

    def flush(self) -> None:
        """Write whatever frames are queued, now."""
        self._flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _arm_timer(self) -> None:
        if self.session is None:
            return
        deadline = self.session.next_deadline()
        if deadline is not None:
            # yamux runs on perf_counter (see the module docstring), not loop time.
            self._timer = self.loop.call_later(
                deadline - time.perf_counter(), self._on_timer
            )

    def _on_timer(self) -> None:
        if self.session is None or self.phase is not Phase.MUXED:
            return
        self._on_muxed(self.session.handle_timeout(time.perf_counter()))
        self._flush()
        if self.phase is Phase.MUXED:
            self._arm_timer()

    # --- closing ----------------------------------------------------------------------

    def _fail(self, reason: str) -> None:
        if self.phase is Phase.CLOSED:
            return
        if self.is_initiator or self._muxed_at is not None:
            log.info("closing connection to %s: %s", self.name, reason)
        # else: an inbound handshake that failed; the owner logs it (on_closed),
        # summed up by source under a flood of garbage or silent connections.
        self._close_reason = reason
        self._flush()  # a queued GO_AWAY still goes out
        self._abort(reason)

    def _abort(self, reason: str) -> None:
        if self._transport is not None:
            if self._over_stream and self._muxed_at is None:
                # A relayed connection cut before its handshake finished (timeout,
                # refusal): reset its stream, so that the relay ends the circuit at
                # once. A half-close would leave that to the far end, which may
                # hold the circuit (and its place at the relay) for ever.
                self._transport.abort()
            else:
                self._transport.close()
        self._teardown(reason)

    def close(self, reason: str = "closed locally") -> None:
        """Send GO_AWAY and close the connection."""
        if self.phase is Phase.CLOSED:
            return
        self._close_reason = reason
        self._closed_locally = True
        if self.session is not None and self.phase is Phase.MUXED:
            self.session.go_away(yamux.GO_AWAY_NORMAL)
            self._flush()
        self._abort(reason)

    async def aclose(self, reason: str = "closed locally") -> None:
        """Close and wait until the connection is torn down."""
        self.close(reason)
        await asyncio.shield(self.closed)

    def _refused_at_handshake(self) -> bool:
        """Whether the peer is ending a connection we dialed the way a peer gate
        refuses: right after the handshake, without a single muxed frame."""
        muxed_at = self._muxed_at
        return (
            self.is_initiator
            and self.phase is Phase.MUXED
            and not self._closed_locally
            and self.muxed_bytes_received == 0
            and muxed_at is not None
            and self.loop.time() - muxed_at < REFUSAL_WINDOW_S
        )

    def _teardown(self, reason: str) -> None:
        if self.phase is Phase.CLOSED:
            return
        refused = self._refused_at_handshake()
        self.phase = Phase.CLOSED
        if refused:
            self.refused_at_handshake = True
            self._close_reason = (
                "the peer refused this machine: it hung up right after the "
                "handshake (the way a peer refuses one it does not allow)"
            )
            log.info("%s refused us at the handshake", self.remote_peer)
        self._close_reason = self._close_reason or reason
        if self._timer is not None:
            self._timer.cancel()
        if self._hold_timer is not None:
            self._hold_timer.cancel()
        self._held.clear()
        self._opened.clear()
        err = self.closed_error()
        if not self.ready.done():
            # A dialer waiting for the handshake learns the precise failure
            # (PeerIdMismatch, NegotiationError, ...), not just "closed".
            self.ready.set_exception(self._failure or err)
            self.ready.exception()
        for stream in list(self.streams.values()):
            stream._reset(err)
        self.streams.clear()
        for fut in self._pings.values():
            if not fut.done():
                fut.set_exception(err)
                fut.exception()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self.closed.set_result(self._close_reason)
        self.callbacks.on_closed(self, self._close_reason)

    @property
    def close_reason(self) -> str:
        return self._close_reason

    def closed_error(self) -> ConnectionClosed:
        """The error for what needs this closed connection."""
        if self.refused_at_handshake:
            return RefusedAtHandshake(self._close_reason)
        return ConnectionClosed(f"connection closed: {self._close_reason}")

    @property
    def was_muxed(self) -> bool:
        """Whether the handshake finished (the connection reached MUXED)."""
        return self._muxed_at is not None

    @property
    def inbound_stream_count(self) -> int:
        """Streams the peer opened that are still open."""
        session = self.session
        return session.inbound_stream_count if session is not None else 0

    @property
    def is_write_paused(self) -> bool:
        """Whether the socket's write buffer is over its high-water mark."""
        return self._paused

    def on_writable(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once when the socket accepts writes again."""
        self._writable_callbacks.append(callback)

    @property
    def transport(self) -> asyncio.Transport:
        """What this connection runs on (a socket's, or a relay stream's)."""
        if self._transport is None:
            raise ConnectionClosed("not connected yet")
        return self._transport

    @property
    def is_closed(self) -> bool:
        return self.phase is Phase.CLOSED

    @property
    def is_open(self) -> bool:
        return self.phase is Phase.MUXED


def _sockaddr_to_multiaddr(sockaddr: object) -> Multiaddr | None:
    if isinstance(sockaddr, Multiaddr):
        return sockaddr
    if not isinstance(sockaddr, tuple) or len(sockaddr) < 2:
        return None
    try:
        return Multiaddr.from_tcp(str(sockaddr[0]), int(sockaddr[1]))
    except ValueError:
        return None
