"""The ``peerup`` command line: argument parsing and output only; behaviour is in app/.

``main(argv) -> int``. ``peerup proxy add|list|remove …`` is rewritten to the
``proxies`` command before parsing (cli/proxies.py). Exit codes: 0 ok, 1 the
operation failed (including "not found": an unknown name, peer or service), 2 wrong
usage. Every error is one
``error:`` line on stderr, with a hint where one helps; under ``--json`` it is a JSON
object ``{"error": …, "hint": …}`` on stdout instead, so scripts parse one format.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from typing import NoReturn

from peerup import __version__
from peerup.cli import (
    audit,
    auth,
    common,
    demo,
    init_wizard,
    invite,
    names,
    node,
    proxies,
    relay,
    service,
)
from peerup.core.errors import Error


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise common.UsageError(message, hint=f"see '{self.prog} --help'")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="peerup",
        description="Reach your own machines and share services through CGNAT, "
        "over libp2p and your own relay.",
    )
    parser.add_argument("--version", action="version", version=f"peerup {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for module in (
        init_wizard, invite, node, proxies, auth, service, names, relay, audit, demo
    ):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None, io: common.CliIO | None = None) -> int:
    io = io or common.CliIO()
    parser = build_parser()
    try:
        # --help and --version print and exit; send that to the injected streams.
        with (
            contextlib.redirect_stdout(io.stdout),
            contextlib.redirect_stderr(io.stderr),
        ):
            # `peerup proxy add|list|remove` is the `proxies` command (cli/proxies.py).
            args = parser.parse_args(
                proxies.rewrite_argv(sys.argv[1:] if argv is None else list(argv))
            )
    except common.UsageError as exc:
        io.err(common.format_error(exc))
        return 2
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    level = getattr(args, "log_level", None) or level
    logging.basicConfig(
        level=os.environ.get("PEERUP_LOG", "").upper() or level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    as_json = bool(getattr(args, "json", False))
    try:
        result: int = args.run(args, io)
        return result
    except common.UsageError as exc:
        common.report_error(io, exc, as_json)
        return 2
    except Error as exc:
        common.report_error(io, exc, as_json)
        return 1
    except OSError as exc:
        common.report_error(
            io,
            Error(
                f"{exc.strerror or exc}"
                + (f": {exc.filename}" if exc.filename else "")
            ),
            as_json,
        )
        return 1
    except KeyboardInterrupt:
        return 130
