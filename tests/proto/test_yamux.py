"""proto.yamux: a YamuxSession pair wired in memory; time is a float the test moves."""

from __future__ import annotations

import struct

import pytest

from peerup.core.errors import LocalProtocolError, RemoteProtocolError
from peerup.proto import yamux
from peerup.proto.yamux import StreamState, YamuxConfig, YamuxSession

WINDOW = yamux.INITIAL_WINDOW_BYTES
SMALL = YamuxConfig(max_stream_window_bytes=WINDOW, keepalive_interval_s=None)


def pair(config: YamuxConfig = SMALL) -> tuple[YamuxSession, YamuxSession]:
    return YamuxSession(True, config), YamuxSession(False, config)


def transfer(
    src: YamuxSession, dst: YamuxSession, now: float = 0.0
) -> list[yamux.Event]:
    return dst.receive_data(src.data_to_send(), now)


def opened(config: YamuxConfig = SMALL) -> tuple[YamuxSession, YamuxSession, int]:
    """A client/server pair with one established stream opened by the client."""
    client, server = pair(config)
    sid = client.open_stream()
    assert transfer(client, server) == [yamux.StreamOpened(sid)]
    assert transfer(server, client) == []
    return client, server, sid


def frames(wire: bytes) -> list[tuple[int, int, int, int]]:
    out = []
    pos = 0
    while pos < len(wire):
        _, kind, flags, sid, length = struct.unpack_from(">BBHII", wire, pos)
        out.append((kind, flags, sid, length))
        pos += 12 + (length if kind == yamux.TYPE_DATA else 0)
    return out


def test_header_encoding_known_answer() -> None:
    assert yamux.encode_header(yamux.TYPE_DATA, yamux.FLAG_SYN, 1, 5).hex() == (
        "000000010000000100000005"
    )


def test_open_sends_syn_window_update_with_extra_window() -> None:
    client = YamuxSession(True)
    assert client.open_stream() == 1
    assert client.open_stream() == 3
    first = 16 * 1024 * 1024 - WINDOW  # the 16 MiB cap
    second = (64 * 1024 * 1024 - first) // 4  # a quarter of what the pool has left
    assert frames(client.data_to_send()) == [
        (yamux.TYPE_WINDOW_UPDATE, yamux.FLAG_SYN, 1, first),
        (yamux.TYPE_WINDOW_UPDATE, yamux.FLAG_SYN, 3, second),
    ]


def test_server_uses_even_stream_ids() -> None:
    client, server = pair()
    sid = server.open_stream()
    assert sid == 2
    assert transfer(server, client) == [yamux.StreamOpened(2)]


def test_open_accept_and_exchange_data() -> None:
    client, server, sid = opened()
    assert client.stream_state(sid) is StreamState.ESTABLISHED
    assert server.stream_state(sid) is StreamState.ESTABLISHED
    assert client.send_data(sid, b"hello") == 5
    assert transfer(client, server) == [yamux.DataReceived(sid, b"hello")]
    assert server.send_data(sid, b"world") == 5
    assert transfer(server, client) == [yamux.DataReceived(sid, b"world")]


def test_data_may_follow_syn_before_ack() -> None:
    client, server = pair()
    sid = client.open_stream()
    client.send_data(sid, b"eager")
    assert transfer(client, server) == [
        yamux.StreamOpened(sid),
        yamux.DataReceived(sid, b"eager"),
    ]


def test_large_write_is_split_into_frames_that_fill_one_noise_frame_each() -> None:
    client, server, sid = opened()
    assert client.send_data(sid, b"\x01" * 150_000) == 150_000
    full = yamux.MAX_FRAME_PAYLOAD_BYTES
    assert full + yamux.HEADER_BYTES == 65519  # the largest Noise plaintext
    assert [f[3] for f in frames(client.data_to_send())] == [
        full,
        full,
        150_000 - 2 * full,
    ]


@pytest.mark.parametrize("closer", ["client", "server"])
def test_half_close_keeps_the_other_direction_open(closer: str) -> None:
    client, server, sid = opened()
    a, b = (client, server) if closer == "client" else (server, client)
    a.close_stream(sid)
    assert a.stream_state(sid) is StreamState.LOCAL_CLOSE
    assert transfer(a, b) == [yamux.StreamEnded(sid)]
    assert b.stream_state(sid) is StreamState.REMOTE_CLOSE
    with pytest.raises(LocalProtocolError):
        a.send_data(sid, b"x")
    assert b.send_data(sid, b"still open") == 10
    assert transfer(b, a) == [yamux.DataReceived(sid, b"still open")]
    b.close_stream(sid)
    assert transfer(b, a) == [yamux.StreamEnded(sid)]
    assert a.stream_count == b.stream_count == 0
    assert a.stream_state(sid) is b.stream_state(sid) is StreamState.CLOSED


def test_close_is_idempotent() -> None:
    client, server, sid = opened()
    client.close_stream(sid)
    client.close_stream(sid)
    assert len(frames(client.data_to_send())) == 1
    client.close_stream(999)  # unknown: no-op


def test_data_after_fin_is_a_protocol_error() -> None:
    client, server, sid = opened()
    client.close_stream(sid)
    transfer(client, server)
    with pytest.raises(RemoteProtocolError, match="after FIN"):
        server.receive_data(yamux.encode_header(yamux.TYPE_DATA, 0, sid, 1) + b"x")


def test_reset_aborts_both_directions() -> None:
    client, server, sid = opened()
    client.reset_stream(sid)
    assert client.stream_state(sid) is StreamState.CLOSED
    assert transfer(client, server) == [yamux.StreamReset(sid)]
    with pytest.raises(LocalProtocolError):
        server.send_data(sid, b"x")
    with pytest.raises(LocalProtocolError):
        client.send_data(sid, b"x")
    client.reset_stream(sid)  # idempotent
    assert client.data_to_send() == b""


def test_frames_for_a_reset_stream_are_dropped() -> None:
    client, server, sid = opened()
    server.send_data(sid, b"late")
    client.reset_stream(sid)
    assert transfer(server, client) == []


def test_writer_blocks_when_window_is_used_and_resumes_after_acknowledgement() -> None:
    client, server, sid = opened()
    assert client.send_window(sid) == WINDOW
    assert client.send_data(sid, b"\x00" * (WINDOW + 10)) == WINDOW
    assert client.send_data(sid, b"more") == 0
    events = transfer(client, server)
    assert (
        sum(len(e.data) for e in events if isinstance(e, yamux.DataReceived)) == WINDOW
    )
    server.acknowledge_received_data(sid, WINDOW)
    assert transfer(server, client) == [yamux.SendWindowUpdated(sid)]
    assert client.send_window(sid) == WINDOW
    assert client.send_data(sid, b"more") == 4


def test_window_is_never_regranted_for_unacknowledged_data() -> None:
    client, server, sid = opened()
    client.send_data(sid, b"\x00" * WINDOW)
    transfer(client, server)
    assert server.data_to_send() == b""
    server.acknowledge_received_data(sid, 1000)  # below the half-window batch
    assert server.data_to_send() == b""
    assert transfer(server, client) == []
    assert client.send_data(sid, b"x") == 0


def test_acknowledgements_are_batched_at_half_a_window() -> None:
    client, server, sid = opened()
    client.send_data(sid, b"\x00" * WINDOW)
    transfer(client, server)
    server.acknowledge_received_data(sid, WINDOW // 2 - 1)
    assert server.data_to_send() == b""
    server.acknowledge_received_data(sid, 1)
    assert frames(server.data_to_send()) == [
        (yamux.TYPE_WINDOW_UPDATE, 0, sid, WINDOW // 2)
    ]


def test_default_config_grants_16_mib() -> None:
    client, server, sid = opened(YamuxConfig(keepalive_interval_s=None))
    assert client.send_window(sid) == 16 * 1024 * 1024
    assert server.send_window(sid) == 16 * 1024 * 1024


def test_exceeding_the_window_is_a_protocol_error_with_go_away() -> None:
    client, server, sid = opened()
    over = yamux.encode_header(yamux.TYPE_DATA, 0, sid, WINDOW + 1) + b"\x00" * (
        WINDOW + 1
    )
    with pytest.raises(RemoteProtocolError, match="window") as info:
        server.receive_data(over)
    assert info.value.code == yamux.GO_AWAY_PROTOCOL_ERROR
    assert frames(server.data_to_send())[-1] == (
        yamux.TYPE_GO_AWAY,
        0,
        0,
        yamux.GO_AWAY_PROTOCOL_ERROR,
    )
    assert server.is_terminated
    assert server.receive_data(b"anything") == []


def test_oversized_data_header_is_refused_before_its_body_arrives() -> None:
    client, server, sid = opened()
    with pytest.raises(RemoteProtocolError):
        server.receive_data(yamux.encode_header(yamux.TYPE_DATA, 0, sid, 0xFFFFFFFF))


def test_window_update_overflow_is_a_protocol_error() -> None:
    client, server, sid = opened()
    with pytest.raises(RemoteProtocolError, match="overflow"):
        client.receive_data(
            yamux.encode_header(yamux.TYPE_WINDOW_UPDATE, 0, sid, 0xFFFFFFFF)
        )


def test_ping_pong_reports_rtt() -> None:
    client, server = pair()
    opaque = client.ping(now=10.0)
    assert transfer(client, server, now=10.1) == []
    assert transfer(server, client, now=10.25) == [yamux.PongReceived(opaque, 0.25)]
    assert client.ping(now=11.0) != opaque


def test_unsolicited_pong_is_ignored() -> None:
    client, _ = pair()
    assert (
        client.receive_data(yamux.encode_header(yamux.TYPE_PING, yamux.FLAG_ACK, 0, 77))
        == []
    )


def test_keepalive_sends_ping_then_times_out_when_unanswered() -> None:
    config = YamuxConfig(keepalive_interval_s=10.0, keepalive_timeout_s=5.0)
    client = YamuxSession(True, config, now=0.0)
    assert client.next_deadline() == 10.0
    assert client.handle_timeout(9.0) == []
    assert client.data_to_send() == b""
    assert client.handle_timeout(10.0) == []
    [(kind, flags, sid, _)] = frames(client.data_to_send())
    assert (kind, flags, sid) == (yamux.TYPE_PING, yamux.FLAG_SYN, 0)
    assert client.next_deadline() == 15.0
    assert client.handle_timeout(14.0) == []
    assert client.handle_timeout(15.5) == [yamux.KeepaliveTimedOut(5.5)]
    assert client.is_terminated
    assert client.handle_timeout(100.0) == []


def test_answered_keepalive_does_not_time_out() -> None:
    config = YamuxConfig(keepalive_interval_s=10.0, keepalive_timeout_s=5.0)
    client = YamuxSession(True, config, now=0.0)
    server = YamuxSession(False, config, now=0.0)
    client.handle_timeout(10.0)
    transfer(client, server, now=10.0)
    # The keepalive's answer is an RTT sample like any pong.
    assert transfer(server, client, now=11.0) == [yamux.PongReceived(1, 1.0)]
    assert client.next_deadline() == 21.0
    assert client.handle_timeout(15.5) == []
    assert not client.is_terminated


def test_traffic_pushes_keepalive_back() -> None:
    config = YamuxConfig(keepalive_interval_s=10.0)
    client, server = YamuxSession(True, config), YamuxSession(False, config)
    server.open_stream()
    transfer(server, client, now=7.0)
    assert client.next_deadline() == 17.0


def test_keepalive_disabled_has_no_deadline() -> None:
    assert YamuxSession(True, SMALL).next_deadline() is None


def test_syns_beyond_inbound_limit_are_reset() -> None:
    config = YamuxConfig(
        max_inbound_streams=2, max_refused_streams=10, keepalive_interval_s=None
    )
    client, server = pair(config)
    ids = [client.open_stream() for _ in range(3)]
    assert transfer(client, server) == [
        yamux.StreamOpened(ids[0]),
        yamux.StreamOpened(ids[1]),
    ]
    assert transfer(server, client) == [yamux.StreamReset(ids[2])]
    # closing one frees a slot
    client.reset_stream(ids[0])
    transfer(client, server)
    sid = client.open_stream()
    assert transfer(client, server) == [yamux.StreamOpened(sid)]


def test_too_many_refused_streams_is_a_protocol_error() -> None:
    config = YamuxConfig(
        max_inbound_streams=1, max_refused_streams=3, keepalive_interval_s=None
    )
    client, server = pair(config)
    for _ in range(4):
        client.open_stream()
    assert len(transfer(client, server)) == 1  # 1 accepted, 3 refused: at the limit
    client.open_stream()
    with pytest.raises(RemoteProtocolError, match="stream limit"):
        transfer(client, server)
    assert frames(server.data_to_send())[-1][0] == yamux.TYPE_GO_AWAY


def test_go_away_prevents_open_stream() -> None:
    client, server = pair()
    server.go_away()
    server.go_away()  # idempotent
    assert transfer(server, client) == [yamux.GoAwayReceived(yamux.GO_AWAY_NORMAL)]
    assert client.remote_go_away == yamux.GO_AWAY_NORMAL
    with pytest.raises(LocalProtocolError, match="GO_AWAY"):
        client.open_stream()
    with pytest.raises(LocalProtocolError):
        server.open_stream()


def test_syn_after_local_go_away_is_reset() -> None:
    client, server = pair()
    server.go_away()
    server.data_to_send()
    sid = client.open_stream()
    assert transfer(client, server) == []
    assert transfer(server, client) == [yamux.StreamReset(sid)]


@pytest.mark.parametrize(
    ("wire", "match"),
    [
        (b"\x01" + b"\x00" * 11, "version"),
        (yamux.encode_header(7, 0, 0, 0), "unknown frame type"),
        (yamux.encode_header(yamux.TYPE_DATA, 0, 0, 0), "stream 0"),
        (yamux.encode_header(yamux.TYPE_WINDOW_UPDATE, yamux.FLAG_SYN, 1, 0), "parity"),
        (yamux.encode_header(yamux.TYPE_PING, yamux.FLAG_SYN, 3, 0), "ping"),
    ],
)
def test_malformed_frames_raise_with_go_away(wire: bytes, match: str) -> None:
    client = YamuxSession(True, SMALL)
    with pytest.raises(RemoteProtocolError, match=match):
        client.receive_data(wire)
    assert frames(client.data_to_send()) == [
        (yamux.TYPE_GO_AWAY, 0, 0, yamux.GO_AWAY_PROTOCOL_ERROR)
    ]


def test_duplicate_syn_is_a_protocol_error() -> None:
    client, server, sid = opened()
    with pytest.raises(RemoteProtocolError, match="SYN"):
        server.receive_data(
            yamux.encode_header(yamux.TYPE_WINDOW_UPDATE, yamux.FLAG_SYN, sid, 0)
        )


def _transcript() -> bytes:
    """Client-to-server bytes exercising every frame type the server reacts to."""
    client, server = pair()
    a = client.open_stream()
    client.send_data(a, b"first")
    b = client.open_stream()
    client.send_data(b, b"x" * 100)
    client.close_stream(a)
    client.ping(now=0.0)
    client.reset_stream(b)
    c = client.open_stream()
    client.send_data(c, b"")
    client.send_data(c, b"last")
    client.go_away()
    return client.data_to_send()


def _server_events(chunks: list[bytes]) -> tuple[list[yamux.Event], bytes]:
    server = YamuxSession(False, SMALL)
    events: list[yamux.Event] = []
    for chunk in chunks:
        events += server.receive_data(chunk)
    return events, server.data_to_send()


def test_every_split_gives_the_same_events() -> None:
    wire = _transcript()
    expected = _server_events([wire])
    assert yamux.GoAwayReceived(0) in expected[0]
    for cut in range(len(wire) + 1):
        assert _server_events([wire[:cut], wire[cut:]]) == expected
    assert _server_events([wire[i : i + 1] for i in range(len(wire))]) == expected


def test_send_on_unknown_stream_is_local_error() -> None:
    client = YamuxSession(True, SMALL)
    with pytest.raises(LocalProtocolError):
        client.send_data(5, b"x")
    assert client.send_window(5) == 0


def test_window_below_spec_minimum_is_refused() -> None:
    with pytest.raises(LocalProtocolError):
        YamuxSession(True, YamuxConfig(max_stream_window_bytes=WINDOW - 1))


# --- deferred ACK (YamuxConfig.defer_accept_ack) -----------------------------------------

BIG = 16 * 1024 * 1024
DEFER = YamuxConfig(keepalive_interval_s=None, defer_accept_ack=True)


def deferred_pair() -> tuple[YamuxSession, YamuxSession, int]:
    client, server = YamuxSession(True, DEFER), YamuxSession(False, DEFER)
    sid = client.open_stream()
    assert transfer(client, server) == [yamux.StreamOpened(sid)]
    return client, server, sid


def test_deferred_ack_waits_for_send_ack() -> None:
    client, server, sid = deferred_pair()
    assert server.data_to_send() == b""
    assert client.stream_state(sid) is StreamState.SYN_SENT
    server.send_ack(sid)
    server.send_ack(sid)  # owed once only
    assert frames(server.data_to_send()) == [
        (yamux.TYPE_WINDOW_UPDATE, yamux.FLAG_ACK, sid, BIG - WINDOW)
    ]


def test_deferred_ack_and_grant_precede_the_first_reply_frame() -> None:
    client, server, sid = deferred_pair()
    server.send_data(sid, b"hi")
    assert frames(server.data_to_send()) == [
        (yamux.TYPE_WINDOW_UPDATE, yamux.FLAG_ACK, sid, BIG - WINDOW),
        (yamux.TYPE_DATA, 0, sid, 2),
    ]


def test_deferred_ack_precedes_a_fin() -> None:
    client, server, sid = deferred_pair()
    server.close_stream(sid)
    assert frames(server.data_to_send()) == [
        (yamux.TYPE_WINDOW_UPDATE, yamux.FLAG_ACK, sid, BIG - WINDOW),
        (yamux.TYPE_WINDOW_UPDATE, yamux.FLAG_FIN, sid, 0),
    ]


def test_deferred_ack_goes_out_once_the_opener_used_half_its_initial_window() -> None:
    client, server, sid = deferred_pair()
    client.send_data(sid, b"\x00" * (WINDOW // 2 - 1))
    transfer(client, server)
    assert server.data_to_send() == b""
    client.send_data(sid, b"\x00")
    transfer(client, server)
    wire = server.data_to_send()
    assert frames(wire) == [
        (yamux.TYPE_WINDOW_UPDATE, yamux.FLAG_ACK, sid, BIG - WINDOW)
    ]
    client.receive_data(wire, 0.0)
    assert client.send_window(sid) == BIG - WINDOW // 2


def test_reset_of_a_stream_owing_its_ack_sends_only_the_reset() -> None:
    client, server, sid = deferred_pair()
    server.reset_stream(sid)
    server.send_ack(sid)
    assert frames(server.data_to_send()) == [
        (yamux.TYPE_WINDOW_UPDATE, yamux.FLAG_RST, sid, 0)
    ]


# --- small writes share frames -------------------------------------------------------


def test_small_writes_to_one_stream_in_one_flush_share_a_frame() -> None:
    client, server = pair()
    sid = client.open_stream()
    assert client.send_data(sid, b"/multistream/1.0.0\n") == 19
    assert client.send_data(sid, b"x") == 1
    wire = client.data_to_send()
    assert frames(wire) == [
        (yamux.TYPE_WINDOW_UPDATE, yamux.FLAG_SYN, sid, 0),
        (yamux.TYPE_DATA, 0, sid, 20),
    ]
    assert server.receive_data(wire) == [
        yamux.StreamOpened(sid),
        yamux.DataReceived(sid, b"/multistream/1.0.0\nx"),
    ]
    assert client.send_window(sid) == WINDOW - 20


def test_whole_writes_keep_frames_of_their_own() -> None:
    client, server, sid = opened()
    client.send_data(sid, b"one")
    client.send_data(sid, b"two", whole=True)  # does not join "one"
    client.send_data(sid, b"three", whole=True)  # does not join "two"
    client.send_data(sid, b"four")  # does not join "three" either
    assert [length for _, _, _, length in frames(client.data_to_send())] == [3, 3, 5, 4]


def test_a_whole_write_that_fits_one_frame_is_not_split_at_the_window_edge() -> None:
    client, server, sid = opened()
    piece = yamux.MAX_FRAME_PAYLOAD_BYTES
    short = WINDOW - (piece - 1)
    assert client.send_data(sid, bytes(short)) == short
    assert client.send_data(sid, bytes(piece), whole=True) == 0  # waits, whole
    assert client.send_data(sid, bytes(piece)) == piece - 1  # others take what fits


def test_a_writer_waiting_for_a_whole_frame_hears_of_more_window() -> None:
    """SendWindowUpdated comes when the window grows from less than one full frame,
    not only from zero, so a writer waiting to send a whole frame is woken."""
    client, server, sid = opened()
    short = WINDOW - (yamux.MAX_FRAME_PAYLOAD_BYTES - 1)
    assert client.send_data(sid, bytes(short)) == short
    server.receive_data(client.data_to_send())
    server.acknowledge_received_data(sid, short)
    assert client.receive_data(server.data_to_send()) == [yamux.SendWindowUpdated(sid)]
    # With a full frame's room left, a window update is no news.
    client2, server2, sid2 = opened()
    room = WINDOW - yamux.MAX_FRAME_PAYLOAD_BYTES
    assert client2.send_data(sid2, bytes(room)) == room
    server2.receive_data(client2.data_to_send())
    server2.acknowledge_received_data(sid2, room)
    assert client2.receive_data(server2.data_to_send()) == []


def test_a_fin_rides_on_the_last_unsent_data_frame() -> None:
    client, server, sid = opened()
    client.send_data(sid, b"request")
    client.close_stream(sid)
    wire = client.data_to_send()
    assert frames(wire) == [(yamux.TYPE_DATA, yamux.FLAG_FIN, sid, 7)]
    assert server.receive_data(wire) == [
        yamux.DataReceived(sid, b"request"),
        yamux.StreamEnded(sid),
    ]
    assert client.stream_state(sid) is StreamState.LOCAL_CLOSE
    # Written after the FIN: refused, and nothing joins the sent frame.
    with pytest.raises(LocalProtocolError):
        client.send_data(sid, b"late")


def test_frames_are_not_merged_across_another_frame_or_stream_or_a_flush() -> None:
    client, server, a = opened()
    b = client.open_stream()
    transfer(client, server)
    transfer(server, client)
    client.send_data(a, b"1")
    client.send_data(b, b"2")  # another stream in between
    client.send_data(a, b"3")
    client.ping(0.0)  # another frame in between
    client.send_data(a, b"4")
    assert frames(client.data_to_send()) == [
        (yamux.TYPE_DATA, 0, a, 1),
        (yamux.TYPE_DATA, 0, b, 1),
        (yamux.TYPE_DATA, 0, a, 1),
        (yamux.TYPE_PING, yamux.FLAG_SYN, 0, 1),
        (yamux.TYPE_DATA, 0, a, 1),
    ]
    client.send_data(a, b"5")  # after a flush
    client.close_stream(b)  # b's last frame was flushed: a FIN frame of its own
    wire = client.data_to_send()
    assert frames(wire) == [
        (yamux.TYPE_DATA, 0, a, 1),
        (yamux.TYPE_WINDOW_UPDATE, yamux.FLAG_FIN, b, 0),
    ]


def test_only_small_frames_absorb_more_data() -> None:
    client, server, sid = opened()
    limit = yamux._COALESCE_BYTES
    client.send_data(sid, b"a" * (limit - 1))
    client.send_data(sid, b"b")  # fills it up to the limit
    client.send_data(sid, b"c")  # would exceed it
    client.send_data(sid, b"d" * (limit + 1))  # a big frame absorbs nothing
    client.send_data(sid, b"e")
    wire = client.data_to_send()
    assert [f[3] for f in frames(wire)] == [limit, 1, limit + 1, 1]
    events = server.receive_data(wire)
    got = b"".join(e.data for e in events if isinstance(e, yamux.DataReceived))
    assert got == b"a" * (limit - 1) + b"bc" + b"d" * (limit + 1) + b"e"


def test_a_lone_data_frame_is_checked_like_any_other() -> None:
    """One DATA frame per read takes a short path; it keeps every rule."""
    config = YamuxConfig(max_stream_window_bytes=WINDOW, keepalive_interval_s=10.0)
    client, server = YamuxSession(True, config), YamuxSession(False, config)
    sid = client.open_stream()
    transfer(client, server)
    transfer(server, client)
    client.send_data(sid, b"ping")
    assert transfer(client, server, now=5.0) == [yamux.DataReceived(sid, b"ping")]
    assert server.next_deadline() == 15.0  # traffic pushed the keepalive back
    # Over the window: refused from the lone frame too.
    frame = yamux.encode_header(yamux.TYPE_DATA, 0, sid, WINDOW) + b"\0" * WINDOW
    _, fresh, fsid = opened()
    assert fsid == sid
    fresh.receive_data(yamux.encode_header(yamux.TYPE_DATA, 0, sid, 1) + b"x")
    with pytest.raises(RemoteProtocolError, match="window"):
        fresh.receive_data(frame)
    # After the peer's FIN: a protocol error, however the frame arrives.
    client.close_stream(sid)
    transfer(client, server)
    with pytest.raises(RemoteProtocolError, match="after FIN"):
        server.receive_data(yamux.encode_header(yamux.TYPE_DATA, 0, sid, 1) + b"x")
    # For an unknown (reset) stream: dropped.
    other = YamuxSession(False, config)
    assert (
        other.receive_data(yamux.encode_header(yamux.TYPE_DATA, 0, 9, 1) + b"x") == []
    )


# --- the session's window pool ---------------------------------------------------------

MIB = 1024 * 1024
KIB = 1024
POOLED = YamuxConfig(
    max_stream_window_bytes=MIB,
    max_session_window_bytes=2 * MIB,
    keepalive_interval_s=None,
)
EXTRA = MIB - WINDOW  # the most one stream may get beyond its initial window


def regrant(
    client: YamuxSession, server: YamuxSession, sid: int, half: int = WINDOW // 2
) -> int:
    """The client sends ``half`` (half the stream's window) and the server consumes
    it: the delta of the server's window update."""
    assert client.send_data(sid, bytes(half)) == half
    events = server.receive_data(client.data_to_send())
    assert sum(len(e.data) for e in events if isinstance(e, yamux.DataReceived)) == half
    assert server.acknowledge_received_data(sid, half)
    update = server.data_to_send()
    client.receive_data(update)
    ((kind, flags, stream, delta),) = frames(update)
    assert (kind, flags, stream) == (yamux.TYPE_WINDOW_UPDATE, 0, sid)
    return delta


def test_a_new_stream_takes_at_most_a_quarter_of_the_pool_up_front() -> None:
    client, server = pair(POOLED)
    for _ in range(4):
        client.open_stream()
    # Pool 2 MiB: a quarter (512 KiB), then a quarter of the 1.5 MiB left, and so on.
    syns = frames(client.data_to_send())
    expected = [512 * KIB, 384 * KIB, 288 * KIB, 216 * KIB]
    assert [(flags, n) for _, flags, _, n in syns] == [
        (yamux.FLAG_SYN, n) for n in expected
    ]
    # The accepting side's pool is its own, and its ACKs follow the same rule.
    server.receive_data(b"".join(yamux.encode_header(*frame) for frame in syns))
    acks = frames(server.data_to_send())
    assert [(flags, n) for _, flags, _, n in acks] == [
        (yamux.FLAG_ACK, n) for n in expected
    ]


def test_a_stream_that_carries_data_grows_from_the_pool() -> None:
    client, server = pair(POOLED)
    idle = [client.open_stream() for _ in range(3)]
    busy = client.open_stream()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    # 648 KiB of the pool are left after the four up-front grants; the busy stream
    # (at 256 + 216 KiB) re-grants what it consumed and grows to the 1 MiB cap.
    window = WINDOW + 216 * KIB
    assert client.send_window(busy) == window
    assert regrant(client, server, busy, window // 2) == window // 2 + MIB - window
    assert client.send_window(busy) == MIB
    assert len(idle) == 3


def test_a_stream_the_pool_cannot_grow_is_held_to_its_window() -> None:
    config = YamuxConfig(
        max_stream_window_bytes=MIB,
        max_session_window_bytes=0,
        keepalive_interval_s=None,
    )
    client, server = pair(config)
    sid = client.open_stream()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    assert regrant(client, server, sid) == WINDOW // 2  # consumed bytes only
    assert client.send_window(sid) == WINDOW
    header = yamux.encode_header(yamux.TYPE_DATA, 0, sid, WINDOW + 1)
    with pytest.raises(RemoteProtocolError, match="window"):
        server.receive_data(header + bytes(WINDOW + 1))


def test_an_ended_stream_gives_its_share_back_to_the_pool() -> None:
    client, server = pair(POOLED)
    first, second = client.open_stream(), client.open_stream()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    # Both end, one by FIN both ways, one by reset: the pool is whole again, so a
    # new stream gets a quarter of all of it.
    client.close_stream(first)
    server.receive_data(client.data_to_send())
    server.close_stream(first)
    client.receive_data(server.data_to_send())
    assert server.stream_state(first) is StreamState.CLOSED
    server.reset_stream(second)
    client.receive_data(server.data_to_send())
    third = client.open_stream()
    server.receive_data(client.data_to_send())
    ((_, flags, _, delta),) = frames(server.data_to_send())
    assert (flags, delta) == (yamux.FLAG_ACK, 512 * KIB)
    assert third == 5


def test_window_limits_are_checked() -> None:
    with pytest.raises(LocalProtocolError, match="max_session_window_bytes"):
        YamuxSession(True, YamuxConfig(max_session_window_bytes=-1))
    with pytest.raises(LocalProtocolError, match="4 GiB"):
        YamuxSession(True, YamuxConfig(max_stream_window_bytes=1 << 32))


# --- answers a peer can ask for -------------------------------------------------------

PING_LIMITED = YamuxConfig(
    keepalive_interval_s=None,
    ping_answers_per_s=10.0,
    ping_answer_burst=5,
    max_unanswered_pings=20,
)


def pings(n: int, first: int = 1) -> bytes:
    return b"".join(
        yamux.encode_header(yamux.TYPE_PING, yamux.FLAG_SYN, 0, first + i)
        for i in range(n)
    )


def test_pings_beyond_the_rate_go_unanswered_and_the_rate_refills() -> None:
    server = YamuxSession(False, PING_LIMITED, now=0.0)
    assert server.receive_data(pings(8), now=0.0) == []
    answers = frames(server.data_to_send())
    assert answers == [(yamux.TYPE_PING, yamux.FLAG_ACK, 0, n) for n in range(1, 6)]
    assert server.answers == 5
    # Three pings beyond the burst are owed back first: 0.5 s refills 5 tokens.
    server.receive_data(pings(1, 9), now=0.5)
    assert frames(server.data_to_send()) == [(yamux.TYPE_PING, yamux.FLAG_ACK, 0, 9)]
    assert not server.is_terminated


def test_a_keepalive_rate_of_pings_is_always_answered() -> None:
    server = YamuxSession(False, PING_LIMITED, now=0.0)
    for i in range(200):
        server.receive_data(pings(1, i + 1), now=i * 0.2)
        assert len(frames(server.data_to_send())) == 1


def test_a_ping_flood_is_a_protocol_error_with_go_away() -> None:
    server = YamuxSession(False, PING_LIMITED, now=0.0)
    with pytest.raises(RemoteProtocolError, match="ping flood") as info:
        server.receive_data(pings(5 + 21), now=0.0)
    assert info.value.code == yamux.GO_AWAY_PROTOCOL_ERROR
    out = frames(server.data_to_send())
    assert out[-1] == (yamux.TYPE_GO_AWAY, 0, 0, yamux.GO_AWAY_PROTOCOL_ERROR)
    assert len(out) == 5 + 1  # the burst's answers, then GO_AWAY; nothing else
    assert server.is_terminated


def test_a_ping_flood_answered_with_bounded_output_at_every_rate() -> None:
    """However fast a peer pings, what we queue for it grows with time, not with the
    number of pings (12 bytes per answer at most ``ping_answers_per_s``)."""
    server = YamuxSession(False, PING_LIMITED, now=0.0)
    queued = 0
    with pytest.raises(RemoteProtocolError):
        for i in range(10_000):
            server.receive_data(pings(10, 10 * i + 1), now=i * 0.001)
            queued += len(server.data_to_send())
    assert queued <= 12 * (5 + 10 * 1) + 12  # burst + 10/s for at most 1 s, GO_AWAY


def test_stream_syns_count_as_answers() -> None:
    config = YamuxConfig(
        max_inbound_streams=1, max_refused_streams=10, keepalive_interval_s=None
    )
    client, server = pair(config)
    client.open_stream()
    client.open_stream()
    transfer(client, server)
    assert server.answers == 2  # one ACK, one RST
