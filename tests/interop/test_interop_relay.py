"""Circuit relay v2 across implementations: every relay/listener/dialer combination
that involves peer-up, with go-libp2p and js-libp2p (and py-libp2p as listener and
dialer through our relay).

Each case: the listener reserves on the relay, the dialer reaches it through
``/p2p-circuit``, echoes 10 MiB byte-exact and pings. Plus the data limit: a relay with
a 1 MiB limit cuts a 2 MiB echo with an error (not a hang, not a clean end).
"""

from __future__ import annotations

import pytest
from interop_harness import Dial, StartPeer, assert_all_steps_ok

pytestmark = pytest.mark.interop

STEPS = f"echo:{10 * 1024 * 1024},ping:3"

# (relay, listener, dialer); every combination has peer-up in at least one role.
COMBOS = [
    ("ours", "ours", "ours"),
    ("ours", "go", "go"),
    ("ours", "js", "js"),
    ("ours", "go", "js"),
    ("ours", "js", "go"),
    ("ours", "ours", "go"),
    ("ours", "go", "ours"),
    ("ours", "ours", "js"),
    ("ours", "js", "ours"),
    ("ours", "py", "ours"),
    ("ours", "ours", "py"),
    ("go", "ours", "ours"),
    ("js", "ours", "ours"),
    ("go", "ours", "go"),
    ("go", "go", "ours"),
    ("js", "ours", "js"),
    ("js", "js", "ours"),
    ("go", "js", "ours"),
]


@pytest.mark.parametrize(
    "relay_impl,listener_impl,dialer_impl",
    COMBOS,
    ids=[f"relay-{r}_listen-{listener}_dial-{d}" for r, listener, d in COMBOS],
)
def test_echo_and_ping_through_relay(
    start_peer: StartPeer,
    dial: Dial,
    relay_impl: str,
    listener_impl: str,
    dialer_impl: str,
) -> None:
    relay = start_peer(relay_impl, "relay", "--unlimited")
    listener = start_peer(listener_impl, "listen", "--relay", relay.multiaddr)
    assert "/p2p-circuit/" in listener.multiaddr
    result = dial(dialer_impl, listener.multiaddr, STEPS)
    assert_all_steps_ok(result, listener)
    assert result.result["relayed"] is True, result.describe()


@pytest.mark.parametrize("dialer_impl", ["ours", "go", "js"])
def test_data_limit_of_our_relay_cuts_the_circuit_with_an_error(
    start_peer: StartPeer, dial: Dial, dialer_impl: str
) -> None:
    relay = start_peer("ours", "relay", "--limit-data", str(1024 * 1024))
    listener = start_peer("ours", "listen", "--relay", relay.multiaddr)
    result = dial(dialer_impl, listener.multiaddr, f"echo:{2 * 1024 * 1024}", 60)
    echo = result.steps.get("echo", {})
    assert echo.get("ok") is False, result.describe()
    assert result.returncode == 1, result.describe()
