"""``peerup relay setup|serve|authorize|deauthorize|list-peers|info|invite``.

``invite [--count N] [--ttl T] [--expires D]`` makes enrollment codes of one group
(app/relay_enrollment.py), stored beside relay-server.yaml, so it works whether or not
the relay runs (a running relay picks them up); ``--non-interactive`` prints one code
per line and nothing else on standard output. ``invite list`` / ``invite revoke``.

``setup`` asks before overwriting an existing config, and only on a terminal (else an
``error:`` naming ``--force``); ``serve`` fails with one line when a listen port is
taken (another relay or daemon), naming the config to change.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
from pathlib import Path

import segno

from peerup.app import pairing
from peerup.app.allowlist import Allowlist
from peerup.app.relay_enrollment import EnrollmentFiles, relay_code
from peerup.app.relay_server import OPEN_RELAY_WARNING, RelayServer, shareable
from peerup.cli import common
from peerup.cli import invite as invite_cli
from peerup.cli.init_wizard import ask, listen_addrs
from peerup.config import files, identity_store, load, paths
from peerup.config.schema import RelayServerConfig
from peerup.core.errors import ConfigError, NotFound
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.multiaddr import Multiaddr
from peerup.core.peer_id import PeerId
from peerup.net import sdnotify, tcp

CONFIG_NAME = "relay-server.yaml"
DEFAULT_LISTEN = ["/ip4/0.0.0.0/tcp/7777", "/ip6/::/tcp/7777"]
HEADER = "# peer-up relay_authorized_keys: peers allowed to use this relay\n"
DEFAULT_RELAY_TTL_S = 3600.0


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
    a.add_argument(
        "--may-invite",
        type=int,
        metavar="N",
        help="let this member put a relay enrollment into its own invites, N times "
        "(its friends' `join` then enrolls them here; 0 takes it back)",
    )
    a.add_argument("--config", type=Path)
    a.set_defaults(run=run_authorize)
    _register_invite(rsub)
    _register_node_relays(rsub)
    v = rsub.add_parser("version", help="print the version (as `peerup version`)")
    v.set_defaults(run=run_relay_version)
    cfg = rsub.add_parser("config", help="check the relay's config")
    csub = cfg.add_subparsers(dest="relay_config_command", metavar="ACTION")
    csub.required = True
    val = csub.add_parser(
        "validate", help="check relay-server.yaml and the files it names"
    )
    val.add_argument("--config", type=Path)
    common.add_json_arg(val)
    val.set_defaults(run=run_relay_config_validate)
    d = rsub.add_parser("deauthorize", help="remove a peer from the relay's allowlist")
    d.add_argument("peer_id")
    d.add_argument("--config", type=Path)
    d.set_defaults(run=run_deauthorize)


def _register_node_relays(rsub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``relay add|list|remove``: the relays this node uses (``relays:`` in its
    config.yaml), as the Go original names them."""
    a = rsub.add_parser("add", help="use a relay (adds it to this node's config)")
    a.add_argument("multiaddr", help="/ip4/…/tcp/…/p2p/<relay peer ID>")
    common.add_config_arg(a)
    a.set_defaults(run=run_node_relay_add)
    lst = rsub.add_parser("list", help="the relays this node uses, and their state")
    common.add_config_arg(lst)
    common.add_json_arg(lst)
    lst.set_defaults(run=run_node_relay_list)
    rm = rsub.add_parser("remove", help="stop using a relay (address or peer ID)")
    rm.add_argument("relay")
    common.add_config_arg(rm)
    rm.set_defaults(run=run_node_relay_remove)


def run_node_relay_add(args: argparse.Namespace, io: common.CliIO) -> int:
    path = paths.find_config(args.config)
    if load.add_relay(path, args.multiaddr):
        io.out(f"added relay {args.multiaddr} (a running daemon reserves on it now)")
    else:
        io.out(f"already listed: {args.multiaddr}")
    return 0


def run_node_relay_remove(args: argparse.Namespace, io: common.CliIO) -> int:
    path = paths.find_config(args.config)
    try:
        load.remove_relay(path, args.relay)
    except ConfigError as exc:
        if "no relay" in str(exc):
            raise NotFound(str(exc), hint=exc.hint) from None
        raise
    io.out(f"removed relay {args.relay}")
    return 0


def run_node_relay_list(args: argparse.Namespace, io: common.CliIO) -> int:
    config = common.load_config(args)
    from peerup.app import daemon as daemon_mod

    client = daemon_mod.client_for(config)
    live: dict[str, dict[str, object]] = {}
    if client.is_running():
        for r in client.call("GET", "/v1/status")["relays"]:
            live[str(r["relay"])] = r
    rows = [
        {
            "relay": r,
            "reserved": live[r]["reserved"] if r in live else None,
            "last_error": live[r].get("last_error") if r in live else None,
        }
        for r in config.relays
    ]
    if args.json:
        io.json(rows)
        return 0
    if not rows:
        io.out("no relays (add one with `peerup relay add <multiaddr>`)")
    for row in rows:
        state = (
            "no daemon" if row["reserved"] is None
            else "reserved" if row["reserved"] else f"not reserved: {row['last_error']}"
        )  # fmt: skip
        io.out(f"{row['relay']}  ({state})")
    return 0


def run_relay_version(args: argparse.Namespace, io: common.CliIO) -> int:
    from peerup import __version__

    io.out(f"peerup {__version__} (relay: circuit relay v2)")
    return 0


def run_relay_config_validate(args: argparse.Namespace, io: common.CliIO) -> int:
    config = _config(args)
    identity_store.load(config.identity_key)
    allowlist = _allowlist(config) if config.authorized_keys.exists() else None
    result = {
        "config": str(config.path),
        "ok": True,
        "listen": list(config.listen),
        "enforce_allowlist": config.enforce_allowlist,
        "authorized_peers": len(allowlist.entries()) if allowlist else 0,
    }
    if args.json:
        io.json(result)
    else:
        io.out(
            f"{config.path}: ok ({len(config.listen)} listen address(es), "
            f"{result['authorized_peers']} authorized peers, allowlist "
            f"{'enforced' if config.enforce_allowlist else 'OFF'})"
        )
    return 0


def _span(text: str) -> float:
    """argparse type of ``--expires``: ``90s``, ``10m``, ``12h``, ``30d``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text.lower())
    if match is None or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(
            f"bad duration {text!r}: use e.g. 12h, 30d or 365d"
        )
    unit = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}[match[2] or "s"]
    return float(match[1]) * unit


def _register_invite(rsub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    i = rsub.add_parser(
        "invite",
        help="codes that enroll new machines on this relay (one group)",
        description="Make codes that let new machines use this relay: on each, "
        "`peerup join <code>` adds it to relay_authorized_keys and introduces it to "
        "the other machines enrolled with codes of the same group.",
    )
    i.add_argument("--count", type=int, default=1, help="how many codes (default 1)")
    i.add_argument(
        "--ttl",
        type=invite_cli.duration,
        default=DEFAULT_RELAY_TTL_S,
        help="how long the codes work: 10m, 2h, 1d (default 1h)",
    )
    i.add_argument(
        "--expires",
        type=_span,
        help="how long an enrolled machine stays authorized, e.g. 30d (default: "
        "until `relay deauthorize`)",
    )
    i.add_argument("--group", help="add the codes to this existing group")
    i.add_argument(
        "--addr",
        action="append",
        help="relay address to put in the codes (repeatable; default: from listen)",
    )
    i.add_argument(
        "--non-interactive",
        action="store_true",
        help="print one code per line and nothing else on standard output",
    )
    i.add_argument("--config", type=Path)
    common.add_json_arg(i)
    i.set_defaults(run=run_invite)
    isub = i.add_subparsers(dest="relay_invite_command", metavar="ACTION")
    lst = isub.add_parser("list", help="enrollment codes and their state")
    lst.add_argument("--config", type=Path)
    common.add_json_arg(lst)
    lst.set_defaults(run=run_invite_list)
    rev = isub.add_parser("revoke", help="void an enrollment code")
    rev.add_argument("invite_id", help="its ID, or the start of it (`invite list`)")
    rev.add_argument("--config", type=Path)
    common.add_json_arg(rev)
    rev.set_defaults(run=run_invite_revoke)


def _enrollment(config: RelayServerConfig) -> EnrollmentFiles:
    """The relay's enrollment codes and groups (files only: the relay may run)."""
    if not config.enforce_allowlist:
        raise ConfigError(
            "this relay is open (enforce_allowlist: false): anyone may use it, so "
            "there is nothing to enroll into",
            path=str(config.path),
            hint="set enforce_allowlist: true first",
        )
    return EnrollmentFiles(config.path.parent)


def run_invite(args: argparse.Namespace, io: common.CliIO) -> int:
    config = _config(args)
    enrollment = _enrollment(config)
    key = identity_store.load(config.identity_key)
    relay = PeerId.from_public_key(key.public_key)
    try:
        addrs = [Multiaddr.parse(a) for a in args.addr or ()] or shareable(
            [Multiaddr.parse(a) for a in config.listen], relay
        )
        if any(a.peer_id not in (None, relay) for a in addrs):
            raise ValueError("an --addr names another peer")
        invites = enrollment.create(
            args.count, args.ttl, authorization_s=args.expires, group=args.group
        )
    except ValueError as exc:
        raise common.UsageError(str(exc)) from None
    codes = [relay_code(inv, relay, addrs) for inv in invites]
    if args.non_interactive and not args.json:
        for code in codes:
            io.out(code.to_text())
        return 0
    now = enrollment.clock()
    group = invites[0].group
    if args.json:
        io.json(
            {
                "group": group,
                "relay": str(relay),
                "authorization_s": args.expires,
                "codes": [
                    {**pairing.issued_json(inv, code, now), "group": group}
                    for inv, code in zip(invites, codes, strict=True)
                ],
            }
        )
        return 0
    io.out(
        f"{len(codes)} enrollment code(s) for relay {relay.short()}, group {group} "
        f"(each works once, until {pairing.invite_json(invites[0], now)['expires_at']}):"
    )
    io.out("")
    for code in codes:
        io.out(f"  {code.to_text()}")
    io.out("")
    io.out("On each new machine: peerup join <code>")
    io.out(
        "It may then use this relay, and the machines of this group are introduced "
        "to each other."
    )
    if args.expires:
        io.out(f"Enrolled machines stay authorized for {args.expires / 86400:g} days.")
    if not addrs or all(tcp.is_loopback(a) for a in addrs):
        io.err("note: the codes name only loopback addresses (pass --addr)")
    return 0


def run_invite_list(args: argparse.Namespace, io: common.CliIO) -> int:
    invites = _enrollment(_config(args)).listed()
    if args.json:
        io.json({"invites": invites})
        return 0
    if not invites:
        io.out("no enrollment codes (`peerup relay invite` makes some)")
        return 0
    for inv in invites:
        line = (
            f"{inv['id']}  {inv['status']:8} group {inv['group']}  tries "
            f"{inv['attempts']}/{inv['max_attempts']}  expires {inv['expires_at']}"
        )
        if inv["peer"]:
            line += f"  enrolled {inv['peer']}"
        io.out(line)
    return 0


def run_invite_revoke(args: argparse.Namespace, io: common.CliIO) -> int:
    enrollment = _enrollment(_config(args))
    try:
        found = enrollment.revoke(args.invite_id)
    except ValueError as exc:
        raise common.UsageError(str(exc)) from None
    if found is None:
        raise NotFound(
            f"no enrollment code {args.invite_id!r}",
            hint="`peerup relay invite list` shows them",
        )
    invite, revoked = found
    now = enrollment.clock()
    if args.json:
        io.json({"invite": pairing.invite_json(invite, now), "revoked": revoked})
    elif revoked:
        io.out(f"revoked: {invite.id_hex}")
    else:
        io.out(f"{invite.id_hex} was already {invite.status(now)}")
    return 0


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
        notifier = sdnotify.Notifier()  # systemd Type=notify
        notifier.ready(f"relay {server.host.peer_id.short()}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        notifier.stopping()
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
    may_invite: int | None = args.may_invite
    if may_invite is not None and not 0 <= may_invite <= 1000:
        raise common.UsageError("--may-invite must be 0 to 1000")
    allowlist = _allowlist(_config(args))
    if allowlist.add(peer, comment=comment):
        io.out(f"authorized: {peer}")
    elif comment is not None and allowlist.update(peer, comment=comment):
        io.out(f"already authorized: {peer} (comment updated)")
    else:
        io.out(f"already authorized: {peer}")
    if may_invite is not None:
        allowlist.update(peer, may_invite=may_invite)
        io.out(
            f"{peer} may put a relay enrollment into {may_invite} of its invites"
            if may_invite
            else f"{peer} may no longer enroll machines here"
        )
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
