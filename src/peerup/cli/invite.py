"""``peerup invite [list|revoke]``, ``peerup join <code>`` and ``peerup verify <peer>``.

``invite`` goes through the running daemon when there is one (it serves the invite and
``invite`` may exit; interactive runs wait and report), else it runs a node of its own,
keeps a reservation on the relays of config.yaml and waits for the joiner. ``join``
takes the code from its arguments, ``$PEERUP_INVITE_CODE``, a prompt on a terminal, or
standard input; on a machine without a config it first creates the key, config.yaml
(relays and network name from the code) and authorized_keys, as ``init`` would. With
``--non-interactive``, ``invite`` prints the code alone on standard output. ``verify``
shows the short authentication string (app: proto/pairing.py) and records
``verified=sas`` once both people said they match. The pairing itself is app/pairing.py.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import segno

from peerup.app import daemon as daemon_mod
from peerup.app import failures, pairing
from peerup.app.allowlist import Allowlist
from peerup.app.api import ApiClient
from peerup.app.node import Node
from peerup.cli import common
from peerup.cli.init_wizard import (
    AUTHORIZED_KEYS_HEADER,
    DEFAULT_LISTEN,
    ask,
    can_prompt,
    listen_addrs,
)
from peerup.config import files, identity_store, load, paths
from peerup.config.invite_store import InviteStore
from peerup.config.relay_groups import Enrollment, EnrollmentStore
from peerup.config.schema import NodeConfig, check_peer_name
from peerup.core.access import Access
from peerup.core.errors import ConfigError, Error, NotFound
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.peer_id import PeerId
from peerup.proto.invite_code import InviteCode
from peerup.proto.pairing import short_auth_string

ENV_CODE = "PEERUP_INVITE_CODE"
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
WAIT_POLL_S = 20.0
"""One long-poll of the daemon while waiting for the joiner (under the API timeout)."""


def duration(text: str) -> float:
    """argparse type of ``--ttl``: ``90``, ``30s``, ``10m``, ``2h``, ``1d``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text.lower())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"bad duration {text!r}: use e.g. 90s, 10m, 2h or 1d"
        )
    seconds = float(match[1]) * _UNITS.get(match[2] or "s", 1.0)
    try:
        return pairing.check_ttl(seconds)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "invite",
        help="a one-time code that pairs another machine with this one",
        description="Print a one-time code (and QR code). On the other machine, "
        "`peerup join <code>` pairs the two: each authorizes and names the other.",
    )
    p.add_argument(
        "--name", help="the name the other machine gives this one (default: host name)"
    )
    p.add_argument(
        "--ttl",
        type=duration,
        default=pairing.DEFAULT_TTL_S,
        help="how long the code works: 90s, 10m, 2h, 1d (default 10m)",
    )
    p.add_argument(
        "--non-interactive",
        action="store_true",
        help="print only the code on standard output (with a daemon, exit at once)",
    )
    p.add_argument(
        "--enroll",
        action="store_true",
        help="also enroll the other machine at your relay (the relay must allow it: "
        "`peerup relay authorize <this machine> --may-invite N` there)",
    )
    common.add_config_arg(p)
    common.add_json_arg(p)
    p.set_defaults(run=run_invite)
    isub = p.add_subparsers(dest="invite_command", metavar="ACTION")
    lst = isub.add_parser("list", help="pending and recent invites")
    common.add_config_arg(lst)
    common.add_json_arg(lst)
    lst.set_defaults(run=run_list)
    rev = isub.add_parser("revoke", help="void a pending invite")
    rev.add_argument("invite_id", help="its ID, or the start of it (`invite list`)")
    common.add_config_arg(rev)
    common.add_json_arg(rev)
    rev.set_defaults(run=run_revoke)

    j = sub.add_parser(
        "join",
        help="pair with another machine using its invite code (sets this one up if "
        "needed)",
        description="Pair this machine with the one that ran `peerup invite`. On a "
        "machine without a config, this creates the key, config.yaml and "
        "authorized_keys first (no `peerup init` needed).",
    )
    j.add_argument(
        "code",
        nargs="*",
        help=f"the code or peerup:// URI (else ${ENV_CODE}, a prompt, or standard input)",
    )
    j.add_argument(
        "--name", help="the name the other machine gives this one (default: host name)"
    )
    j.add_argument(
        "--non-interactive", action="store_true", help="never prompt for the code"
    )
    j.add_argument(
        "--config",
        type=Path,
        default=None,
        help="config file, created if missing (default: the user config dir)",
    )
    j.add_argument(
        "--listen",
        action="append",
        help="listen multiaddr for a new config (repeatable)",
    )
    common.add_json_arg(j)
    j.set_defaults(run=run_join)

    v = sub.add_parser(
        "verify",
        help="compare a short string with a paired peer, to check its peer ID",
        description="Show the emoji and digits both machines derive from their two "
        "peer IDs. Run it on both; if they match, no one swapped a peer ID.",
    )
    v.add_argument("peer", help="a name or peer ID from authorized_keys")
    v.add_argument(
        "--yes", action="store_true", help="record that they match, without asking"
    )
    common.add_config_arg(v)
    common.add_json_arg(v)
    v.set_defaults(run=run_verify)


def _client(config: NodeConfig) -> ApiClient | None:
    client = daemon_mod.client_for(config)
    return client if client.is_running() else None


# --- invite ------------------------------------------------------------------------------


def _show_code(
    io: common.CliIO, issued: dict[str, Any], *, quiet: bool, who: str | None
) -> None:
    if quiet:
        io.out(issued["code"])
        return
    minutes = issued["expires_in_s"] / 60
    io.out(
        f"Invite code{f' for {who}' if who else ''} (works once, for {minutes:.0f} min, "
        f"until {issued['expires_at']}; {pairing.MAX_ATTEMPTS} tries):"
    )
    io.out("")
    io.out(f"  {issued['code']}")
    io.out("")
    segno.make(issued["uri"].upper(), error="l").terminal(out=io.stdout, compact=True)  # type: ignore[arg-type]
    io.out("")
    io.out("On the other machine:  peerup join <code>   (or paste the peerup:// link)")
    io.out(f"  {issued['uri']}")


def _report(io: common.CliIO, event: dict[str, Any]) -> bool:
    """Print one invite event; True when the invite is over."""
    peer = PeerId.from_string(event["peer"]).short()
    if event["kind"] == "paired":
        who = event["name"] or peer
        io.out(f"Paired with {who} ({event['peer']}): authorized and named.")
        if event["name"]:
            io.out(f"  try: peerup ping {event['name']}")
        return True
    if event["kind"] == "failed":
        io.err(
            f"a pairing attempt by {peer} failed: {event['reason']} "
            f"(try {event['attempts']} of {pairing.MAX_ATTEMPTS})"
        )
    else:
        io.err(f"{peer} tried this invite: {event['reason']}")
    return bool(event["status"] != "pending")


def run_invite(args: argparse.Namespace, io: common.CliIO) -> int:
    config = common.load_config(args)
    pairing.relays_of(config)  # no relay: the error says so before anything else
    name = args.name or pairing.default_name()
    if name:
        _check_name(name)
    client = _client(config)
    if client is not None:
        issued = client.call(
            "POST",
            "/v1/invites",
            {"ttl_s": args.ttl, "name": name, "enroll": bool(args.enroll)},
        )
        status = client.call("GET", "/v1/status")
        if not any(r["reserved"] for r in status.get("relays", [])):
            io.err(
                "warning: the daemon holds no relay reservation yet, so the other "
                "machine cannot reach this one (`peerup status` says why)"
            )
        if args.json:
            io.json(issued)
            return 0
        _show_code(io, issued, quiet=args.non_interactive, who=name)
        if args.non_interactive:
            return 0
        io.out("Waiting for the other machine (Ctrl-C stops waiting; the daemon keeps")
        io.out(
            f"the invite until it expires: `peerup invite revoke {issued['id'][:8]}`)"
        )
        return _wait_via_daemon(io, client, issued["id"])
    return common.run(_invite_own_node(args, io, config, name))


def _check_name(name: str) -> None:
    """Refuse a ``--name`` that cannot be a peer name (before any code is made)."""
    try:
        check_peer_name(name, "--name")
    except ConfigError as exc:
        raise common.UsageError(str(exc), hint=exc.hint) from None


def _wait_via_daemon(io: common.CliIO, client: ApiClient, invite_id: str) -> int:
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    try:
        after = 0
        while True:
            answer = client.call(
                "POST",
                f"/v1/invites/{invite_id}/wait",
                {"after": after, "timeout_s": 2.0},
            )
            for event in answer["events"]:
                after = max(after, int(event["seq"]))
                if _report(io, event):
                    return 0 if event["kind"] == "paired" else 1
            invite = answer["invite"]
            if invite is None or invite["status"] != "pending":
                status = invite["status"] if invite else "gone"
                if status == "used":
                    return 0
                raise Error(f"the invite ended without a pairing: {status}")
            if signal.sigtimedwait(stop_signals, 0) is not None:
                io.err("stopped waiting; the daemon still serves the invite")
                return 130
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)


def _own_gate(
    config: NodeConfig, allowlist: Allowlist, service: list[pairing.PairingService]
) -> Callable[[PeerId], Access] | None:
    if not config.enforce_allowlist:
        return None

    def gate(peer: PeerId) -> Access:
        access = allowlist.check_fresh(peer)
        if access.is_allowed or not service:
            return access
        return service[0].admit(peer, access)

    return gate


async def _reserve_any(node: Node, config: NodeConfig) -> None:
    """Hold a reservation on at least one relay of the config.

    Raises:
        failures.Failed: no relay gave us one (why, and the fix).
    """
    relays = pairing.relays_of(config)
    tasks = [
        asyncio.ensure_future(node.relay_client.reserve_and_keep(r)) for r in relays
    ]
    errors: list[BaseException] = []
    try:
        for done in asyncio.as_completed(
            tasks, timeout=node.host.config.dial_timeout_s
        ):
            try:
                await done
                return
            except Error as exc:
                errors.append(exc)
    except TimeoutError as exc:
        errors.append(exc)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
    raise failures.Failed(
        failures.explain_dial(errors[0], "the relay", str(node.peer_id))
    )


async def _invite_own_node(
    args: argparse.Namespace, io: common.CliIO, config: NodeConfig, name: str | None
) -> int:
    key = identity_store.load(config.identity_key)
    allowlist = Allowlist(config.authorized_keys)
    if config.enforce_allowlist:
        allowlist.load()
    holder: list[pairing.PairingService] = []
    node = Node(key, gate=_own_gate(config, allowlist, holder))
    service = pairing.PairingService(
        node.host,
        InviteStore(config.path.parent),
        card=lambda invite: pairing.card_from(config, invite.name),
        record=lambda peer, card: pairing.record_peer(
            allowlist, config.path, peer, card
        ),
    )
    holder.append(service)
    service.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        if not args.non_interactive and not args.json:
            io.out("Reserving a slot on the relay…")
        await _reserve_any(node, config)
        relays = pairing.relays_of(config)
        enrollment = None
        if args.enroll:
            if not relays:
                raise common.UsageError(
                    "--enroll needs a relay in the config (`relays:`)"
                )
            enrollment = await pairing.ask_enrollment(node.host, relays[0], args.ttl)
        invite = service.create(args.ttl, name)
        code = pairing.code_for(
            invite, node.peer_id, relays, config.network_name, enrollment
        )
        issued = pairing.issued_json(invite, code, service.clock())
        if args.json:
            io.json(issued)
        else:
            _show_code(io, issued, quiet=args.non_interactive, who=name)
        if not args.non_interactive and not args.json:
            io.out("Waiting for the other machine (Ctrl-C stops; no daemon runs, so")
            io.out("this command serves the invite)")
        return await _wait_own(io, service, invite.id_hex, stop)
    finally:
        service.close()
        await node.aclose()


async def _wait_own(
    io: common.CliIO,
    service: pairing.PairingService,
    invite_id: str,
    stop: asyncio.Event,
) -> int:
    after = 0
    stopper = asyncio.ensure_future(stop.wait())
    try:
        while True:
            waiter = asyncio.ensure_future(service.wait(invite_id, after, 3600.0))
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if not waiter.done():
                waiter.cancel()
                io.err(
                    "stopped: the invite stays pending until it expires (a daemon "
                    f"would serve it; `peerup invite revoke {invite_id[:8]}` voids it)"
                )
                return 130
            for event in waiter.result():
                after = max(after, event.seq)
                if _report(io, dataclasses.asdict(event)):
                    return 0 if event.kind == "paired" else 1
            invite = service.find(invite_id)
            if invite is None or not invite.is_open(service.clock()):
                status = invite.status(service.clock()) if invite else "gone"
                if status == "used":
                    return 0
                raise Error(f"the invite ended without a pairing: {status}")
    finally:
        stopper.cancel()


# --- invite list / revoke ------------------------------------------------------------------


def run_list(args: argparse.Namespace, io: common.CliIO) -> int:
    config = common.load_config(args)
    client = _client(config)
    if client is not None:
        invites = client.call("GET", "/v1/invites")["invites"]
    else:
        now = time.time()
        store = InviteStore(config.path.parent)
        invites = [pairing.invite_json(i, now) for i in store.load()]
    if args.json:
        io.json({"invites": invites})
        return 0
    if not invites:
        io.out("no invites (`peerup invite` makes one)")
        return 0
    for inv in invites:
        line = (
            f"{inv['id']}  {inv['status']:8} tries {inv['attempts']}/"
            f"{inv['max_attempts']}  expires {inv['expires_at']}"
        )
        if inv["status"] == "pending":
            line += f" ({inv['expires_in_s'] // 60} min left)"
        if inv["name"]:
            line += f"  offered as {inv['name']}"
        if inv["peer"]:
            line += f"  paired with {inv['peer']}"
        io.out(line)
    return 0


def run_revoke(args: argparse.Namespace, io: common.CliIO) -> int:
    config = common.load_config(args)
    client = _client(config)
    if client is not None:
        try:
            answer = client.call("DELETE", f"/v1/invites/{args.invite_id}")
        except Error as exc:
            raise NotFound(str(exc), hint="`peerup invite list` shows them") from None
        invite, revoked = answer["invite"], bool(answer["revoked"])
    else:
        now = time.time()
        store = InviteStore(config.path.parent)
        try:
            found = store.transact(
                lambda inv: pairing.revoke(inv, args.invite_id, now), now=now
            )
        except ValueError as exc:
            raise common.UsageError(str(exc)) from None
        if found is None:
            raise NotFound(
                f"no invite {args.invite_id!r}", hint="`peerup invite list` shows them"
            )
        invite, revoked = pairing.invite_json(found[0], now), found[1]
    if args.json:
        io.json({"invite": invite, "revoked": revoked})
    elif revoked:
        io.out(f"revoked: {invite['id']}")
    else:
        io.out(f"{invite['id']} was already {invite['status']}")
    return 0


# --- join ----------------------------------------------------------------------------------


def _code_text(args: argparse.Namespace, io: common.CliIO) -> str:
    if args.code:
        return "".join(args.code)
    env = os.environ.get(ENV_CODE, "").strip()
    if env:
        return env
    if not args.non_interactive and can_prompt(io):
        return ask(
            io,
            "Invite code: ",
            command="peerup join",
            what="the invite code",
            hint=f"give it as an argument, in ${ENV_CODE}, or on standard input",
        )
    if sys.stdin is None or (not args.non_interactive and sys.stdin.isatty()):
        text = ""
    else:
        text = sys.stdin.read()
    if not text.strip():
        raise common.UsageError(
            "no invite code given",
            hint=f"peerup join <code> (or set ${ENV_CODE}, or pipe it in)",
        )
    return text


def _find_or_create_config(
    args: argparse.Namespace, io: common.CliIO, code: InviteCode, quiet: bool
) -> tuple[Path, bool]:
    """The config to use: the one found, or a new one made from the code."""
    explicit: Path | None = args.config
    if explicit is None or explicit.exists():
        try:
            return paths.find_config(explicit), False
        except ConfigError:
            if explicit is not None:
                raise
    path = explicit or paths.default_config_dir() / paths.CONFIG_FILE_NAME
    directory = path.parent
    listen = listen_addrs(args.listen, DEFAULT_LISTEN)
    key_path = directory / "identity.key"
    key = (
        identity_store.load(key_path)
        if key_path.exists()
        else Ed25519PrivateKey.generate()
    )
    text = load.render_node_config(
        identity_key="identity.key",
        listen=listen,
        relays=[str(r) for r in code.relays],
        network_name=code.network_name,
    )
    created_key = files.create_exclusive(key_path, key.to_protobuf())
    authorized = directory / "authorized_keys"
    if not authorized.exists():
        files.write_atomic(authorized, AUTHORIZED_KEYS_HEADER)
    if not files.create_exclusive(path, text):
        raise ConfigError("a config appeared meanwhile", path=str(path))
    try:
        load.load_node(path)
    except ConfigError:
        path.unlink()
        if created_key:
            key_path.unlink()
        raise
    if not quiet:
        peer = PeerId.from_public_key(key.public_key)
        io.out(f"New machine: created {path} (peer ID {peer}), relays from the code.")
    return path, True


def run_join(args: argparse.Namespace, io: common.CliIO) -> int:
    code = InviteCode.parse(_code_text(args, io))
    path, created = _find_or_create_config(args, io, code, quiet=args.json)
    config = load.load_node(path)
    name = args.name or pairing.default_name()
    if name:
        _check_name(name)
    client = _client(config)
    if client is not None:
        answer = client.call("POST", "/v1/join", {"code": code.to_text(), "name": name})
        result = pairing.JoinResult.from_json(answer)
    else:
        result = common.run(_join_own_node(config, code, name))
    if args.json:
        io.json({**result.as_json(), "config": str(path), "created": created})
        return 0 if result.is_paired else 1
    if not result.is_paired:
        raise _Failed(result)
    if result.is_enrollment:
        return _report_enrollment(io, result, config, client is not None)
    label = result.name or PeerId.from_string(result.inviter).short()
    io.out(f"Paired with {label} ({result.inviter}): authorized and named.")
    if result.services:
        io.out(f"  {label} offers: {', '.join(result.services)}")
        io.out(f"  try: peerup proxy {label} {result.services[0]} <local port>")
    else:
        io.out(f"  try: peerup ping {label}")
    io.out(f"  optional: `peerup verify {label}` on both machines, and compare")
    if not set(result.relays) & set(config.relays):
        io.err(
            f"note: {label} is reached through {', '.join(result.relays)}, which is not "
            "among the relays in config.yaml: add it under `relays:` to reach it later"
        )
    if client is None:
        io.out(
            "  to let it reach this machine too: `peerup daemon` (or `peerup service "
            "install`)"
        )
    return 0


def _report_enrollment(
    io: common.CliIO, result: pairing.JoinResult, config: NodeConfig, has_daemon: bool
) -> int:
    relay = PeerId.from_string(result.inviter)
    io.out(f"Enrolled at relay {relay.short()}: this machine may now use it.")
    if result.introduced:
        io.out(f"  introduced (authorized and named): {', '.join(result.introduced)}")
    io.out(
        "  machines enrolled later with codes of the same group are introduced by the "
        "relay when this machine's daemon connects to it"
    )
    if not set(result.relays) & set(config.relays):
        io.err(
            f"note: the relay is at {', '.join(result.relays)}, which is not among the "
            "relays in config.yaml: add it under `relays:`"
        )
    if not has_daemon:
        io.out("  next: `peerup daemon` (or `peerup service install`)")
    return 0


class _Failed(Error):
    def __init__(self, result: pairing.JoinResult) -> None:
        super().__init__(result.message)
        self.hint = result.hint


async def _join_own_node(
    config: NodeConfig, code: InviteCode, name: str | None
) -> pairing.JoinResult:
    key = identity_store.load(config.identity_key)
    allowlist = Allowlist(config.authorized_keys)
    if config.enforce_allowlist:
        allowlist.load()
    node = Node(key, gate=allowlist.gate() if config.enforce_allowlist else None)
    try:
        return await pairing.join(
            node.host,
            code,
            pairing.card_from(config, name),
            lambda peer, card: pairing.record_peer(allowlist, config.path, peer, card),
            on_enrolled=lambda relay, group: EnrollmentStore(config.path.parent).add(
                Enrollment(str(relay), group, time.time())
            ),
        )
    finally:
        await node.aclose()


# --- verify --------------------------------------------------------------------------------


def run_verify(args: argparse.Namespace, io: common.CliIO) -> int:
    config = common.load_config(args)
    key = identity_store.load(config.identity_key)
    me = PeerId.from_public_key(key.public_key)
    peer, _ = daemon_mod.parse_peer_arg(config, args.peer)
    allowlist = Allowlist(config.authorized_keys)
    allowlist.load()
    entry = next((e for e in allowlist.entries() if e.peer_id == peer), None)
    if entry is None:
        raise NotFound(
            f"{args.peer} is not in authorized_keys",
            hint="pair first (`peerup invite` / `peerup join`) or `peerup auth add`",
        )
    sas = short_auth_string(me, peer)
    if args.json:
        io.json(
            {
                "peer_id": str(peer),
                "emoji": [{"emoji": e, "word": w} for e, w in sas.emoji],
                "number": sas.number,
                "verified": entry.verified,
            }
        )
        return 0
    io.out(f"On {args.peer}, run:  peerup verify {me}")
    io.out("Both machines must show the same:")
    io.out("")
    io.out(f"  {sas.text()}")
    io.out("")
    if not args.yes:
        answer = ask(
            io,
            "Do both show the same? [y/N] ",
            command="peerup verify",
            what="whether both machines show the same",
            hint="compare them, then run again with --yes",
        )
        if answer.strip().lower() not in ("y", "yes"):
            raise Error(
                "not verified: if the two differ, the peer ID this machine has is not "
                f"that machine's (remove it: `peerup auth remove {peer}`)"
            )
    allowlist.update(peer, verified="sas")
    io.out(f"verified: {peer} (verified=sas in authorized_keys)")
    return 0
