"""The README's set-up, followed word for word, as a new user would.

Every fenced block of the README's "Setting up two machines and a relay" section
that starts with ``# on the relay``, ``# on home`` or ``# on the laptop`` is run, line
by line and in order, on that machine: three hosts of the NAT lab
(``../shared/natlab``), the relay at the README's own public address 203.0.113.10,
home behind CGNAT, the laptop behind a home router, each with a fresh HOME and
``peerup`` on its PATH. Lines the README marks ``# keeps running`` are started in the
background. ``<…>`` placeholders are replaced by what the README says to put there
(the peer IDs that earlier steps print). Then the README's ``ssh`` line reaches a real
sshd on home through the tunnel, and the README's ``ssh_config`` snippet does the
same with ProxyCommand. Needs root (network namespaces); CI runs it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from e2e_harness import Proc, child_env, skip_or_fail, wait_until

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
NATLAB = ROOT.parent / "shared" / "natlab" / "natlab"
SSHD = Path("/usr/sbin/sshd")
SECTION = "## Setting up two machines and a relay"
MACHINES = {"# on the relay": "relay", "# on home": "home", "# on the laptop": "laptop"}
KEEPS_RUNNING = "# keeps running"
LAB = "home=cgnat,laptop=port-restricted,ipv6=1"


@dataclass
class Step:
    machine: str
    command: str
    background: bool


def readme_steps(text: str) -> tuple[list[Step], str]:
    """The section's machine blocks as steps, and its ``ssh_config`` snippet."""
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end > 0 else len(text)]
    steps: list[Step] = []
    snippet = ""
    for block in re.findall(r"```[a-z]*\n(.*?)```", section, re.S):
        lines = block.strip("\n").splitlines()
        first = lines[0].strip()
        if first.startswith("Host "):
            snippet = block
            continue
        machine = MACHINES.get(first)
        if machine is None:
            continue
        for line in lines[1:]:
            command, _, comment = line.partition(" #")
            command = command.strip()
            if command and not command.startswith("#"):
                steps.append(
                    Step(machine, command, KEEPS_RUNNING in f"#{comment}")
                )
    return steps, snippet


def test_readme_steps_are_found() -> None:
    """The parser sees the README's steps (runs everywhere, no root needed)."""
    steps, snippet = readme_steps(README.read_text())
    machines = {s.machine for s in steps}
    assert machines == {"relay", "home", "laptop"}, steps
    assert any(s.background and "relay serve" in s.command for s in steps)
    assert any(s.background and s.command.startswith("peerup daemon") for s in steps)
    assert any(s.command.startswith("ssh ") for s in steps)
    assert "ProxyCommand peerup proxy --stdio home ssh" in snippet


@dataclass
class Lab:
    workdir: Path
    bindir: Path
    procs: list[Proc] = field(default_factory=list)
    values: dict[str, str] = field(default_factory=dict)

    def home_of(self, machine: str) -> Path:
        return self.workdir / machine

    def argv(self, machine: str, command: str) -> list[str]:
        env = [
            f"HOME={self.home_of(machine)}",
            f"PATH={self.bindir}:{os.environ.get('PATH', '')}",
        ]
        host = "relay" if machine == "relay" else machine
        return [str(NATLAB), "exec", host, "--", "env", *env, "sh", "-c", command]

    def run(self, machine: str, command: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.argv(machine, command),
            capture_output=True,
            text=True,
            timeout=60,
            env=child_env(),
            stdin=subprocess.DEVNULL,
        )
        return done

    def start(self, machine: str, command: str) -> Proc:
        proc = Proc(
            f"{machine}-{len(self.procs)}", self.argv(machine, command), self.workdir
        ).start()
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(p.logs() for p in self.procs)


@pytest.fixture
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        skip_or_fail("needs root (the NAT lab builds network namespaces)")
    for tool in ("ip", "nft", "ssh", "sshd"):
        if shutil.which(tool) is None and not (tool == "sshd" and SSHD.exists()):
            skip_or_fail(f"{tool} is missing (scripts/setup-system installs it)")
    if not NATLAB.exists():
        skip_or_fail(f"{NATLAB} is missing")
    workdir = Path(tempfile.mkdtemp(prefix="pw", dir="/tmp"))
    os.chmod(workdir, 0o755)
    bindir = workdir / "bin"
    bindir.mkdir()
    shim = bindir / "peerup"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m peerup "$@"\n')
    shim.chmod(0o755)
    subprocess.run([str(NATLAB), "down"], capture_output=True, check=False)
    up = subprocess.run([str(NATLAB), "up", LAB], capture_output=True, text=True)
    assert up.returncode == 0, up.stdout + up.stderr
    result = Lab(workdir, bindir)
    for machine in ("relay", "home", "laptop"):
        result.home_of(machine).mkdir(mode=0o700)
    try:
        yield result
    finally:
        for proc in reversed(result.procs):
            proc.stop(5)
        subprocess.run([str(NATLAB), "down"], capture_output=True, check=False)
        shutil.rmtree(workdir, ignore_errors=True)


def _sshd_on_home(lab: Lab) -> Path:
    """A real sshd on home's 127.0.0.1:22 (inside its namespace); the client key."""
    directory = lab.workdir / "sshd"
    directory.mkdir(mode=0o700)
    for name in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(directory / name)],
            check=True,
            capture_output=True,
        )
    shutil.copy(directory / "client_key.pub", directory / "authorized_keys")
    config = directory / "sshd_config"
    config.write_text(
        "Port 22\nListenAddress 127.0.0.1\n"
        f"HostKey {directory / 'host_key'}\n"
        f"AuthorizedKeysFile {directory / 'authorized_keys'}\n"
        f"PidFile {directory / 'sshd.pid'}\n"
        "StrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
    )
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    proc = lab.start("home", f"{SSHD} -D -e -f {config}")
    proc.wait_for_output(r"Server listening on 127\.0\.0\.1 port 22")
    return directory / "client_key"


def _fill(command: str, lab: Lab) -> str:
    def value(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in lab.values:
            pytest.fail(f"the README uses <{key}> before a step that prints it")
        return lab.values[key]

    return re.sub(r"<([a-z-]+)>", value, command)


def _learn(lab: Lab, machine: str) -> None:
    """What the user reads off a machine once it is set up: its peer ID."""
    if machine == "relay":
        done = lab.run("relay", "peerup relay info --json")
        if done.returncode == 0:
            lab.values["relay-peer-id"] = json.loads(done.stdout)["peer_id"]
        return
    done = lab.run(machine, "peerup whoami --json")
    if done.returncode == 0:
        lab.values[f"{machine}-peer-id"] = json.loads(done.stdout)["peer_id"]


def test_readme_set_up_works_word_for_word(lab: Lab) -> None:
    steps, snippet = readme_steps(README.read_text())
    key = _sshd_on_home(lab)
    lab.values["user"] = "root"
    proxy_port: int | None = None
    for step in steps:
        command = _fill(step.command, lab)
        if command.startswith("ssh "):
            proxy_port = int(re.search(r"-p (\d+)", command).group(1))  # type: ignore[union-attr]
            _ssh(lab, command, key)
            continue
        if step.background:
            proc = lab.start(step.machine, command)
            _wait_started(lab, step.machine, proc, command)
        else:
            done = lab.run(step.machine, command)
            assert done.returncode == 0, (
                f"README step on {step.machine} failed: {command}\n"
                f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}\n{lab.logs()}"
            )
        _learn(lab, step.machine)
    assert proxy_port is not None, "the README never reaches home with ssh"
    config = lab.workdir / "ssh_config"
    config.write_text(
        snippet
        + f"  User root\n  IdentityFile {key}\n  StrictHostKeyChecking no\n"
        "  UserKnownHostsFile /dev/null\n  BatchMode yes\n"
    )
    done = lab.run("laptop", f"ssh -F {config} home echo via ProxyCommand")
    assert done.returncode == 0, done.stderr + lab.logs()
    assert done.stdout == "via ProxyCommand\n"


def _wait_started(lab: Lab, machine: str, proc: Proc, command: str) -> None:
    """A background step is up: the relay answers, the daemon holds its relay
    reservation (what ``peerup status`` shows), the proxy listens."""
    if "relay serve" in command:
        proc.wait_for_output(r"peer-up relay 12D3KooW")
    elif command.startswith("peerup daemon"):
        proc.wait_for_output(r"peerup daemon 12D3KooW")

        def reserved() -> bool:
            done = lab.run(machine, "peerup status --json")
            live = json.loads(done.stdout).get("daemon") if done.returncode == 0 else None
            return bool(live and live["relays"] and live["relays"][0]["reserved"])

        wait_until(f"{machine}'s daemon to hold its reservation", reserved, 20, 0.2)
    elif command.startswith("peerup proxy"):
        proc.wait_for_output(r"proxy \S+:\d+ ->")
    else:
        pytest.fail(f"no way to tell that {command!r} (# keeps running) started")


def _ssh(lab: Lab, command: str, key: Path) -> None:
    """The README's ssh line, plus what a test needs: the key, no host-key prompt,
    and a command to run instead of a shell."""
    argv = shlex.split(command)
    options = [
        "-i", str(key), "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
    ]  # fmt: skip
    full = shlex.join([argv[0], *options, *argv[1:], "echo", "hello through peer-up"])

    done = lab.run("laptop", full)
    assert done.returncode == 0, done.stderr + lab.logs()
    assert done.stdout == "hello through peer-up\n", done.stdout + lab.logs()
