"""Direct connection upgrade: from a relayed connection to a direct one (DCUtR).

Spec: libp2p/specs relay/DCUtR.md ("The Protocol"); the message flow and the timing
are in proto/dcutr.py, which this module drives (STYLE.md 3.2). The peer that received
the relayed connection (DCUtR's ``B``) leads, as the spec has it, once identify has run
over the connection and if the caller's policy allows the peer:

- *Known addresses*: ``B`` dials the direct addresses the peer advertised (identify),
  a plain dial with a short timeout: what gets two machines on one LAN, or on one
  machine, off the relay (the spec's unilateral upgrade). The other side (``A``) does
  not dial those too, or both would; it dials addresses it learns elsewhere (the
  command line: :meth:`HolePunchService.try_direct`).
- *Hole punch*: at the same time ``B`` runs DCUtR, if the peer serves
  ``/libp2p/dcutr``: both sides dial each other from their listen port at the same
  moment, each to the addresses the other listed (its NAT mappings as observed through
  the relay, ``Host.own_observed_addrs``, and its listen addresses), so that the SYNs
  cross: a TCP simultaneous open. ``A`` is the client above TCP, ``B`` the server
  (spec). If one side's SYN reaches the other's listener before that side dialed, the
  accepted connection takes the same role (``Host.expect_hole_punch``). Up to three
  attempts, each measuring the RTT anew.

The first direct connection ends the rest. New streams then go to it
(``Host.connection_to`` prefers direct); streams already open on the relayed
connection carry on until they end, and the relayed connection is closed once it has
been idle for a grace period (``relayed_grace_s``). Each upgrade ends in a
:class:`HolePunchResult` (per peer in ``results``, logged; ``A`` records how the
peer's punch went from its side): a value that says how the peer was reached, or why
it stays relayed. Not supported: QUIC; trying again when our own addresses change
(``retry_all`` exists, nothing calls it yet).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from peerup.core.errors import ConnectError, Error
from peerup.core.multiaddr import Multiaddr
from peerup.core.peer_id import PeerId
from peerup.net import tcp, tracing
from peerup.net.connection import Connection
from peerup.net.host import Host
from peerup.net.stream import Stream
from peerup.proto import dcutr

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HolePunchConfig:
    """Timeouts of the upgrade (the retry count is the spec's, in proto/dcutr.py)."""

    direct_dial_timeout_s: float = 3.0
    """Dialing a peer's known direct addresses, all at once."""
    punch_dial_timeout_s: float = 3.0
    """One hole punch attempt's dials (Linux resends an unanswered SYN after 1 s)."""
    message_timeout_s: float = 10.0
    """The peer's answer to a CONNECT (it crosses the relay)."""
    max_attempts: int = dcutr.MAX_ATTEMPTS
    relayed_grace_s: float = 10.0
    """Once a direct connection is up, a relayed one to the same peer is closed when
    it carries no stream at two checks this far apart (spec: "closed after a grace
    period"), which frees the relay's circuit; one carrying streams is left to them."""


class Outcome(enum.Enum):
    DIRECT = "direct"
    """A known direct address of the peer answered."""
    HOLE_PUNCHED = "hole punched"
    """DCUtR's simultaneous open got through both NATs."""
    RELAYED = "relayed"
    """Nothing worked; the relayed connection carries on (``reason`` says why)."""


@dataclass(frozen=True, slots=True)
class HolePunchResult:
    """How one upgrade of a relayed connection ended."""

    peer: PeerId
    outcome: Outcome
    reason: str
    elapsed_s: float
    """From the relayed connection being ready to this outcome."""
    rtt_s: float | None = None
    """The relayed round trip DCUtR measured (last attempt), if it ran."""
    attempts: int = 0
    """DCUtR attempts made (0: no hole punch was needed or possible)."""
    addr: Multiaddr | None = None
    """The peer's address on the direct connection."""
    role: str = ""
    """"initiator" (we received the relayed connection), or "responder"."""

    @property
    def is_direct(self) -> bool:
        return self.outcome is not Outcome.RELAYED

    def describe(self) -> str:
        """One line for logs and ``status``."""
        if self.outcome is Outcome.RELAYED:
            return f"relayed: {self.reason}"
        how = self.outcome.value if self.attempts else self.reason
        if self.attempts:
            how += f", attempt {self.attempts}"
        if self.rtt_s is not None:
            how += f", relayed rtt {self.rtt_s * 1000:.0f} ms"
        return f"direct after {self.elapsed_s:.2f} s ({how})"


class HolePunchService:
    """Upgrades relayed connections of a host to direct ones (see module docstring)."""

    def __init__(
        self,
        host: Host,
        config: HolePunchConfig | None = None,
        *,
        should_upgrade: Callable[[PeerId], bool] | None = None,
    ) -> None:
        self.host = host
        self.config = config or HolePunchConfig()
        self.should_upgrade = should_upgrade or (lambda _peer: True)
        """Policy: whether to spend dials on a peer (the daemon: an allowed one)."""
        self.results: dict[PeerId, HolePunchResult] = {}
        """The latest outcome per peer."""
        self.on_result: list[Callable[[HolePunchResult], None]] = []
        self._active: dict[PeerId, asyncio.Task[Any]] = {}
        self._relayed_at: dict[Connection, float] = {}
        self._direct_waiters: dict[PeerId, list[asyncio.Future[Connection]]] = {}
        self._retiring: dict[PeerId, asyncio.Task[Any]] = {}
        host.set_handler(dcutr.PROTOCOL_ID, self._serve)
        host.on_connection.append(self._on_connection)
        host.on_disconnect.append(self._on_disconnect)
        host.on_new_addrs.append(self._on_new_addrs)

    # --- triggers ---------------------------------------------------------------------

    def _on_connection(self, conn: Connection) -> None:
        peer = conn.remote_peer
        if not conn.is_relayed:
            for fut in self._direct_waiters.pop(peer, []):
                if not fut.done():
                    fut.set_result(conn)
            if peer not in self._retiring and not self.host.is_closed:
                self._retiring[peer] = self.host.spawn(
                    self._retire_relayed(peer), f"retire relayed {peer.short()}"
                )
            return
        self._relayed_at[conn] = time.perf_counter()
        if not conn.is_initiator:
            # The spec's B (it received the relayed connection) leads the upgrade.
            self._start(conn)

    def _on_disconnect(self, conn: Connection) -> None:
        self._relayed_at.pop(conn, None)
        if conn.remote_peer not in self.host.connections:
            # The outcome was about connections that are gone.
            self.results.pop(conn.remote_peer, None)

    def _on_new_addrs(self, peer: PeerId, addrs: list[Multiaddr]) -> None:
        """Direct addresses learned while only relayed: try them. On the side that
        dialed through the relay, only addresses learned elsewhere (the command
        line): those the peer advertised itself are the other side's to dial, so
        that both do not dial each other at once."""
        if not any(tcp.can_dial(a) for a in addrs):
            return
        relayed = self._relayed_only(peer)
        if relayed is None:
            return
        if relayed.is_initiator:
            info = self.host.peerstore.get(peer)
            advertised = set(info.listen_addrs) if info is not None else set()
            if all(a in advertised for a in addrs):
                return
        # While an upgrade of it runs (its first identify brought these), a no-op.
        self._start(relayed)

    def _relayed_only(self, peer: PeerId) -> Connection | None:
        conn = self.host.connection_to(peer)
        return conn if conn is not None and conn.is_relayed else None

    async def _retire_relayed(self, peer: PeerId) -> None:
        """Close ``peer``'s relayed connections that stay idle while a direct one is
        open (see ``relayed_grace_s``); the streams of busy ones end first."""
        try:
            idle: set[Connection] = set()
            while True:
                await asyncio.sleep(self.config.relayed_grace_s)
                conns = self.host.connections.get(peer, [])
                relayed = [c for c in conns if c.is_relayed and c.is_open]
                if not relayed or all(c.is_relayed for c in conns):
                    return
                for conn in relayed:
                    if conn.streams:
                        idle.discard(conn)
                    elif conn in idle:
                        log.debug("closing the idle relayed connection to %s", peer)
                        conn.close("replaced by a direct connection")
                    else:
                        idle.add(conn)  # idle at two checks in a row: then closed
        finally:
            self._retiring.pop(peer, None)

    def disable(self) -> None:
        """Take no part in upgrades: start none, and answer the peer's DCUtR with
        ``na`` (a node that keeps its traffic on the relay)."""
        self.should_upgrade = lambda _peer: False
        self.host.remove_handler(dcutr.PROTOCOL_ID)

    def try_direct(self, peer: PeerId) -> None:
        """The caller learned how to reach ``peer`` directly (the command line): if
        only a relayed connection is open, upgrade it now, whichever side we are."""
        relayed = self._relayed_only(peer)
        if relayed is not None:
            self._start(relayed)

    def retry_all(self) -> None:
        """Try again for every peer we reach only through a relay (our addresses
        changed, say)."""
        for peer in list(self.host.connections):
            conn = self._relayed_only(peer)
            if conn is not None:
                self._start(conn)

    def _start(self, conn: Connection) -> None:
        peer = conn.remote_peer
        if peer in self._active or self.host.is_closed or not conn.is_open:
            return
        if not self.should_upgrade(peer):
            return
        self._active[peer] = self.host.spawn(
            self._upgrade(conn), f"direct upgrade {peer.short()}"
        )

    # --- the upgrade ------------------------------------------------------------------

    async def upgrade(self, conn: Connection) -> HolePunchResult:
        """Upgrade ``conn`` (relayed) to a direct connection, now; the outcome."""
        with tracing.span("peerup.holepunch", lambda: {"peer": str(conn.remote_peer)}) as s:
            result = await self._upgrade_now(conn)
            s.set("outcome", result.outcome.name.lower())
            return result

    async def _upgrade_now(self, conn: Connection) -> HolePunchResult:
        start = self._relayed_at.get(conn, time.perf_counter())
        peer = conn.remote_peer
        info = await self.host.identified(conn)
        existing = self.host.connection_to(peer)
        if existing is not None and not existing.is_relayed:
            return self._result(peer, Outcome.DIRECT, "already direct", start, existing)
        is_b = not conn.is_initiator  # we received the relayed connection
        role = "initiator" if is_b else "responder"
        tries: list[asyncio.Task[tuple[Connection | None, str, int, float | None]]] = []
        known = [a for a in self.host.peer_addrs.get(peer, []) if tcp.can_dial(a)]
        if known:
            tries.append(asyncio.ensure_future(self._dial_known(peer, known)))
        speaks_dcutr = info is not None and dcutr.PROTOCOL_ID in info.protocols
        if is_b and speaks_dcutr:
            tries.append(asyncio.ensure_future(self._punch(conn)))
        reasons = []
        if not known:
            reasons.append("no direct address of the peer known")
        if is_b and not speaks_dcutr:
            reasons.append("the peer does not offer hole punching (/libp2p/dcutr)")
        elif not is_b:
            reasons.append(
                "the peer, which received the relayed connection, leads the hole punch"
            )
        try:
            for next_done in asyncio.as_completed(tries):
                direct, why, attempts, rtt = await next_done
                if direct is not None:
                    outcome = Outcome.HOLE_PUNCHED if attempts else Outcome.DIRECT
                    return self._result(
                        peer, outcome, why, start, direct, rtt, attempts, role
                    )
                reasons.append(why)
        finally:
            for task in tries:
                task.cancel()
            if tries:
                await asyncio.gather(*tries, return_exceptions=True)
        # A connection the peer made while we tried counts too.
        existing = self.host.connection_to(peer)
        if existing is not None and not existing.is_relayed:
            return self._result(
                peer, Outcome.DIRECT, "the peer dialed us", start, existing, role=role
            )
        return self._result(
            peer, Outcome.RELAYED, "; ".join(reasons), start, None, role=role
        )

    async def _upgrade(self, conn: Connection) -> None:
        peer = conn.remote_peer
        try:
            result = await self.upgrade(conn)
        finally:
            self._active.pop(peer, None)
        self.results[peer] = result
        log.info("%s: %s", peer, result.describe())
        for callback in self.on_result:
            callback(result)

    def _result(
        self,
        peer: PeerId,
        outcome: Outcome,
        reason: str,
        start: float,
        conn: Connection | None,
        rtt_s: float | None = None,
        attempts: int = 0,
        role: str = "",
    ) -> HolePunchResult:
        return HolePunchResult(
            peer,
            outcome,
            reason,
            time.perf_counter() - start,
            rtt_s,
            attempts,
            conn.remote_addr if conn is not None else None,
            role,
        )

    async def _dial_known(
        self, peer: PeerId, addrs: list[Multiaddr]
    ) -> tuple[Connection | None, str, int, float | None]:
        conn, why = await self._dial_all(
            peer,
            addrs,
            is_client=True,
            hole_punch=False,
            timeout_s=self.config.direct_dial_timeout_s,
        )
        if conn is None:
            return None, f"known addresses: {why}", 0, None
        return conn, "a known address answered", 0, None

    # --- hole punch: B ----------------------------------------------------------------

    def own_addrs(self, conn: Connection) -> list[Multiaddr]:
        """What we list in CONNECT: our NAT mappings as observed, then our listen
        addresses (for a peer on our LAN; loopback only over a loopback relay)."""
        via = conn.remote_addr
        via_loopback = via is not None and tcp.is_loopback(via)
        out = list(self.host.own_observed_addrs())
        for addr in self.host.addrs:
            if addr.is_circuit or not tcp.can_dial(addr) or tcp.is_unspecified(addr):
                continue
            if tcp.is_loopback(addr) and not via_loopback:
                continue
            if addr not in out:
                out.append(addr)
        return out

    async def _punch(
        self, conn: Connection
    ) -> tuple[Connection | None, str, int, float | None]:
        """DCUtR as ``B`` over ``conn``; (direct connection or None, why, attempts,
        rtt)."""
        own = self.own_addrs(conn)
        if not own:
            return None, "hole punch: we know no address of our own to offer", 0, None
        session = dcutr.DcutrSession(
            dcutr.Role.INITIATOR, own, max_attempts=self.config.max_attempts
        )
        peer = conn.remote_peer
        pump = _Pump(self.host, conn.open_stream([dcutr.PROTOCOL_ID]))
        session.start(time.perf_counter())
        try:
            while True:
                await pump.write(session.data_to_send())
                deadline = session.next_deadline()
                if deadline is not None:
                    await asyncio.sleep(max(0.0, deadline - time.perf_counter()))
                    events = session.handle_timeout(time.perf_counter())
                else:
                    data = await pump.read(self.config.message_timeout_s)
                    now = time.perf_counter()
                    if data is None:
                        events = [
                            dcutr.HolePunchFailed(
                                "hole punch: no answer to CONNECT within "
                                f"{self.config.message_timeout_s:g}s",
                                session.attempt,
                            )
                        ]
                    elif data:
                        events = session.receive_data(data, now)
                    else:
                        events = session.receive_eof()
                for event in events:
                    if isinstance(event, dcutr.HolePunchFailed):
                        pump.stream.reset()
                        return None, f"hole punch: {event.reason}", event.attempts, None
                    direct, why = await self._dial_all(
                        peer,
                        list(event.addrs),
                        is_client=event.is_client,
                        hole_punch=True,
                        timeout_s=self.config.punch_dial_timeout_s,
                    )
                    if direct is not None:
                        session.dial_succeeded()
                        await pump.close()
                        return direct, "hole punched", event.attempt, event.rtt_s
                    pump.drain_eof(session)
                    if session.peer_closed:
                        # go-libp2p's responder serves one attempt per stream.
                        pump.stream.reset()
                        pump = _Pump(self.host, conn.open_stream([dcutr.PROTOCOL_ID]))
                        session.new_stream()
                    for failed in session.dial_failed(time.perf_counter(), why):
                        assert isinstance(failed, dcutr.HolePunchFailed)
                        pump.stream.reset()
                        return (
                            None,
                            f"hole punch: {failed.reason}",
                            failed.attempts,
                            event.rtt_s,
                        )
        except Error as exc:
            pump.stream.reset()
            return None, f"hole punch: {exc}", session.attempt, session.rtt_s
        finally:
            # Also when cancelled (a known address answered first): the peer's
            # handler must not wait on the stream.
            pump.stop()

    # --- hole punch: A ----------------------------------------------------------------

    async def _serve(self, stream: Stream) -> None:
        """``/libp2p/dcutr`` as ``A``: only on a relayed connection we dialed."""
        conn = stream.conn
        if not conn.is_relayed or not conn.is_initiator:
            stream.reset()
            return
        own = self.own_addrs(conn)
        if not own:
            stream.reset()
            return
        session = dcutr.DcutrSession(dcutr.Role.RESPONDER, own)
        peer = conn.remote_peer
        dials: set[asyncio.Task[Any]] = set()
        outcome: list[tuple[Connection | None, str]] = []

        async def dial(event: dcutr.DialNow) -> None:
            direct, why = await self._dial_all(
                peer,
                list(event.addrs),
                is_client=event.is_client,
                hole_punch=True,
                timeout_s=self.config.punch_dial_timeout_s,
            )
            outcome.append((direct, why))
            if direct is None:
                session.dial_failed(time.perf_counter(), why)
                log.debug("hole punch with %s: our dial failed: %s", peer.short(), why)
                return
            session.dial_succeeded()
            log.debug("hole punch with %s: dialed %s", peer.short(), direct.remote_addr)

        try:
            while session.state not in (dcutr.DcutrState.DONE, dcutr.DcutrState.FAILED):
                try:
                    data = await stream.read(dcutr.MAX_MESSAGE_BYTES)
                except Error:
                    break  # reset: B is done; our dial may still be completing
                if not data:
                    session.receive_eof()
                    break
                events = session.receive_data(data, time.perf_counter())
                out = session.data_to_send()
                if out:
                    await stream.write(out)
                for event in events:
                    if isinstance(event, dcutr.HolePunchFailed):
                        stream.reset()
                        return
                    task = asyncio.ensure_future(dial(event))
                    dials.add(task)
                    task.add_done_callback(dials.discard)
            if dials:
                await asyncio.gather(*dials, return_exceptions=True)
        finally:
            for task in dials:
                task.cancel()
        if outcome and peer not in self._active:
            # The peer led; we record how its attempt went from here (doctor).
            start = self._relayed_at.get(conn, time.perf_counter())
            direct, why = outcome[-1]
            if direct is not None:
                result = self._result(
                    peer,
                    Outcome.HOLE_PUNCHED,
                    "hole punched",
                    start,
                    direct,
                    session.rtt_s,
                    session.attempt,
                    "responder",
                )
            else:
                result = self._result(
                    peer,
                    Outcome.RELAYED,
                    f"hole punch (led by the peer): our dials failed: {why}",
                    start,
                    None,
                    session.rtt_s,
                    session.attempt,
                    "responder",
                )
            self.results[peer] = result
            log.info("%s: %s", peer, result.describe())

    # --- dialing ----------------------------------------------------------------------

    async def _dial_all(
        self,
        peer: PeerId,
        addrs: list[Multiaddr],
        *,
        is_client: bool,
        hole_punch: bool,
        timeout_s: float,
    ) -> tuple[Connection | None, str]:
        """Dial every TCP address of ``addrs`` at once; the first direct connection
        to ``peer`` wins (in a hole punch also one the peer's dial made). (conn, "")
        or (None, why)."""
        addrs = [a.without_peer_id() for a in addrs if tcp.can_dial(a)]
        if not addrs:
            return None, "no TCP address to dial"
        existing = self.host.connection_to(peer)
        if existing is not None and not existing.is_relayed:
            return existing, ""
        appeared: asyncio.Future[Connection] = (
            asyncio.get_running_loop().create_future()
        )
        if hole_punch:
            # Any direct connection to the peer ends a punch, whoever dialed it;
            # not a plain dial, whose outcome says whether *its* addresses work.
            self._direct_waiters.setdefault(peer, []).append(appeared)
            self.host.expect_hole_punch(peer, addrs, is_initiator=is_client)
        dials: dict[asyncio.Future[Any], Multiaddr] = {
            asyncio.ensure_future(
                self.host.dial_direct(
                    addr, peer, is_initiator=is_client, from_listen_port=hole_punch
                )
            ): addr
            for addr in addrs
        }
        pending: set[asyncio.Future[Any]] = {appeared, *dials}
        errors: list[str] = []
        try:
            async with asyncio.timeout(timeout_s):
                while pending:
                    done, pending = await asyncio.wait(
                        pending, return_when=asyncio.FIRST_COMPLETED
                    )
                    for fut in done:
                        if fut is appeared:
                            return appeared.result(), ""
                        exc = fut.exception()
                        if exc is None:
                            conn = fut.result()
                            assert isinstance(conn, Connection)
                            return conn, ""
                        errors.append(f"{dials[fut]}: {_why(exc)}")
                    if pending == {appeared} and not hole_punch:
                        break
                    # A hole punch whose own dials failed still waits: the peer's
                    # SYN may have reached our listener (see expect_hole_punch).
        except TimeoutError:
            errors += [f"{dials[f]}: timed out" for f in pending if f is not appeared]
        finally:
            if hole_punch:
                self.host.hole_punch_over(addrs)
            waiters = self._direct_waiters.get(peer)
            if waiters is not None and appeared in waiters:
                waiters.remove(appeared)
                if not waiters:
                    del self._direct_waiters[peer]
            for fut in dials:
                fut.cancel()
            await asyncio.gather(*dials, return_exceptions=True)
        return None, "; ".join(errors) or "no dial answered"


def _why(exc: BaseException) -> str:
    if isinstance(exc, ConnectError | Error):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class _Pump:
    """Reads a stream in a task of the host, so that the hole punch can wait for bytes
    with a timeout without cancelling a read half-way."""

    def __init__(self, host: Host, stream: Stream) -> None:
        self.stream = stream
        self._closed = False
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._task = host.spawn(self._run(), "dcutr read")

    async def _run(self) -> None:
        try:
            while True:
                data = await self.stream.read(dcutr.MAX_MESSAGE_BYTES)
                self._queue.put_nowait(data)
                if not data:
                    return
        except Error:
            self._queue.put_nowait(b"")

    async def write(self, data: bytes) -> None:
        if data:
            await self.stream.write(data)

    async def read(self, timeout_s: float) -> bytes | None:
        """Bytes read, b"" at the end of the stream, None after ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                return await self._queue.get()
        except TimeoutError:
            return None

    def drain_eof(self, session: dcutr.DcutrSession) -> None:
        """Tell ``session`` whether the peer ended the stream meanwhile."""
        while not self._queue.empty():
            if not self._queue.get_nowait():
                session.receive_eof()

    async def close(self) -> None:
        """Done with the stream: the peer's handler may end."""
        self._closed = True
        try:
            await self.stream.close_write()
        except Error:
            self.stream.reset()

    def stop(self) -> None:
        self._task.cancel()
        if not self._closed:
            self.stream.reset()
