"""Everyday commands: daemon, proxy, status, ping, traceroute, whoami, resolve, version,
config validate/show.

Commands that need the network use the running daemon through its API; only when no
daemon runs do they start a node of their own (never two hosts with one key at once).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from typing import Any

from peerup import __version__, native
from peerup.app import daemon as daemon_mod
from peerup.app.allowlist import Allowlist
from peerup.app.api import ApiClient
from peerup.app.node import Node, ProxyOutcome
from peerup.cli import common
from peerup.config import identity_store
from peerup.config.schema import NodeConfig
from peerup.core.errors import ApiError, Error
from peerup.core.multiaddr import Multiaddr
from peerup.core.peer_id import PeerId


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "daemon", help="run the node: listen, keep relays, expose services"
    )
    common.add_config_arg(p)
    p.set_defaults(run=run_daemon, log_level="INFO")

    p = sub.add_parser("proxy", help="a local port for a service on another peer")
    p.add_argument("peer", help="peer ID, name, or multiaddr ending in /p2p/<peer ID>")
    p.add_argument("service", help="service name, e.g. ssh")
    p.add_argument("port", type=int, help="local port to listen on (0: any)")
    p.add_argument(
        "--bind", default="127.0.0.1", help="local address (default 127.0.0.1)"
    )
    common.add_config_arg(p)
    p.set_defaults(run=run_proxy)

    p = sub.add_parser("status", help="this node's state (live when the daemon runs)")
    common.add_config_arg(p)
    common.add_json_arg(p)
    p.set_defaults(run=run_status)

    p = sub.add_parser("ping", help="round trips to a peer over /pingpong/1.0.0")
    p.add_argument("peer")
    p.add_argument("-c", "--count", type=int, default=4)
    p.add_argument("--interval", type=float, default=1.0, help="seconds between pings")
    common.add_config_arg(p)
    common.add_json_arg(p)
    p.set_defaults(run=run_ping)

    p = sub.add_parser("traceroute", help="the relay hop and the peer, with RTTs")
    p.add_argument("peer")
    common.add_config_arg(p)
    common.add_json_arg(p)
    p.set_defaults(run=run_traceroute)

    p = sub.add_parser("whoami", help="print this node's peer ID")
    common.add_config_arg(p)
    common.add_json_arg(p)
    p.set_defaults(run=run_whoami)

    p = sub.add_parser("resolve", help="turn a name into a peer ID")
    p.add_argument("name")
    common.add_config_arg(p)
    common.add_json_arg(p)
    p.set_defaults(run=run_resolve)

    p = sub.add_parser("version", help="print the version")
    common.add_json_arg(p)
    p.set_defaults(run=run_version)

    p = sub.add_parser("config", help="check or show the config")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION")
    csub.required = True
    v = csub.add_parser("validate", help="check the config and the files it names")
    common.add_config_arg(v)
    common.add_json_arg(v)
    v.set_defaults(run=run_config_validate)
    s = csub.add_parser("show", help="print the effective config")
    common.add_config_arg(s)
    common.add_json_arg(s)
    s.set_defaults(run=run_config_show)


def _client(config: NodeConfig) -> ApiClient | None:
    client = daemon_mod.client_for(config)
    return client if client.is_running() else None


async def _own_node(config: NodeConfig) -> Node:
    """A node for one command, when no daemon runs (no listening, relays only)."""
    key = identity_store.load(config.identity_key)
    allowlist = Allowlist(config.authorized_keys)
    node = Node(key, gate=allowlist.gate() if config.enforce_allowlist else None)
    node.relay_addrs.extend(Multiaddr.parse(r) for r in config.relays)
    return node


def _authorized(config: NodeConfig) -> list[Any]:
    allowlist = Allowlist(config.authorized_keys)
    allowlist.load()
    return list(allowlist.entries())


def _resolve(config: NodeConfig, text: str) -> PeerId:
    return daemon_mod.parse_peer_arg(config, text)[0]


# --- daemon -------------------------------------------------------------------------


def run_daemon(args: argparse.Namespace, io: common.CliIO) -> int:
    config = common.load_config(args)
    if _client(config) is not None:
        raise Error(
            "a daemon already runs for this config (never two hosts with one key)"
        )

    async def main() -> None:
        d = daemon_mod.Daemon(config)
        await d.start()
        io.out(f"peerup daemon {d.peer_id}")
        for addr in d.node.host.addrs_with_id():
            io.out(f"  listening on {addr}")
        io.out(f"  services: {', '.join(sorted(d.node.services)) or '(none)'}")
        io.out(f"  API: {d.api.socket_path}")
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, d.reload)
        waiter = asyncio.ensure_future(d._stop.wait())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        stopper.cancel()
        await d.aclose()

    common.run(main())
    return 0


# --- proxy --------------------------------------------------------------------------


def _print_outcome(io: common.CliIO, outcome: ProxyOutcome) -> None:
    if outcome.ok:
        io.err(
            f"connection closed ({outcome.path}, {outcome.bytes_out} B out, "
            f"{outcome.bytes_in} B in)"
        )
    else:
        assert outcome.failure is not None
        io.err(f"error: {outcome.failure.value} ({outcome.detail})")


def _report_daemon_proxy(
    io: common.CliIO,
    client: ApiClient,
    proxy_id: str,
    stop_signals: set[signal.Signals],
) -> None:
    """Until a stop signal: print why each connection through the proxy failed."""
    seen = 0
    while signal.sigtimedwait(stop_signals, 0.5) is None:
        try:
            proxies = client.call("GET", "/v1/proxies")["proxies"]
        except ApiError as exc:
            io.err(f"error: lost the daemon: {exc}")
            return
        mine = [p for p in proxies if p["id"] == proxy_id]
        if not mine:
            io.err("error: the daemon closed this proxy")
            return
        if mine[0]["failures"] > seen:
            seen = mine[0]["failures"]
            io.err(f"error: {mine[0]['last_failure']}")


def run_proxy(args: argparse.Namespace, io: common.CliIO) -> int:
    config = common.load_config(args)
    peer = _resolve(config, args.peer)
    client = _client(config)
    if client is not None:
        answer = client.call(
            "POST",
            "/v1/connect",
            {
                "peer": args.peer,
                "service": args.service,
                "port": args.port,
                "bind": args.bind,
            },
        )
        io.out(
            f"proxy {answer['listen']} -> {args.peer}/{args.service} (via the daemon); "
            "Ctrl-C to stop"
        )
        stop_signals = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
        _report_daemon_proxy(io, client, str(answer["id"]), stop_signals)
        with contextlib.suppress(ApiError):
            client.call("DELETE", f"/v1/connect/{answer['id']}")
        return 0

    async def main() -> None:
        node = await _own_node(config)
        daemon_mod.resolve_target(config, node, args.peer)
        try:
            server, _ = await node.start_proxy(
                peer,
                args.service,
                args.port,
                args.bind,
                lambda o: _print_outcome(io, o),
            )
        except OSError as exc:
            await node.aclose()
            raise common.UsageError(
                f"cannot listen on {args.bind}:{args.port}: {exc.strerror or exc}"
            ) from None
        port = server.sockets[0].getsockname()[1]
        io.out(
            f"proxy {args.bind}:{port} -> {args.peer}/{args.service}; Ctrl-C to stop"
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            server.close()
            await node.aclose()

    common.run(main())
    return 0


# --- status, ping, traceroute ---------------------------------------------------------


def run_status(args: argparse.Namespace, io: common.CliIO) -> int:
    config = common.load_config(args)
    key = identity_store.load(config.identity_key)
    result: dict[str, Any] = {
        "peer_id": str(PeerId.from_public_key(key.public_key)),
        "config": str(config.path),
        "relays": list(config.relays),
        "services": [
            {"name": s.name, "local_address": s.local_address, "enabled": s.enabled}
            for s in config.services
        ],
        "authorized_peers": len(_authorized(config)),
        "daemon": None,
    }
    client = _client(config)
    if client is not None:
        result["daemon"] = client.call("GET", "/v1/status")
    if args.json:
        io.json(result)
        return 0
    io.out(f"Peer ID:  {result['peer_id']}")
    io.out(f"Config:   {result['config']}")
    io.out(f"Relays:   {', '.join(result['relays']) or '(none)'}")
    for s in result["services"]:
        io.out(
            f"Service:  {s['name']} -> {s['local_address']}"
            f"{'' if s['enabled'] else ' (disabled)'}"
        )
    io.out(f"Authorized peers: {result['authorized_peers']}")
    live = result["daemon"]
    if live is None:
        io.out("Daemon:   not running (start it with `peerup daemon`)")
        return 0
    io.out(f"Daemon:   running (pid {live['pid']})")
    for r in live["relays"]:
        state = "reserved" if r["reserved"] else f"not reserved ({r['last_error']})"
        io.out(f"  relay {r['relay']}: {state}")
    for peer in live["peers"]:
        rtt = f", rtt {peer['rtt_ms']} ms" if peer["rtt_ms"] else ""
        io.out(f"  peer {peer['name'] or peer['peer_id']}: {peer['path']}{rtt}")
    for proxy in live["proxies"]:
        io.out(f"  proxy {proxy['listen']} -> {proxy['peer']}/{proxy['service']}")
    return 0


def run_ping(args: argparse.Namespace, io: common.CliIO) -> int:
    if args.count < 1:
        raise common.UsageError("--count must be at least 1")
    config = common.load_config(args)
    peer = _resolve(config, args.peer)
    client = _client(config)
    if client is not None:
        result = client.call(
            "POST",
            "/v1/ping",
            {"peer": str(peer), "count": args.count, "interval": args.interval},
        )
    else:

        async def main() -> dict[str, Any]:
            node = await _own_node(config)
            try:
                return await daemon_mod.ping_peer(node, peer, args.count, args.interval)
            finally:
                await node.aclose()

        result = common.run(main())
    if args.json:
        io.json(result)
    else:
        for i, rtt in enumerate(result["rtts_ms"], 1):
            io.out(f"pong from {args.peer}: seq={i} time={rtt} ms ({result['path']})")
        io.out(
            f"{result['sent']} sent, {result['received']} received"
            + (f", median {result['median_ms']} ms" if result["median_ms"] else "")
        )
        for err in result["errors"][:3]:
            io.err(f"error: {err}")
    return 0 if result["received"] else 1


def run_traceroute(args: argparse.Namespace, io: common.CliIO) -> int:
    config = common.load_config(args)
    peer = _resolve(config, args.peer)
    client = _client(config)
    if client is not None:
        result = client.call("POST", "/v1/traceroute", {"peer": str(peer)})
    else:

        async def main() -> dict[str, Any]:
            node = await _own_node(config)
            try:
                return await daemon_mod.traceroute(node, peer)
            finally:
                await node.aclose()

        result = common.run(main())
    if args.json:
        io.json(result)
        return 0
    io.out(f"traceroute to {args.peer} ({result['path']})")
    for hop in result["hops"]:
        rtt = f"{hop['rtt_ms']} ms" if hop["rtt_ms"] is not None else "*"
        io.out(f" {hop['hop']}  {hop['what']:5}  {hop['addr']}  {rtt}")
    return 0


# --- identity and config --------------------------------------------------------------


def run_whoami(args: argparse.Namespace, io: common.CliIO) -> int:
    config = common.load_config(args)
    key = identity_store.load(config.identity_key)
    peer = PeerId.from_public_key(key.public_key)
    if args.json:
        io.json({"peer_id": str(peer)})
    else:
        io.out(str(peer))
    return 0


def run_resolve(args: argparse.Namespace, io: common.CliIO) -> int:
    config = common.load_config(args)
    peer = _resolve(config, args.name)
    if args.json:
        io.json({"name": args.name, "peer_id": str(peer)})
    else:
        io.out(str(peer))
    return 0


def run_version(args: argparse.Namespace, io: common.CliIO) -> int:
    data_path = native.status()
    if args.json:
        io.json(
            {
                "version": __version__,
                "compiled": data_path.compiled,
                "data_path": data_path.reason,
            }
        )
    else:
        io.out(f"peerup {__version__}")
        io.out(f"data path: {data_path.reason}")
    return 0


def run_config_validate(args: argparse.Namespace, io: common.CliIO) -> int:
    config = common.load_config(args)
    identity_store.load(config.identity_key)
    entries = _authorized(config)
    result = {
        "config": str(config.path),
        "ok": True,
        "authorized_peers": len(entries),
        "services": len(config.services),
    }
    if args.json:
        io.json(result)
    else:
        io.out(
            f"{config.path}: ok ({len(config.services)} services, "
            f"{len(entries)} authorized peers)"
        )
    return 0


def run_config_show(args: argparse.Namespace, io: common.CliIO) -> int:
    config = common.load_config(args)
    shown = {
        "path": str(config.path),
        "identity_key": str(config.identity_key),
        "listen": list(config.listen),
        "relays": list(config.relays),
        "network_name": config.network_name,
        "authorized_keys": str(config.authorized_keys),
        "enforce_allowlist": config.enforce_allowlist,
        "services": {
            s.name: {
                "local_address": s.local_address,
                "enabled": s.enabled,
                "allowed_peers": [str(p) for p in s.allowed_peers],
            }
            for s in config.services
        },
        "names": {n: str(p) for n, p in config.names},
    }
    io.out(json.dumps(shown, indent=2) if args.json else _yamlish(shown))
    return 0


def _yamlish(obj: dict[str, Any], indent: int = 0) -> str:
    lines = []
    for key, value in obj.items():
        if isinstance(value, dict):
            lines.append(" " * indent + f"{key}:")
            lines.append(
                _yamlish(value, indent + 2) if value else " " * (indent + 2) + "{}"
            )
        elif isinstance(value, list):
            lines.append(" " * indent + f"{key}: {json.dumps(value)}")
        else:
            lines.append(" " * indent + f"{key}: {value}")
    return "\n".join(lines)
