"""Metrics and health (app/telemetry.py), scraped by a real Prometheus.

A relay and two daemons in-process on loopback, each with ``telemetry.metrics``
enabled; home offers an echo service through the relay, the laptop proxies to it and
carries a few connections. Debian's ``prometheus`` (started here, scraping both every
second) must then answer queries through its HTTP API with the values the load made:
circuits opened at the relay, proxied connections by service and outcome, connections
by path. ``/healthz`` answers JSON; the listener serves nothing else; a metrics
address that is not loopback is a config error naming the line.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import pairing_harness as harness
from peerup.app.allowlist import Allowlist
from peerup.app.daemon import Daemon, client_for
from peerup.app.node import Node, Service
from peerup.app.relay_server import RelayServer
from peerup.config import files, load
from peerup.core.errors import ConfigError
from peerup.core.keys import Ed25519PrivateKey

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_metrics(path: Path, port: int) -> None:
    text = path.read_text().rstrip("\n") + (
        f"\ntelemetry:\n  metrics:\n    enabled: true\n"
        f"    listen_address: 127.0.0.1:{port}\n"
    )
    files.write_atomic(path, text)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        reason = "prometheus is not installed (apt-get install prometheus)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run this test, but {reason}")
        pytest.skip(reason)
    return found


def query(port: int, expr: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode(
        {"query": expr}
    )
    status, body = get(url)
    if status == 503:  # its storage is still opening
        raise urllib.error.URLError("Prometheus is starting")
    assert status == 200, body
    data = json.loads(body)
    assert data["status"] == "success", data
    result: list[dict[str, Any]] = data["data"]["result"]
    return result


def test_prometheus_scrapes_the_relay_and_a_daemon_under_load(tmp_path: Path) -> None:
    binary = prometheus_binary()
    relay_metrics, home_metrics, lap_metrics, prom_port = (free_port() for _ in range(4))

    async def main() -> None:
        relay_cfg = harness.write_relay(tmp_path / "relay")
        with_metrics(relay_cfg, relay_metrics)
        relay = RelayServer(load.load_relay(relay_cfg))
        relay_addr = (await relay.start())[0]
        home_cfg, home_id = harness.make_node(tmp_path, "home", [str(relay_addr)])
        lap_cfg, lap_id = harness.make_node(tmp_path, "laptop", [str(relay_addr)])
        harness.authorize_on_relay(relay, home_id, lap_id)
        Allowlist(home_cfg.parent / "authorized_keys").add(lap_id)
        Allowlist(lap_cfg.parent / "authorized_keys").add(home_id)
        _, echo_port = await harness.echo_service()
        harness.add_web(home_cfg, echo_port)
        with_metrics(home_cfg, home_metrics)
        with_metrics(lap_cfg, lap_metrics)
        home, laptop = Daemon(load.load_node(home_cfg)), Daemon(load.load_node(lap_cfg))
        await home.start()
        await laptop.start()
        await home.node.reserve_now(relay_addr)
        prom_dir = Path(tempfile.mkdtemp(prefix="prom", dir=tmp_path))
        jobs = {"relay": [relay_metrics], "daemon": [home_metrics, lap_metrics]}
        scrape = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": job,
                    "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in ports]}],
                }
                for job, ports in jobs.items()
            ],
        }
        # JSON is YAML: Prometheus reads it as its config.
        (prom_dir / "prometheus.yml").write_text(json.dumps(scrape))
        prom = subprocess.Popen(
            [binary, f"--config.file={prom_dir / 'prometheus.yml'}",
             f"--storage.tsdb.path={prom_dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            # As `peerup proxy home web 0` asks a running daemon.
            opened = await asyncio.to_thread(
                client_for(laptop.config).call,
                "POST",
                "/v1/connect",
                {"peer": str(home_id), "service": "web", "port": 0},
            )
            port = int(opened["listen"].rsplit(":", 1)[1])
            for _ in range(3):
                assert await harness.echo_through(port) == b"ping"
            # Health, and nothing else on the listener.
            status, body = await asyncio.to_thread(
                get, f"http://127.0.0.1:{home_metrics}/healthz"
            )
            health = json.loads(body)
            assert status == 200 and health["status"] == "ok"
            assert health["relays_reserved"] == 1 and health["services"] == 1
            status, _ = await asyncio.to_thread(
                get, f"http://127.0.0.1:{home_metrics}/other"
            )
            assert status == 404

            wanted = {
                'up{job="relay"}': 1.0,
                'peerup_relay_circuits_total{job="relay"}': 1.0,
                'peerup_relay_reservations{job="relay",state="active"}': 1.0,
                'sum(peerup_proxy_connections_total{service="web",outcome="ok"})': 3.0,
                'sum(peerup_proxy_bytes_total{service="web",direction="from_service"})': 12.0,
                'peerup_service_connections_total{service="web",outcome="ok"}': 3.0,
                'peerup_service_bytes_total{service="web",direction="to_service"}': 12.0,
                'sum(peerup_connections{job="daemon",path="relayed"})': 1.0,
                f'peerup_services_exposed{{instance="127.0.0.1:{home_metrics}"}}': 1.0,
                'count(peerup_build_info{job="daemon"})': 2.0,
            }
            deadline = time.monotonic() + 30
            got: dict[str, float] = {}
            while time.monotonic() < deadline:
                for expr in wanted:
                    try:
                        result = await asyncio.to_thread(query, prom_port, expr)
                    except urllib.error.URLError:  # Prometheus is still starting
                        assert prom.poll() is None, prom.stderr.read()  # type: ignore[union-attr]
                        break
                    if result:
                        got[expr] = float(result[0]["value"][1])
                if all(got.get(e, -1.0) >= v for e, v in wanted.items()):
                    break
                await asyncio.sleep(0.5)
            missing = {e: got.get(e) for e, v in wanted.items() if got.get(e, -1.0) < v}
            assert not missing, (missing, got)
            # Every metric the Grafana dashboard in contrib/ plots is exposed (a
            # counter with labels has no series before its first event, so the
            # families are read from the exposition's TYPE lines).
            families: set[str] = set()
            for metrics_port in (relay_metrics, home_metrics):
                _, text = await asyncio.to_thread(
                    get, f"http://127.0.0.1:{metrics_port}/metrics"
                )
                for name in re.findall(r"^# TYPE (peerup_\w+) ", text, re.M):
                    families.add(re.sub(r"_total$", "", name))
            dashboard = (ROOT / "contrib" / "grafana-dashboard.json").read_text()
            plotted = {
                re.sub(r"_(total|bucket)$", "", name)
                for name in re.findall(r"peerup_[a-z_]+", dashboard)
            }
            assert plotted and plotted <= families, plotted - families
        finally:
            prom.terminate()
            prom.wait(10)
            await laptop.aclose()
            await home.aclose()
            await relay.aclose()

    asyncio.run(main())


def test_metrics_only_on_loopback(tmp_path: Path) -> None:
    cfg, _ = harness.make_node(tmp_path, "home", [])
    text = cfg.read_text().rstrip("\n") + (
        "\ntelemetry:\n  metrics:\n    enabled: true\n    listen_address: 0.0.0.0:9091\n"
    )
    files.write_atomic(cfg, text)
    with pytest.raises(ConfigError, match="loopback address only") as info:
        load.load_node(cfg)
    assert f":{len(text.splitlines())}" in str(info.value)
    assert "127.0.0.1:9091" in (info.value.hint or "")


def metric_values(text: str) -> dict[str, float]:
    """``name{labels}`` -> value, from an exposition (as Prometheus would read it)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = sample.value
    return out


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait for something another party does (a connection's end reaching a counter)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_relay_counts_a_circuit_cut_by_its_data_limit(tmp_path: Path) -> None:
    """A relay with a 64 KiB circuit limit: a small echo passes, a 256 KiB one is cut
    by the limit. The relay's /metrics then shows the limit hit and the bytes carried,
    and the serving node counted one connection ok and one reset, by service."""
    metrics_port = free_port()

    async def main() -> None:
        relay_cfg = harness.write_relay(tmp_path)
        text = relay_cfg.read_text().replace(
            "circuit_data_bytes: 0", "circuit_data_bytes: 65536"
        )
        files.write_atomic(relay_cfg, text)
        with_metrics(relay_cfg, metrics_port)
        relay = RelayServer(load.load_relay(relay_cfg))
        relay_addr = (await relay.start())[0]
        home, laptop = Node(Ed25519PrivateKey.generate()), Node(Ed25519PrivateKey.generate())
        harness.authorize_on_relay(relay, home.peer_id, laptop.peer_id)
        try:
            _, echo_port = await harness.echo_service()
            home.expose(Service("web", "127.0.0.1", echo_port))
            circuit = await home.reserve_now(relay_addr)
            laptop.host.add_addrs(home.peer_id, [circuit])
            server, _ = await laptop.start_proxy(home.peer_id, "web", 0)
            local = server.sockets[0].getsockname()[1]
            assert await harness.echo_through(local) == b"ping"
            await until(lambda: home.service_outcomes[("web", "ok")] == 1)
            with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
                await harness.echo_through(local, b"x" * 262144)
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            values: dict[str, float] = {}
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                _, body = await asyncio.to_thread(get, url)
                values = metric_values(body)
                if values.get("peerup_relay_circuit_limits_hit_total{limit=data}"):
                    break
                await asyncio.sleep(0.1)
            assert values.get("peerup_relay_circuit_limits_hit_total{limit=data}") == 1
            assert values.get("peerup_relay_circuit_limits_hit_total{limit=duration}") == 0
            # What it carried (the ping, identify, yamux frames), never past the limit
            # in either direction: the frame that would cross it is not passed on.
            assert 0 < values["peerup_relay_circuit_bytes_total{}"] <= 2 * 65536
            assert values["peerup_relay_circuits_total{}"] == 1
            await until(lambda: home.service_outcomes[("web", "reset")] == 1)
            assert home.service_outcomes == {("web", "ok"): 1, ("web", "reset"): 1}
            assert home.service_bytes[("web", "to_service")] >= 4
        finally:
            await laptop.aclose()
            await home.aclose()
            await relay.aclose()

    asyncio.run(main())
