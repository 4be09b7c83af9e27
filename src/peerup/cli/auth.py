"""``peerup auth add|list|remove|validate``: edit ``authorized_keys``.

Edits go through the running daemon when there is one (applied live), else straight to
the file; either way every write is atomic and keeps the other lines as they were.
``add`` on a peer already listed updates its ``--expires``/``--comment`` (the daemon
picks the file change up); an ``--expires`` in the past is refused.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path

from peerup.app import daemon as daemon_mod
from peerup.app.allowlist import Allowlist, format_expires, parse_authorized_keys
from peerup.cli import common
from peerup.core.errors import NotFound
from peerup.core.peer_id import PeerId


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("auth", help="manage authorized_keys (who may connect)")
    asub = p.add_subparsers(dest="auth_command", metavar="ACTION")
    asub.required = True
    a = asub.add_parser("add", help="authorize a peer (or every peer in --file)")
    a.add_argument("peer_id", nargs="?")
    a.add_argument(
        "--file",
        type=Path,
        help="add every peer of an authorized_keys-format file (one peer ID per line, "
        "`# comments`, attributes kept), e.g. another machine's",
    )
    a.add_argument("--comment", help="free text, e.g. the machine's name")
    a.add_argument("--expires", help="date or datetime (UTC), e.g. 2027-01-31")
    common.add_config_arg(a)
    a.set_defaults(run=run_add)
    lst = asub.add_parser("list", help="list authorized peers")
    common.add_config_arg(lst)
    common.add_json_arg(lst)
    lst.set_defaults(run=run_list)
    r = asub.add_parser("remove", help="remove a peer (its connections are closed)")
    r.add_argument("peer_id")
    common.add_config_arg(r)
    r.set_defaults(run=run_remove)
    v = asub.add_parser("validate", help="check authorized_keys")
    common.add_config_arg(v)
    common.add_json_arg(v)
    v.set_defaults(run=run_validate)


def _peer(text: str) -> PeerId:
    try:
        return PeerId.from_string(text)
    except ValueError as exc:
        raise common.UsageError(str(exc), hint="peer IDs look like 12D3KooW…") from None


def _expires(text: str | None, now: datetime) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise common.UsageError(
            f"bad --expires {text!r}",
            hint="use a date or date-time in UTC, e.g. 2027-01-31 or 2027-01-31T18:00",
        ) from None
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    if value <= now:
        raise common.UsageError(
            f"--expires {text} is in the past (it is {format_expires(now)} now)",
            hint="give a later date (UTC), e.g. "
            f"{(now + timedelta(days=365)).date().isoformat()}",
        )
    return value


def _comment(text: str | None) -> str | None:
    if text is not None and ("\n" in text or "\r" in text):
        raise common.UsageError("--comment must fit on one line")
    return text


def run_add(args: argparse.Namespace, io: common.CliIO) -> int:
    if args.file is not None:
        if args.peer_id is not None:
            raise common.UsageError("give a peer ID or --file, not both")
        return _add_file(args, io)
    if args.peer_id is None:
        raise common.UsageError("give a peer ID (or --file FILE)")
    config = common.load_config(args)
    peer = _peer(args.peer_id)
    expires = _expires(args.expires, datetime.now(UTC))
    comment = _comment(args.comment)
    allowlist = Allowlist(config.authorized_keys)
    allowlist.load()
    if any(e.peer_id == peer for e in allowlist.entries()):
        # Listed already: apply what was given instead of dropping it. A running
        # daemon sees the file change (and re-checks open connections).
        changed = (expires is not None or comment is not None) and allowlist.update(
            peer, comment=comment, expires=expires
        )
        if not changed:
            io.out(f"already authorized: {peer}")
            return 0
        what = [f"expires {format_expires(expires)}"] if expires else []
        what += [f"comment {comment!r}"] if comment is not None else []
        io.out(f"updated: {peer} ({', '.join(what)})")
        return 0
    client = daemon_mod.client_for(config)
    if expires is None and client.is_running():
        body = {"peer_id": str(peer), "comment": comment}
        added = bool(client.call("POST", "/v1/auth", body)["added"])
    else:
        added = allowlist.add(peer, comment=comment, expires=expires)
    io.out(f"{'authorized' if added else 'already authorized'}: {peer}")
    return 0


def _add_file(args: argparse.Namespace, io: common.CliIO) -> int:
    config = common.load_config(args)
    try:
        text = args.file.read_text()
    except OSError as exc:
        raise NotFound(
            f"cannot read {args.file}: {exc.strerror or exc}",
            hint="give the path of an authorized_keys-format file",
        ) from None
    entries = parse_authorized_keys(text, str(args.file))  # file:line on errors
    allowlist = Allowlist(config.authorized_keys)
    allowlist.load()
    known = {e.peer_id for e in allowlist.entries()}
    added = 0
    for entry in entries:
        if entry.peer_id in known:
            continue
        allowlist.add(
            entry.peer_id, comment=entry.comment, expires=entry.expires_at,
            verified=entry.verified,
        )  # fmt: skip
        known.add(entry.peer_id)
        added += 1
    io.out(
        f"authorized {added} peer(s) from {args.file}"
        + (f"; {len(entries) - added} already listed" if len(entries) > added else "")
    )
    return 0


def run_list(args: argparse.Namespace, io: common.CliIO) -> int:
    config = common.load_config(args)
    allowlist = Allowlist(config.authorized_keys)
    allowlist.load()
    entries = allowlist.entries()
    if args.json:
        io.json(
            {
                "entries": [
                    {
                        "peer_id": str(e.peer_id),
                        "attrs": dict(e.attrs),
                        "comment": e.comment,
                    }
                    for e in entries
                ]
            }
        )
        return 0
    if not entries:
        io.out(f"no authorized peers in {config.authorized_keys}")
    for e in entries:
        attrs = " ".join(f"{k}={v}" for k, v in e.attrs)
        io.out(
            " ".join(
                x
                for x in (str(e.peer_id), attrs, f"# {e.comment}" if e.comment else "")
                if x
            )
        )
    return 0


def run_remove(args: argparse.Namespace, io: common.CliIO) -> int:
    config = common.load_config(args)
    peer = _peer(args.peer_id)
    client = daemon_mod.client_for(config)
    if client.is_running():
        removed = bool(client.call("DELETE", f"/v1/auth/{peer}")["removed"])
    else:
        allowlist = Allowlist(config.authorized_keys)
        allowlist.load()
        removed = allowlist.remove(peer)
    if not removed:
        # Not found is a failed operation (exit 1), as for names and services.
        raise NotFound(
            f"{peer} is not in {config.authorized_keys}",
            hint="`peerup auth list` shows who is",
        )
    io.out(f"removed: {peer}")
    return 0


def run_validate(args: argparse.Namespace, io: common.CliIO) -> int:
    config = common.load_config(args)
    allowlist = Allowlist(config.authorized_keys)
    allowlist.load()
    now = datetime.now(UTC)
    expired = [e for e in allowlist.entries() if e.expires_at and e.expires_at <= now]
    result = {
        "path": str(config.authorized_keys),
        "entries": len(allowlist.entries()),
        "expired": [str(e.peer_id) for e in expired],
    }
    if args.json:
        io.json(result)
    else:
        io.out(
            f"{config.authorized_keys}: ok, {result['entries']} entries"
            + (f", {len(expired)} expired" if expired else "")
        )
    return 0
