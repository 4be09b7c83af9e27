"""What ``peerup doctor`` and ``status`` say about port mapping (app/doctor.py), and the
``port_mapping`` config key. The mapping itself: tests/net/test_portmap_loopback.py
and, against a real miniupnpd, tests/natlab/test_natlab_portmap.py."""

from __future__ import annotations

from pathlib import Path

from peerup.app import doctor
from peerup.config import load
from peerup.net.portmap import Outcome, PortMapResult


def _result(outcome: Outcome, reason: str = "", **kw: object) -> PortMapResult:
    return PortMapResult(outcome, "tcp", 4001, reason, **kw)  # type: ignore[arg-type]


def test_mapped_line_names_method_address_and_lease() -> None:
    report = doctor.port_mapping_report(
        _result(
            Outcome.MAPPED,
            "mapped",
            method="UPnP",
            external_ip="203.0.113.20",
            external_port=41234,
            lease_s=3600,
        ),
        enabled=True,
    )
    assert report.line.startswith("UPnP mapped 203.0.113.20:41234 -> :4001, lease 1h")
    assert "not confirmed" in report.line and not report.confirmed
    assert report.external_addr == "/ip4/203.0.113.20/tcp/41234"
    assert report.fix is None


def test_each_failure_names_its_fix() -> None:
    unsupported = doctor.port_mapping_report(
        _result(Outcome.UNSUPPORTED, "PCP/NAT-PMP: no answer; UPnP: none answered"),
        enabled=True,
    )
    assert unsupported.line.startswith("no UPnP/NAT-PMP/PCP on this router")
    assert unsupported.fix is not None
    assert unsupported.fix.startswith("enable UPnP")
    assert "forward TCP port 4001" in unsupported.fix
    refused = doctor.port_mapping_report(
        _result(Outcome.REFUSED, "PCP: the router refused: not authorized"),
        enabled=True,
    )
    assert refused.line == "PCP: the router refused: not authorized"
    assert refused.fix is not None and "allow port mapping" in refused.fix
    behind = doctor.port_mapping_report(
        _result(Outcome.NOT_PUBLIC, "its own address 100.64.1.2 is not public"),
        enabled=True,
    )
    assert behind.fix is not None and "public IPv4 address" in behind.fix
    assert doctor.port_mapping_report(None, enabled=False).line.startswith("off")
    skipped = doctor.port_mapping_report(None, enabled=True, why_not="loopback only")
    assert skipped.line == "not tried: loopback only"


def test_config_port_mapping_defaults_on(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        load.render_node_config("identity.key", ["/ip4/0.0.0.0/tcp/4001"], [], None)
    )
    assert load.load_node(cfg).port_mapping is True
    cfg.write_text(cfg.read_text() + "port_mapping: false\n")
    assert load.load_node(cfg).port_mapping is False
