"""``peerup name set|remove|list``: friendly names for peer IDs in ``config.yaml``.

A name can stand for a peer ID in every command (``peerup proxy home ssh 2222``) and in
a service's ``allowed_peers``. Edits keep the file's comments and order.
"""

from __future__ import annotations

import argparse

from peerup.cli import common
from peerup.config import load, paths
from peerup.config.schema import check_peer_name
from peerup.core.errors import ConfigError
from peerup.core.peer_id import PeerId


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("name", help="friendly names for peer IDs")
    nsub = p.add_subparsers(dest="name_command", metavar="ACTION")
    nsub.required = True
    s = nsub.add_parser("set", help="name a peer (or rename: the name moves)")
    s.add_argument("name")
    s.add_argument("peer_id")
    common.add_config_arg(s)
    s.set_defaults(run=run_set)
    r = nsub.add_parser("remove", help="forget a name")
    r.add_argument("name")
    common.add_config_arg(r)
    r.set_defaults(run=run_remove)
    lst = nsub.add_parser("list", help="list names")
    common.add_config_arg(lst)
    common.add_json_arg(lst)
    lst.set_defaults(run=run_list)


def run_set(args: argparse.Namespace, io: common.CliIO) -> int:
    try:
        check_peer_name(args.name, f"names.{args.name}")
    except ConfigError as exc:
        raise common.UsageError(exc.reason, hint=exc.hint) from None
    try:
        peer = PeerId.from_string(args.peer_id)
    except ValueError as exc:
        raise common.UsageError(str(exc), hint="peer IDs look like 12D3KooW…") from None
    load.set_name(paths.find_config(args.config), args.name, peer)
    io.out(f"{args.name} = {peer}")
    return 0


def run_remove(args: argparse.Namespace, io: common.CliIO) -> int:
    load.remove_name(paths.find_config(args.config), args.name)
    io.out(f"name {args.name} removed")
    return 0


def run_list(args: argparse.Namespace, io: common.CliIO) -> int:
    config = common.load_config(args)
    names = {name: str(peer) for name, peer in config.names}
    if args.json:
        io.json({"names": names})
        return 0
    if not names:
        io.out("no names (add one with `peerup name set NAME PEER_ID`)")
    for name, peer in names.items():
        io.out(f"{name:16} {peer}")
    return 0
