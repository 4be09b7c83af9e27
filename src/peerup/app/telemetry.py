"""Metrics and health on a loopback HTTP listener, for the daemon and the relay.

Spec: the Prometheus text exposition format (via ``prometheus_client``) and its naming
conventions (``peerup_`` prefix, ``_total`` counters, base units: seconds, bytes).
Configured as the Go original does: ``telemetry: {metrics: {enabled: true,
listen_address: 127.0.0.1:9091}}``. ``GET /metrics`` is the exposition, ``GET
/healthz`` a JSON ``{"status", "uptime_s", "peers", …}``; nothing else is served, and
only on a loopback address (config refuses others).

Nothing is counted on the data path: every value is read from the state the daemon or
relay already keeps (connections, streams, proxies' and refusals' counters, the relay's
reservation book) when Prometheus scrapes, by a custom collector. Label sets are
bounded: path, direction, service names from the config, refusal kinds and circuit
relay status names, and refusal reasons cut to their first clause with at most
:data:`MAX_REASONS` distinct values (the rest are ``other``). Peer IDs appear only with
``peer_labels: true``. The HTTP server is a few lines on ``asyncio.start_server``: the
listener must run on the daemon's own loop, and ``prometheus_client``'s servers are
threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.registry import Collector

from peerup import __version__
from peerup.config.schema import TelemetryConfig

log = logging.getLogger(__name__)

MAX_REASONS: Final = 32
RTT_BUCKETS_S: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
MAX_REQUEST_BYTES: Final = 8192
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Snapshot:
    """What a scrape reports, gathered from the running daemon or relay."""

    role: str
    """``daemon`` or ``relay``."""
    data_path: str
    connections: list[tuple[str, str, float | None, str]] = field(default_factory=list)
    """One per connection: path (direct/relayed), direction (inbound/outbound), RTT in
    seconds if measured, the peer's label (its name, or its peer ID)."""
    streams_open: int = 0
    services: int = 0
    proxy_connections: dict[tuple[str, str], int] = field(default_factory=dict)
    """(service, outcome) -> connections since start."""
    proxy_bytes: dict[tuple[str, str], int] = field(default_factory=dict)
    """(service, to_service | from_service) -> bytes through this node's proxies."""
    served_connections: dict[tuple[str, str], int] = field(default_factory=dict)
    """(service, ok | reset | error) -> finished connections to this node's services."""
    served_bytes: dict[tuple[str, str], int] = field(default_factory=dict)
    """(service, to_service | from_service) -> bytes to and from this node's services."""
    streams_refused: dict[str, int] = field(default_factory=dict)
    handshakes_refused: dict[str, int] = field(default_factory=dict)
    reservations: dict[str, int] = field(default_factory=dict)
    """Daemon: relays by state (reserved, not_reserved); relay: {"active": n}."""
    circuits_active: int | None = None
    circuits_total: int | None = None
    circuits_refused: dict[str, int] = field(default_factory=dict)
    circuit_limits_hit: dict[str, int] = field(default_factory=dict)
    """Circuits ended by a limit: data, duration."""
    circuit_bytes: int = 0
    reloads: int = 0


def add_connections(
    snap: Snapshot, connections: Mapping[Any, Iterable[Any]], label: Callable[[Any], str]
) -> None:
    """Each open connection of a host (``Host.connections``) into ``snap``, its peer
    named by ``label``."""
    for peer, conns in connections.items():
        name = label(peer)
        for conn in conns:
            snap.connections.append(
                (
                    "relayed" if conn.is_relayed else "direct",
                    "outbound" if conn.is_initiator else "inbound",
                    conn.rtt_s or None,
                    name,
                )
            )
            snap.streams_open += len(conn.streams)


def reason_label(reason: str, seen: set[str]) -> str:
    """A bounded label for a free-text refusal reason: its first clause, and at most
    :data:`MAX_REASONS` distinct ones (then ``other``)."""
    text = reason.split(":")[0].split("(")[0].strip().lower()[:48] or "unknown"
    if text in seen or len(seen) < MAX_REASONS:
        seen.add(text)
        return text
    return "other"


def by_reason(counts: Mapping[str, int]) -> dict[str, int]:
    """Refusal counts under bounded labels (:func:`reason_label`)."""
    seen: set[str] = set()
    out: dict[str, int] = {}
    for reason, n in counts.items():
        label = reason_label(reason, seen)
        out[label] = out.get(label, 0) + n
    return out


class _Collector(Collector):
    def __init__(
        self, snapshot: Callable[[], Snapshot], started: float, peer_labels: bool
    ) -> None:
        self.snapshot = snapshot
        self.started = started
        self.peer_labels = peer_labels

    def collect(self) -> Iterator[Any]:
        s = self.snapshot()
        info = InfoMetricFamily("peerup_build", "peer-up version and data path")
        info.add_metric([], {"version": __version__, "role": s.role, "data_path": s.data_path})
        yield info
        yield GaugeMetricFamily(
            "peerup_uptime_seconds", "seconds since start", value=time.time() - self.started
        )
        conns = GaugeMetricFamily(
            "peerup_connections", "open connections", labels=["path", "direction"]
        )
        counts: dict[tuple[str, str], int] = {}
        for path, direction, _rtt, _peer in s.connections:
            counts[(path, direction)] = counts.get((path, direction), 0) + 1
        for path in ("direct", "relayed"):
            for direction in ("inbound", "outbound"):
                conns.add_metric([path, direction], counts.get((path, direction), 0))
        yield conns
        peers = {peer for *_, peer in s.connections}
        yield GaugeMetricFamily("peerup_peers_connected", "peers", value=len(peers))
        yield GaugeMetricFamily("peerup_streams_open", "open streams", value=s.streams_open)
        yield from self._rtt(s)
        if s.role == "daemon":
            yield GaugeMetricFamily(
                "peerup_services_exposed", "services offered", value=s.services
            )
            proxied = CounterMetricFamily(
                "peerup_proxy_connections",
                "connections through this node's proxies, by service and outcome",
                labels=["service", "outcome"],
            )
            for (service, outcome), n in sorted(s.proxy_connections.items()):
                proxied.add_metric([service, outcome], n)
            yield proxied
            yield _pairs(
                "peerup_proxy_bytes", "bytes through this node's proxies, by service "
                "and direction, added as each connection ends", ("service", "direction"),
                s.proxy_bytes,
            )  # fmt: skip
            yield _pairs(
                "peerup_service_connections", "finished connections to this node's "
                "services, by service and outcome", ("service", "outcome"),
                s.served_connections,
            )  # fmt: skip
            yield _pairs(
                "peerup_service_bytes", "bytes to and from this node's services, by "
                "service and direction, added as each connection ends",
                ("service", "direction"), s.served_bytes,
            )  # fmt: skip
            yield _counter(
                "peerup_streams_refused", "service streams refused", "kind",
                s.streams_refused,
            )  # fmt: skip
        yield _counter(
            "peerup_handshakes_refused", "connections refused at or before the "
            "handshake", "reason", s.handshakes_refused,
        )  # fmt: skip
        rsv = GaugeMetricFamily(
            "peerup_relay_reservations",
            "daemon: relays by reservation state; relay: reservations held",
            labels=["state"],
        )
        for state, n in sorted(s.reservations.items()):
            rsv.add_metric([state], n)
        yield rsv
        if s.circuits_active is not None:
            yield GaugeMetricFamily(
                "peerup_relay_circuits_active", "circuits open", value=s.circuits_active
            )
            yield CounterMetricFamily(
                "peerup_relay_circuits", "circuits opened", value=s.circuits_total or 0
            )
            yield _counter(
                "peerup_relay_requests_refused", "reservations and circuits refused, "
                "by circuit relay v2 status", "status", s.circuits_refused,
            )  # fmt: skip
            yield _counter(
                "peerup_relay_circuit_limits_hit", "circuits ended by the relay's "
                "data or duration limit", "limit", s.circuit_limits_hit,
            )  # fmt: skip
            yield CounterMetricFamily(
                "peerup_relay_circuit_bytes", "bytes carried by finished circuits",
                value=s.circuit_bytes,
            )  # fmt: skip
        yield CounterMetricFamily(
            "peerup_config_reloads", "config reloads applied", value=s.reloads
        )

    def _rtt(self, s: Snapshot) -> Iterable[Any]:
        rtts = [rtt for _p, _d, rtt, _peer in s.connections if rtt is not None]
        hist = GaugeHistogramMetricFamily(
            "peerup_connection_rtt_seconds", "round-trip times of open connections"
        )
        buckets = [(f"{b:g}", float(sum(1 for r in rtts if r <= b))) for b in RTT_BUCKETS_S]
        buckets.append(("+Inf", float(len(rtts))))
        hist.add_metric([], buckets, gsum_value=sum(rtts))
        yield hist
        if self.peer_labels:
            per_peer = GaugeMetricFamily(
                "peerup_peer_rtt_seconds", "round-trip time per peer", labels=["peer"]
            )
            best: dict[str, float] = {}
            for _p, _d, rtt, peer in s.connections:
                if rtt is not None:
                    best[peer] = min(rtt, best.get(peer, rtt))
            for peer, rtt in sorted(best.items()):
                per_peer.add_metric([peer], rtt)
            yield per_peer


def _counter(name: str, doc: str, label: str, values: dict[str, int]) -> Any:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, n in sorted(values.items()):
        family.add_metric([key], n)
    return family


def _pairs(
    name: str, doc: str, labels: tuple[str, str], values: dict[tuple[str, str], int]
) -> Any:
    family = CounterMetricFamily(name, doc, labels=list(labels))
    for key, n in sorted(values.items()):
        family.add_metric(list(key), n)
    return family


class TelemetryServer:
    """``/metrics`` and ``/healthz`` on ``host:port`` (loopback)."""

    def __init__(
        self,
        host: str,
        port: int,
        snapshot: Callable[[], Snapshot],
        health: Callable[[], dict[str, Any]],
        *,
        peer_labels: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.health = health
        self.started = time.time()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(snapshot, self.started, peer_labels))
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        name = self._server.sockets[0].getsockname()
        return str(name[0]), int(name[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        host, port = self.address
        log.info("metrics on http://%s:%d/metrics, health on /healthz", host, port)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > MAX_REQUEST_BYTES:
                raise ValueError("request too large")
            method, target, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            path = target.split("?", 1)[0]
            if method != "GET":
                status, ctype, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
            elif path == "/metrics":
                status, ctype, body = "200 OK", CONTENT_TYPE, generate_latest(self.registry)
            elif path == "/healthz":
                data = {**self.health(), "uptime_s": round(time.time() - self.started, 1)}
                status, ctype = "200 OK", "application/json"
                body = (json.dumps(data) + "\n").encode()
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"/metrics or /healthz\n"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ValueError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError, ConnectionError):  # fmt: skip
            pass  # a bad or slow client: it just gets closed
        finally:
            writer.close()


async def start_for(
    tel: TelemetryConfig,
    config_path: object,
    snapshot: Callable[[], Snapshot],
    health: Callable[[], dict[str, Any]],
) -> TelemetryServer | None:
    """The listener ``telemetry.metrics`` asks for, started; None (logged, the
    process runs on) when its address cannot be bound."""
    server = TelemetryServer(
        tel.metrics_host, tel.metrics_port, snapshot, health, peer_labels=tel.peer_labels
    )
    try:
        await server.start()
    except OSError as exc:
        log.error(
            "metrics: cannot listen on %s:%d: %s (telemetry.metrics.listen_address in "
            "%s); running without metrics",
            tel.metrics_host, tel.metrics_port, exc, config_path,
        )  # fmt: skip
        return None
    return server
