"""systemd's notification protocol, as a unit with ``Type=notify`` and ``WatchdogSec``
sees it: a real ``peerup daemon`` and a real ``peerup relay serve`` send READY=1 once
up, WATCHDOG=1 at half of ``WATCHDOG_USEC``, and STOPPING=1 on SIGTERM, to the
datagram socket in ``NOTIFY_SOCKET`` (here one the test made, as systemd would). The
units ``service install`` writes ask for it, and pass ``systemd-analyze verify``."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import pairing_harness as harness
from peerup.app import units
from peerup.net import sdnotify

WATCHDOG_USEC = 200_000


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, Path]]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(15)
    yield sock, path
    sock.close()


def messages_until(sock: socket.socket, wanted: str, seen: list[str]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        message = sock.recv(4096).decode()
        seen.append(message)
        if wanted in message.split("\n"):
            return
    pytest.fail(f"no {wanted} in {seen}")


def run_and_watch(
    argv: list[str], sock: socket.socket, path: Path, *, reload: bool = False
) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEERUP_")}
    env.update(NOTIFY_SOCKET=str(path), WATCHDOG_USEC=str(WATCHDOG_USEC))
    proc = subprocess.Popen(
        [sys.executable, "-m", "peerup", *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    seen: list[str] = []
    try:
        messages_until(sock, "READY=1", seen)
        started = time.monotonic()
        for _ in range(3):
            messages_until(sock, "WATCHDOG=1", seen)
        # Three pings at half the interval take about one interval.
        assert time.monotonic() - started < 4 * WATCHDOG_USEC / 1e6 + 1.0
        if reload:  # `systemctl reload`: RELOADING with the time, then READY again
            proc.send_signal(signal.SIGHUP)
            messages_until(sock, "RELOADING=1", seen)
            assert "MONOTONIC_USEC=" in seen[-1]
            messages_until(sock, "READY=1", seen)
            assert "STATUS=config reloaded" in seen[-1]
        proc.send_signal(signal.SIGTERM)
        messages_until(sock, "STOPPING=1", seen)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return seen


def test_the_daemon_notifies_ready_watchdog_reloading_and_stopping(
    tmp_path: Path, notify_socket: tuple[socket.socket, Path]
) -> None:
    config, _ = harness.make_node(tmp_path, "home", [], listen=["/ip4/127.0.0.1/tcp/0"])
    seen = run_and_watch(
        ["daemon", "--config", str(config)], *notify_socket, reload=True
    )
    ready = next(m for m in seen if "READY=1" in m)
    assert "MAINPID=" in ready and "STATUS=peer " in ready


def test_the_relay_notifies_ready_watchdog_and_stopping(
    tmp_path: Path, notify_socket: tuple[socket.socket, Path]
) -> None:
    config = harness.write_relay(tmp_path)
    seen = run_and_watch(["relay", "serve", "--config", str(config)], *notify_socket)
    assert any("STATUS=relay " in m for m in seen)


def test_units_ask_for_notify_and_a_watchdog_and_verify(tmp_path: Path) -> None:
    python = Path(sys.executable)
    daemon = units.daemon_unit(python, tmp_path / "config.yaml", tmp_path)
    relay = units.relay_unit(python, tmp_path / "relay-server.yaml", tmp_path, user=None)
    for unit in (daemon, relay):
        lines = unit.text.splitlines()
        assert "Type=notify" in lines
        assert f"WatchdogSec={units.WATCHDOG_SEC}" in lines
        assert any(line.startswith("MemoryMax=") for line in lines)
        assert "NoNewPrivileges=yes" in lines and "PrivateTmp=yes" in lines
        assert f"LimitNOFILE={units.LIMIT_NOFILE}" in lines
    assert "ProtectSystem=strict" in relay.text.splitlines()
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed: the unit files are not verified")
    for unit in (daemon, relay):
        path = tmp_path / unit.name
        path.write_text(unit.text)
        done = subprocess.run(
            ["systemd-analyze", "verify", str(path)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr


def test_an_abstract_notify_socket_is_reached_and_a_foreign_watchdog_ignored() -> None:
    """``@name`` is an abstract socket (a leading NUL byte, no file); WATCHDOG_USEC
    meant for another process (WATCHDOG_PID) starts no pings here."""
    name = f"peerup-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        notifier = sdnotify.Notifier({"NOTIFY_SOCKET": f"@{name}", "WATCHDOG_USEC": "1000000"})
        assert notifier.watchdog_s == 1.0
        assert notifier.notify("STATUS=hello")
        assert sock.recv(4096) == b"STATUS=hello"
    other = sdnotify.Notifier(
        {
            "NOTIFY_SOCKET": f"@{name}",
            "WATCHDOG_USEC": "1000000",
            "WATCHDOG_PID": str(os.getpid() + 1),
        }
    )
    assert other.watchdog_s is None
    # Gone (nobody listens now): not sent, and the process goes on.
    assert not other.notify("READY=1")
    assert not sdnotify.Notifier({}).notify("READY=1")
