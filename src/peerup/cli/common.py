"""What every command shares: the IO bundle, error formatting, JSON output, config
loading, and the choice between the running daemon and a node of our own."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from peerup.config import load, paths
from peerup.config.schema import NodeConfig
from peerup.core.errors import ConfigError

T = TypeVar("T")


def _default_prompt(question: str) -> str:
    return input(question)


@dataclass
class CliIO:
    """Output streams and the prompt, injectable for tests."""

    stdout: IO[str] = field(default_factory=lambda: sys.stdout)
    stderr: IO[str] = field(default_factory=lambda: sys.stderr)
    prompt: Callable[[str], str] = _default_prompt

    def out(self, text: str = "") -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def err(self, text: str) -> None:
        self.stderr.write(text + "\n")
        self.stderr.flush()

    def json(self, obj: Any) -> None:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            obj = dataclasses.asdict(obj)
        self.out(json.dumps(obj, indent=2, default=str))


class UsageError(Exception):
    """A wrong argument value: printed as one ``error:`` line, exit 2."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="config file (default: ./peerup.yaml, then the user config dir, then /etc/peerup)",
    )


def add_json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")


def load_config(args: argparse.Namespace) -> NodeConfig:
    return load.load_node(paths.find_config(getattr(args, "config", None)))


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on uvloop when it is installed (fewer microseconds per event-loop
    pass: measurably faster new tunnel connections), else on asyncio's own loop.
    The allocator is tuned first (see :func:`tune_allocator`)."""
    tune_allocator()
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    result: T = uvloop.run(coro)
    return result


# glibc's mallopt() parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024


def tune_allocator() -> bool:
    """Keep freed buffers in the heap instead of giving them back to the kernel.

    The data path allocates and frees buffers of 64-256 KiB per read and per write
    (Noise frames, socket reads). With glibc's defaults those often come from fresh
    mmap()ed or trimmed heap pages, so every buffer costs page faults and page
    clearing: measured at about a quarter of a daemon's CPU and half its throughput
    (see the README's benchmark notes). Buffers up to ``MMAP_THRESHOLD_BYTES`` now come
    from the heap, and up to ``TRIM_THRESHOLD_BYTES`` of free heap is kept for reuse.
    Done by hand with ctypes because no maintained library wraps mallopt(); on other
    C libraries this does nothing. Returns whether it was applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mmap_set: int = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    trim_set: int = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    return mmap_set == 1 and trim_set == 1


def format_error(exc: BaseException) -> str:
    """One line: ``error: <message>`` (plus `` (hint: …)`` when there is one)."""
    hint = getattr(exc, "hint", None)
    text = f"error: {exc}"
    if hint:
        text += f" (hint: {hint})"
    return text


def report_error(io: CliIO, exc: BaseException, as_json: bool) -> None:
    """A failed command's one error: an ``error:`` line on stderr, or under
    ``--json`` a JSON object with ``error`` and ``hint`` on stdout."""
    if as_json:
        io.out(json.dumps({"error": str(exc), "hint": getattr(exc, "hint", None)}))
    else:
        io.err(format_error(exc))


def config_error(message: str, hint: str) -> ConfigError:
    return ConfigError(message, hint=hint)
