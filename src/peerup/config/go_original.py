"""The Go original's ``config.yaml`` and ``relay-server.yaml``, read as they are.

Source: satindergrewal/peer-up ``internal/config/config.go`` (schema version 1) and
``configs/*.sample.yaml``. Such a file is recognised by its ``identity:`` mapping (ours
has ``identity_key:``) and mapped onto this project's layout, key by key:

====================================  ===================================
Go original                           here
====================================  ===================================
identity.key_file                     identity_key
network.listen_addresses              listen (TCP ones; QUIC and WebSocket
                                      are not served here yet: noted)
relay.addresses                       relays
security.authorized_keys_file         security.authorized_keys
security.enable_connection_gating     security.enforce_allowlist
services.<n>.{enabled,local_address}  services.<n>.{enabled,local_address}
names                                 names
resources.max_reservations,           resources.* of the same name
max_circuits, max_reservations_per_ip
resources.reservation_ttl "1h"        resources.reservation_ttl_s
resources.session_duration "10m"      resources.circuit_duration_s
resources.session_data_limit "64MB"   resources.circuit_data_bytes
health.{enabled,listen_address}       telemetry.metrics (``/healthz`` is
                                      served on the same listener)
telemetry                             telemetry (the same layout)
====================================  ===================================

Everything else (``network.force_private_reachability``,
``relay.reservation_interval``, ``discovery``, ``protocols``, a service's custom
``protocol``, ``resources.buffer_size``, ``max_reservations_per_asn``) has no
meaning here and is listed in the notes that the loader logs once. Written by hand:
it is a table of renames.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

_UNITS: Final = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3,
                 "kib": 1024, "mib": 1024**2, "gib": 1024**3}  # fmt: skip
_SECONDS: Final = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}


def is_go_format(doc: Mapping[str, Any]) -> bool:
    """The Go original's layout: ``identity`` is a mapping (``key_file``)."""
    return isinstance(doc.get("identity"), Mapping) or isinstance(
        doc.get("network"), Mapping
    )


def _duration_s(text: object) -> int:
    """Go's ``time.ParseDuration`` forms used in its configs: ``1h``, ``10m``,
    ``1h30m``, ``90s``."""
    value = str(text).strip().lower()
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"not a duration: {text!r} (e.g. 1h, 10m, 90s)")
    return int(sum(float(n) * _SECONDS[u] for n, u in parts))


def _bytes(text: object) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", str(text).lower())
    if match is None or match.group(2) not in _UNITS:
        raise ValueError(f"not a size: {text!r} (e.g. 64MB, 1GiB)")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def _section(doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = doc.get(key)
    return value if isinstance(value, Mapping) else {}


def _listen(doc: Mapping[str, Any], notes: list[str]) -> list[str]:
    out = []
    for addr in _section(doc, "network").get("listen_addresses") or []:
        text = str(addr)
        if "/tcp/" in text and "/ws" not in text:
            out.append(text)
        else:
            notes.append(f"listen address {text} (QUIC/WebSocket are not served yet)")
    return out


def _security(doc: Mapping[str, Any], default_keys: str) -> dict[str, Any]:
    sec = _section(doc, "security")
    return {
        "authorized_keys": str(sec.get("authorized_keys_file") or default_keys),
        "enforce_allowlist": bool(sec.get("enable_connection_gating", True)),
    }


def _telemetry(doc: Mapping[str, Any], notes: list[str]) -> dict[str, Any] | None:
    if isinstance(doc.get("telemetry"), Mapping):
        return dict(doc["telemetry"])
    health = _section(doc, "health")
    if not health:
        return None
    notes.append("health: served as /healthz beside /metrics (telemetry.metrics)")
    metrics: dict[str, Any] = {"enabled": bool(health.get("enabled", False))}
    if health.get("listen_address"):
        metrics["listen_address"] = str(health["listen_address"])
    return {"metrics": metrics}


def _ignored(doc: Mapping[str, Any], notes: list[str], known: dict[str, set[str]]) -> None:
    for key, value in doc.items():
        if key not in known:
            notes.append(f"{key} (no meaning here)")
        elif known[key] and isinstance(value, Mapping):
            for sub in value:
                if sub not in known[key]:
                    notes.append(f"{key}.{sub} (no meaning here)")


def node_from_go(doc: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """This project's ``config.yaml`` content for a Go original's one, and notes on
    what is ignored."""
    notes: list[str] = []
    out: dict[str, Any] = {"version": int(doc.get("version") or 1)}
    out["identity_key"] = str(_section(doc, "identity").get("key_file") or "identity.key")
    out["listen"] = _listen(doc, notes)
    out["relays"] = [str(a) for a in _section(doc, "relay").get("addresses") or []]
    out["security"] = _security(doc, "authorized_keys")
    services: dict[str, Any] = {}
    for name, svc in _section(doc, "services").items():
        if not isinstance(svc, Mapping):
            continue
        services[str(name)] = {
            "local_address": str(svc.get("local_address", "")),
            "enabled": bool(svc.get("enabled", True)),
        }
        if svc.get("protocol"):
            notes.append(
                f"services.{name}.protocol {svc['protocol']} (served as "
                f"/peerup/{name}/1.0.0)"
            )
    out["services"] = services
    out["names"] = {str(k): str(v) for k, v in _section(doc, "names").items()}
    telemetry = _telemetry(doc, notes)
    if telemetry is not None:
        out["telemetry"] = telemetry
    _ignored(
        doc, notes,
        {"version": set(), "identity": {"key_file"},
         "network": {"listen_addresses"}, "relay": {"addresses"},
         "security": {"authorized_keys_file", "enable_connection_gating"},
         "services": set(), "names": set(), "telemetry": set(), "health": set()},
    )  # fmt: skip
    return out, notes


def relay_from_go(doc: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """This project's ``relay-server.yaml`` content for a Go original's one.

    Raises:
        ValueError: a duration or size in ``resources`` does not parse.
    """
    notes: list[str] = []
    out: dict[str, Any] = {"version": int(doc.get("version") or 1)}
    out["identity_key"] = str(
        _section(doc, "identity").get("key_file") or "relay_identity.key"
    )
    out["listen"] = _listen(doc, notes)
    out["security"] = _security(doc, "relay_authorized_keys")
    res = _section(doc, "resources")
    resources: dict[str, int] = {}
    for key in ("max_reservations", "max_circuits", "max_reservations_per_ip"):
        if res.get(key):
            resources[key] = int(res[key])
    if res.get("reservation_ttl"):
        resources["reservation_ttl_s"] = _duration_s(res["reservation_ttl"])
    if res.get("session_duration"):
        resources["circuit_duration_s"] = _duration_s(res["session_duration"])
    if res.get("session_data_limit"):
        resources["circuit_data_bytes"] = _bytes(res["session_data_limit"])
    if resources:
        out["resources"] = resources
    telemetry = _telemetry(doc, notes)
    if telemetry is not None:
        out["telemetry"] = telemetry
    _ignored(
        doc, notes,
        {"version": set(), "identity": {"key_file"}, "network": {"listen_addresses"},
         "security": {"authorized_keys_file", "enable_connection_gating"},
         "resources": {"max_reservations", "max_circuits", "max_reservations_per_ip",
                       "reservation_ttl", "session_duration", "session_data_limit"},
         "health": set(), "telemetry": set()},
    )  # fmt: skip
    return out, notes
