"""``peerup demo``: the whole product on one machine, with no setup.

An embedded relay and two nodes ("home" and "laptop") in temporary directories on
loopback. They are paired through their allowlists (and the relay's), "home" exposes a
small local HTTP service, "laptop" proxies it to a local port, and a request goes
through the tunnel. Then a third machine ("phone") with nothing set up joins with one
code: home's invite carries an enrollment at the relay (home may enroll one machine
there, ``relay authorize --may-invite``), and ``peerup join`` runs as a process of its
own with a config directory of its own, as on another machine; the phone's daemon then
fetches through the relay too. Each step is reported with its duration and the path
used. The nodes are real daemons with real config files, so with ``keep`` they can be
driven by hand with the printed commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from peerup.app.daemon import Daemon, client_for
from peerup.app.relay_server import RelayServer
from peerup.config import files, load
from peerup.config.schema import ServiceConfig
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.peer_id import PeerId

HELLO = b"hello from home, through the tunnel\n"


@dataclass(slots=True)
class DemoStep:
    name: str
    ms: float
    detail: str


@dataclass(slots=True)
class DemoResult:
    steps: list[DemoStep] = field(default_factory=list)
    ok: bool = False
    body: str = ""
    path: str = ""
    workdir: str = ""
    commands: list[str] = field(default_factory=list)


async def _serve_hello(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while (await reader.readline()).strip():
            pass
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            + f"Content-Length: {len(HELLO)}\r\nConnection: close\r\n\r\n".encode()
            + HELLO
        )
        await writer.drain()
    writer.close()


async def http_get(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data


def _write_node(base: Path, name: str, relay: str | None) -> tuple[Path, PeerId]:
    directory = base / name
    key = Ed25519PrivateKey.generate()
    files.write_atomic(directory / "identity.key", key.to_protobuf())
    files.write_atomic(directory / "authorized_keys", "# demo\n")
    text = load.render_node_config(
        identity_key="identity.key",
        listen=["/ip4/127.0.0.1/tcp/0"],
        relays=[relay] if relay else [],
        network_name="demo",
    )
    files.write_atomic(directory / "config.yaml", text)
    return directory / "config.yaml", PeerId.from_public_key(key.public_key)


@contextlib.asynccontextmanager
async def running_demo(
    report: Callable[[DemoStep], None], keep_dir: Path | None = None
) -> AsyncIterator[DemoResult]:
    """Build and run the demo; yields the result while everything is still up."""
    result = DemoResult()
    base = Path(keep_dir or tempfile.mkdtemp(prefix="peerup-demo-"))
    result.workdir = str(base)
    t0 = time.perf_counter()
    started = t0

    def step(name: str, detail: str) -> None:
        nonlocal started
        now = time.perf_counter()
        s = DemoStep(name, round((now - started) * 1000, 2), detail)
        started = now
        result.steps.append(s)
        report(s)

    stack = contextlib.AsyncExitStack()
    try:
        # 1. relay
        relay_dir = base / "relay"
        files.write_atomic(
            relay_dir / "relay-server.yaml",
            load.render_relay_config(["/ip4/127.0.0.1/tcp/0"]),
        )
        relay_cfg = load.load_relay(relay_dir / "relay-server.yaml")
        files.write_atomic(
            relay_cfg.identity_key, Ed25519PrivateKey.generate().to_protobuf()
        )
        files.write_atomic(relay_cfg.authorized_keys, "# demo\n")
        relay = RelayServer(relay_cfg)
        relay_addr = (await relay.start())[0]
        stack.push_async_callback(relay.aclose)
        step("relay", f"started {relay_addr}")

        # 2. two nodes with configs, paired
        home_cfg_path, home_id = _write_node(base, "home", str(relay_addr))
        laptop_cfg_path, laptop_id = _write_node(base, "laptop", str(relay_addr))
        relay.allowlist.add(home_id, comment="home")
        relay.allowlist.add(laptop_id, comment="laptop")
        hello = await asyncio.start_server(_serve_hello, "127.0.0.1", 0)
        stack.push_async_callback(hello.wait_closed)
        stack.callback(hello.close)
        web_port = hello.sockets[0].getsockname()[1]
        load.add_service(home_cfg_path, ServiceConfig("web", f"127.0.0.1:{web_port}"))
        load.set_name(laptop_cfg_path, "home", home_id)
        home_cfg = load.load_node(home_cfg_path)
        laptop_cfg = load.load_node(laptop_cfg_path)
        home = Daemon(home_cfg)
        laptop = Daemon(laptop_cfg)
        home.allowlist.add(laptop_id, comment="laptop")
        laptop.allowlist.add(home_id, comment="home")
        step("pair", f"home={home_id.short()} laptop={laptop_id.short()} (allowlists)")

        # 3. start both; home reserves on the relay
        await home.start()
        stack.push_async_callback(home.aclose)
        await laptop.start()
        stack.push_async_callback(laptop.aclose)
        circuit = await home.node.reserve_now(relay_addr)
        step("reserve", f"home reachable at {circuit}")

        # 4. proxy and fetch
        server, _ = await laptop.node.start_proxy(home_id, "web", 0)
        stack.callback(server.close)
        port = server.sockets[0].getsockname()[1]
        step("proxy", f"laptop 127.0.0.1:{port} -> home/web")
        answer = await http_get(port)
        conn = laptop.node.host.connection_to(home_id)
        result.path = "relayed" if conn is not None and conn.is_relayed else "direct"
        result.body = answer.partition(b"\r\n\r\n")[2].decode(errors="replace")
        result.ok = answer.endswith(HELLO)
        step("fetch", f"GET / -> {result.body.strip()!r} via {result.path} path")
        rtts = [await laptop.node.pingpong(home_id) for _ in range(3)]
        step("ping", "rtt " + ", ".join(f"{r * 1000:.2f} ms" for r, _ in rtts))

        # 5. a fresh machine joins with one code, enrolled at the relay by home
        relay.allowlist.update(home_id, may_invite=1)
        issued = await asyncio.to_thread(
            client_for(home_cfg).call,
            "POST",
            "/v1/invites",
            {"ttl_s": 600, "name": "home", "enroll": True},
        )
        step("invite", "home: `peerup invite --enroll` (with an enrollment at the relay)")
        phone_cfg_path = base / "phone" / "config.yaml"
        joined = await _join_fresh(phone_cfg_path, str(issued["code"]))
        if joined.returncode != 0:
            raise RuntimeError(f"the phone's join failed: {joined.stderr.strip()}")
        phone = Daemon(load.load_node(phone_cfg_path))
        await phone.start()
        stack.push_async_callback(phone.aclose)
        step("join", f"phone: new config and key, enrolled and paired ({phone_cfg_path})")
        phone_server, _ = await phone.node.start_proxy(home_id, "web", 0)
        stack.callback(phone_server.close)
        phone_answer = await http_get(phone_server.sockets[0].getsockname()[1])
        result.ok = result.ok and phone_answer.endswith(HELLO)
        phone_conn = phone.node.host.connection_to(home_id)
        phone_path = (
            "relayed" if phone_conn is not None and phone_conn.is_relayed else "direct"
        )
        body = phone_answer.partition(b"\r\n\r\n")[2].decode(errors="replace")
        step("fetch", f"phone: GET / -> {body.strip()!r} via {phone_path} path")
        cfg = f"--config {laptop_cfg_path}"
        peerup = _peerup_command()
        result.commands = [
            f"curl http://127.0.0.1:{port}/",
            f"{peerup} status {cfg}",
            f"{peerup} ping home {cfg}",
            f"{peerup} traceroute home {cfg}",
            f"{peerup} proxy home web 8080 {cfg}   # then: curl http://127.0.0.1:8080/",
        ]
        yield result
    finally:
        await stack.aclose()
        if keep_dir is None:
            shutil.rmtree(base, ignore_errors=True)


@dataclass(slots=True)
class _Joined:
    returncode: int
    stdout: str
    stderr: str


async def _join_fresh(config: Path, code: str) -> _Joined:
    """``peerup join`` in a process of its own, on a config that does not exist yet
    (it creates the key and config from the code), with the code on stdin."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "peerup", "join", "--non-interactive", "--name", "phone",
        "--config", str(config), "--listen", "/ip4/127.0.0.1/tcp/0",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(code.encode() + b"\n"), 60)
    return _Joined(proc.returncode or 0, out.decode(), err.decode())


def _peerup_command() -> str:
    """How to run the peerup that runs this demo (``.venv/bin/peerup`` after
    ``scripts/demo``, which is not on PATH), for the commands it suggests."""
    script = Path(sys.argv[0])
    if script.name == "peerup" and script.exists():
        return shlex.quote(str(script.resolve()))
    return f"{shlex.quote(sys.executable)} -m peerup"
