"""OpenTelemetry traces (net/tracing.py): off, nothing of OpenTelemetry is imported;
on, a relay reservation, a dial and a proxied connection each leave a span with their
attributes (the SDK's in-memory exporter stands in for an OTLP collector)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

import pairing_harness as harness
from peerup.app.node import Node, Service
from peerup.app.relay_service import RelayService
from peerup.core.keys import Ed25519PrivateKey
from peerup.net import tracing
from peerup.net.host import Host


def test_off_nothing_of_opentelemetry_is_imported() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PEERUP_", "OTEL_"))}
    code = (
        "import sys, peerup.app.daemon, peerup.app.relay_server, peerup.cli\n"
        "from peerup.net import tracing\n"
        "assert not tracing.enable()\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert tracing.span("x") is tracing.NO_SPAN and tracing.start("x") is tracing.NO_SPAN


def test_on_reservation_dial_and_proxied_connection_are_spans() -> None:
    sdk = pytest.importorskip("opentelemetry.sdk.trace")
    memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
    export = pytest.importorskip("opentelemetry.sdk.trace.export")
    exporter = memory.InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    assert tracing.enable(provider)

    async def main() -> None:
        relay = Host(Ed25519PrivateKey.generate())
        relay_addr = (await relay.listen("/ip4/127.0.0.1/tcp/0"))[0].with_peer_id(
            relay.peer_id
        )
        RelayService(relay).start()
        home, laptop = Node(Ed25519PrivateKey.generate()), Node(Ed25519PrivateKey.generate())
        try:
            _, port = await harness.echo_service()
            home.expose(Service("web", "127.0.0.1", port))
            circuit = await home.reserve_now(relay_addr)
            laptop.host.add_addrs(home.peer_id, [circuit])
            server, _ = await laptop.start_proxy(home.peer_id, "web", 0)
            local = server.sockets[0].getsockname()[1]
            for _ in range(2):
                assert await harness.echo_through(local) == b"ping"
            for _ in range(50):  # the splice's end reaches the span a moment later
                names = [s.name for s in exporter.get_finished_spans()]
                if names.count("peerup.proxy_connection") >= 2:
                    break
                await asyncio.sleep(0.05)
        finally:
            await laptop.aclose()
            await home.aclose()
            await relay.aclose()

    try:
        asyncio.run(main())
    finally:
        tracing.disable()
    spans = exporter.get_finished_spans()
    by_name = {s.name: s for s in spans}
    assert {"peerup.reservation", "peerup.dial", "peerup.proxy_connection"} <= set(by_name)
    assert "/p2p/12D3KooW" in by_name["peerup.reservation"].attributes["relay"]
    proxied = [s for s in spans if s.name == "peerup.proxy_connection"]
    assert len(proxied) == 2
    assert all(s.attributes["service"] == "web" for s in proxied)
    assert all(s.attributes["ended_by"] == "eof" for s in proxied)
    assert all(s.attributes["bytes_down"] == 4 for s in proxied)

