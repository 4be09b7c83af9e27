"""``peerup relay serve``: a relay host built from ``relay-server.yaml``.

The relay's allowlist (``relay_authorized_keys``) is enforced at the handshake by the
host's peer gate, which re-reads the file whenever it changes, so ``relay authorize``
takes effect without a restart. With ``enforce_allowlist: false`` anyone may reserve
and relay: an explicit choice that ``serve`` warns about loudly.
"""

from __future__ import annotations

import logging
import socket

from peerup.app.allowlist import Allowlist
from peerup.app.relay_service import RelayResources, RelayService
from peerup.config import identity_store
from peerup.config.schema import RelayServerConfig
from peerup.core.multiaddr import Multiaddr
from peerup.net.host import Host

log = logging.getLogger(__name__)

OPEN_RELAY_WARNING = (
    "WARNING: this relay is OPEN: anyone who knows its address can reserve slots and "
    "relay traffic through it (enforce_allowlist is false). Set enforce_allowlist: true "
    "and authorize peers with `peerup relay authorize` unless you really want this."
)


def resources_from(config: RelayServerConfig) -> RelayResources:
    r = config.resources
    return RelayResources(
        max_reservations=r.max_reservations,
        max_reservations_per_peer=r.max_reservations_per_peer,
        max_reservations_per_ip=r.max_reservations_per_ip,
        reservation_ttl_s=r.reservation_ttl_s,
        max_circuits=r.max_circuits,
        max_circuits_per_peer=r.max_circuits_per_peer,
        circuit_duration_s=r.circuit_duration_s,
        circuit_data_bytes=r.circuit_data_bytes,
    )


class RelayServer:
    """A host running the relay service, configured from a file."""

    def __init__(self, config: RelayServerConfig) -> None:
        self.config = config
        self.key = identity_store.load(config.identity_key)
        self.allowlist = Allowlist(config.authorized_keys)
        gate = self.allowlist.gate() if config.enforce_allowlist else None
        self.host = Host(self.key, gate=gate)
        self.service = RelayService(self.host, resources_from(config))

    async def start(self) -> list[Multiaddr]:
        if self.config.enforce_allowlist:
            self.allowlist.load()
        else:
            log.warning(OPEN_RELAY_WARNING)
        for addr in self.config.listen:
            await self.host.listen(addr)
        self.service.start()
        return self.share_addrs()

    def share_addrs(self) -> list[Multiaddr]:
        """The addresses to give to clients: wildcard listens expanded to this host's IPs."""
        return shareable(self.host.listen_addrs, self.host.peer_id)

    async def aclose(self) -> None:
        await self.service.aclose()
        await self.host.aclose()


def local_ips() -> list[str]:
    """This machine's primary IPv4/IPv6 addresses (no packet is sent to find them)."""
    ips = []
    for family, probe in (
        (socket.AF_INET, "192.0.2.1"),
        (socket.AF_INET6, "2001:db8::1"),
    ):
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.connect((probe, 9))  # UDP connect only picks a route
                ips.append(sock.getsockname()[0])
        except OSError:
            continue
    return ips


def shareable(addrs: list[Multiaddr], peer: object) -> list[Multiaddr]:
    from peerup.core.peer_id import PeerId

    assert isinstance(peer, PeerId)
    out: list[Multiaddr] = []
    for addr in addrs:
        ip = addr.value_for("ip4") or addr.value_for("ip6")
        port = addr.value_for("tcp")
        if ip in ("0.0.0.0", "::") and port is not None:
            v6 = ip == "::"
            for local in local_ips():
                if (":" in local) == v6:
                    out.append(Multiaddr.from_tcp(local, int(port)).with_peer_id(peer))
        else:
            out.append(addr.with_peer_id(peer))
    return out
