"""A listener owns its port: a second listen on a busy port fails with one clear error.

Host level (loopback, on asyncio's loop and on uvloop, which the CLI runs) and as the
user meets it: a second ``peerup relay serve`` or ``peerup daemon`` on a port already
taken exits 1 with one ``error:`` line and a hint, instead of starting and splitting
the incoming connections with the first (SO_REUSEPORT on listeners did that).
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from peerup.core.errors import TransportError
from peerup.core.keys import Ed25519PrivateKey
from peerup.net.host import Host
from peerup.net.tcp import ListenError

uvloop = pytest.importorskip("uvloop")

Runner = Callable[[Coroutine[Any, Any, None]], None]
RUNNERS: dict[str, Runner] = {"asyncio": asyncio.run, "uvloop": uvloop.run}


@pytest.mark.parametrize("loop", sorted(RUNNERS))
def test_second_listen_on_a_busy_port_raises_listen_error(loop: str) -> None:
    async def main() -> None:
        first, second = (Host(Ed25519PrivateKey.generate()) for _ in range(2))
        try:
            bound = await first.listen("/ip4/127.0.0.1/tcp/0")
            with pytest.raises(ListenError) as caught:
                await second.listen(bound[0])
            assert second.listen_addrs == []
        finally:
            await first.aclose()
            await second.aclose()
        exc = caught.value
        assert isinstance(exc, TransportError)
        assert exc.code == errno.EADDRINUSE
        assert str(exc) == f"cannot listen on {bound[0]}: address already in use"
        assert exc.hint is not None and "another peerup daemon or relay" in exc.hint
        assert "in the config" in exc.hint
        assert f"in {Path('/x/config.yaml')}" in str(
            exc.in_config("/x/config.yaml").hint
        )

    RUNNERS[loop](main())


def test_a_plain_socket_holding_the_port_is_refused_too(run: Any) -> None:
    """Not only our own listeners: any process that listens there owns the port."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]

        async def main() -> None:
            async with Host(Ed25519PrivateKey.generate()) as host:
                with pytest.raises(ListenError, match="address already in use"):
                    await host.listen(f"/ip4/127.0.0.1/tcp/{port}")

        run(main())


def test_listen_again_after_close_works(run: Any) -> None:
    """SO_REUSEADDR stays: a restart on the same port need not wait for TIME_WAIT."""

    async def main() -> None:
        first = Host(Ed25519PrivateKey.generate())
        bound = await first.listen("/ip4/127.0.0.1/tcp/0")
        other = Host(Ed25519PrivateKey.generate())
        await other.connect(bound[0].with_peer_id(first.peer_id))
        await first.aclose()
        await other.aclose()
        again = Host(Ed25519PrivateKey.generate())
        assert await again.listen(bound[0]) == bound
        await again.aclose()

    run(main())


# --- as the user meets it: two processes ----------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PEERUP_CONFIG_DIR": str(tmp_path / "user-config"),
        "PEERUP_LOG": "",
        "PYTHONUNBUFFERED": "1",
    }


def peerup(
    *argv: str | Path, env: dict[str, str], cwd: Path, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "peerup", *map(str, argv)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
    )


@pytest.fixture
def started() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start a long-running ``peerup`` and wait for its first line of output."""
    procs: list[subprocess.Popen[str]] = []

    def start(
        *argv: str | Path, env: dict[str, str], cwd: Path
    ) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "peerup", *map(str, argv)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=cwd,
        )
        procs.append(proc)
        assert proc.stdout is not None
        first = proc.stdout.readline()  # printed once it listens
        assert first, f"{argv} exited with {proc.wait()}"
        return proc

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def second_one_refused(
    argv: list[str | Path], port: int, config: Path, env: dict[str, str], cwd: Path
) -> None:
    try:
        result = peerup(*argv, env=env, cwd=cwd, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"a second {argv[:2]} on port {port} started instead of failing")
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert errors == [
        f"error: cannot listen on /ip4/127.0.0.1/tcp/{port}: address already in use "
        "(hint: another peerup daemon or relay may be running; stop it or change "
        f"`listen` in {config})"
    ], result.stderr


def test_second_relay_serve_on_the_same_port_exits_1_with_one_line(
    tmp_path: Path, env: dict[str, str], started: Callable[..., Any]
) -> None:
    port = free_port()
    setup = peerup("relay", "setup", "--dir", "relay", "--non-interactive", "--listen",
                   f"/ip4/127.0.0.1/tcp/{port}", env=env, cwd=tmp_path)  # fmt: skip
    assert setup.returncode == 0, setup
    config = Path("relay/relay-server.yaml")
    started("relay", "serve", "--config", config, env=env, cwd=tmp_path)

    second_one_refused(
        ["relay", "serve", "--config", config], port, config, env, tmp_path
    )


def test_second_daemon_on_the_same_port_exits_1_with_one_line(
    tmp_path: Path, env: dict[str, str], started: Callable[..., Any]
) -> None:
    port = free_port()
    for name in ("one", "two"):
        init = peerup("init", "--dir", name, "--non-interactive", "--listen",
                      f"/ip4/127.0.0.1/tcp/{port}", env=env, cwd=tmp_path)  # fmt: skip
        assert init.returncode == 0, init
    started("daemon", "--config", "one/config.yaml", env=env, cwd=tmp_path)

    result = peerup("daemon", "--config", "two/config.yaml", env=env, cwd=tmp_path)
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(
        f"error: cannot listen on /ip4/127.0.0.1/tcp/{port}: address already in use "
        "(hint: another peerup daemon or relay may be running; stop it or change "
        "`listen` in "
    ), result.stderr
