"""``peerup doctor``: what this node can tell about its NAT, and why a peer is relayed.

Pure functions over what the daemon already knows (STYLE.md 3.4): the addresses peers
observed us at on connections that use our listen port (identify, see
``Host.own_observed_addrs``), this machine's own addresses, and the outcome of the last
attempt to take each peer off the relay (net/holepunch.py). From those:

- *mapping*: no NAT (a peer sees one of our own addresses); the NAT keeps our listen
  port; several peers saw the same public port (endpoint-independent mapping, hole
  punching can work); different ports (endpoint-dependent: a symmetric NAT or CGNAT,
  hole punching rarely works from here); or one observer that saw another port (the
  same, probably).
- *each relayed peer*: why the upgrade failed, and what would help.

- *port mapping*: what the router granted (net/portmap.py: "UPnP mapped
  203.0.113.20:41234 -> :4001, lease 1h") or why nothing was mapped, and the fix
  ("no UPnP/NAT-PMP/PCP on this router: enable UPnP on your router").

Not known without AutoNAT v2 (issue 12, not built): the NAT's *filtering* and whether
an address is reachable from outside; the report says so rather than guess. So a
mapped address is advertised unconfirmed (the router said yes; nobody dialed it).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from peerup.core.multiaddr import Multiaddr
from peerup.net import portmap


class Mapping(enum.Enum):
    UNKNOWN = "unknown"
    NONE = "no NAT"
    PORT_PRESERVED = "port preserved"
    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ENDPOINT_DEPENDENT = "endpoint-dependent"
    PORT_CHANGED = "port changed"


@dataclass(frozen=True, slots=True)
class Observation:
    """One peer's view of our address on a connection from (or to) our listen port."""

    observer: str
    """The peer that saw it (its peer ID as text)."""
    observed: Multiaddr
    local_port: int
    """Our listen port the connection used."""


@dataclass(frozen=True, slots=True)
class NatReport:
    mapping: Mapping
    summary: str
    public_addrs: tuple[str, ...]
    observers: int


@dataclass(frozen=True, slots=True)
class PeerAdvice:
    """Why a peer is reached the way it is, and what would make it direct."""

    path: str
    why: str
    fix: str | None


def nat_report(
    observations: Sequence[Observation], own_ips: Iterable[str]
) -> NatReport:
    """How the NAT in front of us maps our listen port, as far as peers told us."""
    own = set(own_ips)
    public = tuple(dict.fromkeys(str(o.observed) for o in observations))
    observers = len({o.observer for o in observations})
    if not observations:
        return NatReport(
            Mapping.UNKNOWN,
            "unknown: no peer has told us our address yet (is a relay reserved?)",
            public,
            0,
        )
    endpoints = {o.observed.tcp_endpoint() for o in observations}
    if all(ep is not None and ep[0] in own for ep in endpoints):
        return NatReport(
            Mapping.NONE,
            "no NAT: peers see this machine's own address",
            public,
            observers,
        )
    ports = {ep[1] for ep in endpoints if ep is not None}
    if len(ports) > 1:
        return NatReport(
            Mapping.ENDPOINT_DEPENDENT,
            "endpoint-dependent mapping: the NAT gives each destination another port "
            "(a symmetric NAT or CGNAT); hole punching rarely works from here",
            public,
            observers,
        )
    port = next(iter(ports))
    kept = all(o.local_port == port for o in observations)
    if observers > 1:
        return NatReport(
            Mapping.ENDPOINT_INDEPENDENT,
            f"endpoint-independent mapping: {observers} peers see the same public "
            f"port{' (our listen port)' if kept else ''}; hole punching can work",
            public,
            observers,
        )
    if kept:
        return NatReport(
            Mapping.PORT_PRESERVED,
            "the NAT keeps our listen port (one observer so far: most likely an "
            "endpoint-independent mapping, which hole punching needs)",
            public,
            observers,
        )
    return NatReport(
        Mapping.PORT_CHANGED,
        "the NAT changed our listen port (one observer so far): likely a symmetric "
        "NAT or CGNAT, which hole punching rarely gets through",
        public,
        observers,
    )


def advise(
    path: str, outcome: str | None, reason: str | None, nat: NatReport
) -> PeerAdvice:
    """The advice for one peer: ``path`` in use, the upgrade's ``outcome`` and
    ``reason`` (None while none has finished)."""
    if path == "direct":
        return PeerAdvice(path, "direct connection", None)
    if outcome is None:
        return PeerAdvice(
            path,
            "relayed; no attempt to go direct has finished (one runs when the relayed "
            "connection comes up, led by the side that received it)",
            None,
        )
    why = f"relayed: {reason}" if reason else "relayed"
    text = reason or ""
    if "no address of our own" in text:
        fix = (
            "this node listens nowhere a peer could reach: check `listen` in the config"
        )
    elif "does not offer hole punching" in text:
        fix = "the peer's software does not support hole punching (DCUtR)"
    elif nat.mapping in (Mapping.ENDPOINT_DEPENDENT, Mapping.PORT_CHANGED):
        fix = (
            "this side's NAT changes ports per destination, so hole punching cannot "
            "get through it: relayed is the only path, unless the router forwards a "
            "port to this machine (then add it as a listen address)"
        )
    elif "hole punch" in text:
        fix = (
            "this side's NAT looks fine, so the peer's probably is symmetric or a "
            "CGNAT: run `peerup doctor` there; if both are, relayed is the only path"
        )
    else:
        fix = None
    return PeerAdvice(path, why, fix)


@dataclass(frozen=True, slots=True)
class PortMappingReport:
    """``port_mapping`` in doctor and status: one line, and the fix where one helps."""

    state: str
    line: str
    fix: str | None
    external_addr: str | None = None
    confirmed: bool = False
    """Whether a dial from outside (AutoNAT) proved the mapped address reachable;
    always False until AutoNAT v2 exists (it is advertised all the same)."""


def port_mapping_report(
    result: portmap.PortMapResult | None, *, enabled: bool, why_not: str | None = None
) -> PortMappingReport:
    """The port mapping as the user should read it: ``result`` is the mapper's
    (None when none runs: ``enabled`` false, or ``why_not`` says why not)."""
    if result is None:
        if not enabled:
            return PortMappingReport(
                "off", "off (port_mapping: false in config.yaml)", None
            )
        return PortMappingReport("not tried", f"not tried: {why_not}", None)
    outcome = portmap.Outcome
    port = f"{result.protocol.upper()} port {result.internal_port}"
    by_hand = f"or forward {port} to this machine by hand"
    if result.outcome is outcome.MAPPED:
        addr = result.external_addr
        return PortMappingReport(
            "mapped",
            f"{portmap.describe(result)} (advertised; not confirmed from outside: "
            "AutoNAT is not built yet)",
            None,
            str(addr) if addr is not None else None,
        )
    if result.outcome is outcome.DISCOVERING:
        line = "asking the router (PCP, NAT-PMP, UPnP)"
        return PortMappingReport("discovering", line, None)
    if result.outcome is outcome.UNSUPPORTED:
        return PortMappingReport(
            "unsupported",
            f"no UPnP/NAT-PMP/PCP on this router ({result.reason})",
            f"enable UPnP (or NAT-PMP/PCP) in your router's settings, {by_hand}",
        )
    if result.outcome is outcome.REFUSED:
        return PortMappingReport(
            "refused",
            result.reason,
            f"allow port mapping (UPnP) for this machine in your router's settings, "
            f"{by_hand}",
        )
    if result.outcome is outcome.NOT_PUBLIC:
        return PortMappingReport(
            "router not public",
            result.reason,
            "port mapping on this router cannot help: enable UPnP on the router in "
            "front of it, or ask the ISP for a public IPv4 address; until then peers "
            "reach this machine through the relay (or a hole punch)",
        )
    if result.outcome is outcome.LOST:
        return PortMappingReport(
            "lost",
            f"the mapping was lost: {result.reason}",
            "check the router; the daemon asks again every 10 minutes",
        )
    return PortMappingReport(result.outcome.value, result.reason, None)
