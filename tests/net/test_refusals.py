"""net.refusals: which refusals are logged at once and how the rest are summed up.
Pure: the time is a float the test moves."""

from __future__ import annotations

from peerup.net.refusals import OTHER_SOURCES, RefusalLog, Summary


def test_the_first_refusal_is_logged_and_the_rest_summed_up_once() -> None:
    log = RefusalLog(interval_s=10.0)
    assert log.add("127.0.0.1", "handshake timeout", now=0.0)
    for i in range(1998):
        assert not log.add("127.0.0.1", "handshake timeout", now=i * 0.004)
    assert log.next_deadline() == 10.0
    assert log.due(9.9) == []
    [summary] = log.due(10.0)
    assert summary == Summary("127.0.0.1", 1998, 10.0, (("handshake timeout", 1998),))
    assert summary.line() == (
        "refused 1,998 more connections from 127.0.0.1 in the last 10 s: "
        "handshake timeout"
    )


def test_a_source_still_refused_gets_one_summary_per_interval_and_no_other_line() -> (
    None
):
    log = RefusalLog(interval_s=10.0)
    assert log.add("10.0.0.1", "garbage", now=0.0)
    assert not log.add("10.0.0.1", "garbage", now=1.0)
    assert [s.count for s in log.due(10.0)] == [1]
    assert not log.add("10.0.0.1", "garbage", now=12.0)  # still summed up
    assert log.due(19.9) == []
    [summary] = log.due(20.0)
    assert (summary.count, summary.window_s) == (1, 10.0)


def test_a_source_quiet_for_an_interval_is_logged_at_once_again() -> None:
    log = RefusalLog(interval_s=10.0)
    assert log.add("10.0.0.1", "garbage", now=0.0)
    assert log.due(10.0) == []  # nothing more came: forgotten
    assert log.next_deadline() is None
    assert log.add("10.0.0.1", "garbage", now=30.0)


def test_reasons_are_counted_most_frequent_first() -> None:
    log = RefusalLog(interval_s=10.0)
    log.add("a", "x", 0.0, "streams")
    for reason in ["timeout", "garbage", "timeout", "timeout", "garbage", "other"]:
        log.add("a", reason, 1.0)
    [summary] = log.flush(5.0)
    assert summary.reasons == (("timeout", 3), ("garbage", 2), ("other", 1))
    assert summary.line() == (
        "refused 6 more streams from a in the last 5.0 s: "
        "timeout (3), garbage (2), other (1)"
    )
    assert log.flush(6.0) == []


def test_sources_past_the_limit_are_counted_together() -> None:
    log = RefusalLog(interval_s=10.0, max_sources=2)
    assert log.add("a", "x", 0.0)
    assert log.add("b", "x", 0.0)
    assert not log.add("c", "x", 0.0)
    assert not log.add("d", "x", 0.0)
    [summary] = log.due(10.0)
    assert (summary.source, summary.count) == (OTHER_SOURCES, 2)
