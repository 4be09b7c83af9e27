"""Invite codes (proto/invite_code.py): binary and text round trips, and every typo
reported as a typo before any network use."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerup.core.multiaddr import Multiaddr
from peerup.core.peer_id import PeerId
from peerup.proto.invite_code import (
    ALPHABET,
    CODE_VERSION,
    URI_PREFIX,
    CodeError,
    CodeProblem,
    InviteCode,
    InviteKind,
    encode_base32,
    group,
)

# Fixed peers, so the known-answer test below is stable.
INVITER = PeerId.from_string("12D3KooWGb33deXtWQfkMTHrdxpqNkiWjCPDVxF5uWZA8LHiVGAp")
RELAY = PeerId.from_string("12D3KooWHqxVvLyv5xr4wS3SRQjB2yrHp4XD1qLKZ5ME1tC1yLfF")
SHA_PEER = PeerId.from_string("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N")

peers = st.sampled_from([INVITER, RELAY, SHA_PEER])
transports = st.one_of(
    st.tuples(
        st.sampled_from(["ip4"]),
        st.ip_addresses(v=4).map(str),
        st.integers(1, 65535),
    ),
    st.tuples(
        st.sampled_from(["ip6"]),
        st.ip_addresses(v=6).map(str),
        st.integers(1, 65535),
    ),
    st.tuples(
        st.sampled_from(["dns", "dns4", "dns6"]),
        st.from_regex(r"[a-z0-9]{1,20}(\.[a-z0-9]{1,10}){0,3}", fullmatch=True),
        st.integers(1, 65535),
    ),
)


def relay_addr(parts: tuple[str, str, int], peer: PeerId) -> Multiaddr:
    proto, host, port = parts
    return Multiaddr.parse(f"/{proto}/{host}/tcp/{port}/p2p/{peer}")


codes = st.builds(
    InviteCode,
    invite_id=st.binary(min_size=4, max_size=4),
    secret=st.binary(min_size=10, max_size=10),
    expires_at=st.integers(0, 2**32 - 1),
    inviter=peers,
    relays=st.lists(st.builds(relay_addr, transports, peers), max_size=4).map(tuple),
    network_name=st.one_of(st.none(), st.text(min_size=1, max_size=40)),
)


def example() -> InviteCode:
    return InviteCode(
        bytes.fromhex("a1b2c3d4"),
        bytes(range(10)),
        1_900_000_000,
        INVITER,
        (
            Multiaddr.parse(f"/ip4/203.0.113.10/tcp/7777/p2p/{RELAY}"),
            Multiaddr.parse(f"/ip6/2001:db8::1/tcp/7777/p2p/{RELAY}"),
            Multiaddr.parse(f"/dns4/relay.example.com/tcp/443/p2p/{RELAY}"),
        ),
        "home",
    )


@given(codes)
def test_binary_and_text_round_trip(code: InviteCode) -> None:
    raw = code.to_bytes()
    assert InviteCode.from_payload(raw[:-4]) == code
    assert InviteCode.parse(code.to_text()) == code
    assert InviteCode.parse(code.uri()) == code


@given(codes)
def test_text_is_grouped_crockford_and_read_in_any_case_with_any_blanks(
    code: InviteCode,
) -> None:
    text = code.to_text()
    groups = text.split("-")
    assert all(len(g) == 5 for g in groups[:-1]) and 1 <= len(groups[-1]) <= 5
    assert set(text) <= set(ALPHABET) | {"-"}
    assert not set(text) & set("ILOU")
    assert InviteCode.parse(text.lower()) == code
    assert InviteCode.parse("  " + text.replace("-", " \n ") + "\n") == code
    # Crockford reads O as 0 and I, L as 1.
    assert InviteCode.parse(text.replace("0", "o").replace("1", "l")) == code
    # The QR code carries the URI in upper case (QR's alphanumeric mode).
    assert InviteCode.parse(code.uri().upper()) == code


def _substitutions(text: str) -> list[tuple[int, str]]:
    chars = text.replace("-", "")
    return [
        (i, chars[:i] + c + chars[i + 1 :])
        for i in range(len(chars))
        for c in ALPHABET
        if c != chars[i]
    ]


@settings(max_examples=15, deadline=None)
@given(codes)
def test_every_single_character_substitution_is_reported_as_a_typo(
    code: InviteCode,
) -> None:
    for i, typo in _substitutions(code.to_text()):
        with pytest.raises(CodeError) as info:
            InviteCode.parse(typo)
        assert info.value.problem is CodeProblem.TYPO
        # Where, when one substitution alone explains it: always the right place.
        assert info.value.position in (None, i + 1)


def test_a_typo_is_located_with_its_fix() -> None:
    text = example().to_text()
    chars = text.replace("-", "")
    i = 17
    wrong = "Z" if chars[i] != "Z" else "Y"
    with pytest.raises(CodeError) as info:
        InviteCode.parse(chars[:i] + wrong + chars[i + 1 :])
    assert info.value.problem is CodeProblem.TYPO
    assert info.value.position == i + 1
    assert info.value.suggestion == chars[i]
    assert "group 4, character 3" in str(info.value)
    assert "typo" in str(info.value)


@settings(max_examples=25, deadline=None)
@given(codes, st.data())
def test_swapped_missing_and_extra_characters_are_typos(
    code: InviteCode, data: st.DataObject
) -> None:
    chars = code.to_text().replace("-", "")
    i = data.draw(st.integers(0, len(chars) - 2))
    edits = [
        chars[:i] + chars[i + 1] + chars[i] + chars[i + 2 :],  # swapped neighbours
        chars[:i] + chars[i + 1 :],  # missing
        chars[:i] + data.draw(st.sampled_from(ALPHABET)) + chars[i:],  # extra
    ]
    for edit in edits:
        if edit == chars:
            continue
        with pytest.raises(CodeError) as info:
            InviteCode.parse(edit)
        assert info.value.problem is CodeProblem.TYPO


def test_a_character_no_code_has_is_named() -> None:
    chars = example().to_text().replace("-", "")
    with pytest.raises(CodeError) as info:
        InviteCode.parse(chars[:5] + "U" + chars[6:])
    assert info.value.problem is CodeProblem.TYPO
    assert info.value.position == 6
    assert "'U'" in str(info.value)


def test_another_version_is_not_a_typo() -> None:
    raw = bytearray(example().to_bytes()[:-4])
    raw[0] = CODE_VERSION + 1
    body = bytes(raw)
    text = encode_base32(body + zlib.crc32(body).to_bytes(4, "big"))
    with pytest.raises(CodeError) as info:
        InviteCode.parse(text)
    assert info.value.problem is CodeProblem.VERSION


@given(st.binary(min_size=1, max_size=120))
def test_any_payload_with_a_right_checksum_parses_or_is_malformed(body: bytes) -> None:
    text = encode_base32(body + zlib.crc32(body).to_bytes(4, "big"))
    try:
        InviteCode.parse(text)
    except CodeError as exc:
        assert exc.problem in (CodeProblem.MALFORMED, CodeProblem.VERSION)


def test_known_answer() -> None:
    code = example()
    raw = code.to_bytes()
    assert raw[:3] == bytes((2, InviteKind.PEER, 1))
    assert raw[3:7] == bytes.fromhex("a1b2c3d4")
    assert raw[7:17] == bytes(range(10))
    assert raw[17:21] == (1_900_000_000).to_bytes(4, "big")
    assert raw[21] == 1 and raw[22:54] == INVITER.multihash[6:]  # compact Ed25519 ID
    assert raw[54] == 3  # relays
    assert raw[-9:-4] == b"\x04home"
    assert code.to_text() == group(encode_base32(raw))
    assert code.uri() == URI_PREFIX + code.to_text()
    assert len(raw) == 216
    assert [str(a) for a in code.circuit_addrs()][0] == (
        f"/ip4/203.0.113.10/tcp/7777/p2p/{RELAY}/p2p-circuit/p2p/{INVITER}"
    )


def test_one_ipv4_relay_takes_162_characters() -> None:
    code = InviteCode(
        bytes(4), bytes(10), 0, INVITER,
        (Multiaddr.parse(f"/ip4/203.0.113.10/tcp/7777/p2p/{RELAY}"),),
    )  # fmt: skip
    assert len(code.to_bytes()) == 101  # 2 compact peer IDs are 66 of them
    assert len(code.to_text().replace("-", "")) == 162


def test_empty_and_truncated_codes_are_typos() -> None:
    for text in ("", "   ", "ABC", example().to_text()[:-3]):
        with pytest.raises(CodeError) as info:
            InviteCode.parse(text)
        assert info.value.problem is CodeProblem.TYPO
