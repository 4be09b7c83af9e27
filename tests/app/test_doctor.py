"""app.doctor: the NAT's mapping from what peers observed, and advice per peer."""

from __future__ import annotations

from peerup.app.doctor import Mapping, NatReport, Observation, advise, nat_report
from peerup.core.multiaddr import Multiaddr

LAN = ["10.1.0.2", "127.0.0.1"]


def seen(observer: str, addr: str, local_port: int = 4001) -> Observation:
    return Observation(observer, Multiaddr.parse(addr), local_port)


def test_no_observation_is_unknown() -> None:
    report = nat_report([], LAN)
    assert report.mapping is Mapping.UNKNOWN and "no peer" in report.summary


def test_our_own_address_seen_means_no_nat() -> None:
    report = nat_report([seen("relay", "/ip4/10.1.0.2/tcp/4001")], LAN)
    assert report.mapping is Mapping.NONE


def test_one_observer_and_the_listen_port_kept() -> None:
    report = nat_report([seen("relay", "/ip4/198.51.100.10/tcp/4001")], LAN)
    assert report.mapping is Mapping.PORT_PRESERVED
    assert report.public_addrs == ("/ip4/198.51.100.10/tcp/4001",)


def test_one_observer_and_another_port_is_probably_symmetric() -> None:
    report = nat_report([seen("relay", "/ip4/198.51.100.70/tcp/60687")], LAN)
    assert report.mapping is Mapping.PORT_CHANGED and "symmetric" in report.summary


def test_two_observers_same_port_is_endpoint_independent() -> None:
    report = nat_report(
        [
            seen("relay", "/ip4/198.51.100.10/tcp/31000"),
            seen("peer", "/ip4/198.51.100.10/tcp/31000"),
        ],
        LAN,
    )
    assert report.mapping is Mapping.ENDPOINT_INDEPENDENT and report.observers == 2


def test_two_observers_two_ports_is_endpoint_dependent() -> None:
    report = nat_report(
        [
            seen("relay", "/ip4/198.51.100.70/tcp/31000"),
            seen("peer", "/ip4/198.51.100.70/tcp/42000"),
        ],
        LAN,
    )
    assert report.mapping is Mapping.ENDPOINT_DEPENDENT


def report(mapping: Mapping) -> NatReport:
    return NatReport(mapping, "", (), 1)


def test_advice_blames_the_side_whose_nat_changes_ports() -> None:
    reason = "hole punch: 3 attempts failed; the last: timed out"
    ours = advise("relayed", "relayed", reason, report(Mapping.PORT_CHANGED))
    assert ours.fix is not None and "this side's NAT changes ports" in ours.fix
    theirs = advise("relayed", "relayed", reason, report(Mapping.PORT_PRESERVED))
    assert theirs.fix is not None and "peer's probably" in theirs.fix
    assert advise("direct", "hole punched", "", report(Mapping.UNKNOWN)).fix is None
    pending = advise("relayed", None, None, report(Mapping.UNKNOWN))
    assert "no attempt" in pending.why and pending.fix is None
