"""``peerup relay setup|serve|authorize|deauthorize|list-peers|info``.

``setup`` asks before overwriting an existing config, and only on a terminal (else an
``error:`` naming ``--force``); ``serve`` fails with one line when a listen port is
taken (another relay or daemon), naming the config to change.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

import segno

from peerup.app.allowlist import Allowlist
from peerup.app.relay_server import OPEN_RELAY_WARNING, RelayServer, shareable
from peerup.cli import common
from peerup.cli.init_wizard import ask, listen_addrs
from peerup.config import files, identity_store, load, paths
from peerup.config.schema import RelayServerConfig
from peerup.core.errors import ConfigError, NotFound
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.multiaddr import Multiaddr
from peerup.core.peer_id import PeerId

CONFIG_NAME = "relay-server.yaml"
DEFAULT_LISTEN = ["/ip4/0.0.0.0/tcp/7777", "/ip6/::/tcp/7777"]
HEADER = "# peer-up relay_authorized_keys: peers allowed to use this relay\n"


def default_dir() -> Path:
    return paths.default_config_dir() / "relay"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("relay", help="run your own relay (on a small VPS)")
    rsub = p.add_subparsers(dest="relay_command", metavar="ACTION")
    rsub.required = True
    s = rsub.add_parser(
        "setup", help="write relay-server.yaml, a key and the allowlist"
    )
    s.add_argument("--dir", type=Path, help=f"directory (default: {default_dir()})")
    s.add_argument("--listen", action="append", help="listen multiaddr (repeatable)")
    s.add_argument(
        "--open", action="store_true", help="let anyone use the relay (not advised)"
    )
    s.add_argument("--non-interactive", action="store_true")
    s.add_argument("--force", action="store_true", help="overwrite an existing config")
    s.set_defaults(run=run_setup)
    for name, helptext, fn in (
        ("serve", "run the relay", run_serve),
        ("list-peers", "list authorized peers", run_list),
        ("info", "peer ID, addresses to share, QR code", run_info),
    ):
        c = rsub.add_parser(name, help=helptext)
        c.add_argument(
            "--config",
            type=Path,
            help=f"relay config (default: {default_dir()}/{CONFIG_NAME})",
        )
        common.add_json_arg(c)
        c.set_defaults(run=fn, log_level="INFO" if name == "serve" else None)
    a = rsub.add_parser("authorize", help="allow a peer to use the relay (live)")
    a.add_argument("peer_id")
    a.add_argument("comment", nargs="?")
    a.add_argument("--config", type=Path)
    a.set_defaults(run=run_authorize)
    d = rsub.add_parser("deauthorize", help="remove a peer from the relay's allowlist")
    d.add_argument("peer_id")
    d.add_argument("--config", type=Path)
    d.set_defaults(run=run_deauthorize)


def _config(args: argparse.Namespace) -> RelayServerConfig:
    path = args.config
    if path is None:
        for candidate in (Path(CONFIG_NAME), default_dir() / CONFIG_NAME):
            if candidate.exists():
                path = candidate
                break
        else:
            raise ConfigError(
                "no relay config found",
                hint="run `peerup relay setup` or pass --config",
            )
    return load.load_relay(path)


def run_setup(args: argparse.Namespace, io: common.CliIO) -> int:
    listen = listen_addrs(args.listen, tuple(DEFAULT_LISTEN))
    directory: Path = args.dir or default_dir()
    path = directory / CONFIG_NAME
    if path.exists() and not args.force:
        if args.non_interactive:
            raise ConfigError(
                "relay config exists",
                path=str(path),
                hint="use --force to overwrite, or another --dir",
            )
        answer = ask(
            io,
            f"{path} exists. Overwrite? [y/N] ",
            command="peerup relay setup",
            what=f"whether to overwrite {path}",
            hint="pass --force to overwrite it, or use another --dir",
        )
        if answer.strip().lower() not in ("y", "yes"):
            io.out("left unchanged")
            return 1
    text = load.render_relay_config(listen)
    if args.open:
        text = text.replace("enforce_allowlist: true", "enforce_allowlist: false")
    files.write_atomic(path, text)
    config = load.load_relay(path)
    key, created = identity_store.load_or_create(config.identity_key)
    if not config.authorized_keys.exists():
        files.write_atomic(config.authorized_keys, HEADER)
    peer = PeerId.from_public_key(key.public_key)
    io.out(f"relay config: {path}")
    io.out(f"relay key:    {config.identity_key} ({'created' if created else 'kept'})")
    io.out(f"relay peer ID: {peer}")
    if args.open:
        io.err(OPEN_RELAY_WARNING)
    io.out(
        "next: `peerup relay authorize <peer-id>` for each of your machines, then "
        f"`peerup relay serve --config {path}`"
    )
    return 0


def run_serve(args: argparse.Namespace, io: common.CliIO) -> int:
    config = _config(args)

    async def main() -> None:
        server = RelayServer(config)
        addrs = await server.start()
        io.out("=" * 72)
        io.out(f"peer-up relay {server.host.peer_id}")
        io.out("Give your machines one of these addresses (peerup init --relay …):")
        for addr in addrs:
            io.out(f"  {addr}")
        mode = (
            ("allowlist " + str(config.authorized_keys))
            if config.enforce_allowlist
            else "OPEN (anyone)"
        )
        io.out(f"Access: {mode}")
        io.out("=" * 72)
        if not config.enforce_allowlist:
            io.err(OPEN_RELAY_WARNING)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.aclose()

    common.run(main())
    return 0


def _allowlist(config: RelayServerConfig) -> Allowlist:
    allowlist = Allowlist(config.authorized_keys)
    allowlist.load()
    return allowlist


def run_authorize(args: argparse.Namespace, io: common.CliIO) -> int:
    try:
        peer = PeerId.from_string(args.peer_id)
    except ValueError as exc:
        raise common.UsageError(str(exc)) from None
    comment: str | None = args.comment
    if comment is not None and ("\n" in comment or "\r" in comment):
        raise common.UsageError("the comment must fit on one line")
    allowlist = _allowlist(_config(args))
    if allowlist.add(peer, comment=comment):
        io.out(f"authorized: {peer}")
    elif comment is not None and allowlist.update(peer, comment=comment):
        io.out(f"already authorized: {peer} (comment updated)")
    else:
        io.out(f"already authorized: {peer}")
    return 0


def run_deauthorize(args: argparse.Namespace, io: common.CliIO) -> int:
    try:
        peer = PeerId.from_string(args.peer_id)
    except ValueError as exc:
        raise common.UsageError(str(exc)) from None
    if not _allowlist(_config(args)).remove(peer):
        raise NotFound(
            f"{peer} is not authorized on this relay",
            hint="`peerup relay list-peers` shows who is",
        )
    io.out(f"deauthorized: {peer}")
    return 0


def run_list(args: argparse.Namespace, io: common.CliIO) -> int:
    entries = _allowlist(_config(args)).entries()
    if args.json:
        io.json(
            {
                "peers": [
                    {"peer_id": str(e.peer_id), "comment": e.comment} for e in entries
                ]
            }
        )
        return 0
    for e in entries:
        io.out(f"{e.peer_id}" + (f"  # {e.comment}" if e.comment else ""))
    if not entries:
        io.out("no authorized peers")
    return 0


def run_info(args: argparse.Namespace, io: common.CliIO) -> int:
    config = _config(args)
    key: Ed25519PrivateKey = identity_store.load(config.identity_key)
    peer = PeerId.from_public_key(key.public_key)
    addrs = shareable([Multiaddr.parse(a) for a in config.listen], peer)
    if args.json:
        io.json({"peer_id": str(peer), "multiaddrs": [str(a) for a in addrs]})
        return 0
    io.out(f"Peer ID: {peer}")
    io.out("Addresses for `peerup init --relay`:")
    for addr in addrs:
        io.out(f"  {addr}")
    if addrs:
        io.out("")
        segno.make(str(addrs[0]), error="l").terminal(out=io.stdout, compact=True)  # type: ignore[arg-type]
    return 0
