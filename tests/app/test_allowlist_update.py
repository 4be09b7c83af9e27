"""``Allowlist.update``: change an entry's expiry or comment, keep everything else."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from peerup.app.allowlist import Allowlist
from peerup.config import files
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.peer_id import PeerId


def new_peer() -> PeerId:
    return PeerId.from_public_key(Ed25519PrivateKey.generate().public_key)


A, B = new_peer(), new_peer()
WHEN = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    path = tmp_path / "authorized_keys"
    files.write_atomic(
        path,
        "# header\n"
        f'{A}  verified="sas 1234" color=blue   # laptop\n'
        "\n"
        f"{B} expires=2030-01-01\r\n"
        "# tail",
    )
    return path


def test_update_sets_expires_and_keeps_other_attrs_and_lines(keys: Path) -> None:
    allowlist = Allowlist(keys)

    assert allowlist.update(A, expires=WHEN)

    lines = keys.read_bytes().decode().split("\n")
    assert lines[1] == (
        f'{A} verified="sas 1234" color=blue expires=2031-05-06T07:08:09Z # laptop'
    )
    assert lines[0] == "# header" and lines[2:] == [
        "",
        f"{B} expires=2030-01-01\r",
        "# tail",
    ]
    assert allowlist.entries()[0].expires_at == WHEN


def test_update_replaces_expires_in_place_and_keeps_crlf(keys: Path) -> None:
    allowlist = Allowlist(keys)

    assert allowlist.update(B, expires=WHEN, comment="home")

    assert (
        keys.read_bytes().decode().split("\n")[3]
        == f"{B} expires=2031-05-06T07:08:09Z # home\r"
    )


def test_update_without_a_change_leaves_the_file_alone(keys: Path) -> None:
    allowlist = Allowlist(keys)
    before = keys.read_bytes()

    assert not allowlist.update(A, comment="laptop")
    assert not allowlist.update(A)
    assert keys.read_bytes() == before


def test_update_of_an_unlisted_peer_or_a_multiline_comment_raises(keys: Path) -> None:
    allowlist = Allowlist(keys)
    with pytest.raises(LookupError):
        allowlist.update(new_peer(), comment="x")
    with pytest.raises(ValueError, match="one line"):
        allowlist.update(A, comment="a\nb")
