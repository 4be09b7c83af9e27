"""``peerup relay setup|authorize|deauthorize|list-peers|info`` in-process."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

from peerup.cli import main
from peerup.cli.common import CliIO
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.peer_id import PeerId


def run(argv: list[str], answers: list[str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    replies = iter(answers or [])
    code = main(argv, CliIO(out, err, lambda _q: next(replies)))
    return code, out.getvalue(), err.getvalue()


def some_peer() -> str:
    return str(PeerId.from_public_key(Ed25519PrivateKey.generate().public_key))


def test_setup_authorize_list_info(tmp_path: Path) -> None:
    d = tmp_path / "relay"
    code, out, _ = run(["relay", "setup", "--dir", str(d), "--non-interactive",
                        "--listen", "/ip4/127.0.0.1/tcp/7777"])
    assert code == 0, out
    cfg = d / "relay-server.yaml"
    for f in d.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    peer = some_peer()
    assert run(["relay", "authorize", peer, "my laptop", "--config", str(cfg)])[0] == 0
    code, out, _ = run(["relay", "list-peers", "--json", "--config", str(cfg)])
    assert json.loads(out)["peers"] == [{"peer_id": peer, "comment": "my laptop"}]
    code, out, _ = run(["relay", "info", "--json", "--config", str(cfg)])
    info = json.loads(out)
    assert info["multiaddrs"] == [f"/ip4/127.0.0.1/tcp/7777/p2p/{info['peer_id']}"]
    code, out, _ = run(["relay", "info", "--config", str(cfg)])
    assert info["peer_id"] in out
    assert "\u2580" in out or "\u2584" in out  # the QR code, in half blocks
    assert run(["relay", "deauthorize", peer, "--config", str(cfg)])[0] == 0
    code, _, err = run(["relay", "deauthorize", peer, "--config", str(cfg)])
    assert code == 1 and err.startswith("error:")


def test_setup_never_overwrites_without_asking(tmp_path: Path) -> None:
    d = tmp_path / "relay"
    assert run(["relay", "setup", "--dir", str(d), "--non-interactive"])[0] == 0
    before = (d / "relay-server.yaml").read_text()
    code, _, err = run(["relay", "setup", "--dir", str(d), "--non-interactive"])
    assert code == 1 and "--force" in err and err.count("\n") == 1
    code, out, _ = run(["relay", "setup", "--dir", str(d)], answers=["n"])
    assert code == 1 and "unchanged" in out
    assert (d / "relay-server.yaml").read_text() == before


def test_open_relay_is_an_explicit_choice_with_a_warning(tmp_path: Path) -> None:
    d = tmp_path / "relay"
    code, _, err = run(["relay", "setup", "--dir", str(d), "--non-interactive", "--open"])
    assert code == 0 and "OPEN" in err
    assert "enforce_allowlist: false" in (d / "relay-server.yaml").read_text()
