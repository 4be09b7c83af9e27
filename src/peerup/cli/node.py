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
import time
from pathlib import Path
from typing import Any

from peerup import __version__, native
from peerup.app import daemon as daemon_mod
from peerup.app import failures, pipe
from peerup.app.allowlist import Allowlist
from peerup.app.api import ApiClient
from peerup.app.node import Node, ProxyOutcome
from peerup.cli import common, proxies
from peerup.config import confirm, files, identity_store, load, paths
from peerup.config.schema import NodeConfig, split_host_port
from peerup.core.errors import ApiError, Error, NotFound
from peerup.core.multiaddr import Multiaddr
from peerup.core.peer_id import PeerId
from peerup.net import sdnotify


def _port(text: str) -> int:
    """argparse type of ``proxy``'s port: 0-65535 (0: any free port)."""
    if not (text.isascii() and text.isdigit()) or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {text!r}")
    return int(text)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "daemon",
        help="run the node: listen, keep relays, expose services (`daemon status|"
        "stop|ping|services|peers|paths|connect|disconnect` ask a running one)",
    )
    common.add_config_arg(p)
    p.set_defaults(run=run_daemon, log_level="INFO")
    _register_daemon_actions(p)

    p = sub.add_parser(
        "proxy",
        help="a local port (or, with --stdio, standard input and output) for a "
        "service on another peer; `proxy add|list|remove` edit lasting proxies",
        description="A local port for a service on another peer. With --stdio, "
        "standard input and output instead of a port, for ssh's ProxyCommand: "
        "`ProxyCommand peerup proxy --stdio home ssh`.",
    )
    p.add_argument("peer", help="peer ID, name, or multiaddr ending in /p2p/<peer ID>")
    p.add_argument("service", help="service name, e.g. ssh")
    p.add_argument(
        "port",
        type=_port,
        nargs="?",
        help="local port to listen on (0: any); not with --stdio",
    )
    p.add_argument(
        "--stdio",
        action="store_true",
        help="carry standard input and output instead of listening (ssh "
        "ProxyCommand, scp, rsync, git)",
    )
    p.add_argument(
        "--bind", default="127.0.0.1", help="local address (default 127.0.0.1)"
    )
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print only failures, not a line per connection",
    )
    common.add_config_arg(p)
    p.set_defaults(run=run_proxy)

    p = sub.add_parser("status", help="this node's state (live when the daemon runs)")
    common.add_config_arg(p)
    common.add_json_arg(p)
    p.set_defaults(run=run_status)

    p = sub.add_parser(
        "doctor",
        help="this node's NAT as peers see it, and why a peer is relayed (needs the "
        "daemon)",
    )
    common.add_config_arg(p)
    common.add_json_arg(p)
    p.set_defaults(run=run_doctor)

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
    a = csub.add_parser(
        "apply",
        help="make FILE the config (live); with --confirm-timeout, go back unless "
        "`config confirm` comes in time",
    )
    a.add_argument("file", type=Path, help="the new config.yaml")
    a.add_argument(
        "--confirm-timeout",
        type=_span,
        metavar="TIME",
        help="e.g. 5m: revert by itself unless confirmed within this time",
    )
    common.add_config_arg(a)
    a.set_defaults(run=run_config_apply)
    m = csub.add_parser(
        "migrate",
        help="rewrite the Go original's config.yaml (or relay-server.yaml) in this "
        "format; the original is kept as <file>.go-original",
    )
    m.add_argument("file", nargs="?", type=Path, help="default: the node's config")
    m.add_argument("--relay", action="store_true", help="it is a relay-server.yaml")
    m.add_argument("--dry-run", action="store_true", help="print it, write nothing")
    common.add_config_arg(m)
    m.set_defaults(run=run_config_migrate)
    c = csub.add_parser("confirm", help="keep a change made with --confirm-timeout")
    common.add_config_arg(c)
    c.set_defaults(run=run_config_confirm)
    r = csub.add_parser(
        "rollback",
        help="go back: before a pending change, else to the last-known-good config",
    )
    common.add_config_arg(r)
    r.set_defaults(run=run_config_rollback)


def _register_daemon_actions(parent: argparse.ArgumentParser) -> None:
    """The Go original's ``peerup daemon <action>`` names, on what exists here."""
    dsub = parent.add_subparsers(dest="daemon_command", metavar="ACTION")
    dsub.required = False

    def action(name: str, help_: str, run: Any, *, json_arg: bool = True) -> Any:
        a = dsub.add_parser(name, help=help_)
        common.add_config_arg(a)
        if json_arg:
            common.add_json_arg(a)
        a.set_defaults(run=run, log_level=None)
        return a

    action("start", "run the daemon in the foreground (as `peerup daemon`)",
           run_daemon, json_arg=False).set_defaults(log_level="INFO")  # fmt: skip
    action("status", "as `peerup status`", run_status)
    action("stop", "ask the running daemon to shut down", run_daemon_stop, json_arg=False)
    ping = action("ping", "as `peerup ping`", run_ping)
    ping.add_argument("peer")
    ping.add_argument("-c", "--count", type=int, default=4)
    ping.add_argument("--interval", type=float, default=1.0)
    action("services", "the services this node offers", run_daemon_services)
    peers = action("peers", "connected peers (not relays, unless --all)", run_daemon_peers)
    peers.add_argument("--all", action="store_true", help="relays too")
    action("paths", "per peer: path (direct/relayed), transport, IP version, RTT",
           run_daemon_paths)  # fmt: skip
    conn = action(
        "connect", "a proxy held by the daemon (as `peerup proxy` with a daemon)",
        run_daemon_connect, json_arg=False,
    )  # fmt: skip
    conn.add_argument("--peer", required=True, help="name or peer ID")
    conn.add_argument("--service", required=True)
    conn.add_argument("--listen", required=True, help="local address, e.g. 127.0.0.1:2222")
    disc = action("disconnect", "close a proxy the daemon holds (its ID from "
                  "`daemon status`)", run_daemon_disconnect, json_arg=False)  # fmt: skip
    disc.add_argument("proxy_id")


class _NoDaemon(Error):
    def __init__(self) -> None:
        super().__init__("the daemon is not running for this config")
        self.hint = "start it with `peerup daemon` (or `peerup service install`)"


def _running(args: argparse.Namespace) -> ApiClient:
    client = _client(common.load_config(args))
    if client is None:
        raise _NoDaemon()
    return client


def run_daemon_stop(args: argparse.Namespace, io: common.CliIO) -> int:
    _running(args).call("POST", "/v1/shutdown", {})
    io.out("shutdown requested")
    return 0


def run_daemon_services(args: argparse.Namespace, io: common.CliIO) -> int:
    config = common.load_config(args)
    client = _client(config)
    live = set(client.call("GET", "/v1/status")["services"]) if client else None
    rows = [
        {
            "name": s.name,
            "local_address": s.local_address,
            "enabled": s.enabled,
            "allowed_peers": [str(p) for p in s.allowed_peers],
            "served": None if live is None else s.name in live,
        }
        for s in config.services
    ]
    if args.json:
        io.json(rows)
        return 0
    if not rows:
        io.out("no services (add one with `peerup service add <name> <host:port>`)")
    for r in rows:
        state = "disabled" if not r["enabled"] else (
            "served" if r["served"] else "not served (no daemon)"
        )
        io.out(f"{r['name']:16} {r['local_address']:24} {state}")
    return 0


def _live_peers(args: argparse.Namespace) -> tuple[NodeConfig, list[dict[str, Any]]]:
    config = common.load_config(args)
    client = _client(config)
    if client is None:
        raise _NoDaemon()
    return config, list(client.call("GET", "/v1/status")["peers"])


def _relay_ids(config: NodeConfig) -> set[str]:
    return {str(Multiaddr.parse(r).peer_id) for r in config.relays}


def run_daemon_peers(args: argparse.Namespace, io: common.CliIO) -> int:
    config, peers = _live_peers(args)
    if not args.all:
        relays = _relay_ids(config)
        peers = [p for p in peers if p["peer_id"] not in relays]
    if args.json:
        io.json(peers)
        return 0
    if not peers:
        io.out("no peers connected" + ("" if args.all else " (--all shows relays too)"))
    for peer in peers:
        io.out(_peer_line(peer))
    return 0


def _ip_version(addr: str | None) -> str:
    if not addr:
        return "-"
    return "ipv6" if "/ip6/" in addr else "ipv4" if "/ip4/" in addr else "dns"


def run_daemon_paths(args: argparse.Namespace, io: common.CliIO) -> int:
    config, peers = _live_peers(args)
    relays = _relay_ids(config)
    rows = [
        {
            "peer": p["name"] or p["peer_id"],
            "peer_id": p["peer_id"],
            "path": p["path"],
            "transport": "tcp",
            "ip_version": _ip_version(p.get("remote_addr")),
            "rtt_ms": p.get("rtt_ms"),
            "in_use": p.get("new_streams", False),
        }
        for p in peers
        if p["peer_id"] not in relays
    ]
    if args.json:
        io.json(rows)
        return 0
    if not rows:
        io.out("no peers connected")
    for r in rows:
        rtt = f"{r['rtt_ms']:.1f} ms" if r["rtt_ms"] is not None else "-"
        mark = " (new streams)" if r["in_use"] else ""
        io.out(f"{r['peer']:20} {r['path']:8} {r['transport']} {r['ip_version']:5} "
               f"{rtt}{mark}")  # fmt: skip
    return 0


def run_daemon_connect(args: argparse.Namespace, io: common.CliIO) -> int:
    try:
        host, port = split_host_port(args.listen)
    except ValueError as exc:
        raise common.UsageError(f"--listen: {exc}") from None
    answer = _running(args).call(
        "POST",
        "/v1/connect",
        {"peer": args.peer, "service": args.service, "port": port, "bind": host},
    )
    io.out(
        f"proxy {answer['id']}: {answer['listen']} -> {args.peer}/{args.service} "
        f"(`peerup daemon disconnect {answer['id']}` closes it)"
    )
    return 0


def run_daemon_disconnect(args: argparse.Namespace, io: common.CliIO) -> int:
    _running(args).call("DELETE", f"/v1/connect/{args.proxy_id}", {})
    io.out(f"proxy {args.proxy_id} closed")
    return 0


def _client(config: NodeConfig) -> ApiClient | None:
    client = daemon_mod.client_for(config)
    return client if client.is_running() else None


async def _own_node(config: NodeConfig) -> Node:
    """A node for one command, when no daemon runs (no listening, relays only)."""
    key = identity_store.load(config.identity_key)
    allowlist = Allowlist(config.authorized_keys)
    node = Node(key, gate=allowlist.gate() if config.enforce_allowlist else None)
    node.relay_addrs.extend(Multiaddr.parse(r) for r in config.relays)
    if not config.direct_connections:
        node.keep_relayed()
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
        # systemd (Type=notify): ready now, watchdog pings, reload and stop told.
        notifier = sdnotify.Notifier()
        notifier.ready(f"peer {d.peer_id.short()}, {len(d.node.services)} service(s)")

        def reload() -> None:
            notifier.reloading()
            d.reload()
            notifier.reloaded("config reloaded")

        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, reload)
        waiter = asyncio.ensure_future(d._stop.wait())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        stopper.cancel()
        notifier.stopping()
        await d.aclose()

    common.run(main())
    return 0


# --- proxy --------------------------------------------------------------------------


def _print_outcome(io: common.CliIO, outcome: ProxyOutcome, quiet: bool) -> None:
    """A failed connection is an ``error:`` line (always); any other ends in one
    line of its own unless ``quiet``."""
    if outcome.failure is not None:
        io.err(f"error: {outcome.failure.line()}")
        if not quiet:
            io.err(f"  connection {outcome.describe()}")
    elif not quiet:
        io.err(f"connection {outcome.describe()}")


def _report_daemon_proxy(
    io: common.CliIO,
    client: ApiClient,
    proxy_id: str,
    stop_signals: set[signal.Signals],
    quiet: bool,
) -> None:
    """Until a stop signal: print each connection through the daemon's proxy as it
    ends (failures always), from the daemon's record of recent outcomes."""
    seen = 0
    while signal.sigtimedwait(stop_signals, 0.25) is None:
        try:
            proxies = client.call("GET", "/v1/proxies")["proxies"]
        except ApiError as exc:
            io.err(f"error: lost the daemon: {exc}")
            return
        mine = [p for p in proxies if p["id"] == proxy_id]
        if not mine:
            io.err("error: the daemon closed this proxy")
            return
        for item in mine[0]["recent"]:
            if item["seq"] <= seen:
                continue
            seen = item["seq"]
            failure = item["failure"]
            if failure is not None:
                hint = f" (hint: {failure['hint']})" if failure["hint"] else ""
                io.err(f"error: {failure['error']}{hint}")
                if not quiet:
                    io.err(f"  connection {item['line']}")
            elif not quiet:
                io.err(f"connection {item['line']}")


def run_proxy(args: argparse.Namespace, io: common.CliIO) -> int:
    if args.stdio and args.port is not None:
        raise common.UsageError(
            "--stdio carries standard input and output: give no port",
            hint=f"peerup proxy --stdio {args.peer} {args.service}",
        )
    if not args.stdio and args.port is None:
        raise common.UsageError(
            "give the local port to listen on (0 for any free port)",
            hint=f"peerup proxy {args.peer} {args.service} 2222, or --stdio for "
            "ssh's ProxyCommand",
        )
    config = common.load_config(args)
    peer = _resolve(config, args.peer)
    client = _client(config)
    if args.stdio:
        return _run_stdio(args, config, peer, client)
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
        _report_daemon_proxy(io, client, str(answer["id"]), stop_signals, args.quiet)
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
                lambda o: _print_outcome(io, o, args.quiet),
                label=daemon_mod.peer_label(config, args.peer),
            )
        except OSError as exc:
            await node.aclose()
            raise failures.local_listen_error(args.bind, args.port, exc) from None
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


def _run_stdio(
    args: argparse.Namespace,
    config: NodeConfig,
    peer: PeerId,
    client: ApiClient | None,
) -> int:
    """``proxy --stdio``: nothing but the service's bytes on stdout; errors on
    stderr (ssh shows them), exit 1."""

    async def via_daemon(api_client: ApiClient) -> None:
        reader, writer = await pipe.stdio_streams()
        await pipe.carry_via_daemon(api_client, args.peer, args.service, reader, writer)

    async def own_node() -> pipe.PipeResult:
        node = await _own_node(config)
        try:
            daemon_mod.resolve_target(config, node, args.peer)
            reader, writer = await pipe.stdio_streams()
            return await pipe.carry(
                node,
                peer,
                args.service,
                daemon_mod.peer_label(config, args.peer),
                reader,
                writer,
            )
        finally:
            await node.aclose()

    if client is not None:
        common.run(via_daemon(client))
        return 0
    result = common.run(own_node())
    if result.failure is not None:
        raise failures.Failed(result.failure)
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
        "proxies": [
            {"listen": f"{p.bind}:{p.port}", "peer": p.peer, "service": p.service}
            for p in config.proxies
        ],
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
        for proxy in result["proxies"]:
            io.out(
                f"Proxy:    {proxy['listen']} -> {proxy['peer']}/{proxy['service']} "
                "(opened by the daemon)"
            )
    if live is None:
        io.out("Daemon:   not running (start it with `peerup daemon`)")
        return 0
    io.out(f"Daemon:   running (pid {live['pid']})")
    for r in live["relays"]:
        state = "reserved" if r["reserved"] else f"not reserved: {r['last_error']}"
        io.out(f"  relay {r['relay']}: {state}")
        if r.get("hint"):
            io.out(f"    hint: {r['hint']}")
    observed = live.get("observed_addrs") or []
    if observed:
        io.out(f"  observed as: {', '.join(observed)}")
    mapping = live.get("port_mapping")
    if mapping:
        io.out(f"  port mapping: {mapping['line']}")
    upgrades: dict[str, str] = {}
    for peer in live["peers"]:
        io.out("  " + _peer_line(peer))
        if peer.get("upgrade"):
            upgrades[peer["peer_id"]] = peer["upgrade"]["line"]
    for peer_id, upgrade in upgrades.items():
        io.out(f"  peer {_name_or_id(live, peer_id)} upgrade: {upgrade}")
    for proxy in live["proxies"]:
        io.out("  " + proxies.status_line(proxy))
    refused = live.get("refused_streams") or {}
    if refused:
        counts = ", ".join(f"{n} {why}" for why, n in sorted(refused.items()))
        io.out(f"  refused streams: {counts} (last: {live['last_refusal']})")
    return 0


def run_doctor(args: argparse.Namespace, io: common.CliIO) -> int:
    config = common.load_config(args)
    client = _client(config)
    if client is None:
        raise ApiError(
            "doctor reads what the running daemon learned, and no daemon runs",
            hint="start it with `peerup daemon` and give it a minute with its relay",
        )
    result = client.call("GET", "/v1/doctor")
    if args.json:
        io.json(result)
        return 0
    nat = result["nat"]
    io.out(f"NAT:      {nat['summary']}")
    if nat["observed_addrs"]:
        io.out(f"  observed as: {', '.join(nat['observed_addrs'])}")
    io.out(f"  filtering: {nat['filtering']}")
    mapping = result.get("port_mapping")
    if mapping:
        io.out(f"Port mapping: {mapping['line']}")
        if mapping["fix"]:
            io.out(f"  fix: {mapping['fix']}")
    for relay in result["relays"]:
        state = "reserved" if relay["reserved"] else "not reserved"
        io.out(f"Relay:    {relay['relay']}: {state}")
    for peer in result["peers"]:
        io.out(f"Peer {peer['name'] or peer['peer_id']}: {peer['why']}")
        if peer["fix"]:
            io.out(f"  fix: {peer['fix']}")
    return 0


def _peer_line(peer: dict[str, Any]) -> str:
    """One connection: its path, whether new streams use it, RTT, open streams."""
    rtt = f", rtt {peer['rtt_ms']} ms" if peer["rtt_ms"] else ""
    parts = [peer["path"]]
    if peer.get("new_streams"):
        parts.append("new streams")
    streams = peer.get("streams") or 0
    if streams:
        parts.append(f"{streams} stream{'s' if streams != 1 else ''} open")
    return f"peer {peer['name'] or peer['peer_id']}: {', '.join(parts)}{rtt}"


def _name_or_id(live: dict[str, Any], peer_id: str) -> str:
    for peer in live["peers"]:
        if peer["peer_id"] == peer_id and peer["name"]:
            return str(peer["name"])
    return peer_id


def run_ping(args: argparse.Namespace, io: common.CliIO) -> int:
    if args.count < 1:
        raise common.UsageError("--count must be at least 1")
    config = common.load_config(args)
    _resolve(config, args.peer)  # a bad argument fails here, before any network
    client = _client(config)
    if client is not None:
        # The argument as given: the daemon resolves it, and dials a multiaddr's
        # address (not only the peer ID's known addresses and relays).
        result = client.call(
            "POST",
            "/v1/ping",
            {"peer": args.peer, "count": args.count, "interval": args.interval},
        )
    else:

        async def main() -> dict[str, Any]:
            node = await _own_node(config)
            try:
                peer = daemon_mod.resolve_target(config, node, args.peer)
                return await daemon_mod.ping_peer(
                    node,
                    peer,
                    args.count,
                    args.interval,
                    label=daemon_mod.peer_label(config, args.peer),
                )
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
    _resolve(config, args.peer)  # a bad argument fails here, before any network
    client = _client(config)
    if client is not None:
        # As given, so that the daemon dials a multiaddr's address (see run_ping).
        result = client.call("POST", "/v1/traceroute", {"peer": args.peer})
    else:

        async def main() -> dict[str, Any]:
            node = await _own_node(config)
            try:
                peer = daemon_mod.resolve_target(config, node, args.peer)
                return await daemon_mod.traceroute(
                    node, peer, label=daemon_mod.peer_label(config, args.peer)
                )
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


def _span(text: str) -> float:
    """argparse type: ``90``, ``30s``, ``10m``, ``2h``."""
    units = {"": 1, "s": 1, "m": 60, "h": 3600}
    value = text.strip().lower()
    number, unit = value.rstrip("smh"), value[len(value.rstrip("smh")) :]
    try:
        seconds = float(number) * units[unit]
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 5m)") from None
    if not 0 < seconds <= 24 * 3600:
        raise argparse.ArgumentTypeError("a confirm timeout is 1 s to 24 h")
    return seconds


def run_config_apply(args: argparse.Namespace, io: common.CliIO) -> int:
    path = paths.find_config(args.config)
    confirm.apply(path, args.file, time.time(), args.confirm_timeout)
    running = _client(load.load_node(path)) is not None
    io.out(f"applied {args.file} as {path}" + (" (the daemon applies it now)" if running else ""))
    if args.confirm_timeout is not None:
        io.out(
            f"not confirmed yet: unless `peerup config confirm` runs within "
            f"{args.confirm_timeout:g} s, the previous config comes back by itself"
        )
        if not running:
            io.err(
                "note: no daemon runs for this config; it reverts the change when it "
                "starts, if the time has passed unconfirmed"
            )
    return 0


def run_config_migrate(args: argparse.Namespace, io: common.CliIO) -> int:
    path: Path = args.file or paths.find_config(args.config)
    text, notes = load.migrate(path, relay=args.relay)
    if args.dry_run:
        io.out(text.rstrip("\n"))
        return 0
    original = path.with_name(path.name + ".go-original")
    files.write_atomic(original, path.read_text())
    files.write_atomic(path, text)
    io.out(f"migrated {path} (the original is {original})")
    for note in notes:
        io.out(f"  ignored: {note}")
    return 0


def run_config_confirm(args: argparse.Namespace, io: common.CliIO) -> int:
    path = paths.find_config(args.config)
    if not confirm.confirm(path):
        raise NotFound(
            f"no change waiting for confirmation on {path}",
            hint="`peerup config apply FILE --confirm-timeout 5m` makes one",
        )
    io.out(f"confirmed: {path} stays as it is")
    return 0


def run_config_rollback(args: argparse.Namespace, io: common.CliIO) -> int:
    path = paths.find_config(args.config)
    source = confirm.rollback(path)
    io.out(f"rolled back: {path} is {source} again (a running daemon applies it now)")
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
        "proxies": [
            {"peer": p.peer, "service": p.service, "port": p.port, "bind": p.bind}
            for p in config.proxies
        ],
    }
    io.out(json.dumps(shown, indent=2) if args.json else _yamlish(shown))
    return 0


def _yamlish(obj: dict[str, Any], indent: int = 0) -> str:
    """``obj`` as block YAML (lists in flow style); reads back as the ``--json`` form."""
    lines = []
    for key, value in obj.items():
        if isinstance(value, dict) and value:
            lines.append(" " * indent + f"{key}:")
            lines.append(_yamlish(value, indent + 2))
        elif isinstance(value, dict | list):
            # JSON is YAML's flow style: true/false/null and quoted strings.
            lines.append(" " * indent + f"{key}: {json.dumps(value)}")
        else:
            lines.append(" " * indent + f"{key}: {_yaml_scalar(value)}")
    return "\n".join(lines)


_YAML_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "null", "~", ""})


def _yaml_scalar(value: object) -> str:
    """A YAML scalar: ``true``/``false``/``null``, not Python's ``True``/``None``;
    strings YAML would read as something else are quoted."""
    if value is None or isinstance(value, bool | int | float):
        return json.dumps(value)
    text = str(value)
    if (
        text.lower() in _YAML_WORDS
        or text[0] in "!&*{}[]|>'\"%@`#,?:-"
        or ": " in text
        or " #" in text
        or text != text.strip()
        or all(c in "+-.0123456789_eExXoO" for c in text)  # 4001, 1e3, 0x1f
    ):
        return json.dumps(text)
    return text
