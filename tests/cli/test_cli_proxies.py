"""``peerup proxy add|list|remove`` through ``main([...])``: the argv rewrite to the
``proxies`` command, edits of config.yaml, usage and not-found errors, and the running
daemon (in a background thread's event loop) opening and closing what is edited.
``peerup proxy <peer> <service> <port>`` still reaches the foreground proxy."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from cli_harness import Cli

from background_loop import Background
from peerup.app.daemon import Daemon
from peerup.cli import build_parser, node, proxies
from peerup.config import load
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.peer_id import PeerId

HOME = PeerId.from_public_key(Ed25519PrivateKey.from_seed(b"\x07" * 32).public_key)
TIMEOUT_S = 10.0


@pytest.fixture
def cfg(cli: Cli, node_config: Path) -> Path:
    """A node's config.yaml with the name ``home`` defined."""
    assert cli("name", "set", "home", str(HOME), "--config", node_config).code == 0
    return node_config


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def is_listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


# --- the argv rewrite -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["proxy", "add", "home", "ssh", "2222"], ["proxies", "add", "home", "ssh", "2222"]),
        (["-v", "proxy", "list", "--json"], ["-v", "proxies", "list", "--json"]),
        (["proxy", "remove", "2222"], ["proxies", "remove", "2222"]),
        (["proxy", "home", "ssh", "2222"], ["proxy", "home", "ssh", "2222"]),
        (["proxy", "--bind", "0.0.0.0", "add", "ssh", "1"],
         ["proxy", "--bind", "0.0.0.0", "add", "ssh", "1"]),
        (["service", "add", "proxy", "127.0.0.1:1"], ["service", "add", "proxy", "127.0.0.1:1"]),
        (["name", "set", "proxy", "add"], ["name", "set", "proxy", "add"]),
        (["proxy"], ["proxy"]),
        ([], []),
    ],
)  # fmt: skip
def test_only_proxy_followed_by_an_action_is_rewritten(
    argv: list[str], expected: list[str]
) -> None:
    assert proxies.rewrite_argv(argv) == expected


def test_proxy_peer_service_port_still_parses_as_the_foreground_proxy() -> None:
    args = build_parser().parse_args(
        proxies.rewrite_argv(["proxy", "home", "ssh", "2222", "--bind", "0.0.0.0"])
    )
    assert args.run is node.run_proxy
    assert (args.peer, args.service, args.port, args.bind) == (
        "home",
        "ssh",
        2222,
        "0.0.0.0",
    )
    args = build_parser().parse_args(
        proxies.rewrite_argv(["proxy", "add", "home", "ssh", "2222"])
    )
    assert args.run is proxies.run_add


def test_help_names_the_proxy_spelling(cli: Cli) -> None:
    result = cli("proxy", "remove", "--help")
    assert result.code == 0
    assert result.out.startswith("usage: peerup proxy remove")
    assert "--bind" in result.out and "two entries use PORT" in result.out
    top = cli("--help")
    assert "peerup proxy add|list|remove" in top.out


# --- editing config.yaml ------------------------------------------------------------------


def test_add_list_remove_without_a_daemon(cli: Cli, cfg: Path) -> None:
    before = cfg.read_text()
    result = cli("proxy", "add", "home", "ssh", "2222", "--config", cfg)
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        f"proxy 127.0.0.1:2222 -> home/ssh added to {cfg}",
        "the daemon opens it when it starts (`peerup daemon`)",
    ]
    result = cli("proxy", "add", str(HOME), "web", "8080", "--bind", "::1",
                 "--config", cfg)  # fmt: skip
    assert result.code == 0, result.err
    assert [
        (p.peer, p.service, p.port, p.bind) for p in load.load_node(cfg).proxies
    ] == [
        ("home", "ssh", 2222, "127.0.0.1"),
        (str(HOME), "web", 8080, "::1"),
    ]

    listed = cli("proxy", "list", "--json", "--config", cfg).json()
    assert listed["daemon_running"] is False
    assert [(p["listen"], p["peer_id"], p["state"], p["source"])
            for p in listed["proxies"]] == [
        ("127.0.0.1:2222", str(HOME), "daemon not running", "config"),
        ("[::1]:8080", str(HOME), "daemon not running", "config"),
    ]  # fmt: skip
    text = cli("proxy", "list", "--config", cfg)
    assert text.code == 0
    assert text.out.splitlines()[0].split() == [
        "127.0.0.1:2222", "home/ssh", "daemon", "not", "running",
    ]  # fmt: skip

    result = cli("proxy", "remove", "8080", "--config", cfg)
    assert result.code == 0, result.err
    assert result.out.strip() == f"proxy [::1]:8080 -> {HOME}/web removed from {cfg}"
    assert cli("proxies", "remove", "2222", "--config", cfg).code == 0
    assert cfg.read_text() == before  # comments and order as they were
    empty = cli("proxy", "list", "--config", cfg)
    assert empty.out.startswith("no lasting proxies")


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["add", "home", "ssh", "0"], 2, "port must be 1-65535, got '0'"),
        (["add", "home", "ssh", "65536"], 2, "port must be 1-65535"),
        (["add", "home", "SSH", "22"], 2, "invalid service name 'SSH'"),
        (["add", "home", "ping", "22"], 2, "service name 'ping' is reserved"),
        (["add", "home", "ssh", "22", "--bind", "localhost"], 2,
         "'localhost' is not an IP address"),
        (["add", "laptop", "ssh", "22"], 1, "'laptop' is neither a known name"),
        (["add", "/ip4/1.2.3.4/tcp/1", "ssh", "22"], 2, "neither a peer ID nor a name"),
        (["remove", "22"], 1, "no proxy on port 22"),
        (["remove"], 2, "the following arguments are required: port"),
    ],
)  # fmt: skip
def test_bad_arguments_are_one_error_line(
    cli: Cli, cfg: Path, argv: list[str], code: int, message: str
) -> None:
    before = cfg.read_text()
    result = cli("proxy", *argv, "--config", cfg)
    assert result.code == code, result.err
    [line] = result.err_lines
    assert line.startswith("error: ") and message in line, line
    assert cfg.read_text() == before


def test_a_taken_bind_port_is_refused_with_the_remove_command(
    cli: Cli, cfg: Path
) -> None:
    assert cli("proxy", "add", "home", "ssh", "2222", "--config", cfg).code == 0
    result = cli("proxy", "add", "home", "web", "2222", "--config", cfg)
    assert result.code == 1
    assert "a proxy already listens on 127.0.0.1:2222 (home/ssh)" in result.err
    assert "`peerup proxy remove 2222`" in result.err
    # Another address on the same port is another entry; remove then needs --bind.
    assert cli("proxy", "add", "home", "web", "2222", "--bind", "0.0.0.0",
               "--config", cfg).code == 0  # fmt: skip
    ambiguous = cli("proxy", "remove", "2222", "--config", cfg)
    assert ambiguous.code == 1 and "2 proxies use port 2222" in ambiguous.err
    assert (
        cli("proxy", "remove", "2222", "--bind", "0.0.0.0", "--config", cfg).code == 0
    )
    assert [p.bind for p in load.load_node(cfg).proxies] == ["127.0.0.1"]


@pytest.mark.parametrize("word", sorted(proxies.ACTIONS))
def test_action_words_cannot_be_peer_names(cli: Cli, cfg: Path, word: str) -> None:
    result = cli("name", "set", word, str(HOME), "--config", cfg)
    assert result.code == 2
    assert f"name '{word}' is reserved" in result.err


def test_list_json_error_is_a_json_object(cli: Cli, workdir: Path) -> None:
    result = cli("proxy", "list", "--json", "--config", workdir / "missing.yaml")
    assert result.code == 1
    assert "config file not found" in result.json()["error"]


# --- with a running daemon ------------------------------------------------------------------




def test_the_running_daemon_opens_and_closes_what_is_edited(
    cli: Cli, cfg: Path, background: Background
) -> None:
    async def start() -> None:
        # No watcher reload during the test: the commands ask for one themselves.
        daemon = Daemon(load.load_node(cfg), watch_interval_s=3600.0)
        await daemon.start()
        background.closers.append(daemon.aclose)

    background.call(start())
    port = free_port()
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    busy_port = int(busy.getsockname()[1])
    try:
        result = cli("proxy", "add", "home", "ssh", str(port), "--config", cfg)
        assert result.code == 0, result.err
        assert (
            result.out.splitlines()[-1]
            == f"the daemon is listening on 127.0.0.1:{port}"
        )
        assert is_listening(port)

        result = cli("proxy", "add", "home", "web", str(busy_port), "--config", cfg)
        assert result.code == 1
        [line] = result.err_lines
        assert line.startswith(f"error: saved in {cfg}, but the daemon did not open it: "
                               f"cannot listen on 127.0.0.1:{busy_port}: "
                               "Address already in use (hint: free the port")  # fmt: skip
        assert len(load.load_node(cfg).proxies) == 2  # it stays in the file

        listed = cli("proxy", "list", "--json", "--config", cfg).json()
        assert listed["daemon_running"] is True
        assert [(p["port"], p["state"]) for p in listed["proxies"]] == [
            (port, "listening"),
            (busy_port, "failed"),
        ]
        status = cli("status", "--json", "--config", cfg).json()["daemon"]
        assert {(p["listen"], p["source"], p["error"] is None)
                for p in status["proxies"]} == {
            (f"127.0.0.1:{port}", "config", True),
            (f"127.0.0.1:{busy_port}", "config", False),
        }  # fmt: skip

        result = cli("proxy", "remove", str(port), "--config", cfg)
        assert result.code == 0, result.err
        assert result.out.splitlines()[-1] == f"the daemon closed 127.0.0.1:{port}"
        assert not is_listening(port)
    finally:
        busy.close()
