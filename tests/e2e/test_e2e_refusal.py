"""Who is refused, and what the user is told: unlisted peers, ``allowed_peers``, a down
service.

"guest" and "stranger" run no daemon, so their ``peerup proxy`` carries connections
with a node of its own and prints each failure on stderr. The laptop proxies through
its daemon, where failures show in ``status --json`` under ``proxies``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from e2e_harness import Network, Node, Proc, exchange, read_chunked, wait_until

REQUEST = b"GET / HTTP/1.1\r\nHost: home\r\n\r\n"


@pytest.fixture
def proxies() -> Iterator[list[Proc]]:
    """Proxies started by a test, stopped at its end (one host per key at a time)."""
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.stop()


def _proxy(node: Node, peer: str, service: str, started: list[Proc]) -> int:
    proc, port = node.start_proxy(peer, service)
    started.append(proc)
    return port


def _error_line(proc: Proc, text: str) -> str:
    """The one ``error:`` line on the proxy's stderr that contains ``text``."""
    match = proc.wait_for_output(rf"(?m)^error: [^\n]*{re.escape(text)}[^\n]*$", 30)
    return match.group(0)


def _last_failure(node: Node, service: str) -> str:
    def failure() -> str | None:
        for proxy in node.status()["daemon"]["proxies"]:
            if proxy["service"] == service and proxy["failures"]:
                return str(proxy["last_failure"])
        return None

    text: str = wait_until(f"a failure on the {service} proxy", failure, 30, 0.3)
    return text


def test_unlisted_peer_is_refused_before_any_protocol(
    net: Network, proxies: list[Proc]
) -> None:
    port = _proxy(net.stranger, net.home.peer_id, "stream", proxies)

    received = exchange(port, REQUEST)

    assert received == b""
    line = _error_line(proxies[0], "refused this machine")
    short = net.home.peer_id[-8:]
    assert line == (
        f"error: {short} refused this machine (not in its authorized_keys) "
        f"(hint: on {short}, run `peerup auth add {net.stranger.peer_id}`)"
    )
    assert "PERMISSION_DENIED" not in line
    assert net.home.daemon is not None
    net.home.daemon.wait_for_output(rf"refused (relayed )?peer {net.stranger.peer_id}")
    about_stranger = [
        ln for ln in net.home.daemon.stderr().splitlines() if net.stranger.peer_id in ln
    ]
    assert all("refused" in ln for ln in about_stranger), about_stranger
    peers = [p["peer_id"] for p in net.home.status()["daemon"]["peers"]]
    assert net.stranger.peer_id not in peers


def test_peer_outside_allowed_peers_is_refused_for_that_service_only(
    net: Network, proxies: list[Proc]
) -> None:
    private = _proxy(net.guest, net.home.peer_id, "private", proxies)

    assert exchange(private, REQUEST) == b""
    line = _error_line(proxies[0], "does not allow this machine to use 'private'")
    assert "allowed_peers" in line
    assert net.home.daemon is not None
    net.home.daemon.wait_for_output(
        rf"service 'private': refused {net.guest.peer_id}: peer not in allowed_peers"
    )
    proxies.pop().stop()
    stream = _proxy(net.guest, net.home.peer_id, "stream", proxies)
    assert len(read_chunked(stream)) == 21


def test_daemon_proxy_outside_allowed_peers_is_refused_for_that_service_only(
    net: Network, proxies: list[Proc]
) -> None:
    private = _proxy(net.laptop, net.home.peer_id, "private", proxies)
    stream = _proxy(net.laptop, net.home.peer_id, "stream", proxies)

    assert exchange(private, REQUEST) == b""
    assert "does not allow this machine" in _last_failure(net.laptop, "private")
    assert len(read_chunked(stream)) == 21


def test_proxy_to_down_service_says_service_is_down(
    net: Network, proxies: list[Proc]
) -> None:
    port = _proxy(net.guest, net.home.peer_id, "down", proxies)

    assert exchange(port, REQUEST) == b""
    line = _error_line(proxies[0], "is down")
    assert line.startswith("error: service 'down' on ")
    assert "nothing listens on its local address" in line


def test_daemon_proxy_to_down_service_says_service_is_down(
    net: Network, proxies: list[Proc]
) -> None:
    port = _proxy(net.laptop, net.home.peer_id, "down", proxies)

    assert exchange(port, REQUEST) == b""
    assert "service 'down' on home is down" in _last_failure(net.laptop, "down")


@pytest.mark.parametrize(
    ("service", "text"),
    [("private", "does not allow this machine"), ("down", "'down' on [^ ]+ is down")],
)
def test_daemon_proxy_prints_why_a_connection_failed(
    net: Network, proxies: list[Proc], service: str, text: str
) -> None:
    port = _proxy(net.laptop, net.home.peer_id, service, proxies)

    assert exchange(port, REQUEST) == b""
    _last_failure(net.laptop, service)  # the daemon knows why by now
    proxies[0].wait_for_output(rf"(?m)^error: [^\n]*{text}", 10)
