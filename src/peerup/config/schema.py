"""The settings peer-up reads from its config files, as frozen dataclasses.

Two files: a node's ``config.yaml`` (:class:`NodeConfig`) and a relay server's
``relay-server.yaml`` (:class:`RelayServerConfig`); their YAML layout is described in
``config/load.py``, which is the only module that builds these from files. Paths here
are already resolved against the config file's directory and multiaddrs are already
validated and normalised. Values that can be checked without the file (service names,
``host:port`` forms, a proxy's port and bind address) are checked here, so an invalid
``ServiceConfig`` or ``ProxyConfig`` cannot be built by the CLI either; such errors are
``ConfigError`` with the field path, and ``load`` adds the file and line. Whether a
proxy's peer name is defined in ``names`` needs the file, so ``load`` checks that. Not
here: transport tuning (it lives in ``net``'s configs).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from peerup.core.errors import ConfigError
from peerup.core.peer_id import PeerId

CONFIG_VERSION: Final = 1

RESERVED_SERVICE_NAMES: Final[frozenset[str]] = frozenset(
    {
        "invite",
        "kad",
        "pingpong",
        "ping",
        "id",
        "relay",
        "circuit",
        "identify",
        "noise",
        "yamux",
        "multistream",
        "echo",
        "service-status",
    }
)
"""Service names refused because they collide with protocols the node itself speaks."""

SERVICE_NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
"""A service name: lower-case letters, digits and ``-``, at most 63 characters."""

PEER_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
"""A short name for a peer (``names:``) and the ``network_name``."""

RESERVED_PEER_NAMES: Final[frozenset[str]] = frozenset({"add", "list", "remove"})
"""Names refused for peers: ``peerup proxy add|list|remove`` edit the lasting proxies,
so ``peerup proxy <peer> …`` must never be read as one of them."""

DEFAULT_PROXY_BIND: Final = "127.0.0.1"
"""Where a proxy listens unless told otherwise: this machine only."""


def check_service_name(name: str) -> None:
    """Refuse a service name that is malformed or reserved.

    Raises:
        ConfigError: with ``field`` ``services.<name>`` and a hint.
    """
    where = f"services.{name}"
    if not SERVICE_NAME_RE.match(name):
        raise ConfigError(
            f"invalid service name {name!r}",
            field=where,
            hint="use lower-case letters, digits and '-', starting with a letter or "
            "digit, at most 63 characters (e.g. 'ssh', 'home-assistant')",
        )
    if name in RESERVED_SERVICE_NAMES:
        raise ConfigError(
            f"service name {name!r} is reserved (it collides with a system protocol)",
            field=where,
            hint="pick another name, e.g. 'my-"
            + name
            + "'; reserved: "
            + ", ".join(sorted(RESERVED_SERVICE_NAMES)),
        )


def check_peer_name(name: str, where: str) -> None:
    """Refuse a peer name that is malformed or could be read as a peer ID.

    Raises:
        ConfigError: with ``field`` ``where``.
    """
    if not PEER_NAME_RE.match(name):
        raise ConfigError(
            f"invalid name {name!r}",
            field=where,
            hint="use letters, digits, '.', '_' and '-', at most 63 characters",
        )
    if name in RESERVED_PEER_NAMES:
        raise ConfigError(
            f"name {name!r} is reserved (`peerup proxy {name} …` is a command)",
            field=where,
            hint="pick another name; reserved: "
            + ", ".join(sorted(RESERVED_PEER_NAMES)),
        )
    try:
        PeerId.from_string(name)
    except ValueError:
        return
    raise ConfigError(
        f"name {name!r} is itself a valid peer ID",
        field=where,
        hint="pick a name that cannot be mistaken for a peer ID",
    )


def split_host_port(text: str) -> tuple[str, int]:
    """Split ``host:port`` (IPv6 as ``[::1]:22``) and check the port is 1-65535.

    Raises:
        ValueError: naming what is wrong.
    """
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ValueError(f"expected [ipv6]:port, got {text!r}")
        host, port_text = text[1:end], text[end + 2 :]
        try:
            ipaddress.IPv6Address(host.split("%")[0])
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"expected host:port, got {text!r}")
        if ":" in host:
            raise ValueError(
                f"put an IPv6 address in brackets, e.g. [{host}]:{port_text}"
            )
    if not host:
        raise ValueError(f"host is empty in {text!r}")
    if not port_text.isdigit():
        raise ValueError(f"port {port_text!r} is not a number")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 1-65535")
    return host, port


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """A local TCP service exposed to authorized peers."""

    name: str
    """Name peers ask for (:data:`SERVICE_NAME_RE`, :data:`RESERVED_SERVICE_NAMES`)."""
    local_address: str
    """Where the service listens here: ``host:port`` (``[::1]:22`` for IPv6)."""
    enabled: bool = True
    """A disabled service stays in the file but is not offered."""
    allowed_peers: tuple[PeerId, ...] = ()
    """Peers allowed to use it; empty means every authorized peer."""

    def __post_init__(self) -> None:
        check_service_name(self.name)
        try:
            split_host_port(self.local_address)
        except ValueError as exc:
            raise ConfigError(
                str(exc),
                field=f"services.{self.name}.local_address",
                hint="write host:port, e.g. 127.0.0.1:22 or [::1]:22",
            ) from None

    @property
    def host(self) -> str:
        """The host part of ``local_address`` (without IPv6 brackets)."""
        return split_host_port(self.local_address)[0]

    @property
    def port(self) -> int:
        """The port part of ``local_address``."""
        return split_host_port(self.local_address)[1]

    def is_allowed(self, peer: PeerId) -> bool:
        """Whether ``peer`` may use this service (the allowlist is checked apart)."""
        return not self.allowed_peers or peer in self.allowed_peers


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """A lasting proxy: a local port the daemon keeps open to a service on a peer."""

    peer: str
    """The peer as written: a name from ``names`` or a peer ID (``load`` checks that a
    name is defined; :meth:`NodeConfig.resolve_name` turns it into a ``PeerId``)."""
    service: str
    """The service's name on that peer (:func:`check_service_name`)."""
    port: int
    """Local port to listen on, 1-65535 (0, any free port, makes no sense here)."""
    bind: str = DEFAULT_PROXY_BIND
    """Local address to listen on: an IPv4 or IPv6 address, without brackets."""

    def __post_init__(self) -> None:
        if not PEER_NAME_RE.match(self.peer) and not _is_peer_id(self.peer):
            raise ConfigError(
                f"{self.peer!r} is neither a peer ID nor a name",
                field="proxies.peer",
                hint="use a peer ID (12D3KooW…) or a name from names:",
            )
        try:
            check_service_name(self.service)
        except ConfigError as exc:
            raise ConfigError(
                exc.reason, field="proxies.service", hint=exc.hint
            ) from None
        if isinstance(self.port, bool) or not 1 <= self.port <= 65535:
            raise ConfigError(
                f"port {self.port} is out of range 1-65535",
                field="proxies.port",
                hint="a lasting proxy needs a fixed port, e.g. 2222",
            )
        try:
            ipaddress.ip_address(self.bind)
        except ValueError:
            raise ConfigError(
                f"{self.bind!r} is not an IP address",
                field="proxies.bind",
                hint="e.g. 127.0.0.1 (this machine only), 0.0.0.0 (every interface) "
                "or ::1; IPv6 without brackets",
            ) from None

    @property
    def listen(self) -> str:
        """``bind:port`` as shown to the user (``[::1]:2222`` for IPv6)."""
        if ":" in self.bind:
            return f"[{self.bind}]:{self.port}"
        return f"{self.bind}:{self.port}"

    @property
    def listen_key(self) -> tuple[str, int]:
        """The normalised ``(address, port)``: two entries must not share it."""
        return str(ipaddress.ip_address(self.bind)), self.port


def _is_peer_id(text: str) -> bool:
    try:
        PeerId.from_string(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    """``telemetry: {metrics: {enabled, listen_address, peer_labels}}`` (the Go
    original's layout): Prometheus metrics and ``/healthz`` on a loopback address."""

    metrics_enabled: bool = False
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9091
    peer_labels: bool = False
    """Label per-peer metrics with the peer's name or ID (off: bounded label sets)."""


@dataclass(frozen=True, slots=True)
class NodeLimitsConfig:
    """What one peer may hold open on this node (``limits:``); 0 means unlimited.

    The defaults are far above what a household uses (one ssh session is one
    connection and one stream) and far below what exhausts a daemon's descriptors.
    """

    max_connections_per_peer: int = 8
    """Connections one peer may have open (direct and relayed); more are refused."""
    max_streams_per_peer: int = 1024
    """Inbound streams one peer may have open across its connections; more are reset."""
    max_service_connections_per_peer: int = 512
    """Connections to local services one peer may have open; more are refused."""


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """A node's settings, from ``config.yaml``."""

    path: Path
    """The config file these settings came from."""
    version: int
    """File format version; only :data:`CONFIG_VERSION` is read."""
    identity_key: Path
    """The node's private key file (libp2p protobuf, mode 0600)."""
    listen: tuple[str, ...]
    """Multiaddrs to listen on, normalised."""
    relays: tuple[str, ...]
    """Relay multiaddrs to reserve on, each ending in ``/p2p/<relay peer ID>``."""
    services: tuple[ServiceConfig, ...]
    """Exposed services, in file order."""
    names: tuple[tuple[str, PeerId], ...]
    """Short names for peers, in file order."""
    authorized_keys: Path
    """The allowlist file (see ``app/allowlist.py``)."""
    enforce_allowlist: bool = True
    """Refuse peers not in ``authorized_keys``."""
    network_name: str | None = None
    """A label for the user's network, shown in status output."""
    proxies: tuple[ProxyConfig, ...] = ()
    """Lasting proxies the daemon opens, in file order; no two share ``bind:port``."""
    direct_connections: bool = True
    """Dial peers directly and hole-punch (DCUtR) where possible; false keeps every
    connection this node makes on the relay and declines hole punching (peers may
    still dial its ``listen`` addresses: ``listen: []`` to be reachable only through
    the relay)."""
    port_mapping: bool = True
    """Ask the home router (PCP, NAT-PMP or UPnP IGD) to forward the TCP listen port
    to this machine while the daemon runs, and advertise the mapped address; only for
    a listen address that is not loopback."""
    limits: NodeLimitsConfig = field(default_factory=NodeLimitsConfig)
    """Per-peer caps on connections, streams and service connections."""
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    """Metrics and health (off by default)."""

    def service(self, name: str) -> ServiceConfig | None:
        """The service called ``name``, if configured."""
        for svc in self.services:
            if svc.name == name:
                return svc
        return None

    def name_of(self, peer: PeerId) -> str | None:
        """The first name given to ``peer``, if any."""
        for name, pid in self.names:
            if pid == peer:
                return name
        return None

    def resolve_name(self, text: str) -> PeerId:
        """The peer called ``text`` in ``names``, or ``text`` parsed as a peer ID.

        Raises:
            ConfigError: neither a known name nor a valid peer ID.
        """
        text = text.strip()
        for name, pid in self.names:
            if name == text:
                return pid
        try:
            return PeerId.from_string(text)
        except ValueError:
            pass
        known = ", ".join(name for name, _ in self.names) or "none defined"
        raise ConfigError(
            f"{text!r} is neither a known name nor a peer ID",
            path=str(self.path),
            field="names",
            hint=f"use a peer ID (12D3KooW…) or a name from {self.path} (names: "
            f"{known}); add one with `peerup name set <name> <peer-id>`",
        )


@dataclass(frozen=True, slots=True)
class RelayResourcesConfig:
    """Caps and limits of a relay server; 0 means unlimited for every field.

    The defaults suit a self-hosted relay whose peers are all authorized: generous
    counts and no per-circuit time or data limit (public relays use 2 min / 128 KiB).
    """

    max_reservations: int = 1024
    max_reservations_per_ip: int = 64
    reservation_ttl_s: int = 3600
    max_circuits: int = 4096
    max_circuits_per_peer: int = 1024
    max_circuits_per_destination: int = 1024
    """Circuits to one reserved peer, from all sources together."""
    max_circuits_per_pair: int = 256
    """Circuits one source may have open to one destination (its fair share)."""
    circuit_duration_s: int = 0
    circuit_data_bytes: int = 0


@dataclass(frozen=True, slots=True)
class RelayServerConfig:
    """A relay server's settings, from ``relay-server.yaml``."""

    path: Path
    """The config file these settings came from."""
    version: int
    """File format version; only :data:`CONFIG_VERSION` is read."""
    listen: tuple[str, ...]
    """Multiaddrs to listen on, normalised; at least one."""
    identity_key: Path
    """The relay's private key file."""
    authorized_keys: Path
    """Peers allowed to use the relay."""
    enforce_allowlist: bool
    """Refuse peers not in ``authorized_keys``."""
    resources: RelayResourcesConfig = field(default_factory=RelayResourcesConfig)
    """Caps on reservations and circuits."""
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    """Metrics and health (off by default)."""
