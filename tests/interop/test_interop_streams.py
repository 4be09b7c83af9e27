"""Ping, identify, a 10 MiB echo and 20 concurrent streams against go, js and py-libp2p.

Both directions for every partner (they dial our listener, we dial theirs), plus ours
against ours. All steps run on one connection, as ``interop/CONTRACT.md`` specifies.
"""

from __future__ import annotations

import pytest
from interop_harness import (
    ECHO,
    IDENTIFY,
    PARTNERS,
    PING,
    Dial,
    StartPeer,
    assert_all_steps_ok,
)

pytestmark = pytest.mark.interop

ECHO_BYTES = 10 * 1024 * 1024
CONCURRENT_STREAMS = 20
CONCURRENT_BYTES = 1024 * 1024
STEPS = (
    f"echo:{ECHO_BYTES},ping:3,"
    f"concurrent:{CONCURRENT_STREAMS}:{CONCURRENT_BYTES},identify"
)

PAIRS = [
    *[pytest.param(("ours", p), id=f"{p}-dials-ours") for p in PARTNERS],
    *[pytest.param((p, "ours"), id=f"ours-dials-{p}") for p in PARTNERS],
    pytest.param(("ours", "ours"), id="ours-dials-ours"),
]


def agent_names_impl(impl: str, agent: str | None) -> bool:
    """Whether an identify agent_version names the implementation ``impl``."""
    if agent is None:
        return False
    if impl == "ours":
        return agent.startswith("peerup/")
    return f"{impl}-libp2p" in agent


@pytest.mark.parametrize("pair", PAIRS)
def test_echo_ping_concurrent_and_identify_on_one_connection(
    pair: tuple[str, str],
    start_peer: StartPeer,
    dial: Dial,
) -> None:
    listener_impl, dialer_impl = pair
    listener = start_peer(listener_impl)
    result = dial(dialer_impl, listener.multiaddr, STEPS)

    assert_all_steps_ok(result, listener)
    context = result.describe()
    assert set(result.steps) == {"echo", "ping", "concurrent", "identify"}, context
    assert result.result["relayed"] is False, context
    assert result.result["encryption"] == "/noise", context
    assert result.result["multiplexer"] == "/yamux/1.0.0", context
    assert result.steps["concurrent"]["streams"] == CONCURRENT_STREAMS, context

    seen = result.steps["identify"]
    assert {ECHO, PING, IDENTIFY} <= set(seen["protocols"]), context
    assert agent_names_impl(listener_impl, seen["agent_version"]), context
    assert any(listener.multiaddr.startswith(a) for a in seen["listen_addrs"]), context
