"""``peerup relay serve``: a relay host built from ``relay-server.yaml``.

The relay's allowlist (``relay_authorized_keys``) is enforced at the handshake by the
host's peer gate, which re-reads the file whenever it changes, so ``relay authorize``
takes effect without a restart; a peer removed or expired loses its connections (and
so its reservation and circuits) within a second. With ``enforce_allowlist: false``
anyone may reserve and relay: an explicit choice that ``serve`` warns about loudly.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from peerup.app import audit
from peerup.app.allowlist import Allowlist, LiveAuthorization
from peerup.app.relay_enrollment import RelayEnrollment
from peerup.app.relay_service import RelayResources, RelayService
from peerup.config import files, identity_store
from peerup.config.schema import RelayServerConfig
from peerup.core.access import Access
from peerup.core.multiaddr import Multiaddr
from peerup.core.peer_id import PeerId
from peerup.net import limits, tcp, tracing
from peerup.net.host import Host

if TYPE_CHECKING:  # imported when metrics are enabled (prometheus_client)
    from peerup.app import telemetry

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
        max_reservations_per_ip=r.max_reservations_per_ip,
        reservation_ttl_s=r.reservation_ttl_s,
        max_circuits=r.max_circuits,
        max_circuits_per_peer=r.max_circuits_per_peer,
        max_circuits_per_destination=r.max_circuits_per_destination,
        max_circuits_per_pair=r.max_circuits_per_pair,
        circuit_duration_s=r.circuit_duration_s,
        circuit_data_bytes=r.circuit_data_bytes,
    )


class RelayServer:
    """A host running the relay service, configured from a file."""

    def __init__(self, config: RelayServerConfig) -> None:
        self.config = config
        # What a writer killed mid-write (kill -9 during `relay authorize`) left.
        files.remove_stale_temps_beside(
            (config.path, config.identity_key, config.authorized_keys)
        )
        self.key = identity_store.load(config.identity_key)
        self.allowlist = Allowlist(config.authorized_keys)
        gate = self.allowlist.gate() if config.enforce_allowlist else None
        self.host = Host(self.key, gate=self._gate if gate is not None else None)
        self._allowlist_gate = gate
        self.enrollment = (
            RelayEnrollment(self.host, config, self.allowlist) if gate else None
        )
        self.service = RelayService(
            self.host,
            resources_from(config),
            access=gate or (lambda _p: Access.allow("open")),
        )
        self.watch_interval_s = 0.5
        self.audit = audit.AuditLog(config.path.parent / audit.FILE_NAME)
        self.host.on_refused.append(self.audit.refused)
        self.telemetry: telemetry.TelemetryServer | None = None
        # Revocation and expiry close what runs, not only what opens.
        self.live = LiveAuthorization(
            self.host,
            lambda: self.allowlist,
            is_enforced=lambda: self.config.enforce_allowlist,
            # A peer admitted only to enrollment is not in the list yet.
            spare=lambda conn: conn.only_protocols is not None,
        )

    def _gate(self, peer: PeerId) -> Access:
        """The allowlist; a peer it refuses may be admitted to enrollment only."""
        assert self._allowlist_gate is not None
        access = self._allowlist_gate(peer)
        if access.is_allowed or self.enrollment is None:
            return access
        return self.enrollment.admit(peer, access)

    async def start(self) -> list[Multiaddr]:
        """Listen and serve; returns the addresses to give to clients.

        Raises:
            tcp.ListenError: a listen address is taken (e.g. another relay runs) or
                not usable; its hint names this relay's config file.
        """
        limits.raise_open_file_limit()  # systemd's soft 1,024 fills first
        if not tracing.is_enabled():
            tracing.enable(service_name="peerup-relay")  # with OTEL_* set (peerup[otel])
        if self.config.enforce_allowlist:
            self.allowlist.load()
        else:
            log.warning(OPEN_RELAY_WARNING)
        for addr in self.config.listen:
            try:
                await self.host.listen(addr)
            except tcp.ListenError as exc:
                await self.host.aclose()
                raise exc.in_config(self.config.path) from None
        self.service.start()
        if self.enrollment is not None:
            self.enrollment.start()
        if self.config.enforce_allowlist:
            self.live.start()
            self.host.spawn(self._watch(), "relay allowlist watcher")
        await self._start_telemetry()
        self.audit.append(
            "relay_started", peer_id=str(self.host.peer_id),
            config=str(self.config.path),
            enforce_allowlist=self.config.enforce_allowlist,
        )  # fmt: skip
        return self.share_addrs()

    async def _start_telemetry(self) -> None:
        tel = self.config.telemetry
        if not tel.metrics_enabled:
            return
        from peerup.app import telemetry

        self.telemetry = await telemetry.start_for(
            tel, self.config.path, self._snapshot, self._health
        )

    def _snapshot(self) -> telemetry.Snapshot:
        from peerup import native
        from peerup.app import telemetry

        snap = telemetry.Snapshot(
            "relay", "compiled" if native.status().compiled else "python"
        )
        telemetry.add_connections(snap, self.host.connections, str)
        snap.handshakes_refused = telemetry.by_reason(self.host.refusal_counts)
        snap.reservations = {"active": len(self.service.book.slots)}
        snap.circuits_active = self.service.book.circuit_count
        snap.circuits_total = self.service.total_circuits
        snap.circuits_refused = dict(self.service.refused)
        snap.circuit_limits_hit = dict(self.service.limits_hit)
        snap.circuit_bytes = self.service.circuit_bytes
        return snap

    def _health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "role": "relay",
            "peer_id": str(self.host.peer_id),
            "peers": len(self.host.connections),
            "reservations": len(self.service.book.slots),
            "circuits": self.service.book.circuit_count,
        }

    async def _watch(self) -> None:
        """Deauthorized peers lose their connections (and so their reservations)."""
        while True:
            await asyncio.sleep(self.watch_interval_s)
            self.allowlist.reload_if_changed()
            self.live.poll()  # also after the gate loaded a changed file; logs each

    def share_addrs(self) -> list[Multiaddr]:
        """The addresses to give to clients: wildcard listens expanded to this host's IPs."""
        return shareable(self.host.listen_addrs, self.host.peer_id)

    async def aclose(self) -> None:
        if self.telemetry is not None:
            await self.telemetry.aclose()
        self.live.close()
        if self.enrollment is not None:
            self.enrollment.close()
        await self.service.aclose()
        await self.host.aclose()


def shareable(addrs: list[Multiaddr], peer: PeerId) -> list[Multiaddr]:
    """Addresses to give to clients: wildcards become this host's primary addresses
    (loopback is left out unless the relay listens only there)."""
    expanded = tcp.expand_wildcards(addrs)
    public = [a for a in expanded if not tcp.is_loopback(a)]
    return [a.with_peer_id(peer) for a in (public or expanded)]
