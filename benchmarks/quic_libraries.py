"""QUIC libraries side by side on loopback (issue 14, item 1: "measure first").

For each candidate (``aioquic``, ``qh3``; ``aiopquic`` is not on PyPI), with uvloop,
ALPN ``libp2p`` and a self-signed ECDSA certificate: the median time of 20 new
connections (handshake done), and one stream's bulk throughput (client to server,
until the server's acknowledgement of the end), at the default datagram size (1280 or
1200 bytes, the Internet-safe minimum), at 1452 (a 1500-byte Ethernet path) and at
8192 (loopback's MTU is 65536, which path MTU discovery would find). Also whether the
library can do what libp2p needs: a server that asks the client for its certificate
(mutual TLS; libp2p/specs tls/tls.md requires it).

Usage: pip install aioquic qh3; python benchmarks/quic_libraries.py [--mb 100]
Prints JSON, then a table.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib
import inspect
import json
import os
import ssl
import sys
import tempfile
import time
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

LIBRARIES = ("aioquic", "qh3")
DATAGRAMS = (None, 1452, 8192)
WINDOW = 16 * 1024 * 1024


def _cert(directory: str) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    c, k = os.path.join(directory, "c.pem"), os.path.join(directory, "k.pem")
    with open(c, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(k, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return c, k


def _mutual_tls(lib: str) -> bool:
    """Whether the library's TLS server can request a client certificate."""
    tls = importlib.import_module(f"{lib}.tls")
    return "push_certificate_request" in dir(tls) or "SERVER_EXPECT_CERTIFICATE" in str(
        [s.name for s in tls.State]
    )


async def _measure(
    lib: str, datagram: int | None, total: int, cert: tuple[str, str]
) -> dict[str, Any]:
    aio = importlib.import_module(f"{lib}.asyncio")
    config_cls = importlib.import_module(f"{lib}.quic.configuration").QuicConfiguration
    events = importlib.import_module(f"{lib}.quic.events")
    protocol = aio.QuicConnectionProtocol
    extra = {} if datagram is None else {"max_datagram_size": datagram}
    default = inspect.signature(config_cls).parameters["max_datagram_size"].default

    class Server(protocol):  # type: ignore[misc, valid-type]
        def quic_event_received(self, ev: Any) -> None:
            if isinstance(ev, events.StreamDataReceived) and ev.end_stream:
                self._quic.send_stream_data(ev.stream_id, b"k", end_stream=True)
                self.transmit()

    class Client(protocol):  # type: ignore[misc, valid-type]
        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, **k)
            self.done = asyncio.get_running_loop().create_future()

        def quic_event_received(self, ev: Any) -> None:
            if isinstance(ev, events.StreamDataReceived) and ev.end_stream:
                if not self.done.done():
                    self.done.set_result(None)

    sc = config_cls(is_client=False, alpn_protocols=["libp2p"], max_data=WINDOW * 4,
                    max_stream_data=WINDOW, **extra)  # fmt: skip
    sc.load_cert_chain(*cert)
    server = await aio.serve("127.0.0.1", 0, configuration=sc, create_protocol=Server)
    port = server._transport.get_extra_info("sockname")[1]
    cc = config_cls(is_client=True, alpn_protocols=["libp2p"], max_data=WINDOW * 4,
                    max_stream_data=WINDOW, **extra)  # fmt: skip
    cc.verify_mode = ssl.CERT_NONE
    connects = []
    for _ in range(20):
        t0 = time.perf_counter()
        async with aio.connect("127.0.0.1", port, configuration=cc, create_protocol=Client):
            connects.append(time.perf_counter() - t0)
    connects.sort()
    async with aio.connect("127.0.0.1", port, configuration=cc, create_protocol=Client) as c:
        sid = c._quic.get_next_available_stream_id()
        chunk = os.urandom(1 << 20)
        n = total // len(chunk)
        t0 = time.perf_counter()
        for i in range(n):
            c._quic.send_stream_data(sid, chunk, end_stream=i == n - 1)
            if i % 8 == 7:
                c.transmit()
                await asyncio.sleep(0)
        c.transmit()
        await asyncio.wait_for(c.done, 120)
        seconds = time.perf_counter() - t0
    server.close()
    return {
        "library": lib,
        "version": importlib.import_module(lib).__version__,
        "max_datagram_size": datagram or default,
        "connect_ms_median": round(connects[len(connects) // 2] * 1000, 2),
        "stream_MBps": round(n * len(chunk) / seconds / 1e6, 1),
        "mutual_tls": _mutual_tls(lib),
    }


async def main_async(mb: int) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as d:
        cert = _cert(d)
        for lib in LIBRARIES:
            try:
                importlib.import_module(lib)
            except ImportError:
                rows.append({"library": lib, "error": "not installed"})
                continue
            for datagram in DATAGRAMS:
                rows.append(await _measure(lib, datagram, mb << 20, cert))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=100)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    rows = asyncio.run(main_async(args.mb))
    print(json.dumps({"python": sys.version.split()[0], "rows": rows}, indent=2))
    print(f"\n{'library':10} {'datagram':>8} {'connect ms':>11} {'MB/s':>7}  mutual TLS")
    for r in rows:
        if "error" in r:
            print(f"{r['library']:10} {r['error']}")
            continue
        print(
            f"{r['library'] + ' ' + r['version']:10} {r['max_datagram_size']:>8} "
            f"{r['connect_ms_median']:>11} {r['stream_MBps']:>7}  "
            f"{'yes' if r['mutual_tls'] else 'no'}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
