"""Temporary files of atomic writes left by a killed writer are removed at start.

An atomic write leaves ``.<name>.<pid>.<random>.tmp`` behind only when its process
dies between creating it and renaming it (kill -9). ``remove_stale_temps`` removes
those whose writer is dead, or that are older than ``STALE_TEMP_S``; a live
writer's fresh file, and anything that is not ours, stays. The daemon and the relay
run it over their config directories when they start.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from peerup.app.daemon import Daemon
from peerup.app.relay_server import RelayServer
from peerup.config import files, load
from peerup.core.keys import Ed25519PrivateKey

# A writer that gets as far as its temporary file (the same code as write_atomic),
# says where it is, and waits to be killed before it can rename it.
KILLED_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from peerup.config import files
    print(files._write_temp(Path(sys.argv[1]), b"half of a new list", 0o600),
          flush=True)
    sys.stdin.read()
    """
)


def killed_writer_temp(target: Path) -> Path:
    """The temporary file of a writer of ``target`` killed with SIGKILL mid-write."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEERUP_")}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(target)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None
    tmp = Path(child.stdout.readline().decode().strip())
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    assert tmp.exists()
    return tmp


def make_old(path: Path) -> None:
    then = time.time() - files.STALE_TEMP_S - 5
    os.utime(path, (then, then))


def test_temp_of_a_killed_writer_is_removed_at_once(tmp_path: Path) -> None:
    target = tmp_path / "authorized_keys"
    files.write_atomic(target, "# the list in force\n")
    tmp = killed_writer_temp(target)
    assert tmp.name.startswith(".authorized_keys.") and tmp.name.endswith(".tmp")

    removed = files.remove_stale_temps(tmp_path)

    assert removed == [tmp]
    assert not tmp.exists()
    assert target.read_text() == "# the list in force\n"


def test_a_live_writers_fresh_temp_is_kept_until_it_is_old(tmp_path: Path) -> None:
    tmp = Path(files._write_temp(tmp_path / "config.yaml", b"x", 0o600))
    assert f".{os.getpid()}." in tmp.name  # ours, and we are alive

    assert files.remove_stale_temps(tmp_path) == []
    assert tmp.exists()

    make_old(tmp)
    assert files.remove_stale_temps(tmp_path) == [tmp]


@pytest.mark.parametrize(
    "name", [".authorized_keys.k3j_9xq2.tmp", ".config.yaml.ab12cd34.tmp"]
)
def test_temp_names_without_a_pid_go_by_age(tmp_path: Path, name: str) -> None:
    old_style = tmp_path / name
    old_style.write_bytes(b"x")

    assert files.remove_stale_temps(tmp_path) == []
    make_old(old_style)
    assert files.remove_stale_temps(tmp_path) == [old_style]


def test_other_files_are_left_alone(tmp_path: Path) -> None:
    others = [
        tmp_path / "authorized_keys",
        tmp_path / ".authorized_keys.swp",
        tmp_path / "notes.tmp",
        tmp_path / ".config.yaml.tmp",
        tmp_path / ".config.yaml.123.toolongrandom.tmp",
    ]
    for path in others:
        path.write_bytes(b"keep me")
        make_old(path)
    (tmp_path / ".dir.12345.abcdefgh.tmp").mkdir()

    assert files.remove_stale_temps(tmp_path) == []
    assert all(path.exists() for path in others)
    assert files.remove_stale_temps(tmp_path / "missing") == []


def node_config(directory: Path) -> Path:
    files.write_atomic(
        directory / "identity.key", Ed25519PrivateKey.generate().to_protobuf()
    )
    files.write_atomic(directory / "authorized_keys", "# none\n")
    text = load.render_node_config(
        identity_key="identity.key",
        listen=["/ip4/127.0.0.1/tcp/0"],
        relays=[],
        network_name=None,
    )
    files.write_atomic(directory / "config.yaml", text)
    return directory / "config.yaml"


def test_daemon_start_removes_what_killed_writers_left(tmp_path: Path) -> None:
    config = node_config(tmp_path / "node")
    left = [
        killed_writer_temp(tmp_path / "node" / "authorized_keys"),
        killed_writer_temp(tmp_path / "node" / "config.yaml"),
    ]

    Daemon(load.load_node(config))

    assert [p for p in left if p.exists()] == []


def test_relay_start_removes_what_killed_writers_left(tmp_path: Path) -> None:
    directory = tmp_path / "relay"
    files.write_atomic(
        directory / "relay_identity.key", Ed25519PrivateKey.generate().to_protobuf()
    )
    files.write_atomic(directory / "relay_authorized_keys", "# none\n")
    files.write_atomic(
        directory / "relay-server.yaml",
        load.render_relay_config(["/ip4/127.0.0.1/tcp/0"]),
    )
    left = killed_writer_temp(directory / "relay_authorized_keys")

    RelayServer(load.load_relay(directory / "relay-server.yaml"))

    assert not left.exists()
