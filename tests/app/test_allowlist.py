"""app.allowlist: the authorized_keys format, the gate decision and live reload."""

from __future__ import annotations

import logging
import os
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from peerup.app.allowlist import (
    Allowlist,
    AuthorizedKey,
    format_entry,
    parse_authorized_keys,
    parse_expires,
)
from peerup.config import files
from peerup.core.access import Access
from peerup.core.errors import ConfigError
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.peer_id import PeerId


def peer(n: int) -> PeerId:
    return PeerId.from_public_key(
        Ed25519PrivateKey.from_seed(bytes([n]) * 32).public_key
    )


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


A, B, C, D = peer(1), peer(2), peer(3), peer(4)
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

FILE = f"""\
# authorized peers of my node

{A}   # laptop
{B} expires=2025-06-01 verified=sas # phone, lent out
  {C} verified="in person" color=blue

# keep this trailing comment
"""


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    return write(tmp_path / "authorized_keys", FILE)


def test_parse_entries_attrs_and_comments() -> None:
    entries = parse_authorized_keys(FILE, "ak")
    assert entries == [
        AuthorizedKey(A, (), "laptop", 3),
        AuthorizedKey(
            B, (("expires", "2025-06-01"), ("verified", "sas")), "phone, lent out", 4
        ),
        AuthorizedKey(C, (("verified", "in person"), ("color", "blue")), None, 5),
    ]
    assert entries[1].expires_at == datetime(2025, 6, 1, tzinfo=UTC)
    assert entries[1].verified == "sas"
    assert entries[2].unknown_attrs == ("color",)
    assert entries[0].expires_at is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-06-01", datetime(2025, 6, 1, tzinfo=UTC)),
        ("2025-06-01T10:30:00Z", datetime(2025, 6, 1, 10, 30, tzinfo=UTC)),
        ("2025-06-01t10:30:00z", datetime(2025, 6, 1, 10, 30, tzinfo=UTC)),
        ("2025-06-01T10:30:00", datetime(2025, 6, 1, 10, 30, tzinfo=UTC)),
        (
            "2025-06-01T10:30:00.5+02:00",
            datetime(2025, 6, 1, 8, 30, 0, 500000, tzinfo=UTC),
        ),
    ],
)
def test_parse_expires_forms(text: str, expected: datetime) -> None:
    assert parse_expires(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "tomorrow",
        "20250601",
        "2025-13-01",
        "2025-06-01T25:00:00Z",
        "2025-06-01T10:30",
        "2025-W22",
    ],
)
def test_parse_expires_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_expires(text)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (f"# ok\n{A}\nnot-a-peer # x\n", 3, "invalid peer ID"),
        (f"{A}\n\n{B} expires=soon\n", 3, "RFC 3339"),
        (f"{A}\n{B}\n{A} # again\n", 3, "already listed on line 1"),
        (f"{A} laptop\n", 1, "expected key=value"),
        (f"{A} expires=2025-01-01 expires=2026-01-01\n", 1, "given twice"),
        (f'{A} verified="unterminated\n', 1, "expected key=value"),
    ],
)
def test_parse_errors_name_file_and_line(text: str, line: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_authorized_keys(text, "/etc/peerup/authorized_keys")
    assert info.value.path == "/etc/peerup/authorized_keys"
    assert info.value.line == line
    assert str(info.value).startswith(f"/etc/peerup/authorized_keys:{line}: ")


def test_check_allows_listed_and_denies_others(keys: Path) -> None:
    allowlist = Allowlist(keys)
    allowlist.load()
    assert allowlist.check(A, NOW) == Access.allow("authorized")
    assert allowlist.check(C, NOW).is_allowed
    assert allowlist.check(D, NOW) == Access.deny("not in authorized_keys")


def test_expired_entry_is_refused(keys: Path) -> None:
    allowlist = Allowlist(keys)
    allowlist.load()
    midnight = datetime(2025, 6, 1, tzinfo=UTC)
    assert allowlist.check(B, midnight - timedelta(seconds=1)).is_allowed
    refused = allowlist.check(B, midnight)
    assert not refused.is_allowed
    assert refused.reason == "authorization expired on 2025-06-01T00:00:00Z"
    # A naive "now" is taken as UTC; an aware one in another zone is converted.
    assert not allowlist.check(B, datetime(2025, 6, 1, 0, 0)).is_allowed
    east = timezone(timedelta(hours=2))
    assert allowlist.check(B, datetime(2025, 6, 1, 1, 59, tzinfo=east)).is_allowed


def test_missing_file_is_an_empty_list(tmp_path: Path) -> None:
    allowlist = Allowlist(tmp_path / "authorized_keys")
    allowlist.load()
    assert allowlist.entries() == []
    assert allowlist.check(A, NOW) == Access.deny("not in authorized_keys")
    assert allowlist.gate()(A) == Access.deny("not in authorized_keys")


def test_unknown_attributes_are_warnings(
    keys: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="peerup.app.allowlist"):
        Allowlist(keys).load()
    assert "unknown attribute 'color'" in caplog.text
    assert f"{keys}:5" in caplog.text


def test_add_keeps_every_other_line(keys: Path) -> None:
    allowlist = Allowlist(keys)
    allowlist.load()
    assert allowlist.add(
        D,
        comment="desk",
        expires=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        verified="sas",
    )
    assert (
        keys.read_text()
        == FILE + f"{D} expires=2026-01-02T03:04:05Z verified=sas # desk\n"
    )
    assert allowlist.check(D, NOW).is_allowed  # in force at once
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600


def test_add_present_peer_changes_nothing(keys: Path) -> None:
    allowlist = Allowlist(keys)
    inode = keys.stat().st_ino
    assert not allowlist.add(B, comment="again")
    assert keys.read_text() == FILE and keys.stat().st_ino == inode


def test_add_creates_the_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "authorized_keys"
    allowlist = Allowlist(path)
    assert allowlist.add(A)
    assert path.read_text() == f"{A}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_add_to_file_without_final_newline(tmp_path: Path) -> None:
    path = write(tmp_path / "ak", f"{A} # a")
    assert Allowlist(path).add(B, verified="in person")
    assert path.read_text() == f'{A} # a\n{B} verified="in person"\n'
    assert parse_authorized_keys(path.read_text(), "ak")[1].verified == "in person"


def test_remove_keeps_every_other_line(keys: Path) -> None:
    allowlist = Allowlist(keys)
    allowlist.load()
    assert allowlist.remove(B)
    assert keys.read_text() == FILE.replace(
        f"{B} expires=2025-06-01 verified=sas # phone, lent out\n", ""
    )
    assert allowlist.check(B, NOW - timedelta(days=1)) == Access.deny(
        "not in authorized_keys"
    )
    assert not allowlist.remove(B)


def test_remove_keeps_crlf_lines(tmp_path: Path) -> None:
    text = f"# c\r\n{A}\r\n{B}\r\n"
    path = write(tmp_path / "ak", text)
    assert Allowlist(path).remove(A)
    assert path.read_bytes() == f"# c\r\n{B}\r\n".encode()


def test_format_entry_refuses_multiline_text() -> None:
    with pytest.raises(ValueError):
        format_entry(A, comment="a\nb")
    with pytest.raises(ValueError):
        format_entry(A, verified='say "hi"')


def _external_edit(path: Path, text: str) -> None:
    """Rewrite in place (same inode) and bump mtime, as an editor saving might."""
    st = path.stat()
    path.write_text(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_gate_reloads_after_an_external_edit(keys: Path) -> None:
    allowlist = Allowlist(keys)
    gate = allowlist.gate()
    assert gate(A).is_allowed and not gate(D).is_allowed
    assert not allowlist.reload_if_changed()  # nothing changed: no re-read
    _external_edit(keys, FILE + f"{D}\n")
    assert gate(D) == Access.allow("authorized")
    _external_edit(keys, f"{D}\n")
    assert gate(A) == Access.deny("not in authorized_keys")


def test_reload_sees_atomic_replacement(keys: Path) -> None:
    allowlist = Allowlist(keys)
    allowlist.load()
    files.write_atomic(keys, f"{D}\n")
    assert allowlist.reload_if_changed()
    assert [e.peer_id for e in allowlist.entries()] == [D]


def test_reload_with_a_broken_file_keeps_the_previous_list(
    keys: Path, caplog: pytest.LogCaptureFixture
) -> None:
    allowlist = Allowlist(keys)
    allowlist.load()
    _external_edit(keys, FILE + "garbage line\n")
    with caplog.at_level(logging.ERROR, logger="peerup.app.allowlist"):
        assert not allowlist.reload_if_changed()
        assert not allowlist.reload_if_changed()  # logged once, not on every call
    assert caplog.text.count("keeping the previous allowlist") == 1
    assert f"{keys}:8" in caplog.text
    assert allowlist.check(A, NOW).is_allowed
    _external_edit(keys, f"{D}\n")
    assert allowlist.reload_if_changed()
    assert not allowlist.check(A, NOW).is_allowed


def test_deleting_the_file_empties_the_list(keys: Path) -> None:
    allowlist = Allowlist(keys)
    allowlist.load()
    keys.unlink()
    assert allowlist.reload_if_changed()
    assert allowlist.entries() == []


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_open_permissions_are_refused_with_chmod_hint(keys: Path, mode: int) -> None:
    keys.chmod(mode)
    allowlist = Allowlist(keys)
    with pytest.raises(ConfigError, match="too open") as info:
        allowlist.load()
    assert info.value.hint == f"chmod 600 {keys}"
    with pytest.raises(ConfigError, match="too open"):
        allowlist.add(D)
    assert keys.read_text() == FILE


def test_add_refuses_an_invalid_file(tmp_path: Path) -> None:
    path = write(tmp_path / "ak", "nonsense\n")
    with pytest.raises(ConfigError) as info:
        Allowlist(path).add(A)
    assert (info.value.path, info.value.line) == (str(path), 1)
    assert path.read_text() == "nonsense\n"


def test_crash_before_rename_leaves_the_old_file(
    keys: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(src: str, dst: str) -> None:
        raise OSError("killed")

    monkeypatch.setattr(os, "replace", crash)
    allowlist = Allowlist(keys)
    allowlist.load()
    with pytest.raises(OSError, match="killed"):
        allowlist.add(D)
    assert keys.read_text() == FILE
    assert os.listdir(keys.parent) == ["authorized_keys"]
    assert not allowlist.check(D, NOW).is_allowed
