"""Port-mapping helpers that run inside a NAT lab namespace (``natlab exec HOST -- …``).

``stun IP PORT``: a STUN binding responder (RFC 5389 section 7.3.1 answer with a
MAPPED-ADDRESS) for miniupnpd's ``ext_perform_stun`` check. It answers every request
from the endpoint it was sent to, change-request flags or not, which tells miniupnpd
that its WAN address is public and unfiltered. miniupnpd needs that here because the
lab's internet uses the documentation ranges (198.51.100.0/24), which it counts as
reserved and will not map for; a real ISP address passes without it.

``map METHOD PORT``: one net.portmap.PortMapper with only METHOD (pcp, natpmp, upnp)
for TCP PORT: prints the result as one JSON line once mapped (or failed), then waits
for a line on standard input, removes the mapping, and prints the final result.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import struct
import sys

from peerup.net.portmap import Outcome, PortMapConfig, PortMapper, describe


def stun(ip: str, port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((ip, port))
    print("ready", flush=True)
    while True:
        data, (peer_ip, peer_port) = sock.recvfrom(2048)
        if len(data) < 20 or data[:2] != b"\x00\x01":  # a Binding request
            continue
        attr = struct.pack(
            "!HHxBH4s", 0x0001, 8, 1, peer_port, socket.inet_aton(peer_ip)
        )
        reply = b"\x01\x01" + struct.pack("!H", len(attr)) + data[4:20] + attr
        sock.sendto(reply, (peer_ip, peer_port))


def _line(mapper: PortMapper) -> str:
    result = mapper.result
    return json.dumps(
        {
            "outcome": result.outcome.value,
            "line": describe(result),
            "result": dataclasses.asdict(result) | {"outcome": result.outcome.value},
        }
    )


async def map_port(method: str, port: int) -> None:
    settled = asyncio.Event()
    mapper = PortMapper(
        port,
        PortMapConfig(methods=(method,)),
        on_change=lambda r: r.outcome is not Outcome.DISCOVERING and settled.set(),
    )
    mapper.start()
    await settled.wait()
    print(_line(mapper), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await mapper.aclose()
    print(_line(mapper), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "stun":
        stun(sys.argv[2], int(sys.argv[3]))
    else:
        asyncio.run(map_port(sys.argv[2], int(sys.argv[3])))
