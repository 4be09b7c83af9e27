"""``peerup audit verify [FILE]``: check the audit log's hash chain (app/audit.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from peerup.app import audit
from peerup.cli import common
from peerup.config import paths
from peerup.core.errors import Error, NotFound


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("audit", help="the audit log of security events")
    asub = p.add_subparsers(dest="audit_command", metavar="ACTION")
    asub.required = True
    v = asub.add_parser(
        "verify",
        help="check that no record was changed, removed or reordered",
        description="Check the hash chain of an audit log and its rotated files "
        "(FILE.1 … older). Prints the last record's hash: keep it, and a later "
        "verify that ends in it proves nothing before it was touched.",
    )
    v.add_argument(
        "file",
        nargs="?",
        type=Path,
        help=f"the log (default: {audit.FILE_NAME} beside the config; for a relay, "
        "the one beside relay-server.yaml)",
    )
    common.add_config_arg(v)
    common.add_json_arg(v)
    v.set_defaults(run=run_verify)


def run_verify(args: argparse.Namespace, io: common.CliIO) -> int:
    path: Path = args.file or paths.find_config(args.config).parent / audit.FILE_NAME
    files = audit.rotated(path)
    if not files:
        raise NotFound(
            f"no audit log at {path}",
            hint="the daemon and the relay write it once they run; or name the file",
        )
    verdict = audit.verify(files)
    if args.json:
        io.json(
            {
                "ok": verdict.ok,
                "records": verdict.records,
                "last_hash": verdict.last_hash,
                "problem": verdict.problem,
                "files": [str(f) for f in files],
            }
        )
        return 0 if verdict.ok else 1
    if not verdict.ok:
        raise Error(
            f"audit log broken: {verdict.problem} ({verdict.records} records before "
            "it are intact)"
        )
    io.out(
        f"ok: {verdict.records} records in {len(files)} file(s), chain intact; "
        f"last hash {verdict.last_hash}"
    )
    return 0
