"""OpenTelemetry traces (net/tracing.py): off, nothing of OpenTelemetry is imported;
on, a relay reservation, a dial with its handshakes, a proxied connection and a hole
punch each leave a span with their attributes (the SDK's in-memory exporter stands in
for an OTLP collector). The SDK is a dev dependency: CI fails rather than skips
without it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import pytest

import pairing_harness as harness
from peerup.app.node import Node, Service
from peerup.app.relay_service import RelayResources, RelayService
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.peer_id import PeerId
from peerup.net import tracing
from peerup.net.holepunch import HolePunchService
from peerup.net.host import Host
from peerup.net.relay_client import RelayClient


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


def in_memory_tracing() -> Any:
    """Tracing on, into the SDK's in-memory exporter (returned)."""
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )
    except ImportError:
        reason = "opentelemetry-sdk is not installed (pip install -e '.[dev]')"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run this test, but {reason}")
        pytest.skip(reason)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert tracing.enable(provider)
    return exporter


def test_on_reservation_dial_and_proxied_connection_are_spans() -> None:
    exporter = in_memory_tracing()

    home_id: list[PeerId] = []

    async def main() -> None:
        relay = Host(Ed25519PrivateKey.generate())
        relay_addr = (await relay.listen("/ip4/127.0.0.1/tcp/0"))[0].with_peer_id(
            relay.peer_id
        )
        RelayService(relay).start()
        home, laptop = Node(Ed25519PrivateKey.generate()), Node(Ed25519PrivateKey.generate())
        home_id.append(home.peer_id)
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
    # Each address a dial tries is a handshake span inside it: the relay's (direct),
    # then home's through the relay.
    handshakes = [s for s in spans if s.name == "peerup.handshake"]
    assert {s.attributes["path"] for s in handshakes} == {"direct", "relayed"}
    dial = by_name["peerup.dial"]
    assert dial.attributes["peer"] == str(home_id[0])
    relayed = next(s for s in handshakes if s.attributes["path"] == "relayed")
    assert relayed.parent is not None and relayed.parent.span_id == dial.context.span_id
    assert "/p2p-circuit" in relayed.attributes["addr"]
    assert "/p2p/12D3KooW" in by_name["peerup.reservation"].attributes["relay"]
    proxied = [s for s in spans if s.name == "peerup.proxy_connection"]
    assert len(proxied) == 2
    assert all(s.attributes["service"] == "web" for s in proxied)
    assert all(s.attributes["ended_by"] == "eof" for s in proxied)
    assert all(s.attributes["bytes_down"] == 4 for s in proxied)



def test_on_a_hole_punch_is_a_span_with_its_outcome() -> None:
    """Two listening hosts meet through a relay; the one that received the relayed
    connection upgrades it to a direct one (on loopback: a known address or DCUtR,
    whichever wins): one ``peerup.holepunch`` span, with the outcome it returned."""
    exporter = in_memory_tracing()
    results = []

    async def main() -> None:
        relay = Host(Ed25519PrivateKey.generate())
        relay_addr = (await relay.listen("/ip4/127.0.0.1/tcp/0"))[0].with_peer_id(
            relay.peer_id
        )
        RelayService(
            relay,
            RelayResources.for_interop(
                unlimited=True, limit_duration_s=None, limit_data_bytes=None
            ),
        ).start()
        a, b = Host(Ed25519PrivateKey.generate()), Host(Ed25519PrivateKey.generate())
        try:
            await a.listen("/ip4/127.0.0.1/tcp/0")
            await b.listen("/ip4/127.0.0.1/tcp/0")
            HolePunchService(a)
            b_punch = HolePunchService(b)
            b_punch.on_result.append(results.append)
            circuit = await RelayClient(b).reserve_and_keep(relay_addr)
            RelayClient(a)
            assert (await a.connect(circuit)).is_relayed
            async with asyncio.timeout(15):
                while not results:
                    await asyncio.sleep(0.01)
        finally:
            for host in (a, b, relay):
                await host.aclose()

    try:
        asyncio.run(main())
    finally:
        tracing.disable()
    punches = [s for s in exporter.get_finished_spans() if s.name == "peerup.holepunch"]
    assert len(punches) == 1, punches
    assert results[0].is_direct, results[0]
    assert punches[0].attributes["outcome"] == results[0].outcome.name.lower()
