"""Real processes for the end-to-end tests: a relay, peer-up daemons, sshd, proxies.

Everything runs as separate OS processes started with ``python -m peerup … --config``,
exactly as a user would run them, in a short temporary directory under ``/tmp`` (the
daemon's API socket path must stay under the 108-byte AF_UNIX limit). Processes write
their stdout and stderr to files in that directory, so a test can read the logs while
the process runs and a failure message can quote them.

Root-only parts (a system ``sshd`` on a test port) skip when not root or when sshd is
missing, and fail instead when ``CI`` is set, because CI must run them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

IDLE_GAP_S = 30.0
SESSION_S = 60.0
ANSWER_TIMEOUT_S = 15.0
SSHD = Path("/usr/sbin/sshd")
PEERUP = [sys.executable, "-m", "peerup"]
START_TIMEOUT_S = 20.0
CLI_TIMEOUT_S = 30.0


def is_ci() -> bool:
    return bool(os.environ.get("CI"))


def skip_or_fail(reason: str) -> None:
    """Skip locally; under CI (env ``CI`` set) fail, because CI must run the test."""
    if is_ci():
        pytest.fail(f"CI must run this test, but: {reason}")
    pytest.skip(reason)


def root_sshd_missing_reason() -> str | None:
    """Why the root-only sshd tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root (runs the system sshd on a test port)"
    if not SSHD.is_file():
        return f"{SSHD} is missing (apt-get install openssh-server)"
    for tool in ("ssh", "scp", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (apt-get install openssh-client)"
    return None


def require_root_sshd() -> None:
    reason = root_sshd_missing_reason()
    if reason is not None:
        skip_or_fail(reason)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env() -> dict[str, str]:
    """The environment for every child: no inherited peer-up overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEERUP_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_until(
    what: str, check: Callable[[], Any], timeout_s: float, interval_s: float = 0.1
) -> Any:
    """Poll ``check`` until it returns something truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


def peerup(
    *args: str | Path, check: bool = True, timeout_s: float = CLI_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run one ``peerup`` command to completion."""
    argv = [*PEERUP, *(str(a) for a in args)]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout_s, env=child_env()
    )
    if check and done.returncode != 0:
        pytest.fail(
            f"{' '.join(argv)} exited {done.returncode}\n"
            f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        )
    return done


@dataclass
class Proc:
    """A background process whose stdout and stderr go to files."""

    name: str
    argv: list[str]
    logdir: Path
    popen: subprocess.Popen[bytes] | None = None

    @property
    def out_path(self) -> Path:
        return self.logdir / f"{self.name}.out"

    @property
    def err_path(self) -> Path:
        return self.logdir / f"{self.name}.err"

    def start(self) -> Proc:
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=child_env(),
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def stdout(self) -> str:
        return (
            self.out_path.read_text(errors="replace") if self.out_path.exists() else ""
        )

    def stderr(self) -> str:
        return (
            self.err_path.read_text(errors="replace") if self.err_path.exists() else ""
        )

    def logs(self) -> str:
        return f"--- {self.name} stdout:\n{self.stdout()}\n--- {self.name} stderr:\n{self.stderr()}"

    def is_running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait_for_output(
        self, pattern: str, timeout_s: float = START_TIMEOUT_S
    ) -> re.Match[str]:
        """The first match of ``pattern`` in stdout+stderr; fails if the process exits."""

        def check() -> re.Match[str] | None:
            match = re.search(pattern, self.stdout() + "\n" + self.stderr())
            if match is None and not self.is_running():
                pytest.fail(
                    f"{self.name} exited before printing {pattern!r}\n{self.logs()}"
                )
            return match

        match: re.Match[str] = wait_until(
            f"{self.name} to print {pattern!r}", check, timeout_s
        )
        return match

    def kill(self) -> None:
        """SIGKILL, then reap."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, SIGKILL after ``timeout_s``; the exit code."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode


@dataclass
class Node:
    """One peer-up identity: its directory, config and (maybe) running daemon."""

    name: str
    dir: Path
    peer_id: str
    daemon: Proc | None = None
    procs: list[Proc] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.dir / "config.yaml"

    def cli(
        self, *args: str | Path, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return peerup(*args, "--config", self.config, check=check)

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.cli("status", "--json").stdout)
        return result

    def start_daemon(self, *, wait_relays: bool = True) -> Proc:
        self.daemon = Proc(
            f"{self.name}-daemon",
            [*PEERUP, "daemon", "--config", str(self.config)],
            self.dir.parent,
        )
        self.daemon.start()
        self.procs.append(self.daemon)
        self.wait_ready(wait_relays=wait_relays)
        return self.daemon

    def wait_ready(self, *, wait_relays: bool = True) -> dict[str, Any]:
        """Poll ``status --json`` until the daemon answers (and every relay reserved)."""

        def ready() -> dict[str, Any] | None:
            if self.daemon is not None and not self.daemon.is_running():
                pytest.fail(f"{self.name} daemon exited\n{self.daemon.logs()}")
            live = self.status()["daemon"]
            if live is None:
                return None
            if wait_relays and not (
                live["relays"] and all(r["reserved"] for r in live["relays"])
            ):
                return None
            return dict(live)

        live: dict[str, Any] = wait_until(
            f"{self.name} daemon ready", ready, START_TIMEOUT_S, 0.2
        )
        return live

    def start_proxy(self, peer: str, service: str, *extra: str) -> tuple[Proc, int]:
        """``peerup proxy PEER SERVICE 0``: the process and the local port it listens on."""
        proc = Proc(
            f"{self.name}-proxy-{service}-{len(self.procs)}",
            [
                *PEERUP, "proxy", peer, service, "0", "--config", str(self.config),
                *extra,
            ],  # fmt: skip
            self.dir.parent,
        ).start()
        self.procs.append(proc)
        match = proc.wait_for_output(r"proxy 127\.0\.0\.1:(\d+) ->")
        return proc, int(match.group(1))

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()


def init_node(workdir: Path, name: str, relay: str | None) -> Node:
    """``peerup init --non-interactive`` for a node listening on loopback only."""
    directory = workdir / name
    args = [
        "init",
        "--dir",
        directory,
        "--non-interactive",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--json",
    ]
    if relay:
        args += ["--relay", relay]
    info = json.loads(peerup(*args).stdout)
    return Node(name, directory, info["peer_id"])


def keep_relayed(node: Node) -> None:
    """Make ``node`` a machine behind CGNAT: it listens nowhere and keeps its
    connections on the relay (``direct_connections: false``). On one machine, two
    daemons would otherwise move their tunnel to a direct loopback connection."""
    text = node.config.read_text()
    text = re.sub(r"(?m)^listen:\n(  - .*\n)+", "listen: []\n", text)
    node.config.write_text(text + "direct_connections: false\n")
    assert "listen: []" in node.config.read_text(), "init's listen: changed"


@dataclass
class Relay:
    dir: Path
    port: int
    peer_id: str
    multiaddr: str
    proc: Proc | None = None

    @property
    def config(self) -> Path:
        return self.dir / "relay-server.yaml"

    def authorize(self, node: Node) -> None:
        peerup("relay", "authorize", node.peer_id, node.name, "--config", self.config)


def start_relay(workdir: Path) -> Relay:
    """``relay setup`` on a free loopback port, then ``relay serve`` in the background."""
    directory = workdir / "relay"
    port = free_port()
    peerup(
        "relay",
        "setup",
        "--dir",
        directory,
        "--non-interactive",
        "--listen",
        f"/ip4/127.0.0.1/tcp/{port}",
    )
    info = json.loads(
        peerup(
            "relay", "info", "--json", "--config", directory / "relay-server.yaml"
        ).stdout
    )
    relay = Relay(directory, port, info["peer_id"], info["multiaddrs"][0])
    relay.proc = Proc(
        "relay", [*PEERUP, "relay", "serve", "--config", str(relay.config)], workdir
    ).start()
    relay.proc.wait_for_output(r"peer-up relay 12D3KooW")
    return relay


# --- clients through a proxy ---------------------------------------------------------


def read_chunked(port: int) -> list[tuple[float, bytes]]:
    """POST through the proxy; (arrival time, payload) of each HTTP chunk."""
    body = json.dumps({"model": "tiny", "prompt": "hi", "stream": True}).encode()
    request = (
        b"POST /api/generate HTTP/1.1\r\nHost: home\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    chunks: list[tuple[float, bytes]] = []
    buf = b""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(request)

        def need(n: int) -> None:
            nonlocal buf
            while len(buf) < n:
                data = sock.recv(65536)
                if not data:
                    raise AssertionError(f"connection closed early; got {chunks}")
                buf += data

        def read_line() -> bytes:
            nonlocal buf
            while b"\r\n" not in buf:
                need(len(buf) + 1)
            line, _, buf = buf.partition(b"\r\n")
            return line

        status = read_line()
        assert status.startswith(b"HTTP/1.1 200"), status
        while read_line():
            pass
        while True:
            size = int(read_line(), 16)
            need(size + 2)
            payload, buf = buf[:size], buf[size + 2 :]
            if size == 0:
                return chunks
            chunks.append((time.monotonic(), payload))


def exchange(port: int, data: bytes, timeout_s: float = 30.0) -> bytes:
    """Connect, send ``data``, and read until the far end closes or resets."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        with contextlib.suppress(ConnectionError):
            sock.sendall(data)
            while chunk := sock.recv(65536):
                received += chunk
    return received


# --- sshd and the ssh client -----------------------------------------------------------


@dataclass
class Sshd:
    port: int
    client_key: Path
    proc: Proc

    def ssh_argv(
        self, port: int, *remote: str, options: tuple[str, ...] = ()
    ) -> list[str]:
        """``ssh`` to root@127.0.0.1:``port`` (a proxy in front of this sshd)."""
        return [
            "ssh",
            *self.client_options(),
            *options,
            "-p",
            str(port),
            "root@127.0.0.1",
            *remote,
        ]

    def scp_argv(self, port: int, src: str, dst: str) -> list[str]:
        return ["scp", *self.client_options(), "-P", str(port), src, dst]

    def client_options(self) -> list[str]:
        return [
            "-i", str(self.client_key),
            "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes",
            "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=20",
        ]  # fmt: skip


def start_sshd(workdir: Path, port: int) -> Sshd:
    """A throwaway sshd on 127.0.0.1:``port`` that accepts one throwaway client key."""
    directory = workdir / "sshd"
    directory.mkdir(mode=0o700)
    for name in ("host_key", "client_key"):
        subprocess.run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-f",
                str(directory / name),
            ],
            check=True,
            capture_output=True,
        )
    authorized = directory / "authorized_keys"
    shutil.copy(directory / "client_key.pub", authorized)
    config = directory / "sshd_config"
    config.write_text(
        f"Port {port}\n"
        "ListenAddress 127.0.0.1\n"
        f"HostKey {directory / 'host_key'}\n"
        f"AuthorizedKeysFile {authorized}\n"
        f"PidFile {directory / 'sshd.pid'}\n"
        "StrictModes no\n"
        "UsePAM no\n"
        "PermitRootLogin prohibit-password\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "ClientAliveInterval 0\n"
        "Subsystem sftp internal-sftp\n"
        "LogLevel VERBOSE\n"
    )
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    proc = Proc("sshd", [str(SSHD), "-D", "-e", "-f", str(config)], workdir).start()
    sshd = Sshd(port, directory / "client_key", proc)

    def listening() -> bool:
        if not proc.is_running():
            pytest.fail(f"sshd exited\n{proc.logs()}")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), 1),
        ):
            return True
        return False

    wait_until("sshd to listen", listening, START_TIMEOUT_S)
    return sshd


# --- the shared network and the long ssh session ----------------------------------


@dataclass
class IdleSession:
    """An ssh session through the proxy: lines sent at 0 s, after a 30 s gap, at 60 s.

    The remote side echoes each line back as ``got <line>``; ``events`` records
    (seconds since start, what happened) and ``error`` the first thing that went wrong.
    """

    argv: list[str]
    events: list[tuple[float, str]] = field(default_factory=list)
    error: str | None = None
    returncode: int | None = None
    stderr: str = ""
    thread: threading.Thread | None = None
    popen: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._drive, name="idle-ssh", daemon=True)
        self.thread.start()

    def join(self, timeout_s: float) -> None:
        assert self.thread is not None
        self.thread.join(timeout_s)

    def abort(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()

    def _drive(self) -> None:
        start = time.monotonic()
        lines: list[str] = []
        cond = threading.Condition()
        self.popen = popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert popen.stdin is not None and popen.stdout is not None

        def read() -> None:
            assert popen.stdout is not None
            for line in popen.stdout:
                with cond:
                    lines.append(line.strip())
                    self.events.append(
                        (time.monotonic() - start, f"recv {line.strip()}")
                    )
                    cond.notify_all()
            with cond:
                self.events.append((time.monotonic() - start, "eof"))
                cond.notify_all()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()

        def send_and_expect(word: str) -> bool:
            self.events.append((time.monotonic() - start, f"send {word}"))
            try:
                popen.stdin.write(word + "\n")  # type: ignore[union-attr]
                popen.stdin.flush()  # type: ignore[union-attr]
            except OSError as exc:
                self.error = f"cannot send {word!r}: {exc}"
                return False
            with cond:
                if not cond.wait_for(lambda: f"got {word}" in lines, ANSWER_TIMEOUT_S):
                    self.error = f"no answer to {word!r} within {ANSWER_TIMEOUT_S} s"
                    return False
            return True

        def sleep_until(at_s: float) -> None:
            time.sleep(max(0.0, start + at_s - time.monotonic()))

        ok = send_and_expect("one")
        if ok:
            sleep_until(IDLE_GAP_S)  # nothing crosses the tunnel meanwhile
            ok = send_and_expect("two")
        if ok:
            sleep_until(SESSION_S)
            ok = send_and_expect("three")
        if ok:
            popen.stdin.close()
        try:
            self.returncode = popen.wait(ANSWER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            popen.kill()
            self.returncode = popen.wait()
            self.error = self.error or "ssh did not exit after stdin closed"
        reader.join(5)
        assert popen.stderr is not None
        self.stderr = popen.stderr.read()


@dataclass
class Network:
    workdir: Path
    relay: Relay
    home: Node
    laptop: Node
    guest: Node
    stranger: Node
    outsider: Node
    sshd_port: int
    token_port: int
    down_port: int
    token_server: Proc
    sshd: Sshd | None = None
    idle_session: IdleSession | None = None

    def logs(self) -> str:
        procs = [
            self.relay.proc,
            self.token_server,
            *self.home.procs,
            *self.laptop.procs,
        ]
        return "\n".join(p.logs() for p in procs if p is not None)
