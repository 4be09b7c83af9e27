"""One port mapping kept alive on the home router through PCP or NAT-PMP (sans-IO).

Specs: RFC 6887 (PCP) sections 8.1.1 (retransmission), 11.2.1 (renewal), 15 (deleting
a mapping) and 9 (falling back to NAT-PMP); RFC 6886 (NAT-PMP) sections 3.1 (request
retransmission: 250 ms, doubling), 3.3 (renew at half the lifetime) and 3.4 (delete).
The wire formats are in proto/pcp.py and proto/natpmp.py; this module decides what
to send when, and says what happened as events. The driver (net/portmap.py) owns the
UDP socket toward the gateway's port 5351 and the clock.

Flow:

- ``start(now)``: a PCP MAP request; retransmitted at 250 ms, 500 ms, 1 s, ... until
  answered or ``max_tries`` went unanswered (``GatewaySilent``). PCP's own schedule
  starts at 3 s (section 8.1.1); NAT-PMP's quicker one is used for both, since a
  daemon start should not wait seconds on a router that may not be there.
- A NAT-PMP "unsupported version" answer (version byte 0): the same mapping through
  NAT-PMP, which needs two requests (the external address, and the mapping itself).
- ``MappingGranted`` once the gateway said yes (with the external address and port
  and the lifetime granted); renewal requests go out at half the lifetime, repeating
  the PCP nonce and asking for the port already granted; each answer is another
  ``MappingGranted`` (``renewal=True``).
- ``MappingRefused`` with the gateway's result code and its meaning.
- ``release(now)``: the delete request (lifetime 0); ``MappingReleased`` when it is
  answered (or after ``max_tries``: the lease then runs out by itself).

Not supported: the epoch check that detects a router reboot between renewals (the
next renewal re-creates a lost mapping anyway); several mappings per session (make
one session per mapping).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from peerup.core.errors import LocalProtocolError, RemoteProtocolError
from peerup.proto import natpmp, pcp

INITIAL_RETRY_S: Final = 0.25
DEFAULT_MAX_TRIES: Final = 4
"""250 ms + 500 ms + 1 s + 2 s: a gateway silent for 3.75 s is taken to be absent."""
MIN_RENEW_S: Final = 1.0


class Method(enum.Enum):
    PCP = "PCP"
    NATPMP = "NAT-PMP"


class SessionState(enum.Enum):
    REQUESTING = "requesting"
    MAPPED = "mapped"
    RENEWING = "renewing"
    RELEASING = "releasing"
    RELEASED = "released"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class MappingGranted:
    method: Method
    external_ip: str
    external_port: int
    lifetime_s: int
    renewal: bool


@dataclass(frozen=True, slots=True)
class MappingRefused:
    method: Method
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class GatewaySilent:
    """No answer after ``max_tries`` requests (while mapping or renewing)."""

    method: Method
    tries: int


@dataclass(frozen=True, slots=True)
class MappingReleased:
    answered: bool
    """False: the gateway did not answer the delete (the lease will run out)."""


Event = MappingGranted | MappingRefused | GatewaySilent | MappingReleased


@dataclass(slots=True)
class _Pending:
    """One request awaiting its answer, and its retransmission schedule."""

    datagram: bytes
    deadline: float
    interval: float
    tries: int


class PortMapSession:
    """Map ``internal_port`` on the gateway and keep it mapped until released."""

    def __init__(
        self,
        protocol: pcp.Protocol,
        internal_port: int,
        client_ip: str,
        nonce: bytes,
        *,
        lifetime_s: int = 7200,
        max_tries: int = DEFAULT_MAX_TRIES,
        methods: tuple[Method, ...] = (Method.PCP, Method.NATPMP),
    ) -> None:
        """``client_ip``: our address toward the gateway (PCP checks it against the
        datagram's source); ``nonce``: 12 random bytes (PCP); ``methods``: PCP,
        then NAT-PMP if the gateway does not speak PCP (or only one of them)."""
        if not methods:
            raise LocalProtocolError("no port mapping method to try")
        if len(nonce) != pcp.NONCE_BYTES:
            raise LocalProtocolError("a PCP nonce is 12 bytes")
        self.protocol: pcp.Protocol = protocol
        self.internal_port = internal_port
        self.client_ip = client_ip
        self.nonce = nonce
        self.lifetime_s = lifetime_s
        self.max_tries = max_tries
        self._methods = list(methods)
        self.method = self._methods[0]
        self.state = SessionState.REQUESTING
        self.external_ip: str | None = None
        self.external_port = 0
        self._granted_port = 0
        self._renew_at: float | None = None
        self._pending: dict[str, _Pending] = {}
        """By kind: "map" (PCP or NAT-PMP), "address" (NAT-PMP's opcode 0)."""
        self._outbox: list[bytes] = []
        self._natpmp_address: str | None = None
        self._natpmp_map: natpmp.MapResponse | None = None

    # --- commands ---------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Send the first request."""
        if self.state is not SessionState.REQUESTING or self._pending:
            raise LocalProtocolError(f"start() in state {self.state.value}")
        self._request(now)

    def release(self, now: float) -> list[Event]:
        """Delete the mapping (if one was granted or is being asked for)."""
        if self.state in (SessionState.RELEASING, SessionState.RELEASED):
            return []
        if self.state is SessionState.FAILED or (
            self.state is SessionState.REQUESTING and not self._pending
        ):
            self.state = SessionState.RELEASED
            return [MappingReleased(answered=True)]
        self.state = SessionState.RELEASING
        self._renew_at = None
        self._pending.clear()
        self._send("map", self._map_datagram(lifetime_s=0), now)
        return []

    def data_to_send(self) -> list[bytes]:
        """Datagrams for the gateway's port 5351, in order."""
        out, self._outbox = self._outbox, []
        return out

    # --- time ---------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        times = [p.deadline for p in self._pending.values()]
        if self._renew_at is not None:
            times.append(self._renew_at)
        return min(times) if times else None

    def handle_timeout(self, now: float) -> list[Event]:
        events: list[Event] = []
        if self._renew_at is not None and now >= self._renew_at:
            self._renew_at = None
            self.state = SessionState.RENEWING
            self._request(now)
        for pending in list(self._pending.values()):
            if now < pending.deadline:
                continue
            if pending.tries >= self.max_tries:
                self._pending.clear()
                if self.state is SessionState.RELEASING:
                    self.state = SessionState.RELEASED
                    return [MappingReleased(answered=False)]
                self.state = SessionState.FAILED
                return [*events, GatewaySilent(self.method, pending.tries)]
            pending.tries += 1
            pending.interval *= 2
            pending.deadline = now + pending.interval
            self._outbox.append(pending.datagram)
        return events

    # --- input --------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, now: float) -> list[Event]:
        """A datagram from the gateway's port 5351.

        Raises:
            RemoteProtocolError: it is not a response we can read; the session is
                unchanged (the driver logs it and keeps waiting: a stray or forged
                datagram must not end the mapping).
        """
        if not self._pending:
            return []  # a late duplicate, or an answer to a request already settled
        version = pcp.version_of(data)
        if self.method is Method.PCP:
            if version == natpmp.VERSION:
                return self._pcp_version_refused(data, now)
            return self._on_pcp(pcp.decode_response(data), now)
        return self._on_natpmp(natpmp.decode_response(data), now)

    def _pcp_version_refused(self, data: bytes, now: float) -> list[Event]:
        reply = natpmp.decode_response(data)
        if reply.result != natpmp.ResultCode.UNSUPPORTED_VERSION:
            raise RemoteProtocolError(
                f"NAT-PMP answer ({natpmp.describe(reply.result)}) to a PCP request"
            )
        if Method.NATPMP not in self._methods or self.state is SessionState.RELEASING:
            self._pending.clear()
            self.state = SessionState.FAILED
            return [
                MappingRefused(
                    Method.PCP,
                    pcp.ResultCode.UNSUPP_VERSION,
                    "the router speaks NAT-PMP",
                )
            ]
        # RFC 6887 section 9: the gateway speaks NAT-PMP only; go on with that.
        self.method = Method.NATPMP
        self._pending.clear()
        self._request(now)
        return []

    def _on_pcp(self, reply: pcp.MapResponse, now: float) -> list[Event]:
        if reply.nonce is not None and reply.nonce != self.nonce:
            return []  # another client's mapping, or an old one's
        if reply.protocol is not None and (
            reply.protocol != self.protocol or reply.internal_port != self.internal_port
        ):
            return []
        self._pending.pop("map", None)
        if self.state is SessionState.RELEASING:
            self.state = SessionState.RELEASED
            return [MappingReleased(answered=True)]
        if reply.result != pcp.ResultCode.SUCCESS:
            self.state = SessionState.FAILED
            return [
                MappingRefused(Method.PCP, reply.result, pcp.describe(reply.result))
            ]
        if reply.external_ip is None:  # decode_response makes a success carry it
            raise RemoteProtocolError("PCP MAP success without the external address")
        return self._granted(
            reply.external_ip, reply.external_port, reply.lifetime_s, now
        )

    def _on_natpmp(self, reply: natpmp.Response, now: float) -> list[Event]:
        if isinstance(reply, natpmp.ExternalAddressResponse):
            if "address" not in self._pending:
                return []
            del self._pending["address"]
            if reply.result != natpmp.ResultCode.SUCCESS:
                return self._natpmp_refused(reply.result)
            self._natpmp_address = reply.address
        else:
            if reply.protocol != self.protocol or "map" not in self._pending:
                return []
            if reply.result == natpmp.ResultCode.SUCCESS and (
                reply.internal_port != self.internal_port
            ):
                return []
            del self._pending["map"]
            if self.state is SessionState.RELEASING:
                self.state = SessionState.RELEASED
                return [MappingReleased(answered=True)]
            if reply.result != natpmp.ResultCode.SUCCESS:
                return self._natpmp_refused(reply.result)
            self._natpmp_map = reply
        if self._pending or self._natpmp_map is None or self._natpmp_address is None:
            return []
        mapped, self._natpmp_map = self._natpmp_map, None
        return self._granted(
            self._natpmp_address, mapped.external_port, mapped.lifetime_s, now
        )

    def _natpmp_refused(self, code: int) -> list[Event]:
        self._pending.clear()
        self.state = SessionState.FAILED
        return [MappingRefused(Method.NATPMP, code, natpmp.describe(code))]

    def _granted(self, ip: str, port: int, lifetime_s: int, now: float) -> list[Event]:
        renewal = self.state is SessionState.RENEWING
        self.state = SessionState.MAPPED
        self.external_ip, self.external_port = ip, port
        self._granted_port = port
        if lifetime_s > 0:
            self._renew_at = now + max(MIN_RENEW_S, lifetime_s / 2)
        return [MappingGranted(self.method, ip, port, lifetime_s, renewal)]

    # --- requests -----------------------------------------------------------------------

    def _request(self, now: float) -> None:
        if self.method is Method.NATPMP:
            self._natpmp_address = None
            self._send("address", natpmp.ExternalAddressRequest().encode(), now)
        self._send("map", self._map_datagram(self.lifetime_s), now)

    def _map_datagram(self, lifetime_s: int) -> bytes:
        suggested = self._granted_port or self.internal_port
        if self.method is Method.PCP:
            return pcp.MapRequest(
                self.nonce,
                self.protocol,
                self.internal_port,
                self.client_ip,
                lifetime_s,
                suggested_external_port=suggested,
                suggested_external_ip=self.external_ip or "0.0.0.0",
            ).encode()
        return natpmp.MapRequest(
            self.protocol,
            self.internal_port,
            suggested if lifetime_s else 0,
            lifetime_s,
        ).encode()

    def _send(self, kind: str, datagram: bytes, now: float) -> None:
        self._pending[kind] = _Pending(
            datagram, now + INITIAL_RETRY_S, INITIAL_RETRY_S, 1
        )
        self._outbox.append(datagram)
