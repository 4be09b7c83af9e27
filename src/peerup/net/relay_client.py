"""Circuit relay v2 client: reserve a slot, keep it, accept STOP, dial through relays.

Spec: libp2p/specs relay/circuit-v2.md ("Reservation", "Circuit establishment").
- ``RelayClient.keep(relay)``: reserve, refresh before expiry, and re-reserve after the
  relay restarts or the connection drops, with jittered backoff (net/backoff.py). While
  a reservation is active, ``<relay>/p2p-circuit`` is one of the host's addresses (and
  so advertised in identify).
- ``RelayClient.drop(relay)``: stop keeping it: the keep task is cancelled, the circuit
  address withdrawn, and the connection to the relay closed, or, while circuits through
  it are open, closed when the last one ends (new inbound circuits through it are
  refused meanwhile). The relay forgets the reservation at its expiry; circuit v2 has
  no message to cancel one.
- STOP handler: accepts a relayed connection after the peer gate, and runs the normal
  upgrade over the stream (net/stream_transport.py), as responder.
- ``CircuitDialer``: a host dialer for ``…/p2p-circuit/p2p/<target>`` addresses.
Streams over a limited circuit are allowed. Not supported: relaying through more than
one relay (the spec forbids nested circuits).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict

from peerup.core import varint
from peerup.core.errors import (
    ConnectError,
    Error,
    RefusedAtHandshake,
    RelayError,
    RelayRefusedUs,
    RelayUnreachable,
    RemoteProtocolError,
)
from peerup.core.multiaddr import Multiaddr
from peerup.core.peer_id import PeerId
from peerup.net import tracing
from peerup.net.backoff import Backoff, BackoffPolicy
from peerup.net.connection import Connection
from peerup.net.host import Host
from peerup.net.stream import Stream
from peerup.net.stream_transport import StreamTransport
from peerup.proto import relay_v2

log = logging.getLogger(__name__)


async def read_message(
    stream: Stream, max_bytes: int = relay_v2.MAX_MESSAGE_BYTES
) -> bytes:
    """Read one varint-length-prefixed message, consuming nothing after it.

    Raises:
        RemoteProtocolError: malformed or too long; ConnectionClosed / EOF errors.
    """
    head = bytearray()
    while True:
        byte = await stream.read(1)
        if not byte:
            raise RemoteProtocolError("stream ended before a relay message")
        head += byte
        got = varint.try_decode(head)
        if got is not None:
            break
    length = got[0]
    if length > max_bytes:
        raise RemoteProtocolError(f"relay message of {length} bytes is too long")
    try:
        return await stream.readexactly(length)
    except asyncio.IncompleteReadError:
        raise RemoteProtocolError("stream ended inside a relay message") from None


@dataclass(frozen=True, slots=True)
class RelayClientConfig:
    request_timeout_s: float = 10.0
    """A RESERVE or CONNECT answer must come within this time."""
    refresh_fraction: float = 0.75
    """Refresh when this fraction of the reservation's lifetime has passed."""
    backoff: BackoffPolicy = BackoffPolicy()


@dataclass(frozen=True, slots=True)
class Reservation:
    """An active reservation on one relay."""

    relay: PeerId
    relay_addr: Multiaddr
    circuit_addr: Multiaddr
    expire: int
    limit: relay_v2.Limit | None
    has_voucher: bool


@dataclass(frozen=True, slots=True)
class Dropped:
    """What :meth:`RelayClient.drop` did with a relay."""

    relay_addr: Multiaddr
    was_kept: bool
    """Whether the relay was kept (else nothing was done)."""
    open_circuits: int
    """Circuits through the relay still open: its connection closes after the last."""


@dataclass(slots=True)
class RelayState:
    """What the client knows about one configured relay (for status displays)."""

    relay_addr: Multiaddr
    reservation: Reservation | None = None
    last_error: str | None = None
    last_exception: Error | None = None
    """The error behind ``last_error`` (e.g. :class:`RelayRefusedUs`), if any."""
    attempts: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class RelayClient:
    """Relay features of a host: reservations, inbound circuits, circuit dialing."""

    def __init__(
        self,
        host: Host,
        config: RelayClientConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.host = host
        self.config = config or RelayClientConfig()
        self.clock = clock
        self.relays: dict[Multiaddr, RelayState] = {}
        self._keepers: dict[Multiaddr, asyncio.Task[Any]] = {}
        # Dropped relays whose connection waits for its last circuit to end.
        self._retiring: set[PeerId] = set()
        host.set_handler(relay_v2.STOP_PROTOCOL_ID, self._handle_stop)
        host.dialers.append(CircuitDialer(self))
        host.on_disconnect.append(self._on_disconnect)

    # --- reservations -------------------------------------------------------------

    async def reserve(self, relay_addr: Multiaddr) -> Reservation:
        """Make one reservation now.

        Raises:
            RelayError: the relay refused (with its status); ConnectError etc.
        """
        with tracing.span("peerup.reservation", lambda: {"relay": str(relay_addr)}):
            return await self._reserve(relay_addr)

    async def _reserve(self, relay_addr: Multiaddr) -> Reservation:
        if relay_addr.peer_id is None:
            raise ConnectError(f"relay address needs /p2p/<relay id>: {relay_addr}")
        conn = await self.host.connect(relay_addr)
        try:
            stream = conn.open_stream([relay_v2.HOP_PROTOCOL_ID])
        except RefusedAtHandshake:
            raise RelayRefusedUs(str(relay_addr)) from None
        try:
            async with asyncio.timeout(self.config.request_timeout_s):
                await stream.write(
                    relay_v2.HopMessage(relay_v2.HopType.RESERVE).encode()
                )
                reply = relay_v2.HopMessage.decode(await read_message(stream))
        except TimeoutError:
            stream.reset()
            raise RelayError("relay did not answer the reservation", 0) from None
        except RefusedAtHandshake:
            raise RelayRefusedUs(str(relay_addr)) from None
        finally:
            await stream.aclose()
        if (
            reply.type is not relay_v2.HopType.STATUS
            or reply.status is not relay_v2.Status.OK
        ):
            status = reply.status or relay_v2.Status.UNUSED
            raise RelayError(f"relay refused the reservation: {status.name}", status)
        if reply.reservation is None:
            raise RelayError("relay answered OK without a reservation", 0)
        rsvp = reply.reservation
        if rsvp.voucher is not None:
            voucher, signer = relay_v2.Voucher.open(rsvp.voucher)
            if signer != conn.remote_peer or voucher.peer != self.host.peer_id:
                raise RelayError(
                    "reservation voucher is not for this relay and peer", 0
                )
        circuit = relay_addr.with_peer_id(conn.remote_peer).encapsulate(
            Multiaddr((("p2p-circuit", None),))
        )
        return Reservation(
            conn.remote_peer,
            relay_addr,
            circuit,
            rsvp.expire,
            reply.limit,
            rsvp.voucher is not None,
        )

    async def reserve_and_keep(self, relay_addr: Multiaddr) -> Multiaddr:
        """Reserve now (raising on failure), then keep the reservation in the background.

        Returns:
            This host's circuit address through the relay, with its own ``/p2p/``.
        """
        state = self.relays.setdefault(relay_addr, RelayState(relay_addr))
        self._unretire(relay_addr)
        rsvp = await self.reserve(relay_addr)
        if self.relays.get(relay_addr) is not state:
            raise ConnectError(f"relay {relay_addr} was dropped while reserving")
        self._activate(state, rsvp)
        if relay_addr not in self._keepers:
            self._keepers[relay_addr] = self.host.spawn(
                self._maintain(state, first_done=True), f"relay {relay_addr}"
            )
        return rsvp.circuit_addr.with_peer_id(self.host.peer_id)

    def keep(self, relay_addr: Multiaddr) -> None:
        """Keep a reservation on ``relay_addr`` in the background, retrying forever
        (until :meth:`drop`). Keeping a relay already kept does nothing."""
        state = self.relays.setdefault(relay_addr, RelayState(relay_addr))
        self._unretire(relay_addr)
        if relay_addr not in self._keepers:
            self._keepers[relay_addr] = self.host.spawn(
                self._maintain(state, first_done=False), f"relay {relay_addr}"
            )

    def drop(self, relay_addr: Multiaddr) -> Dropped:
        """Stop keeping ``relay_addr``: no more reservation attempts, no circuit
        address through it, and its connection closed once no circuit uses it (unless
        the same relay is still kept at another address)."""
        task = self._keepers.pop(relay_addr, None)
        if task is not None:
            task.cancel()
        state = self.relays.pop(relay_addr, None)
        if state is not None:
            self._deactivate(state, "relay dropped")
        relay = relay_addr.peer_id
        if state is None or relay is None or relay in self._kept_peers():
            return Dropped(relay_addr, state is not None, 0)
        circuits = self._circuits_through(relay)
        if circuits:
            self._retiring.add(relay)
        else:
            self._close_relay(relay)
        return Dropped(relay_addr, True, circuits)

    async def wait_reserved(self, relay_addr: Multiaddr) -> Reservation:
        """Wait until the kept relay ``relay_addr`` holds a reservation.

        Raises:
            ConnectError: the relay was dropped meanwhile.
        """
        state = self.relays.setdefault(relay_addr, RelayState(relay_addr))
        while state.reservation is None:
            if self.relays.get(relay_addr) is not state:
                raise ConnectError(f"relay {relay_addr} was dropped")
            state.changed.clear()
            await state.changed.wait()
        return state.reservation

    def _kept_peers(self) -> set[PeerId]:
        return {p for a in self.relays if (p := a.peer_id) is not None}

    def _unretire(self, relay_addr: Multiaddr) -> None:
        if relay_addr.peer_id is not None:
            self._retiring.discard(relay_addr.peer_id)

    def _circuits_through(self, relay: PeerId) -> int:
        """Open relayed connections that run through ``relay``."""
        count = 0
        for conns in self.host.connections.values():
            for conn in conns:
                if conn.is_relayed and conn.is_open and conn.remote_addr is not None:
                    if conn.remote_addr.split_circuit()[0].peer_id == relay:
                        count += 1
        return count

    def _close_relay(self, relay: PeerId) -> None:
        self._retiring.discard(relay)
        for conn in list(self.host.connections.get(relay, ())):
            if not conn.is_relayed:
                conn.close("relay dropped")

    def _on_disconnect(self, conn: Connection) -> None:
        """A circuit ended: close a dropped relay's connection after its last one."""
        if not (self._retiring and conn.is_relayed and conn.remote_addr is not None):
            return
        relay = conn.remote_addr.split_circuit()[0].peer_id
        if (
            relay is not None
            and relay in self._retiring
            and not self._circuits_through(relay)
        ):
            self._close_relay(relay)

    def _activate(self, state: RelayState, rsvp: Reservation) -> None:
        state.reservation = rsvp
        state.last_error = None
        state.changed.set()
        if rsvp.circuit_addr not in self.host.extra_addrs:
            self.host.extra_addrs.append(rsvp.circuit_addr)
            self.host.addresses_changed()
        log.info(
            "reserved on relay %s until %s",
            rsvp.relay.short(),
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(rsvp.expire)),
        )

    def _deactivate(self, state: RelayState, error: str) -> None:
        rsvp = state.reservation
        state.reservation = None
        state.last_error = error
        state.changed.set()
        if rsvp is not None and rsvp.circuit_addr in self.host.extra_addrs:
            self.host.extra_addrs.remove(rsvp.circuit_addr)
            self.host.addresses_changed()

    async def _maintain(self, state: RelayState, *, first_done: bool) -> None:
        backoff = Backoff(self.config.backoff)
        need_reserve = not first_done
        while True:
            if need_reserve:
                state.attempts += 1
                try:
                    self._activate(state, await self.reserve(state.relay_addr))
                    backoff.reset()
                except Error as exc:
                    self._deactivate(state, str(exc))
                    state.last_exception = exc
                    delay = backoff.next_delay()
                    log.info(
                        "relay %s: %s; retrying in %.2fs", state.relay_addr, exc, delay
                    )
                    await asyncio.sleep(delay)
                    continue
            rsvp = state.reservation
            assert rsvp is not None
            conn = self.host.connection_to(rsvp.relay)
            remaining = max(1.0, rsvp.expire - self.clock())
            refresh_in = remaining * (1 - self.config.refresh_fraction)
            if conn is None:
                need_reserve = True
                continue
            sleeper: asyncio.Future[None] = asyncio.ensure_future(
                asyncio.sleep(refresh_in)
            )
            closed: asyncio.Future[str] = asyncio.ensure_future(
                asyncio.shield(conn.closed)
            )
            try:
                waits: list[asyncio.Future[object]] = [sleeper, closed]  # type: ignore[list-item]
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                closed.cancel()
            if conn.is_open:
                need_reserve = True  # refresh on the same connection
            else:
                self._deactivate(
                    state, f"connection to relay lost: {conn.close_reason}"
                )
                need_reserve = True

    # --- inbound circuits ---------------------------------------------------------

    async def _handle_stop(self, stream: Stream) -> None:
        try:
            async with asyncio.timeout(self.config.request_timeout_s):
                msg = relay_v2.StopMessage.decode(await read_message(stream))
        except (RemoteProtocolError, TimeoutError) as exc:
            log.info("bad STOP from relay %s: %s", stream.remote_peer.short(), exc)
            await self._stop_status(stream, relay_v2.Status.MALFORMED_MESSAGE)
            return
        if msg.type is not relay_v2.StopType.CONNECT or msg.peer is None:
            await self._stop_status(stream, relay_v2.Status.UNEXPECTED_MESSAGE)
            return
        src = msg.peer.peer_id
        if stream.remote_peer in self._retiring:
            # We no longer hold that reservation as far as we are concerned: the
            # dialer should move on to another of our addresses.
            log.info(
                "refused a circuit from %s through dropped relay %s",
                src.short(),
                stream.remote_peer.short(),
            )
            await self._stop_status(stream, relay_v2.Status.NO_RESERVATION)
            return
        access = self.host.gate(src)
        if not access.is_allowed:
            self.host.refused(
                f"{src} (relayed)",
                access.reason,
                line=f"refused relayed peer {src}: {access.reason}",
            )
            await self._stop_status(stream, relay_v2.Status.PERMISSION_DENIED)
            return
        await stream.write(
            relay_v2.StopMessage(
                relay_v2.StopType.STATUS, status=relay_v2.Status.OK
            ).encode()
        )
        relay_addr = stream.conn.remote_addr or Multiaddr((("p2p-circuit", None),))
        circuit = (
            relay_addr.with_peer_id(stream.remote_peer)
            .encapsulate(Multiaddr((("p2p-circuit", None),)))
            .with_peer_id(src)
        )
        conn = self.host.accept_connection(is_relayed=True)
        StreamTransport(stream, circuit, **_limits(msg.limit)).start(conn)
        await conn.closed

    async def _stop_status(self, stream: Stream, status: relay_v2.Status) -> None:
        await stream.write(
            relay_v2.StopMessage(relay_v2.StopType.STATUS, status=status).encode()
        )

    # --- outbound circuits --------------------------------------------------------

    async def dial(self, addr: Multiaddr, peer: PeerId | None) -> Connection:
        relay_part, target_part = addr.split_circuit()
        target = (target_part.peer_id if target_part else None) or peer
        if target is None:
            raise ConnectError(f"circuit address without a target peer: {addr}")
        if relay_part.peer_id is None:
            raise ConnectError(f"circuit address without the relay's /p2p/: {addr}")
        try:
            relay_conn = await self.host.connect(relay_part)
        except ConnectError as exc:
            raise RelayUnreachable(str(relay_part), exc) from None
        try:
            stream = relay_conn.open_stream([relay_v2.HOP_PROTOCOL_ID])
        except RefusedAtHandshake:
            raise RelayRefusedUs(str(relay_part)) from None
        try:
            async with asyncio.timeout(self.config.request_timeout_s):
                await stream.write(
                    relay_v2.HopMessage(
                        relay_v2.HopType.CONNECT, peer=relay_v2.Peer(target)
                    ).encode()
                )
                reply = relay_v2.HopMessage.decode(await read_message(stream))
        except TimeoutError:
            stream.reset()
            raise RelayError("relay did not answer CONNECT", 0) from None
        except RefusedAtHandshake:
            raise RelayRefusedUs(str(relay_part)) from None
        except BaseException:
            stream.reset()
            raise
        if (
            reply.type is not relay_v2.HopType.STATUS
            or reply.status is not relay_v2.Status.OK
        ):
            stream.reset()
            status = reply.status or relay_v2.Status.UNUSED
            raise RelayError(f"relay refused the circuit: {status.name}", status)
        conn = self.host.initiate_connection(target, is_relayed=True)
        StreamTransport(stream, addr.with_peer_id(target), **_limits(reply.limit)).start(
            conn
        )
        return conn

    def status(self) -> list[RelayState]:
        return list(self.relays.values())


class _Limits(TypedDict):
    limit_duration_s: float
    limit_data_bytes: int


def _limits(limit: relay_v2.Limit | None) -> _Limits:
    """A circuit's announced limits as StreamTransport takes them (0: none)."""
    if limit is None:
        return {"limit_duration_s": 0.0, "limit_data_bytes": 0}
    return {
        "limit_duration_s": float(limit.duration_s or 0),
        "limit_data_bytes": int(limit.data_bytes or 0),
    }


class CircuitDialer:
    """Host dialer for ``/p2p-circuit`` addresses."""

    def __init__(self, client: RelayClient) -> None:
        self.client = client

    def can_dial(self, addr: Multiaddr) -> bool:
        return addr.is_circuit

    async def dial(
        self, host: Host, addr: Multiaddr, peer: PeerId | None
    ) -> Connection:
        return await self.client.dial(addr, peer)
