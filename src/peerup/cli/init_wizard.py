"""``peerup init``: create an identity and a config, interactively or from flags.

The answers are turned into a plan (files and their contents) by a pure function,
:func:`plan`, and only then written, each atomically with mode 0600. An existing
config is never overwritten. Questions are asked only on a terminal: without one (a
script, a pipe, systemd) a missing answer is an ``error:`` line naming the flag that
gives it (:func:`ask`, also used by ``relay setup``).
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from dataclasses import dataclass
from pathlib import Path

from peerup.cli import common
from peerup.config import files, identity_store, load, paths
from peerup.core.errors import ConfigError
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.multiaddr import Multiaddr
from peerup.core.peer_id import PeerId

DEFAULT_RELAY_PORT = 7777
DEFAULT_LISTEN = ("/ip4/0.0.0.0/tcp/4001", "/ip6/::/tcp/4001")
AUTHORIZED_KEYS_HEADER = (
    "# peer-up authorized_keys: one peer per line\n"
    "# <peer-id> [expires=2027-01-01] [verified=...] [# comment]\n"
)


@dataclass(frozen=True, slots=True)
class InitAnswers:
    config_dir: Path
    relay: str | None
    network_name: str | None
    listen: tuple[str, ...] = DEFAULT_LISTEN


@dataclass(frozen=True, slots=True)
class InitPlan:
    config_path: Path
    key_path: Path
    authorized_keys_path: Path
    config_text: str
    key: Ed25519PrivateKey

    @property
    def peer_id(self) -> PeerId:
        return PeerId.from_public_key(self.key.public_key)


def relay_multiaddr(text: str, peer_id: str | None = None) -> Multiaddr:
    """Accept a relay as a full multiaddr, or ``IP[:PORT]`` plus its peer ID.

    Raises:
        common.UsageError: neither form, or no peer ID.
    """
    text = text.strip()
    if text.startswith("/"):
        try:
            ma = Multiaddr.parse(text)
        except ValueError as exc:
            raise common.UsageError(f"bad relay multiaddr: {exc}") from None
        if ma.peer_id is None:
            if not peer_id:
                raise common.UsageError("the relay address needs /p2p/<relay peer ID>")
            try:
                ma = ma.with_peer_id(PeerId.from_string(peer_id))
            except ValueError as exc:
                raise common.UsageError(str(exc)) from None
        endpoint = ma.tcp_endpoint()
        if ma.is_circuit or endpoint is None or endpoint[1] == 0:
            raise common.UsageError(
                f"the relay address {text!r} is not a TCP address with a port",
                hint="e.g. /ip4/203.0.113.10/tcp/7777/p2p/12D3KooW…",
            )
        return ma
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""
    if port and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise common.UsageError(
            f"bad port in relay address {text!r}",
            hint="the port is 1-65535, e.g. 203.0.113.10:7777",
        )
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise common.UsageError(
            f"relay {text!r} is neither a multiaddr nor IP[:PORT]",
            hint="e.g. 203.0.113.10:7777 or /ip4/203.0.113.10/tcp/7777/p2p/12D3KooW…",
        ) from None
    if not peer_id:
        raise common.UsageError(
            "give the relay's peer ID too (--relay-peer-id)",
            hint="`peerup relay info` on the relay prints it",
        )
    try:
        pid = PeerId.from_string(peer_id)
    except ValueError as exc:
        raise common.UsageError(str(exc)) from None
    return Multiaddr.from_tcp(str(ip), int(port or DEFAULT_RELAY_PORT)).with_peer_id(
        pid
    )


def can_prompt(io: common.CliIO) -> bool:
    """Whether questions can be asked: a scripted prompt (tests), or stdin is a
    terminal."""
    if io.prompt is not common.CliIO.prompt:
        return True
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except ValueError:  # stdin closed
        return False


def ask(io: common.CliIO, question: str, *, command: str, what: str, hint: str) -> str:
    """One answer from the user.

    Raises:
        common.UsageError: stdin is not a terminal, or ended (Ctrl-D): names ``what``
            was needed, with ``hint`` saying which flag gives it instead.
    """
    refusal = common.UsageError(
        f"{command} needs an answer for {what}, and stdin is not a terminal",
        hint=hint,
    )
    if not can_prompt(io):
        raise refusal
    try:
        return io.prompt(question)
    except EOFError:
        raise refusal from None


def listen_addrs(values: list[str] | None, default: tuple[str, ...]) -> list[str]:
    """``--listen`` values checked: TCP multiaddrs without ``/p2p/``, each once.

    Raises:
        common.UsageError: one is not such an address.
    """
    if not values:
        return list(default)
    out: list[str] = []
    for text in values:
        try:
            addr = Multiaddr.parse(text.strip())
        except ValueError as exc:
            raise common.UsageError(
                f"bad --listen {text!r}: {exc}", hint=f"e.g. {default[0]}"
            ) from None
        if addr.is_circuit or addr.peer_id is not None or addr.tcp_endpoint() is None:
            raise common.UsageError(
                f"bad --listen {text!r}: not a TCP address of this machine",
                hint=f"e.g. {default[0]} (any IPv4 address) or {default[-1]}",
            )
        if str(addr) not in out:
            out.append(str(addr))
    return out


def plan(answers: InitAnswers, key: Ed25519PrivateKey) -> InitPlan:
    """The files ``init`` writes for ``answers`` (pure)."""
    text = load.render_node_config(
        identity_key="identity.key",
        listen=list(answers.listen),
        relays=[answers.relay] if answers.relay else [],
        network_name=answers.network_name,
    )
    return InitPlan(
        answers.config_dir / "config.yaml",
        answers.config_dir / "identity.key",
        answers.config_dir / "authorized_keys",
        text,
        key,
    )


def write(p: InitPlan) -> None:
    """Write the plan; a config that does not load back is removed again."""
    if p.config_path.exists():
        raise ConfigError(
            "a config already exists",
            path=str(p.config_path),
            hint="edit it, or use another --dir",
        )
    created_key = files.create_exclusive(p.key_path, p.key.to_protobuf())
    if not p.authorized_keys_path.exists():
        files.write_atomic(p.authorized_keys_path, AUTHORIZED_KEYS_HEADER)
    files.write_atomic(p.config_path, p.config_text)
    try:
        load.load_node(p.config_path)
    except ConfigError:
        p.config_path.unlink()
        if created_key:
            p.key_path.unlink()
        raise


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("init", help="create an identity and a config")
    parser.add_argument(
        "--dir", type=Path, help="config directory (default: user config dir)"
    )
    parser.add_argument("--relay", help="relay: multiaddr with /p2p/, or IP[:PORT]")
    parser.add_argument("--relay-peer-id", help="the relay's peer ID (with IP[:PORT])")
    parser.add_argument(
        "--network-name", help="a name for this network (informational)"
    )
    parser.add_argument(
        "--listen", action="append", help="listen multiaddr (repeatable)"
    )
    parser.add_argument(
        "--non-interactive", action="store_true", help="take answers from flags"
    )
    common.add_json_arg(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, io: common.CliIO) -> int:
    config_dir = args.dir or paths.default_config_dir()
    if (config_dir / "config.yaml").exists():
        raise ConfigError(
            "a config already exists; init will not overwrite it",
            path=str(config_dir / "config.yaml"),
            hint="use --dir for another identity, or edit the file",
        )
    listen = listen_addrs(args.listen, DEFAULT_LISTEN)
    relay = args.relay
    relay_pid = args.relay_peer_id
    network = args.network_name
    # Flags are answers: given any, only what they leave unanswered and cannot do
    # without (the relay's peer ID for an IP address) is asked; optional questions
    # (the relay, the network name) only in a wholly interactive run.
    answered = bool(relay or relay_pid or network or args.listen)
    if not args.non_interactive:
        if can_prompt(io) and not answered:
            io.out("peer-up setup. Press Enter to skip a question.")
        command = "peerup init"
        if not relay and not answered:
            relay = ask(
                io,
                "Relay address (multiaddr, or IP[:PORT]; empty for none): ",
                command=command,
                what="the relay address",
                hint="pass --relay ADDR, or --non-interactive",
            ).strip()
        if relay and not relay.startswith("/") and not relay_pid:
            relay_pid = ask(
                io,
                "Relay peer ID: ",
                command=command,
                what="the relay's peer ID",
                hint="pass --relay-peer-id ID (`peerup relay info` on the relay "
                "prints it)",
            ).strip()
        if not network and not answered:
            network = ask(
                io,
                "Network name (e.g. home): ",
                command=command,
                what="the network name",
                hint="pass --network-name NAME, or --non-interactive",
            ).strip()
    relay_ma = str(relay_multiaddr(relay, relay_pid)) if relay else None
    answers = InitAnswers(config_dir, relay_ma, network or None, tuple(listen))
    key_path = config_dir / "identity.key"
    # An identity that already exists here is kept (and its peer ID printed).
    key = (
        identity_store.load(key_path)
        if key_path.exists()
        else Ed25519PrivateKey.generate()
    )
    p = plan(answers, key)
    write(p)
    if args.json:
        io.json(
            {
                "peer_id": str(p.peer_id),
                "config": str(p.config_path),
                "identity_key": str(p.key_path),
            }
        )
        return 0
    io.out(f"Peer ID:  {p.peer_id}")
    io.out(f"Config:   {p.config_path}")
    io.out(f"Key:      {p.key_path} (keep it private)")
    io.out("")
    io.out("Next steps:")
    io.out(
        "  1. On each machine that may reach this one:  peerup whoami   (copy its peer ID)"
    )
    io.out(f"  2. Here:  peerup auth add <their peer ID> --config {p.config_path}")
    if relay_ma:
        io.out(
            f"     On the relay:  peerup relay authorize {p.peer_id}   "
            "(it refuses machines it does not know)"
        )
    io.out(
        f"  3. Expose a service:  peerup service add ssh 127.0.0.1:22 --config {p.config_path}"
    )
    io.out(f"  4. Run:  peerup daemon --config {p.config_path}")
    return 0
