"""``peerup proxy add|list|remove``: the lasting proxies in ``config.yaml``.

A lasting proxy is a ``proxies:`` entry (peer, service, local port, bind address) that
the daemon opens when it starts and keeps in step with the file on every reload. These
commands edit that section, keeping the user's comments and key order
(``config.load.add_proxy``/``remove_proxy``), and when a daemon runs ask it to reload
at once, so that ``add`` can say whether the port really opened.

They are registered as the sub-command ``proxies``: ``peerup proxy <peer> <service>
<port>`` (cli/node.py) already takes positional arguments, so ``main`` rewrites
``peerup proxy add|list|remove …`` to ``peerup proxies …`` before parsing
(:func:`rewrite_argv`). No peer may be named ``add``, ``list`` or ``remove``
(``schema.check_peer_name``), so the rewrite never takes a peer for a command. An entry
is removed by its local port (plus ``--bind`` when two entries share a port): the one
thing that is unique per entry and that the user typed. Not here: proxies to a
multiaddr (a lasting entry names the peer by name or peer ID; its address comes from
the relays or an earlier connection).
"""

from __future__ import annotations

import argparse
from typing import Any, Final

from peerup.app import daemon as daemon_mod
from peerup.app.api import ApiClient
from peerup.cli import common
from peerup.config import load, paths
from peerup.config.schema import DEFAULT_PROXY_BIND, NodeConfig, ProxyConfig
from peerup.core.errors import ConfigError, Error

ACTIONS: Final = frozenset({"add", "list", "remove"})
"""The words after ``peerup proxy`` that mean this module, not a peer."""


class ProxyNotOpen(Error):
    """The entry was saved, but the running daemon could not listen on its port."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


def rewrite_argv(argv: list[str]) -> list[str]:
    """``peerup [opts] proxy add|list|remove …`` → ``peerup [opts] proxies …``.

    Only the first word that is not an option counts as the command, and only when
    the next word is one of :data:`ACTIONS`; anything else is returned unchanged, so
    ``peerup proxy home ssh 2222`` still reaches the foreground proxy.
    """
    for i, token in enumerate(argv):
        if token.startswith("-"):
            continue
        if token == "proxy" and i + 1 < len(argv) and argv[i + 1] in ACTIONS:
            return [*argv[:i], "proxies", *argv[i + 1 :]]
        break
    return argv


def _lasting_port(text: str) -> int:
    """argparse type of a lasting proxy's port: 1-65535 (a fixed port, never 0)."""
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 1-65535, got {text!r}")
    return int(text)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "proxies",
        prog="peerup proxy",
        help="lasting proxies in config.yaml (peerup proxy add|list|remove)",
        description="Lasting proxies: local ports the daemon opens at start and keeps "
        "in step with config.yaml. `peerup proxies …` is the same command.",
    )
    psub = p.add_subparsers(dest="proxies_command", metavar="ACTION")
    psub.required = True

    a = psub.add_parser(
        "add",
        help="add a lasting proxy to config.yaml",
        description="Add a proxies: entry to config.yaml. A running daemon opens it "
        "at once; otherwise the daemon opens it when it starts.",
    )
    a.add_argument("peer", help="a name from `peerup name list`, or a peer ID")
    a.add_argument("service", help="the service's name on that peer, e.g. ssh")
    a.add_argument("port", type=_lasting_port, help="local port to listen on (1-65535)")
    a.add_argument(
        "--bind",
        default=DEFAULT_PROXY_BIND,
        metavar="ADDR",
        help=f"local IP address to listen on (default {DEFAULT_PROXY_BIND}; "
        "0.0.0.0 opens it to the network)",
    )
    common.add_config_arg(a)
    a.set_defaults(run=run_add)

    lst = psub.add_parser(
        "list",
        help="list the lasting proxies (and their state when the daemon runs)",
    )
    common.add_config_arg(lst)
    common.add_json_arg(lst)
    lst.set_defaults(run=run_list)

    r = psub.add_parser(
        "remove",
        help="remove the lasting proxy on PORT",
        description="Remove the proxies: entry that listens on PORT; a running daemon "
        "closes it at once. Give --bind only when two entries use PORT on different "
        "addresses.",
    )
    r.add_argument("port", type=_lasting_port, help="its local port")
    r.add_argument(
        "--bind",
        default=None,
        metavar="ADDR",
        help="its local address, when several entries use PORT",
    )
    common.add_config_arg(r)
    r.set_defaults(run=run_remove)


def _what(entry: ProxyConfig) -> str:
    return f"{entry.listen} -> {entry.peer}/{entry.service}"


def _running_client(config: NodeConfig) -> ApiClient | None:
    client = daemon_mod.client_for(config)
    return client if client.is_running() else None


def _live_entry(proxies: list[dict[str, Any]], entry: ProxyConfig) -> dict[str, Any]:
    for p in proxies:
        if p.get("source") == "config" and p.get("listen") == entry.listen:
            return p
    return {}


def run_add(args: argparse.Namespace, io: common.CliIO) -> int:
    try:
        entry = ProxyConfig(args.peer, args.service, args.port, args.bind)
    except ConfigError as exc:
        raise common.UsageError(exc.reason, hint=exc.hint) from None
    path = paths.find_config(args.config)
    config = load.load_node(path)
    config.resolve_name(entry.peer)  # an unknown name fails here, with the names
    load.add_proxy(path, entry)
    io.out(f"proxy {_what(entry)} added to {path}")
    client = _running_client(config)
    if client is None:
        io.out("the daemon opens it when it starts (`peerup daemon`)")
        return 0
    client.call("POST", "/v1/reload")
    live = _live_entry(client.call("GET", "/v1/proxies")["proxies"], entry)
    if live.get("error"):
        raise ProxyNotOpen(
            f"saved in {path}, but the daemon did not open it: {live['error']}",
            hint="free the port (or pick another: "
            f"`{load.remove_proxy_command(entry)}`, then add it again); the daemon "
            "retries at its next reload (`kill -HUP` it, or edit config.yaml)",
        )
    if not live:
        io.out("the daemon has not opened it yet (see `peerup proxy list`)")
        return 0
    io.out(f"the daemon is listening on {entry.listen}")
    return 0


def run_remove(args: argparse.Namespace, io: common.CliIO) -> int:
    path = paths.find_config(args.config)
    entry = load.remove_proxy(path, args.port, args.bind)
    io.out(f"proxy {_what(entry)} removed from {path}")
    client = _running_client(load.load_node(path))
    if client is not None:
        client.call("POST", "/v1/reload")
        io.out(f"the daemon closed {entry.listen}")
    return 0


def run_list(args: argparse.Namespace, io: common.CliIO) -> int:
    config = common.load_config(args)
    client = _running_client(config)
    live: list[dict[str, Any]] = (
        client.call("GET", "/v1/proxies")["proxies"] if client is not None else []
    )
    rows: list[dict[str, Any]] = []
    for entry in config.proxies:
        got = _live_entry(live, entry)
        if client is None:
            state = "daemon not running"
        elif not got:
            state = "pending"  # in the file, not yet seen by the daemon's reload
        else:
            state = "failed" if got.get("error") else "listening"
        rows.append(
            {
                "source": "config",
                "peer": entry.peer,
                "peer_id": str(config.resolve_name(entry.peer)),
                "service": entry.service,
                "bind": entry.bind,
                "port": entry.port,
                "listen": entry.listen,
                "state": state,
                "error": got.get("error"),
                "connections": got.get("connections"),
                "failures": got.get("failures"),
            }
        )
    for p in live:
        if p.get("source", "command") != "command":
            continue
        bind, _, port = str(p["listen"]).rpartition(":")
        rows.append(
            {
                "source": "command",
                "peer": p["peer"],
                "peer_id": p["peer"],
                "service": p["service"],
                "bind": bind,
                "port": int(port),
                "listen": p["listen"],
                "state": "listening",
                "error": None,
                "connections": p.get("connections"),
                "failures": p.get("failures"),
            }
        )
    if args.json:
        io.json({"daemon_running": client is not None, "proxies": rows})
        return 0
    if not rows:
        io.out("no lasting proxies (add one with `peerup proxy add PEER SERVICE PORT`)")
        return 0
    for row in rows:
        io.out(_list_line(row))
    if client is None and config.proxies:
        io.out("(the daemon is not running: `peerup daemon` opens them)")
    return 0


def _list_line(row: dict[str, Any]) -> str:
    target = f"{row['peer']}/{row['service']}"
    if row["state"] == "failed":
        state = f"failed: {row['error']}"
    elif row["state"] == "listening":
        state = f"listening, {row['connections']} ok, {row['failures']} failed"
    else:
        state = row["state"]
    source = "" if row["source"] == "config" else " (peerup proxy, not in config.yaml)"
    return f"{row['listen']:22} {target:32} {state}{source}"


def status_line(proxy: dict[str, Any]) -> str:
    """One proxy of the daemon's status (``GET /v1/status``) as ``peerup status``
    prints it: where it listens, where to, its source, and its error or counts."""
    source = proxy.get("source") or "command"
    head = f"proxy {proxy['listen']} -> {proxy['peer']}/{proxy['service']} ({source})"
    if proxy.get("error"):
        return f"{head}: not open: {proxy['error']}"
    last = proxy.get("last_failure")
    return f"{head}: {proxy['connections']} ok, {proxy['failures']} failed" + (
        f" (last: {last})" if last else ""
    )
