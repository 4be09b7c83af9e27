"""What a user is told when something is missing or refused, on both sides, at once.

Issue 10: a proxy to a service the far side does not offer (unknown, disabled) must
end at once (the client waits for the server to speak first, as with ssh, so nothing
but the refusal can end it), with the reason printed by ``proxy``, logged by both
daemons and counted in ``status``; a machine the relay does not allow is told so, with
the command that fixes it, by ``proxy``, ``ping``, ``traceroute`` and ``status``; one
translation of relay codes for every command; ``--json`` errors are JSON; a
foreground proxy prints one line per connection.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator

import pytest
from e2e_harness import Network, Node, Proc, exchange, wait_until

REQUEST = b"GET / HTTP/1.1\r\nHost: home\r\n\r\n"
END_WITHIN_S = 2.0
"""Loopback round trips are well under a millisecond: "at once" with CI's noise."""


@pytest.fixture
def proxies() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.stop()


def _proxy(
    node: Node, peer: str, service: str, started: list[Proc], *extra: str
) -> tuple[Proc, int]:
    proc, port = node.start_proxy(peer, service, *extra)
    started.append(proc)
    return proc, port


def _silent_client_end(port: int) -> tuple[bytes, float]:
    """Connect and wait for the server to speak first (as an ssh client waits for
    the banner): what arrives, and how long until the connection ended."""
    start = time.monotonic()
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return received, time.monotonic() - start


@pytest.mark.parametrize(
    ("service", "message", "why"),
    [
        ("nope", "has no service 'nope'", "no such service"),
        ("off", "service 'off' is disabled on", "service disabled"),
    ],
)
def test_proxy_to_a_service_not_offered_ends_at_once_with_the_reason(
    net: Network, proxies: list[Proc], service: str, message: str, why: str
) -> None:
    assert net.home.daemon is not None
    proc, port = _proxy(net.guest, net.home.peer_id, service, proxies)

    received, took = _silent_client_end(port)

    assert received == b""
    assert took < END_WITHIN_S, f"the connection hung for {took:.1f} s"
    line = proc.wait_for_output(rf"(?m)^error: [^\n]*{re.escape(message)}[^\n]*$", 10)
    assert "(hint: on " in line.group(0)
    net.home.daemon.wait_for_output(
        rf"service '{service}': refused {net.guest.peer_id}: {why}", 10
    )
    live = net.home.status()["daemon"]
    kind = "unknown" if service == "nope" else "disabled"
    assert live["refused_streams"].get(kind, 0) >= 1


def test_daemon_proxy_to_a_missing_service_is_counted_and_printed(
    net: Network, proxies: list[Proc]
) -> None:
    proc, port = _proxy(net.laptop, "home", "nope", proxies)

    received, took = _silent_client_end(port)

    assert received == b""
    assert took < END_WITHIN_S
    proc.wait_for_output(r"(?m)^error: home has no service 'nope' \(hint: ", 10)

    def counted() -> dict[str, object] | None:
        for proxy in net.laptop.status()["daemon"]["proxies"]:
            if proxy["service"] == "nope" and proxy["failures"]:
                return dict(proxy)
        return None

    proxy = wait_until("the failure counted", counted, 10, 0.2)
    assert "home has no service 'nope'" in str(proxy["last_failure"])
    text = net.laptop.cli("status").stdout
    assert re.search(
        r"proxy 127\.0\.0\.1:\d+ -> \S+/nope \(command\): 0 ok, 1 failed", text
    ), text
    assert net.laptop.daemon is not None
    net.laptop.daemon.wait_for_output(r"proxy home/nope: home has no service 'nope'")


def _relay_refused(text: str, node: Node) -> None:
    assert "the relay refused this machine" in text, text
    assert f"`peerup relay authorize {node.peer_id}`" in text, text


def test_a_machine_the_relay_refuses_is_told_so_by_every_command(
    net: Network, proxies: list[Proc]
) -> None:
    outsider = net.outsider
    ping = outsider.cli("ping", net.home.peer_id, "-c", "1", check=False)
    assert ping.returncode == 1
    _relay_refused(ping.stderr, outsider)

    trace = outsider.cli("traceroute", net.home.peer_id, check=False)
    assert trace.returncode == 1
    _relay_refused(trace.stderr, outsider)
    assert trace.stderr.count("\n") == 1, trace.stderr  # one line, no traceback

    proc, port = _proxy(outsider, net.home.peer_id, "stream", proxies)
    assert exchange(port, REQUEST) == b""
    line = proc.wait_for_output(r"(?m)^error: the relay refused[^\n]*$", 10).group(0)
    _relay_refused(line, outsider)
    proc.stop()

    try:
        outsider.start_daemon(wait_relays=False)

        def refused_relay() -> dict[str, object] | None:
            relays = outsider.status()["daemon"]["relays"]
            return relays[0] if relays and relays[0]["hint"] else None

        relay = wait_until("the relay's refusal in status", refused_relay, 15, 0.2)
        assert relay["reserved"] is False
        _relay_refused(f"{relay['last_error']} {relay['hint']}", outsider)
        _relay_refused(outsider.cli("status").stdout, outsider)
        via_daemon = outsider.cli("ping", net.home.peer_id, "-c", "1", check=False)
        _relay_refused(via_daemon.stderr, outsider)
    finally:
        outsider.stop_all()


def test_ping_and_traceroute_translate_relay_codes_as_proxy_does(
    net: Network,
) -> None:
    # The far peer refused: not the raw PERMISSION_DENIED.
    ping = net.stranger.cli("ping", net.home.peer_id, "-c", "1", check=False)
    assert ping.returncode == 1
    assert "refused this machine (not in its authorized_keys)" in ping.stderr
    assert f"`peerup auth add {net.stranger.peer_id}`" in ping.stderr
    assert "PERMISSION_DENIED" not in ping.stderr + ping.stdout
    trace = net.stranger.cli("traceroute", net.home.peer_id, check=False)
    assert "refused this machine" in trace.stderr
    assert "PERMISSION_DENIED" not in trace.stderr

    # The far peer holds no reservation (guest runs no daemon): offline.
    ping = net.stranger.cli("ping", net.guest.peer_id, "-c", "1", check=False)
    assert "is offline: it holds no reservation on the relay" in ping.stderr
    assert "NO_RESERVATION" not in ping.stderr
    trace = net.stranger.cli("traceroute", net.guest.peer_id, check=False)
    assert "is offline" in trace.stderr
    assert "NO_RESERVATION" not in trace.stderr


def test_json_errors_are_json_objects(net: Network) -> None:
    done = net.stranger.cli(
        "traceroute", net.home.peer_id, "--json", check=False
    )
    assert done.returncode == 1
    answer = json.loads(done.stdout)
    assert "refused this machine" in answer["error"]
    assert answer["hint"].startswith("on ")
    done = net.laptop.cli("resolve", "no-such-name", "--json", check=False)
    assert done.returncode == 1
    answer = json.loads(done.stdout)
    assert set(answer) == {"error", "hint"}
    assert "no-such-name" in answer["error"]


def test_foreground_proxy_prints_a_line_per_connection_unless_quiet(
    net: Network, proxies: list[Proc]
) -> None:
    proc, port = _proxy(net.guest, net.home.peer_id, "stream", proxies)
    quiet, quiet_port = _proxy(net.guest, net.home.peer_id, "stream", proxies, "-q")

    for p in (port, quiet_port):
        with socket.create_connection(("127.0.0.1", p), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: home\r\nConnection: close\r\n\r\n")
            while sock.recv(65536):
                pass

    line = proc.wait_for_output(
        r"(?m)^connection 127\.0\.0\.1:\d+: relayed, [\d.]+ s, \d+ B out, "
        r"[\d.]+ [KM]?B in, closed$",
        10,
    )
    assert line
    time.sleep(0.5)  # nothing more is coming from the quiet one; give it the chance
    assert "connection " not in quiet.stderr()
