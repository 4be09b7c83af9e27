"""A streamed HTTP response (Ollama-style token chunks) crosses the tunnel chunk by chunk.

home's ``stream`` service sends one chunked-encoding chunk every 50 ms; the laptop reads
it through ``peerup proxy`` (via its daemon) and the relay, noting when each chunk
arrives. A tunnel that buffered the body would deliver everything at the end.
"""

from __future__ import annotations

import json
import statistics

from e2e_harness import Network, read_chunked

TOKENS = 20  # as in token_server.py
INTERVAL_S = 0.05


def test_streamed_response_arrives_chunk_by_chunk(net: Network) -> None:
    _, port = net.laptop.start_proxy(net.home.peer_id, "stream")

    chunks = read_chunked(port)

    tokens = [json.loads(p)["response"] for _, p in chunks]
    assert tokens == [f"tok{i}" for i in range(TOKENS)] + [""]
    arrivals = [t for t, _ in chunks[:TOKENS]]
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    spread = arrivals[-1] - arrivals[0]
    detail = f"gaps (ms): {[round(g * 1000) for g in gaps]}"
    # 19 gaps of 50 ms: the tokens must arrive over ~0.95 s, not in one burst.
    assert spread >= (TOKENS - 1) * INTERVAL_S * 0.8, detail
    assert 0.03 <= statistics.median(gaps) <= 0.1, detail
    assert sum(g < 0.01 for g in gaps) <= 2, detail
    status = net.laptop.status()["daemon"]
    paths = {p["peer_id"]: p["path"] for p in status["peers"]}
    assert paths.get(net.home.peer_id) == "relayed"
