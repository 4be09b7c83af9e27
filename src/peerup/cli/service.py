"""``peerup service add|list|remove|enable|disable``: edit the services in config.yaml.

Edits keep the user's comments and key order; a running daemon picks them up when it
sees the file change (or on SIGHUP).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from peerup.cli import common, units
from peerup.config import load, paths
from peerup.config.schema import ServiceConfig, check_service_name, split_host_port
from peerup.core.errors import ConfigError
from peerup.core.peer_id import PeerId


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("service", help="manage exposed services")
    ssub = p.add_subparsers(dest="service_command", metavar="ACTION")
    ssub.required = True
    a = ssub.add_parser("add", help="expose a local TCP service")
    a.add_argument("name", help="service name, e.g. ssh")
    a.add_argument("local_address", help="host:port, e.g. 127.0.0.1:22")
    a.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="PEER",
        help="only this peer (peer ID or name) may use it (repeatable; default: "
        "all authorized)",
    )
    a.add_argument("--disabled", action="store_true", help="add it disabled")
    common.add_config_arg(a)
    a.set_defaults(run=run_add)
    lst = ssub.add_parser("list", help="list services")
    common.add_config_arg(lst)
    common.add_json_arg(lst)
    lst.set_defaults(run=run_list)
    for name, helptext, fn in (
        ("remove", "remove a service", run_remove),
        ("enable", "enable a service", run_enable),
        ("disable", "disable a service", run_disable),
    ):
        c = ssub.add_parser(name, help=helptext)
        c.add_argument("name")
        common.add_config_arg(c)
        c.set_defaults(run=fn)
    units.register(ssub)  # install / uninstall: run the daemon under systemd


def _path(args: argparse.Namespace) -> Path:
    return paths.find_config(args.config)


def run_add(args: argparse.Namespace, io: common.CliIO) -> int:
    try:
        check_service_name(args.name)
    except ConfigError as exc:
        raise common.UsageError(exc.reason, hint=exc.hint) from None
    try:
        split_host_port(args.local_address)
    except ValueError as exc:
        raise common.UsageError(
            str(exc), hint="write host:port, e.g. 127.0.0.1:22 or [::1]:22"
        ) from None
    path = _path(args)
    allowed: list[PeerId] = []
    if args.allow:
        config = load.load_node(path)
        for text in args.allow:
            try:
                peer = config.resolve_name(text)
            except ConfigError as exc:
                raise common.UsageError(
                    f"--allow {text!r} is neither a name from {path} nor a peer ID",
                    hint=exc.hint,
                ) from None
            if peer not in allowed:
                allowed.append(peer)
    load.add_service(
        path,
        ServiceConfig(args.name, args.local_address, not args.disabled, tuple(allowed)),
    )
    io.out(f"service {args.name} -> {args.local_address} added")
    return 0


def run_list(args: argparse.Namespace, io: common.CliIO) -> int:
    config = common.load_config(args)
    services: list[dict[str, Any]] = [
        {
            "name": s.name,
            "local_address": s.local_address,
            "enabled": s.enabled,
            "allowed_peers": [str(p) for p in s.allowed_peers],
        }
        for s in config.services
    ]
    if args.json:
        io.json({"services": services})
        return 0
    if not services:
        io.out("no services (add one with `peerup service add NAME HOST:PORT`)")
    for s in services:
        state = "enabled" if s["enabled"] else "disabled"
        only = f" (only {len(s['allowed_peers'])} peers)" if s["allowed_peers"] else ""
        io.out(f"{s['name']:16} {s['local_address']:24} {state}{only}")
    return 0


def run_remove(args: argparse.Namespace, io: common.CliIO) -> int:
    load.remove_service(_path(args), args.name)
    io.out(f"service {args.name} removed")
    return 0


def run_enable(args: argparse.Namespace, io: common.CliIO) -> int:
    load.set_service_enabled(_path(args), args.name, True)
    io.out(f"service {args.name} enabled")
    return 0


def run_disable(args: argparse.Namespace, io: common.CliIO) -> int:
    load.set_service_enabled(_path(args), args.name, False)
    io.out(f"service {args.name} disabled")
    return 0
