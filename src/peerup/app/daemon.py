"""``peerup daemon``: the one long-running node for an identity, and its local API.

It listens, keeps relay reservations, exposes the enabled services, enforces
``authorized_keys`` at the handshake (re-read whenever the file changes) and each
service's ``allowed_peers``, and on what runs: a revoked or expired peer loses its
connections, and a peer dropped from ``allowed_peers`` its service connections, within
a second (``LiveAuthorization``), keeps connections to peers warm (yamux keepalive), and
serves the local API (app/api.py). The config file is reloaded on SIGHUP and when its
modification time changes (checked every ``watch_interval_s``): services are
re-exposed, new relays kept and removed ones dropped (``Node.use_relays``), and the
lasting proxies of ``proxies:`` opened, closed or reopened to match (one that cannot
listen is kept with its error, shown by status, retried at the next reload); listen
addresses and the key need a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peerup import __version__
from peerup.app import api, audit, doctor, failures, pairing, pipe
from peerup.app.allowlist import Allowlist, LiveAuthorization, cut_off
from peerup.app.node import Node, ProxyStats, Service
from peerup.config import confirm, files, identity_store, load
from peerup.config.schema import NodeConfig, ProxyConfig
from peerup.core.access import Access
from peerup.core.errors import ConfigError, Error
from peerup.core.multiaddr import Multiaddr
from peerup.core.peer_id import PeerId
from peerup.net import limits, portmap, tcp, tracing
from peerup.net.connection import Connection
from peerup.net.holepunch import HolePunchResult
from peerup.net.host import HostConfig

if TYPE_CHECKING:  # imported when metrics are enabled (prometheus_client)
    from peerup.app import telemetry

log = logging.getLogger(__name__)
_NOT_ENFORCED = Access.allow("allowlist not enforced")


def socket_paths(config: NodeConfig) -> tuple[Path, Path]:
    """Where the API socket and cookie of this config's daemon live."""
    base = config.path.parent
    return base / "daemon.sock", base / "daemon.cookie"


def _data_path() -> str:
    from peerup import native

    return "compiled" if native.status().compiled else "python"


def client_for(config: NodeConfig) -> api.ApiClient:
    sock, cookie = socket_paths(config)
    return api.ApiClient(sock, cookie)


@dataclass(slots=True)
class _Proxy:
    id: str
    peer: PeerId
    service: str
    bind: str
    port: int
    server: asyncio.Server | None
    """None when a proxy from config.yaml could not listen (see ``error``)."""
    stats: ProxyStats
    source: str = "command"
    """"command" (opened through the API, e.g. by ``peerup proxy``) or "config"."""
    error: str | None = None
    """Why a proxy from config.yaml is not listening."""
    entry: ProxyConfig | None = None
    """The config.yaml entry of a "config" proxy."""


class Daemon:
    """The daemon: a Node plus the API and reload logic."""

    def __init__(self, config: NodeConfig, *, watch_interval_s: float = 0.5) -> None:
        self.config = config
        self.watch_interval_s = watch_interval_s
        # What a writer killed mid-write (kill -9 during `auth add`) left.
        files.remove_stale_temps_beside(
            (config.path, config.identity_key, config.authorized_keys)
        )
        self.allowlist = Allowlist(config.authorized_keys)
        self.key = identity_store.load(config.identity_key)
        # Both read the config in force at each call, so a reload that turns
        # enforcement on or off, or points at another authorized_keys, applies live.
        self.node = Node(
            self.key,
            gate=self._gate,
            authorize=self._authorize,
            config=HostConfig(
                max_connections_per_peer=config.limits.max_connections_per_peer,
                max_streams_per_peer=config.limits.max_streams_per_peer,
            ),
            max_service_connections_per_peer=(
                config.limits.max_service_connections_per_peer
            ),
        )
        if not config.direct_connections:
            self.node.keep_relayed()
        # What runs is held to the list too: revocation and expiry close it.
        self.live = LiveAuthorization(
            self.node.host,
            lambda: self.allowlist,
            is_enforced=lambda: self.config.enforce_allowlist,
            spare=self._spare,
            on_revoked=self._revoked,
        )
        # Invites (app/pairing.py): served here while the daemon runs.
        self.pairing = pairing.DaemonPairing(
            self.node.host, lambda: self.config, lambda: self.allowlist, self.reload
        )
        sock, cookie = socket_paths(config)
        self.api = api.ApiServer(sock, cookie)
        self.proxies: dict[str, _Proxy] = {}
        self._next_proxy = 1
        # Applying proxies awaits listeners, so a reload runs it as a task; the lock
        # keeps two reloads in a row from racing for the same ports.
        self._proxies_lock = asyncio.Lock()
        self._proxies_task: asyncio.Task[Any] | None = None
        self._stop = asyncio.Event()
        self.reloads = 0
        self._good_since = time.time()
        """Since when the running config has run with no failed reload."""
        self.audit = audit.AuditLog(config.path.parent / audit.FILE_NAME)
        self.node.host.on_refused.append(self.audit.refused)
        self.telemetry: telemetry.TelemetryServer | None = None
        self.port_mapper: portmap.PortMapper | None = None
        """Keeps the router's port mapping (``port_mapping`` in config)."""
        self._port_mapping_skipped: str | None = None
        self._mapped_addr: Multiaddr | None = None
        self._mtime = self._config_mtime()

    @property
    def peer_id(self) -> PeerId:
        return self.node.peer_id

    def _gate(self, peer: PeerId) -> Access:
        """At the handshake: picks up a changed authorized_keys, then checks; a peer
        it refuses may still be admitted to pairing while an invite is pending."""
        if not self.config.enforce_allowlist:
            return _NOT_ENFORCED
        access = self.allowlist.check_fresh(peer)
        return access if access.is_allowed else self.pairing.admit(peer, access)

    def _authorize(self, peer: PeerId) -> Access:
        """Per stream: the list as loaded (the watcher and the gate keep it fresh, so
        no stat() per stream)."""
        if not self.config.enforce_allowlist:
            return _NOT_ENFORCED
        return self.allowlist.check(peer, datetime.now(UTC))

    def _spare(self, conn: Connection) -> bool:
        """Kept open although its peer is not (or no longer) allowed: one to our
        relay carries others' circuits (that peer's own service connections are
        reset, see _revoked); one admitted only to pairing may open nothing else."""
        return conn.only_protocols is not None or any(
            r.peer_id == conn.remote_peer for r in self.node.relay_addrs
        )

    def _revoked(self, peer: PeerId, reason: str) -> None:
        """``peer`` is not allowed: end its service connections on any connection
        that stays open (one to our relay, one we dialed)."""
        self.node.reset_service_connections(peer, f"authorization revoked: {reason}")

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        # systemd's soft limit (1,024) is what a flood of connections fills first.
        limits.raise_open_file_limit()
        if not tracing.is_enabled():
            tracing.enable(service_name="peerup-daemon")  # with OTEL_* set (peerup[otel])
        if self.config.enforce_allowlist:
            self.allowlist.load()
        try:
            await self.node.listen(list(self.config.listen))
        except tcp.ListenError as exc:
            await self.node.aclose()
            raise exc.in_config(self.config.path) from None
        self.node.use_relays([Multiaddr.parse(r) for r in self.config.relays])
        self._start_port_mapping()
        self._apply_services(self.config)
        await self._apply_proxies(self.config)
        self._register_routes()
        await self.api.start()
        await self._start_telemetry()
        self.live.start()
        self.pairing.start()
        self.node.host.spawn(self._watch_config(), "config watcher")
        self.audit.append(
            "daemon_started", peer_id=str(self.peer_id), config=str(self.config.path),
            services=sorted(self.node.services),
        )  # fmt: skip
        log.info(
            "daemon %s started, listening on %s", self.peer_id, self.node.host.addrs
        )

    async def run(self) -> None:
        """Start, then serve until SIGTERM/SIGINT or an API shutdown."""
        await self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        try:
            await self._stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await self.aclose()

    def stop(self) -> None:
        self._stop.set()

    async def aclose(self) -> None:
        if self.port_mapper is not None:
            await self.port_mapper.aclose()  # the router forgets our mapping first
        self.live.close()
        self.pairing.close()
        if self._proxies_task is not None:
            self._proxies_task.cancel()  # a reload's apply must not open more now
        for proxy in self.proxies.values():
            if proxy.server is not None:
                proxy.server.close()
        if self.telemetry is not None:
            await self.telemetry.aclose()
        await self.api.aclose()
        await self.node.aclose()

    # --- port mapping -----------------------------------------------------------------

    def _start_port_mapping(self) -> None:
        """Map the first TCP listen port that is not loopback (the one peers dial)."""
        if not self.config.port_mapping:
            return
        for addr in self.node.host.listen_addrs:
            ip, port = addr.value_for("ip4"), addr.value_for("tcp")
            if ip is None or port is None or ip.startswith("127."):
                continue
            self.port_mapper = portmap.PortMapper(
                int(port), on_change=self._port_mapping_changed
            )
            self.port_mapper.start()
            return
        self._port_mapping_skipped = (
            "no IPv4 TCP listen address other than loopback, so nothing to map"
        )

    def _port_mapping_changed(self, result: portmap.PortMapResult) -> None:
        """Advertise the mapped address (identify, and DCUtR's address list) while
        the mapping holds; peers we reach only through a relay get another try."""
        addr = result.external_addr
        if addr == self._mapped_addr:
            return
        extra = self.node.host.extra_addrs
        if self._mapped_addr is not None and self._mapped_addr in extra:
            extra.remove(self._mapped_addr)
        self._mapped_addr = addr
        if addr is not None:
            extra.append(addr)
        self.node.host.addresses_changed()
        if addr is not None and self.config.direct_connections:
            self.node.holepunch.retry_all()

    def port_mapping(self) -> doctor.PortMappingReport:
        mapper = self.port_mapper
        return doctor.port_mapping_report(
            mapper.result if mapper is not None else None,
            enabled=self.config.port_mapping,
            why_not=self._port_mapping_skipped,
        )

    # --- reload -----------------------------------------------------------------------

    def _config_mtime(self) -> int:
        try:
            return self.config.path.stat().st_mtime_ns
        except OSError:
            return 0

    async def _watch_config(self) -> None:
        while True:
            await asyncio.sleep(self.watch_interval_s)
            self.allowlist.reload_if_changed()
            # Also when the gate (check_fresh) or the API loaded the new list.
            self.live.poll()
            self._confirm_tick(time.time())
            mtime = self._config_mtime()
            if mtime != self._mtime:
                self._mtime = mtime
                self.reload()

    def _confirm_tick(self, now: float) -> None:
        """``config apply --confirm-timeout``: an unconfirmed change past its deadline
        is reverted (the reload that follows applies the old config); a config that
        ran a while with no failed reload becomes the last-known-good."""
        path = self.config.path
        try:
            if confirm.due(path, now):
                confirm.revert(path)
                log.warning(
                    "config change not confirmed in time: %s is back as it was before "
                    "it (`peerup config apply` again, then `peerup config confirm`)",
                    path,
                )
                self.audit.append("config_rolled_back", config=str(path), why="timeout")
                self._good_since = now
            elif confirm.maybe_mark_good(path, self._good_since, now):
                log.info("config: %s saved as last-known-good", path)
        except (ConfigError, OSError) as exc:
            log.error("config confirmation: %s", exc)

    def reload(self) -> None:
        """Re-read config and authorized_keys; apply what can change live: services,
        relays, and the security settings (enforcement, the authorized_keys file)."""
        try:
            config = load.load_node(self.config.path)
        except ConfigError as exc:
            log.error("config reload failed, keeping the old config: %s", exc)
            self._good_since = time.time()
            return
        old = self.config
        if config.authorized_keys != old.authorized_keys and not (
            self._switch_allowlist(config.authorized_keys)
        ):
            config = dataclasses.replace(config, authorized_keys=old.authorized_keys)
        self.allowlist.reload_if_changed()
        if config.limits != old.limits:
            self._apply_limits(config)
        self._apply_services(config)
        self._proxies_task = self.node.host.spawn(
            self._apply_proxies(config), "config proxies"
        )
        self.node.use_relays([Multiaddr.parse(r) for r in config.relays])
        self.config = config
        if config.enforce_allowlist != old.enforce_allowlist:
            self.live.enforce()
        else:
            self.live.poll()  # a new list (another file, or this one changed)
        self.reloads += 1
        self._good_since = time.time()
        self.audit.append("config_applied", config=str(config.path))
        log.info("config reloaded")

    def _apply_limits(self, config: NodeConfig) -> None:
        """New per-peer limits hold for what opens from now on; nothing open is cut."""
        per_peer = config.limits
        host = self.node.host
        host.config = dataclasses.replace(
            host.config,
            max_connections_per_peer=per_peer.max_connections_per_peer,
            max_streams_per_peer=per_peer.max_streams_per_peer,
        )
        self.node.max_service_connections_per_peer = (
            per_peer.max_service_connections_per_peer
        )
        log.info(
            "limits: %d connections, %d streams, %d service connections per peer",
            per_peer.max_connections_per_peer,
            per_peer.max_streams_per_peer,
            per_peer.max_service_connections_per_peer,
        )

    # --- telemetry --------------------------------------------------------------------

    async def _start_telemetry(self) -> None:
        tel = self.config.telemetry
        if not tel.metrics_enabled:
            return
        from peerup.app import telemetry

        self.telemetry = await telemetry.start_for(
            tel, self.config.path, self._snapshot, self._health
        )

    def _snapshot(self) -> telemetry.Snapshot:
        from peerup.app import telemetry

        host = self.node.host
        snap = telemetry.Snapshot("daemon", _data_path())
        telemetry.add_connections(
            snap, host.connections, lambda peer: self._name_of(peer) or str(peer)
        )
        snap.services = len(self.node.services)
        for proxy in self.proxies.values():
            for outcome, n in (("ok", proxy.stats.connections),
                               ("failed", proxy.stats.failures)):  # fmt: skip
                key = (proxy.service, outcome)
                snap.proxy_connections[key] = snap.proxy_connections.get(key, 0) + n
            for direction, n in (("to_service", proxy.stats.bytes_to_service),
                                 ("from_service", proxy.stats.bytes_from_service)):  # fmt: skip
                key = (proxy.service, direction)
                snap.proxy_bytes[key] = snap.proxy_bytes.get(key, 0) + n
        snap.served_connections = dict(self.node.service_outcomes)
        snap.served_bytes = dict(self.node.service_bytes)
        snap.streams_refused = dict(self.node.refusals)
        snap.handshakes_refused = telemetry.by_reason(host.refusal_counts)
        for state in self.node.relay_client.status():
            state_label = "reserved" if state.reservation else "not_reserved"
            snap.reservations[state_label] = snap.reservations.get(state_label, 0) + 1
        snap.reloads = self.reloads
        return snap

    def _health(self) -> dict[str, Any]:
        host = self.node.host
        reserved = sum(
            1 for s in self.node.relay_client.status() if s.reservation is not None
        )
        return {
            "status": "ok",
            "role": "daemon",
            "version": __version__,
            "peer_id": str(self.peer_id),
            "peers": len(host.connections),
            "relays_reserved": reserved,
            "relays": len(self.config.relays),
            "services": len(self.node.services),
        }

    def _switch_allowlist(self, path: Path) -> bool:
        """Use the authorized_keys at ``path`` if it loads; else keep the current one."""
        new = Allowlist(path)
        try:
            new.load()
        except ConfigError as exc:
            log.error(
                "keeping authorized_keys %s: the new file %s did not load: %s",
                self.allowlist.path,
                path,
                exc,
            )
            return False
        self.allowlist = new
        return True

    def _apply_services(self, config: NodeConfig) -> None:
        self.node.disabled_services = frozenset(
            svc.name for svc in config.services if not svc.enabled
        )
        wanted = {}
        for svc in config.services:
            if svc.enabled:
                wanted[svc.name] = Service(
                    svc.name, svc.host, svc.port, tuple(svc.allowed_peers)
                )
        for name in list(self.node.services):
            if name not in wanted:
                how = "disabled" if name in self.node.disabled_services else "removed"
                self.node.unexpose(name, how)
                self.audit.append("service_removed", service=name, how=how)
        for service in wanted.values():
            if self.node.services.get(service.name) != service:
                self.node.expose(service)
                self.audit.append(
                    "service_exposed", service=service.name,
                    local_address=f"{service.host}:{service.port}",
                    allowed_peers=[str(p) for p in service.allowed_peers],
                )  # fmt: skip

    async def _apply_proxies(self, config: NodeConfig) -> None:
        """Make the open "config" proxies match ``config.proxies``: open new entries,
        close removed ones, reopen changed ones (peer, service, or what a name points
        to) and retry the ones that could not listen. An entry that cannot listen is
        logged and kept with its error (status shows it); the others still apply."""
        async with self._proxies_lock:
            wanted = {
                p.listen_key: (p, config.resolve_name(p.peer)) for p in config.proxies
            }
            ids: dict[tuple[str, int], str] = {}
            for proxy in list(self.proxies.values()):
                if proxy.entry is None:
                    continue
                key = proxy.entry.listen_key
                if proxy.server is not None and wanted.get(key) == (
                    proxy.entry,
                    proxy.peer,
                ):
                    del wanted[key]  # unchanged and listening
                    continue
                # Closed before anything opens: a changed entry may keep its port.
                del self.proxies[proxy.id]
                if proxy.server is not None:
                    proxy.server.close()
                if key in wanted:
                    ids[key] = proxy.id  # the same listener keeps its ID
                else:
                    log.info(
                        "proxy %s -> %s/%s closed (removed from config.yaml)",
                        proxy.entry.listen,
                        proxy.entry.peer,
                        proxy.entry.service,
                    )
            for key, (entry, peer) in wanted.items():
                pid = ids.get(key) or self._new_proxy_id()
                await self._open_config_proxy(config, pid, entry, peer)

    async def _open_config_proxy(
        self, config: NodeConfig, pid: str, entry: ProxyConfig, peer: PeerId
    ) -> None:
        what = f"{entry.listen} -> {entry.peer}/{entry.service}"
        try:
            server, stats = await self.node.start_proxy(
                peer,
                entry.service,
                entry.port,
                entry.bind,
                label=peer_label(config, entry.peer),
            )
        except OSError as exc:
            # asyncio words bind errors as "error while attempting to bind on …".
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            error = f"cannot listen on {entry.listen}: {reason}"
            log.error(
                "proxy %s from config.yaml is not open: %s (free the port or change "
                "the entry; it is retried at the next reload)",
                what,
                error,
            )
            self.proxies[pid] = _Proxy(
                pid,
                peer,
                entry.service,
                entry.bind,
                entry.port,
                None,
                ProxyStats(),
                source="config",
                error=error,
                entry=entry,
            )
            return
        self.proxies[pid] = _Proxy(
            pid,
            peer,
            entry.service,
            entry.bind,
            entry.port,
            server,
            stats,
            source="config",
            entry=entry,
        )
        log.info("proxy %s opened (config.yaml)", what)

    def _new_proxy_id(self) -> str:
        pid = str(self._next_proxy)
        self._next_proxy += 1
        return pid

    async def settle_proxies(self) -> None:
        """Wait until the proxies of the last reload are applied."""
        task = self._proxies_task
        if task is not None:
            await asyncio.shield(task)

    # --- API --------------------------------------------------------------------------

    def _register_routes(self) -> None:
        r = self.api.route
        r("GET", "/v1/status", self._api_status)
        r("GET", "/v1/doctor", self._api_doctor)
        r("GET", "/v1/peers", self._api_peers)
        r("GET", "/v1/services", self._api_services)
        r("GET", "/v1/auth", self._api_auth_list)
        r("POST", "/v1/auth", self._api_auth_add)
        r("DELETE", "/v1/auth", self._api_auth_remove)
        r("GET", "/v1/names", self._api_names)
        r("POST", "/v1/connect", self._api_connect)
        r("GET", "/v1/proxies", self._api_proxies)
        r("DELETE", "/v1/connect", self._api_disconnect_proxy)
        r("POST", "/v1/disconnect", self._api_disconnect)
        r("POST", "/v1/ping", self._api_ping)
        r("POST", "/v1/traceroute", self._api_traceroute)
        r("POST", "/v1/reload", self._api_reload)
        r("POST", "/v1/shutdown", self._api_shutdown)
        self.pairing.register_routes(self.api)
        self.api.pipe_route("POST", "/v1/pipe", self._api_pipe)

    def status(self) -> dict[str, Any]:
        host = self.node.host
        relays = []
        for state in self.node.relay_client.status():
            rsvp = state.reservation
            error, hint = state.last_error, None
            if rsvp is None and state.last_exception is not None:
                failure = failures.explain_dial(
                    state.last_exception, "the relay", str(self.peer_id)
                )
                if failure.cause is failures.Cause.RELAY_REFUSED_US:
                    error, hint = failure.message, failure.hint
            relays.append(
                {
                    "relay": str(state.relay_addr),
                    "reserved": rsvp is not None,
                    "expires": _iso(rsvp.expire) if rsvp else None,
                    "circuit_addr": str(rsvp.circuit_addr) if rsvp else None,
                    "last_error": error if rsvp is None else None,
                    "hint": hint,
                }
            )
        return {
            "version": __version__,
            "peer_id": str(self.peer_id),
            "pid": os.getpid(),
            "listen_addrs": [str(a) for a in host.addrs_with_id()],
            "observed_addrs": [str(a) for a in host.own_observed_addrs()],
            "relays": relays,
            "peers": self._peers(),
            "services": sorted(self.node.services),
            "proxies": self._proxies(),
            "enforce_allowlist": self.config.enforce_allowlist,
            "refused_streams": dict(self.node.refusals),
            "last_refusal": self.node.last_refusal,
            "port_mapping": dataclasses.asdict(self.port_mapping()),
        }

    def _peers(self) -> list[dict[str, Any]]:
        """One entry per connection. ``new_streams``: the one new streams to that
        peer use (direct before relayed); ``observed_addr``: our address as the peer
        sees it on that connection; ``upgrade``: how the last attempt to get off the
        relay ended (net/holepunch.py), per peer."""
        host = self.node.host
        out = []
        for peer, conns in host.connections.items():
            in_use = host.connection_to(peer)
            result = self.node.holepunch.results.get(peer)
            for conn in conns:
                info = host.peerstore.get(peer)
                observed = host.observed_addrs.get(conn)
                out.append(
                    {
                        "peer_id": str(peer),
                        "name": self._name_of(peer),
                        "path": "relayed" if conn.is_relayed else "direct",
                        "remote_addr": str(conn.remote_addr)
                        if conn.remote_addr
                        else None,
                        "rtt_ms": round(conn.rtt_s * 1000, 3) if conn.rtt_s else None,
                        "agent_version": info.agent_version if info else None,
                        "streams": len(conn.streams),
                        "new_streams": conn is in_use,
                        "observed_addr": str(observed) if observed else None,
                        "upgrade": _upgrade_json(result) if result else None,
                    }
                )
        return out

    def _name_of(self, peer: PeerId) -> str | None:
        for name, pid in self.config.names:
            if pid == peer:
                return name
        return None

    def _proxies(self) -> list[dict[str, Any]]:
        return [
            {
                "id": p.id,
                "peer": str(p.peer),
                "service": p.service,
                "listen": p.entry.listen if p.entry else f"{p.bind}:{p.port}",
                "source": p.source,
                "error": p.error,
                "connections": p.stats.connections,
                "failures": p.stats.failures,
                "last_failure": p.stats.last_failure,
                "recent": _recent(p.stats),
            }
            for p in self.proxies.values()
        ]

    async def _api_status(self, body: api.Json, args: list[str]) -> api.Json:
        return self.status()

    def doctor(self) -> dict[str, Any]:
        """``peerup doctor``: the NAT as peers observe it, and for each peer the path
        in use and, if relayed, why and what would help (app/doctor.py)."""
        host = self.node.host
        ports = {p for a in host.listen_addrs if (p := a.value_for("tcp")) is not None}
        observations = [
            doctor.Observation(str(conn.remote_peer), observed, int(port))
            for conn, observed in host.observed_addrs.items()
            if conn.is_open
            and not conn.is_relayed
            and conn.local_addr is not None
            and (port := conn.local_addr.value_for("tcp")) in ports
        ]
        own_ips = [ep[0] for a in host.addrs if (ep := a.tcp_endpoint()) is not None]
        nat = doctor.nat_report(observations, own_ips)
        relays = {r.peer_id for r in self.node.relay_addrs}
        peers = []
        for peer in list(host.connections):
            conn = host.connection_to(peer)
            if conn is None or peer in relays:
                continue
            result = self.node.holepunch.results.get(peer)
            advice = doctor.advise(
                "relayed" if conn.is_relayed else "direct",
                result.outcome.value if result else None,
                result.reason if result else None,
                nat,
            )
            peers.append(
                {
                    "peer_id": str(peer),
                    "name": self._name_of(peer),
                    "path": advice.path,
                    "why": advice.why,
                    "fix": advice.fix,
                }
            )
        return {
            "peer_id": str(self.peer_id),
            "listen_addrs": [str(a) for a in host.addrs if not a.is_circuit],
            "nat": {
                "mapping": nat.mapping.value,
                "summary": nat.summary,
                "observed_addrs": list(nat.public_addrs),
                "observers": nat.observers,
                "filtering": "unknown (needs AutoNAT, not built yet)",
            },
            "relays": [
                {"relay": str(s.relay_addr), "reserved": s.reservation is not None}
                for s in self.node.relay_client.status()
            ],
            "peers": peers,
            "port_mapping": dataclasses.asdict(self.port_mapping()),
        }

    async def _api_doctor(self, body: api.Json, args: list[str]) -> api.Json:
        return self.doctor()

    async def _api_peers(self, body: api.Json, args: list[str]) -> api.Json:
        return {"peers": self._peers()}

    async def _api_services(self, body: api.Json, args: list[str]) -> api.Json:
        return {
            "services": [
                {
                    "name": s.name,
                    "local_address": f"{s.host}:{s.port}",
                    "allowed_peers": [str(p) for p in s.allowed_peers],
                }
                for s in self.node.services.values()
            ]
        }

    async def _api_auth_list(self, body: api.Json, args: list[str]) -> api.Json:
        self.allowlist.reload_if_changed()
        return {
            "entries": [
                {
                    "peer_id": str(e.peer_id),
                    "attrs": dict(e.attrs),
                    "comment": e.comment,
                }
                for e in self.allowlist.entries()
            ]
        }

    async def _api_auth_add(self, body: api.Json, args: list[str]) -> api.Json:
        peer = PeerId.from_string(str(body.get("peer_id", "")))
        added = self.allowlist.add(peer, comment=body.get("comment"))
        return {"added": added, "peer_id": str(peer)}

    async def _api_auth_remove(self, body: api.Json, args: list[str]) -> api.Json:
        if not args:
            raise ValueError("DELETE /v1/auth/<peer-id>")
        peer = PeerId.from_string(args[0])
        removed = self.allowlist.remove(peer)
        if removed:
            cut_off(self.node.host, peer, "removed from authorized_keys")
        return {"removed": removed, "peer_id": str(peer)}

    async def _api_names(self, body: api.Json, args: list[str]) -> api.Json:
        return {"names": {name: str(pid) for name, pid in self.config.names}}

    def resolve(self, text: str) -> PeerId:
        """A name, a peer ID, or a multiaddr ending in /p2p/ (its address is remembered)."""
        return resolve_target(self.config, self.node, text)

    async def _api_connect(self, body: api.Json, args: list[str]) -> api.Json:
        text = str(body.get("peer", ""))
        peer = self.resolve(text)
        service = str(body.get("service", ""))
        port = int(body.get("port", 0))
        bind = str(body.get("bind", "127.0.0.1"))
        try:
            server, stats = await self.node.start_proxy(
                peer, service, port, bind, label=peer_label(self.config, text)
            )
        except OSError as exc:
            raise failures.local_listen_error(bind, port, exc) from None
        pid = self._new_proxy_id()
        actual = server.sockets[0].getsockname()[1]
        self.proxies[pid] = _Proxy(pid, peer, service, bind, actual, server, stats)
        return {
            "id": pid,
            "listen": f"{bind}:{actual}",
            "peer": str(peer),
            "service": service,
        }

    async def _api_pipe(
        self,
        body: api.Json,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """``proxy --stdio`` through the daemon: the API connection becomes the
        local end of a connection to the service (app/pipe.py)."""
        text = str(body.get("peer", ""))
        service = str(body.get("service", ""))
        try:
            peer = self.resolve(text)
        except Error as exc:
            api.write_answer(
                writer,
                HTTPStatus.UNPROCESSABLE_ENTITY,
                {"error": str(exc), "hint": getattr(exc, "hint", None)},
            )
            return
        label = peer_label(self.config, text)
        answered = False

        async def upgrade() -> None:
            nonlocal answered
            answered = True
            writer.write(api.UPGRADE_HEAD)

        result = await pipe.carry(
            self.node, peer, service, label, reader, writer, upgrade
        )
        failure = result.failure
        if failure is None:
            log.info(
                "pipe %s/%s: %s, %d B out, %d B in, closed",
                label,
                service,
                result.path,
                result.bytes_out,
                result.bytes_in,
            )
            return
        log.warning("pipe %s/%s: %s [%s]", label, service, failure.line(), failure.detail)
        if not answered:
            api.write_answer(
                writer, HTTPStatus.UNPROCESSABLE_ENTITY, failure.as_json()
            )
        else:
            # Cut after bytes flowed: reset, so the client cannot take it for an end.
            writer.transport.abort()

    async def _api_proxies(self, body: api.Json, args: list[str]) -> api.Json:
        return {"proxies": self._proxies()}

    async def _api_disconnect_proxy(self, body: api.Json, args: list[str]) -> api.Json:
        proxy = self.proxies.get(args[0] if args else "")
        if proxy is None:
            raise ValueError("no such proxy")
        if proxy.entry is not None:
            raise ConfigError(
                "this proxy is in config.yaml: "
                f"`{load.remove_proxy_command(proxy.entry)}`",
                hint="a proxy from config.yaml stays until removed there; the "
                "daemon closes it on reload",
            )
        del self.proxies[proxy.id]
        if proxy.server is not None:
            proxy.server.close()
        return {"closed": proxy.id}

    async def _api_disconnect(self, body: api.Json, args: list[str]) -> api.Json:
        peer = self.resolve(str(body.get("peer", "")))
        conns = list(self.node.host.connections.get(peer, []))
        for conn in conns:
            conn.close("disconnect requested")
        return {"closed": len(conns)}

    async def ping(self, peer: PeerId, count: int, interval_s: float) -> dict[str, Any]:
        return await ping_peer(self.node, peer, count, interval_s)

    async def _api_ping(self, body: api.Json, args: list[str]) -> api.Json:
        text = str(body.get("peer", ""))
        peer = self.resolve(text)
        return await ping_peer(
            self.node,
            peer,
            int(body.get("count", 3)),
            float(body.get("interval", 1.0)),
            label=peer_label(self.config, text),
        )

    async def traceroute(self, peer: PeerId) -> dict[str, Any]:
        return await traceroute(self.node, peer)

    async def _api_traceroute(self, body: api.Json, args: list[str]) -> api.Json:
        text = str(body.get("peer", ""))
        return await traceroute(
            self.node, self.resolve(text), label=peer_label(self.config, text)
        )

    async def _api_reload(self, body: api.Json, args: list[str]) -> api.Json:
        self.reload()
        await self.settle_proxies()  # so the caller sees the proxies it asked for
        return {"reloaded": True}

    async def _api_shutdown(self, body: api.Json, args: list[str]) -> api.Json:
        asyncio.get_running_loop().call_soon(self._stop.set)
        return {"stopping": True}


def _upgrade_json(result: HolePunchResult) -> dict[str, Any]:
    """How the last attempt to take a peer off the relay ended, for the API."""
    return {
        "line": result.describe(),
        "outcome": result.outcome.value,
        "reason": result.reason,
        "elapsed_s": round(result.elapsed_s, 4),
        "attempts": result.attempts,
        "rtt_ms": round(result.rtt_s * 1000, 3) if result.rtt_s is not None else None,
        "role": result.role,
        "addr": str(result.addr) if result.addr else None,
    }


def _iso(epoch_s: float) -> str:
    """An absolute time for people and JSON: ISO 8601, UTC."""
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _recent(stats: ProxyStats) -> list[dict[str, Any]]:
    """A proxy's recent outcomes for the API, numbered (the newest is stats.seq)."""
    first = stats.seq - len(stats.recent) + 1
    return [
        {
            "seq": first + i,
            "line": outcome.describe(),
            "failure": outcome.failure.as_json() if outcome.failure else None,
            "path": outcome.path,
            "bytes_out": outcome.bytes_out,
            "bytes_in": outcome.bytes_in,
            "duration_s": round(outcome.duration_s, 6),
            "ended": outcome.ended,
        }
        for i, outcome in enumerate(stats.recent)
    ]


def peer_label(config: NodeConfig, text: str) -> str:
    """How messages name a peer the user gave as ``text``: the name if it is one
    (or the peer ID has one), else the short peer ID."""
    try:
        peer, _ = parse_peer_arg(config, text)
    except (ConfigError, ValueError):
        return text
    for name, pid in config.names:
        if pid == peer:
            return name
    return peer.short()


async def traceroute(
    node: Node, peer: PeerId, *, label: str | None = None
) -> dict[str, Any]:
    """The hops to ``peer``: the relay (if relayed) and the peer, each with an RTT.

    Raises:
        failures.Failed: the peer could not be reached (with the cause and fix).
    """
    try:
        rtt, conn = await node.pingpong(peer)
    except Error as exc:
        raise failures.Failed(
            failures.explain_dial(exc, label or peer.short(), str(node.peer_id))
        ) from None
    hops = []
    if conn.is_relayed and conn.remote_addr is not None:
        relay_part, _ = conn.remote_addr.split_circuit()
        relay_peer = relay_part.peer_id
        relay_conn = node.host.connection_to(relay_peer) if relay_peer else None
        relay_rtt = None
        if relay_conn is not None:
            with contextlib.suppress(Error):
                relay_rtt = (await node.host.ping(relay_conn, 1))[0] * 1000
        hops.append(
            {
                "hop": 1,
                "what": "relay",
                "addr": str(relay_part),
                "rtt_ms": round(relay_rtt, 3) if relay_rtt is not None else None,
            }
        )
    hops.append(
        {
            "hop": len(hops) + 1,
            "what": "peer",
            "addr": str(conn.remote_addr),
            "rtt_ms": round(rtt * 1000, 3),
        }
    )
    return {
        "peer_id": str(peer),
        "path": "relayed" if conn.is_relayed else "direct",
        "hops": hops,
    }


async def ping_peer(
    node: Node,
    peer: PeerId,
    count: int,
    interval_s: float,
    *,
    label: str | None = None,
) -> dict[str, Any]:
    """``count`` pingpong round trips, ``interval_s`` apart; failures are counted,
    each explained (app/failures.py) as ``errors`` (lines) and ``failures``."""
    rtts = []
    path = ""
    errors = []
    explained = []
    for i in range(count):
        if i:
            await asyncio.sleep(interval_s)
        try:
            rtt, conn = await node.pingpong(peer)
            rtts.append(rtt * 1000)
            path = "relayed" if conn.is_relayed else "direct"
        except Error as exc:
            failure = failures.explain_dial(
                exc, label or peer.short(), str(node.peer_id)
            )
            errors.append(failure.line())
            explained.append(failure.as_json())
    return {
        "peer_id": str(peer),
        "path": path,
        "sent": count,
        "received": len(rtts),
        "rtts_ms": [round(r, 3) for r in rtts],
        "median_ms": round(statistics.median(rtts), 3) if rtts else None,
        "errors": errors,
        "failures": explained,
    }


def parse_peer_arg(config: NodeConfig, text: str) -> tuple[PeerId, Multiaddr | None]:
    """A peer argument: a name from config, a peer ID, or a multiaddr ending in
    ``/p2p/<id>`` (then also its address, without the ``/p2p/``).

    Raises:
        ConfigError: unknown name, or a multiaddr without a peer ID.
    """
    if not text.startswith("/"):
        return config.resolve_name(text), None
    try:
        addr = Multiaddr.parse(text)
    except ValueError as exc:
        raise ConfigError(f"bad multiaddr: {exc}") from None
    peer = addr.peer_id
    if peer is None:
        raise ConfigError("the multiaddr needs /p2p/<peer ID>", hint="or give a name")
    return peer, addr.without_peer_id()


def resolve_target(config: NodeConfig, node: Node, text: str) -> PeerId:
    """Resolve a peer argument; a multiaddr's address is added to what the node knows
    about the peer, so the next dial can use it directly before falling back to relays,
    and a relayed connection to the peer is upgraded through it (net/holepunch.py).
    """
    peer, addr = parse_peer_arg(config, text)
    if addr is not None:
        node.host.add_addrs(peer, [addr])
        # Reached only through a relay so far (the daemon's warm connection): try
        # the address now, so that new streams move to it.
        node.holepunch.try_direct(peer)
    return peer
