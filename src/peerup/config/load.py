"""Read, validate, render and edit peer-up's YAML config files (format ``version: 1``).

The only module that reads config files. ``config.yaml`` (a node): ``version``,
``identity_key``, ``listen``, ``relays`` (ending in ``/p2p/<id>``), ``network_name``,
``security: {authorized_keys, enforce_allowlist}``, ``services: {<name>:
{local_address, enabled, allowed_peers}}`` (peers by ID or by name), ``names: {<name>:
<peer ID>}``, ``proxies: [{peer, service, port, bind}]`` (lasting proxies; ``peer`` a
peer ID or a name from ``names``, ``bind`` defaults to 127.0.0.1, no two entries on one
``bind:port``), ``limits: {max_connections_per_peer, max_streams_per_peer,
max_service_connections_per_peer}`` (``schema.NodeLimitsConfig``; 0 is unlimited).
``relay-server.yaml``: ``version``, ``listen``, ``identity_key``,
``security``, ``resources`` (``schema.RelayResourcesConfig``). Every problem is a
``ConfigError`` with file, 1-based line, dotted field and hint; unknown keys are errors
with a "did you mean". YAML 1.2 via ruamel round-trip mode: ``yes``/``on`` are text.
Edits splice only the changed lines into the text, so every other byte and comment
stays; the result must equal the same change made on ruamel's round-trip tree, whose
dump is used otherwise (e.g. flow-style ``{…}`` sections). The result is validated,
then written by ``config.files.write_atomic``. Not supported: multi-document files,
concurrent editors (last writer wins).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import io
import ipaddress
import json
import logging
import re
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.scalarbool import ScalarBoolean

from peerup.config import files, go_original, paths
from peerup.config.schema import (
    CONFIG_VERSION,
    DEFAULT_PROXY_BIND,
    PEER_NAME_RE,
    NodeConfig,
    NodeLimitsConfig,
    ProxyConfig,
    RelayResourcesConfig,
    RelayServerConfig,
    ServiceConfig,
    TelemetryConfig,
    check_peer_name,
    check_service_name,
    split_host_port,
)
from peerup.core.errors import ConfigError
from peerup.core.multiaddr import Multiaddr
from peerup.core.peer_id import PeerId

log = logging.getLogger(__name__)

_NODE_KEYS: Final = (
    "version",
    "identity_key",
    "listen",
    "relays",
    "network_name",
    "direct_connections",
    "port_mapping",
    "security",
    "services",
    "names",
    "proxies",
    "limits",
    "telemetry",
)
_RELAY_KEYS: Final = (
    "version", "listen", "identity_key", "security", "resources", "telemetry",
)  # fmt: skip
_TELEMETRY_KEYS: Final = ("metrics",)
_METRICS_KEYS: Final = ("enabled", "listen_address", "peer_labels")
_SECURITY_KEYS: Final = ("authorized_keys", "enforce_allowlist")
_SERVICE_KEYS: Final = ("local_address", "enabled", "allowed_peers")
_PROXY_KEYS: Final = ("peer", "service", "port", "bind")
_RESOURCE_KEYS: Final = tuple(f.name for f in dataclasses.fields(RelayResourcesConfig))
_LIMIT_KEYS: Final = tuple(f.name for f in dataclasses.fields(NodeLimitsConfig))

DEFAULT_IDENTITY_KEY: Final = "identity.key"
DEFAULT_AUTHORIZED_KEYS: Final = "authorized_keys"
DEFAULT_RELAY_IDENTITY_KEY: Final = "relay_identity.key"
DEFAULT_RELAY_AUTHORIZED_KEYS: Final = "relay_authorized_keys"


# --- loading -----------------------------------------------------------------------


def load_node(path: Path) -> NodeConfig:
    """Read and validate a node's ``config.yaml``.

    Raises:
        ConfigError: missing, group/world-writable, owned by another user or in a
            directory others can write (``files.check_secure_path``), bad YAML, or
            an invalid field.
    """
    path = Path(path)
    return _node_from_text(_read(path), path)


def node_from_text(text: str, path: Path) -> NodeConfig:
    """Validate ``text`` as the node config at ``path`` would be (relative paths
    resolved there), without reading or writing ``path``.

    Raises:
        ConfigError: as :func:`load_node`, for the text.
    """
    return _node_from_text(text, Path(path))


def load_relay(path: Path) -> RelayServerConfig:
    """Read and validate a relay server's ``relay-server.yaml``.

    Raises:
        ConfigError: missing, group/world-writable, owned by another user or in a
            directory others can write (``files.check_secure_path``), bad YAML, or
            an invalid field.
    """
    path = Path(path)
    return _relay_from_text(_read(path), path)


_NOTED: set[str] = set()


def _note_go_format(path: Path, notes: list[str]) -> None:
    """Say once per file that it is read in the Go original's format, and what of it
    is ignored."""
    if str(path) in _NOTED:
        return
    _NOTED.add(str(path))
    log.warning(
        "%s is in the Go original's format: read as it is%s; `peerup config migrate` "
        "rewrites it in this one",
        path,
        ("; ignored: " + "; ".join(notes)) if notes else "",
    )


def _dump_plain(data: dict[str, object]) -> str:
    out = io.StringIO()
    _yaml().dump(data, out)
    return out.getvalue()


def migrate(path: Path, *, relay: bool = False) -> tuple[str, list[str]]:
    """The Go original's config at ``path`` in this project's format, checked, with
    a header that says what was ignored; and the notes.

    Raises:
        ConfigError: the file is not in the Go original's format, or its content does
            not make a valid config.
    """
    path = Path(path)
    text = _read(path)
    doc = _parse(text, path)
    if not go_original.is_go_format(doc):
        raise ConfigError(
            "already in this project's format (no `identity:` section)",
            path=str(path),
        )
    try:
        data, notes = (go_original.relay_from_go if relay else go_original.node_from_go)(
            doc
        )
    except ValueError as exc:
        raise ConfigError(str(exc), path=str(path)) from None
    header = [f"# Migrated by `peerup config migrate` from the Go original's {path.name}."]
    header += [f"# Ignored: {note}" for note in notes]
    new_text = "\n".join(header) + "\n" + _dump_plain(data)
    (_relay_from_text if relay else _node_from_text)(new_text, path)
    return new_text, notes


def _read(path: Path) -> str:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(
            "config file not found",
            path=str(path),
            hint="run `peerup init` to create one, or pass --config PATH",
        ) from None
    # A config file is not secret, but whoever can write it can point the node at
    # another key or allowlist, so group/world-writable files are refused.
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"permissions {stat.S_IMODE(st.st_mode):04o} are too open "
            "(group or others can write it)",
            path=str(path),
            hint=f"chmod go-w {path}",
        )
    # Nor may another user own it, or own or write a directory above it.
    files.check_secure_path(path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text: {exc.reason}", path=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path=str(path)) from None


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never fold long multiaddrs
    yaml.indent(mapping=2, sequence=4, offset=2)  # the layout our templates use
    return yaml


def _parse(text: str, path: Path) -> CommentedMap:
    try:
        doc = _yaml().load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(
            f"YAML syntax error: {problem}",
            path=str(path),
            line=mark.line + 1 if mark is not None else None,
            hint="check the indentation and quoting around this line",
        ) from None
    except YAMLError as exc:
        raise ConfigError(f"YAML error: {exc}", path=str(path)) from None
    if doc is None:
        raise ConfigError(
            "the file is empty",
            path=str(path),
            hint="run `peerup init` to write a fresh one",
        )
    if not isinstance(doc, CommentedMap):
        raise ConfigError(
            f"the file must be a YAML mapping (key: value), not {_describe(doc)}",
            path=str(path),
            line=1,
        )
    return doc


class _Reader:
    """Typed access to a parsed file that raises ``ConfigError`` with file and line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(
        self, message: str, field: str | None, line: int | None, hint: str | None = None
    ) -> ConfigError:
        return ConfigError(
            message, path=str(self.path), field=field, line=line, hint=hint
        )

    def key_line(self, m: CommentedMap, key: str) -> int | None:
        try:
            return int(m.lc.key(key)[0]) + 1
        except (KeyError, TypeError, AttributeError):
            return self.map_line(m)

    def value_line(self, m: CommentedMap, key: str) -> int | None:
        if m.get(key) is None:  # ruamel places a null value on the next token
            return self.key_line(m, key)
        try:
            return int(m.lc.value(key)[0]) + 1
        except (KeyError, TypeError, AttributeError):
            return self.key_line(m, key)

    @staticmethod
    def item_line(seq: CommentedSeq, index: int) -> int | None:
        try:
            return int(seq.lc.item(index)[0]) + 1
        except (KeyError, TypeError, AttributeError):
            return None

    @staticmethod
    def map_line(m: CommentedMap) -> int | None:
        line = getattr(m.lc, "line", None)
        return int(line) + 1 if isinstance(line, int) else None

    def check_keys(self, m: CommentedMap, allowed: Iterable[str], where: str) -> None:
        allowed = tuple(allowed)
        for key in m:
            if not isinstance(key, str):
                raise self.error(
                    f"keys must be text, not {_describe(key)}",
                    where or None,
                    self.map_line(m),
                )
            if key in allowed:
                continue
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = (
                f"did you mean {close[0]!r}?"
                if close
                else "known keys here: " + ", ".join(allowed)
            )
            raise self.error(
                f"unknown key {key!r}", _join(where, key), self.key_line(m, key), hint
            )

    def mapping(self, m: CommentedMap, key: str, where: str) -> CommentedMap | None:
        value = m.get(key)
        if value is None:
            return None
        if not isinstance(value, CommentedMap):
            raise self.error(
                f"must be a mapping (key: value), not {_describe(value)}",
                _join(where, key),
                self.value_line(m, key),
            )
        return value

    def sequence(self, m: CommentedMap, key: str, where: str) -> CommentedSeq | None:
        value = m.get(key)
        if value is None:
            return None
        if not isinstance(value, CommentedSeq):
            raise self.error(
                f"must be a list, not {_describe(value)}",
                _join(where, key),
                self.value_line(m, key),
                hint=f"write one item per line under {key}:, each starting with '- '",
            )
        return value

    def text(
        self, m: CommentedMap, key: str, where: str, default: str | None = None
    ) -> str:
        value = m.get(key)
        if value is None:
            if default is not None:
                return default
            raise self.error(
                "is required",
                _join(where, key),
                self.key_line(m, key) if key in m else self.map_line(m),
                hint=f"add a line '{key}: …'",
            )
        if not isinstance(value, str) or not value.strip():
            raise self.error(
                f"must be non-empty text, not {_describe(value)}",
                _join(where, key),
                self.value_line(m, key),
                hint="put the value in quotes if it looks like a number or a date",
            )
        return str(value)

    def boolean(self, m: CommentedMap, key: str, where: str, default: bool) -> bool:
        if key not in m:
            return default
        value = m.get(key)
        if not isinstance(value, bool | ScalarBoolean):
            raise self.error(
                f"must be true or false, not {_describe(value)}",
                _join(where, key),
                self.value_line(m, key),
                hint="write true or false (yes/no/on/off are text in YAML 1.2)",
            )
        return bool(value)

    def integer(self, m: CommentedMap, key: str, where: str, default: int) -> int:
        if key not in m:
            return default
        value = m.get(key)
        if isinstance(value, bool | ScalarBoolean) or not isinstance(value, int):
            raise self.error(
                f"must be a whole number, not {_describe(value)}",
                _join(where, key),
                self.value_line(m, key),
            )
        if value < 0:
            raise self.error(
                f"must not be negative (got {value})",
                _join(where, key),
                self.value_line(m, key),
                hint="use 0 for unlimited",
            )
        return int(value)

    def version(self, doc: CommentedMap) -> int:
        if "version" not in doc:
            raise self.error(
                "is required", "version", 1, hint=f"add 'version: {CONFIG_VERSION}'"
            )
        value = doc.get("version")
        if isinstance(value, bool | ScalarBoolean) or not isinstance(value, int):
            raise self.error(
                f"must be a whole number, not {_describe(value)}",
                "version",
                self.value_line(doc, "version"),
            )
        if value != CONFIG_VERSION:
            raise self.error(
                f"unsupported version {value} (this peerup reads version "
                f"{CONFIG_VERSION})",
                "version",
                self.value_line(doc, "version"),
                hint="upgrade peerup, or write a fresh file with `peerup init`",
            )
        return int(value)

    def multiaddrs(
        self, m: CommentedMap, key: str, *, is_relay: bool, required: bool = False
    ) -> tuple[str, ...]:
        seq = self.sequence(m, key, "")
        if not seq:
            if required:
                raise self.error(
                    "needs at least one address",
                    key,
                    self.key_line(m, key) if key in m else self.map_line(m),
                    hint="e.g. /ip4/0.0.0.0/tcp/7777",
                )
            return ()
        out: list[str] = []
        for i, item in enumerate(seq):
            where, line = f"{key}[{i}]", self.item_line(seq, i)
            if not isinstance(item, str):
                raise self.error(
                    f"must be a multiaddr, not {_describe(item)}", where, line
                )
            try:
                addr = Multiaddr.parse(item.strip())
            except ValueError as exc:
                raise self.error(
                    str(exc),
                    where,
                    line,
                    hint="write a multiaddr such as /ip4/203.0.113.10/tcp/4001 "
                    "(`peerup init` converts IP:PORT forms)",
                ) from None
            if addr.is_circuit:
                raise self.error(
                    "a /p2p-circuit address does not belong here",
                    where,
                    line,
                    hint="list the relay's own address under relays:",
                )
            if is_relay and addr.components[-1][0] != "p2p":
                raise self.error(
                    "a relay address must end in /p2p/<relay peer ID>",
                    where,
                    line,
                    hint=f"append /p2p/<peer ID> to {item.strip()} "
                    "(`peerup relay info` on the relay prints it)",
                )
            if not is_relay and addr.value_for("p2p") is not None:
                raise self.error(
                    "a listen address must not contain /p2p/",
                    where,
                    line,
                    hint="remove the /p2p/… part; relays go under relays:",
                )
            text = str(addr)
            if text in out:
                raise self.error(f"{text} is listed twice", where, line)
            out.append(text)
        return tuple(out)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _describe(value: object) -> str:
    if value is None:
        return "empty (null)"
    if isinstance(value, bool | ScalarBoolean):
        return f"the boolean {str(bool(value)).lower()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"{str(value)!r}"
    return f"a {type(value).__name__} ({value})"


def _node_from_text(text: str, path: Path) -> NodeConfig:
    r = _Reader(path)
    doc = _parse(text, path)
    if go_original.is_go_format(doc):
        converted, notes = go_original.node_from_go(doc)
        _note_go_format(path, notes)
        return _node_from_text(_dump_plain(converted), path)
    r.check_keys(doc, _NODE_KEYS, "")
    version = r.version(doc)
    identity_key = r.text(doc, "identity_key", "")
    listen = r.multiaddrs(doc, "listen", is_relay=False)
    relays = r.multiaddrs(doc, "relays", is_relay=True)
    network_name: str | None = None
    if doc.get("network_name") is not None:
        network_name = r.text(doc, "network_name", "")
        if not PEER_NAME_RE.match(network_name):
            raise r.error(
                f"invalid network name {network_name!r}",
                "network_name",
                r.value_line(doc, "network_name"),
                hint="use letters, digits, '.', '_' and '-', at most 63 characters",
            )
    security = r.mapping(doc, "security", "") or CommentedMap()
    r.check_keys(security, _SECURITY_KEYS, "security")
    authorized_keys = r.text(
        security, "authorized_keys", "security", DEFAULT_AUTHORIZED_KEYS
    )
    enforce = r.boolean(security, "enforce_allowlist", "security", True)
    names = _read_names(r, doc)
    services = _read_services(r, doc, dict(names))
    proxies = _read_proxies(r, doc, dict(names))
    direct = r.boolean(doc, "direct_connections", "", True)
    port_mapping = r.boolean(doc, "port_mapping", "", True)
    lim = r.mapping(doc, "limits", "") or CommentedMap()
    r.check_keys(lim, _LIMIT_KEYS, "limits")
    limit_defaults = NodeLimitsConfig()
    limits = NodeLimitsConfig(
        **{
            k: r.integer(lim, k, "limits", getattr(limit_defaults, k))
            for k in _LIMIT_KEYS
        }
    )
    return NodeConfig(
        path=path,
        version=version,
        identity_key=paths.resolve(path, identity_key),
        listen=listen,
        relays=relays,
        services=services,
        names=names,
        authorized_keys=paths.resolve(path, authorized_keys),
        enforce_allowlist=enforce,
        network_name=network_name,
        proxies=proxies,
        direct_connections=direct,
        port_mapping=port_mapping,
        limits=limits,
        telemetry=_read_telemetry(r, doc),
    )


def _read_telemetry(r: _Reader, doc: CommentedMap) -> TelemetryConfig:
    tel = r.mapping(doc, "telemetry", "") or CommentedMap()
    r.check_keys(tel, _TELEMETRY_KEYS, "telemetry")
    metrics = r.mapping(tel, "metrics", "telemetry") or CommentedMap()
    where = "telemetry.metrics"
    r.check_keys(metrics, _METRICS_KEYS, where)
    default = TelemetryConfig()
    enabled = r.boolean(metrics, "enabled", where, False)
    listen = r.text(
        metrics, "listen_address", where, f"{default.metrics_host}:{default.metrics_port}"
    )
    line = r.value_line(metrics, "listen_address") if "listen_address" in metrics else 1
    try:
        host, port = split_host_port(listen)
    except ValueError as exc:
        raise r.error(str(exc), f"{where}.listen_address", line) from None
    loopback = host == "localhost"
    with contextlib.suppress(ValueError):
        loopback = loopback or ipaddress.ip_address(host).is_loopback
    if not loopback:
        raise r.error(
            f"metrics are served on a loopback address only, not {host}",
            f"{where}.listen_address",
            line,
            hint="use 127.0.0.1:9091 (or [::1]:9091); reach it remotely through "
            "an ssh tunnel or a reverse proxy of your own",
        )
    return TelemetryConfig(
        enabled, host, port, r.boolean(metrics, "peer_labels", where, False)
    )


def _read_names(r: _Reader, doc: CommentedMap) -> tuple[tuple[str, PeerId], ...]:
    names = r.mapping(doc, "names", "")
    if not names:
        return ()
    out: list[tuple[str, PeerId]] = []
    for name, value in names.items():
        where = f"names.{name}"
        if not isinstance(name, str):
            raise r.error(
                f"a name must be text, not {_describe(name)}",
                "names",
                r.map_line(names),
                hint="put the name in quotes",
            )
        try:
            check_peer_name(name, where)
        except ConfigError as exc:
            raise r.error(
                exc.reason, where, r.key_line(names, name), exc.hint
            ) from None
        if not isinstance(value, str):
            raise r.error(
                f"must be a peer ID, not {_describe(value)}",
                where,
                r.value_line(names, name),
            )
        try:
            peer = PeerId.from_string(value)
        except ValueError as exc:
            raise r.error(
                str(exc),
                where,
                r.value_line(names, name),
                hint="a peer ID looks like 12D3KooW… (`peerup whoami` prints yours)",
            ) from None
        out.append((name, peer))
    return tuple(out)


def _read_services(
    r: _Reader, doc: CommentedMap, names: dict[str, PeerId]
) -> tuple[ServiceConfig, ...]:
    services = r.mapping(doc, "services", "")
    if not services:
        return ()
    out: list[ServiceConfig] = []
    for name in services:
        where = f"services.{name}"
        if not isinstance(name, str):
            raise r.error(
                f"a service name must be text, not {_describe(name)}",
                "services",
                r.map_line(services),
                hint="put the name in quotes",
            )
        try:
            check_service_name(name)
        except ConfigError as exc:
            raise r.error(
                exc.reason, where, r.key_line(services, name), exc.hint
            ) from None
        body = r.mapping(services, name, "services")
        if body is None:
            raise r.error(
                "needs at least local_address",
                where,
                r.key_line(services, name),
                hint=f"add '{name}:' then an indented 'local_address: 127.0.0.1:PORT'",
            )
        r.check_keys(body, _SERVICE_KEYS, where)
        local_address = r.text(body, "local_address", where)
        enabled = r.boolean(body, "enabled", where, True)
        allowed: list[PeerId] = []
        seq = r.sequence(body, "allowed_peers", where) or CommentedSeq()
        for i, item in enumerate(seq):
            item_where, line = f"{where}.allowed_peers[{i}]", r.item_line(seq, i)
            peer = _peer_or_name(r, item, names, item_where, line)
            if peer in allowed:
                raise r.error(f"{peer} is listed twice", item_where, line)
            allowed.append(peer)
        try:
            out.append(
                ServiceConfig(name, local_address.strip(), enabled, tuple(allowed))
            )
        except ConfigError as exc:
            raise r.error(
                exc.reason, exc.field, r.value_line(body, "local_address"), exc.hint
            ) from None
    return tuple(out)


def _read_proxies(
    r: _Reader, doc: CommentedMap, names: dict[str, PeerId]
) -> tuple[ProxyConfig, ...]:
    seq = r.sequence(doc, "proxies", "")
    if not seq:
        return ()
    out: list[ProxyConfig] = []
    seen: dict[tuple[str, int], tuple[int, int | None, ProxyConfig]] = {}
    for i, body in enumerate(seq):
        where, line = f"proxies[{i}]", r.item_line(seq, i)
        if not isinstance(body, CommentedMap):
            raise r.error(
                f"must be a mapping with peer, service and port, not {_describe(body)}",
                where,
                line,
                hint="write '- peer: home' then indented 'service: ssh' and "
                "'port: 2222' lines",
            )
        r.check_keys(body, _PROXY_KEYS, where)
        peer = r.text(body, "peer", where).strip()
        _peer_or_name(r, peer, names, f"{where}.peer", r.value_line(body, "peer"))
        service = r.text(body, "service", where).strip()
        port = body.get("port")
        if "port" not in body or port is None:
            raise r.error(
                "is required",
                f"{where}.port",
                r.key_line(body, "port") if "port" in body else r.map_line(body),
                hint="add a line 'port: …' (the local port, 1-65535)",
            )
        if isinstance(port, bool | ScalarBoolean) or not isinstance(port, int):
            raise r.error(
                f"must be a port number, not {_describe(port)}",
                f"{where}.port",
                r.value_line(body, "port"),
                hint="write the number without quotes, e.g. port: 2222",
            )
        bind = r.text(body, "bind", where, DEFAULT_PROXY_BIND).strip()
        try:
            proxy = ProxyConfig(peer, service, int(port), bind)
        except ConfigError as exc:
            key = (exc.field or "").rsplit(".", 1)[-1]
            raise r.error(
                exc.reason,
                f"{where}.{key}",
                r.value_line(body, key) if key in body else r.map_line(body),
                exc.hint,
            ) from None
        if proxy.listen_key in seen:
            index, other_line, other = seen[proxy.listen_key]
            at = f", line {other_line}" if other_line else ""
            raise r.error(
                f"{proxy.listen} is already used by proxies[{index}] "
                f"({other.listen} -> {other.peer}/{other.service}{at})",
                where,
                line,
                hint="give each proxy its own port (or bind address)",
            )
        seen[proxy.listen_key] = (i, line, proxy)
        out.append(proxy)
    return tuple(out)


def _peer_or_name(
    r: _Reader, item: object, names: dict[str, PeerId], where: str, line: int | None
) -> PeerId:
    if not isinstance(item, str):
        raise r.error(
            f"must be a peer ID or a name, not {_describe(item)}", where, line
        )
    text = item.strip()
    if text in names:
        return names[text]
    try:
        return PeerId.from_string(text)
    except ValueError:
        known = ", ".join(names) or "none defined"
        raise r.error(
            f"{text!r} is neither a peer ID nor a name from names:",
            where,
            line,
            hint=f"use a peer ID (12D3KooW…) or a defined name ({known})",
        ) from None


def _relay_from_text(text: str, path: Path) -> RelayServerConfig:
    r = _Reader(path)
    doc = _parse(text, path)
    if go_original.is_go_format(doc):
        try:
            converted, notes = go_original.relay_from_go(doc)
        except ValueError as exc:
            raise ConfigError(str(exc), path=str(path), field="resources") from None
        _note_go_format(path, notes)
        return _relay_from_text(_dump_plain(converted), path)
    r.check_keys(doc, _RELAY_KEYS, "")
    version = r.version(doc)
    listen = r.multiaddrs(doc, "listen", is_relay=False, required=True)
    identity_key = r.text(doc, "identity_key", "")
    security = r.mapping(doc, "security", "") or CommentedMap()
    r.check_keys(security, _SECURITY_KEYS, "security")
    authorized_keys = r.text(
        security, "authorized_keys", "security", DEFAULT_RELAY_AUTHORIZED_KEYS
    )
    enforce = r.boolean(security, "enforce_allowlist", "security", True)
    res = r.mapping(doc, "resources", "") or CommentedMap()
    r.check_keys(res, _RESOURCE_KEYS, "resources")
    defaults = RelayResourcesConfig()
    resources = RelayResourcesConfig(
        **{
            k: r.integer(res, k, "resources", getattr(defaults, k))
            for k in _RESOURCE_KEYS
        }
    )
    return RelayServerConfig(
        path=path,
        version=version,
        listen=listen,
        identity_key=paths.resolve(path, identity_key),
        authorized_keys=paths.resolve(path, authorized_keys),
        enforce_allowlist=enforce,
        resources=resources,
        telemetry=_read_telemetry(r, doc),
    )


# --- templates ---------------------------------------------------------------------


def _scalar(value: str) -> str:
    """``value`` as a YAML scalar: plain when it reads back unchanged, else quoted."""
    try:
        loaded = YAML(typ="safe").load(f"k: {value}\n")
    except YAMLError:
        loaded = None
    if isinstance(loaded, dict) and loaded.get("k") == value and isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _block_list(key: str, items: list[str], indent: str = "") -> list[str]:
    if not items:
        return [f"{indent}{key}: []"]
    return [f"{indent}{key}:"] + [f"{indent}  - {_scalar(i)}" for i in items]


def render_node_config(
    identity_key: str, listen: list[str], relays: list[str], network_name: str | None
) -> str:
    """A commented ``config.yaml`` for ``peerup init`` that loads back cleanly."""
    lines = [
        "# peer-up node configuration.",
        "# `peerup service …`, `peerup name …` and `peerup proxy add|remove` edit it",
        "# and keep your comments.",
        "# Relative paths are relative to the directory of this file.",
        f"version: {CONFIG_VERSION}",
        "",
        "# This node's private key (libp2p protobuf, mode 0600); its peer ID comes",
        "# from it.",
        f"identity_key: {_scalar(identity_key)}",
        "",
        "# Addresses to accept connections on (multiaddrs).",
        *_block_list("listen", listen),
        "",
        "# Relays that keep a reservation for this node, so peers can reach it through",
        "# NAT. Each address ends in /p2p/<relay peer ID>.",
        *_block_list("relays", relays),
        "",
        "# A label for your network, shown by status commands.",
        f"network_name: {_scalar(network_name)}"
        if network_name
        else "# network_name: home",
        "",
        "security:",
        "  # Peers allowed to connect: one peer ID per line (`peerup auth add`).",
        f"  authorized_keys: {DEFAULT_AUTHORIZED_KEYS}",
        "  # Refuse peers that are not in authorized_keys. Turn off only for testing.",
        "  enforce_allowlist: true",
        "",
        "# Local TCP services offered to authorized peers, for example:",
        "#   ssh:",
        "#     local_address: 127.0.0.1:22",
        "#     enabled: true",
        "#     allowed_peers: []   # empty: every authorized peer; else IDs or names",
        "services: {}",
        "",
        "# Short names for peer IDs, usable wherever a peer ID is expected.",
        "names: {}",
        "",
        "# Lasting proxies: local ports the daemon keeps open to services on other",
        "# peers (`peerup proxy add|list|remove`), for example:",
        "#   - peer: home          # a name from names:, or a peer ID",
        "#     service: ssh",
        "#     port: 2222          # the local port",
        "#     bind: 127.0.0.1     # default; 0.0.0.0 opens it to the whole network",
        "proxies: []",
    ]
    return "\n".join(lines) + "\n"


_RESOURCE_COMMENTS: Final = {
    "max_reservations": "reservations held at once, all peers together",
    "max_reservations_per_ip": "reservations from one IP address",
    "reservation_ttl_s": "seconds a reservation lasts before the peer must renew it",
    "max_circuits": "relayed connections open at once",
    "max_circuits_per_peer": "relayed connections one peer may have open",
    "max_circuits_per_destination": "relayed connections to one peer, from all others",
    "max_circuits_per_pair": "relayed connections from one peer to one other peer",
    "circuit_duration_s": "seconds a relayed connection may last",
    "circuit_data_bytes": "bytes a relayed connection may carry",
}


def render_relay_config(listen: list[str]) -> str:
    """A commented ``relay-server.yaml`` for ``peerup relay setup``."""
    defaults = RelayResourcesConfig()
    lines = [
        "# peer-up relay server configuration.",
        "# Relative paths are relative to the directory of this file.",
        f"version: {CONFIG_VERSION}",
        "",
        "# Addresses to accept connections on; open these ports in the firewall.",
        *_block_list("listen", listen),
        "",
        "# The relay's private key (mode 0600). Nodes name the relay by its peer ID:",
        "# their relays: addresses end in /p2p/<this relay's peer ID>.",
        f"identity_key: {DEFAULT_RELAY_IDENTITY_KEY}",
        "",
        "security:",
        "  # Peers allowed to reserve and open circuits: one peer ID per line.",
        f"  authorized_keys: {DEFAULT_RELAY_AUTHORIZED_KEYS}",
        "  # Refuse peers that are not in authorized_keys. Turn off only for testing.",
        "  enforce_allowlist: true",
        "",
        "# Caps on what peers may use; 0 means unlimited.",
        "resources:",
    ]
    for name in _RESOURCE_KEYS:
        lines.append(f"  # {_RESOURCE_COMMENTS[name]}")
        lines.append(f"  {name}: {getattr(defaults, name)}")
    return "\n".join(lines) + "\n"


# --- editing -----------------------------------------------------------------------

_Lines = list[str]
_Mutate = Callable[[CommentedMap], bool]
_Splice = Callable[[_Lines, CommentedMap], _Lines | None]


def add_service(path: Path, service: ServiceConfig) -> None:
    """Add ``service`` to the node config at ``path``.

    Raises:
        ConfigError: the name is taken, invalid or reserved, or the file is invalid.
    """
    path = Path(path)
    check_service_name(service.name)

    def mutate(doc: CommentedMap) -> bool:
        services = _section(doc, "services", path)
        if service.name in services:
            raise ConfigError(
                f"service {service.name!r} already exists",
                path=str(path),
                field=f"services.{service.name}",
                hint=f"remove it first with `peerup service remove {service.name}`",
            )
        services[service.name] = _service_node(service)
        return True

    def splice(lines: _Lines, doc: CommentedMap) -> _Lines | None:
        return _splice_add(lines, doc, "services", _service_lines(service))

    _edit(path, mutate, splice)


def remove_service(path: Path, name: str) -> None:
    """Remove the service ``name``.

    Raises:
        ConfigError: no such service, or the file is invalid.
    """
    path = Path(path)

    def mutate(doc: CommentedMap) -> bool:
        services = doc.get("services")
        if not isinstance(services, CommentedMap) or name not in services:
            raise _no_such("service", name, services, path, "services")
        del services[name]
        return True

    def splice(lines: _Lines, doc: CommentedMap) -> _Lines | None:
        return _splice_remove(lines, doc, "services", name)

    _edit(path, mutate, splice)


def set_service_enabled(path: Path, name: str, enabled: bool) -> None:
    """Turn the service ``name`` on or off (the file is left alone if unchanged).

    Raises:
        ConfigError: no such service, or the file is invalid.
    """
    path = Path(path)

    def mutate(doc: CommentedMap) -> bool:
        services = doc.get("services")
        if not isinstance(services, CommentedMap) or name not in services:
            raise _no_such("service", name, services, path, "services")
        body = services[name]
        if not isinstance(body, CommentedMap):
            raise ConfigError(
                "is not a mapping", path=str(path), field=f"services.{name}"
            )
        if bool(body.get("enabled", True)) == enabled:
            return False
        body["enabled"] = enabled
        return True

    def splice(lines: _Lines, doc: CommentedMap) -> _Lines | None:
        body = doc["services"][name]
        value = "true" if enabled else "false"
        if "enabled" in body:
            return _splice_set_value(lines, body, "enabled", value)
        return _splice_append(lines, body, [f"enabled: {value}"])

    _edit(path, mutate, splice)


def set_name(path: Path, name: str, peer: PeerId) -> None:
    """Give ``peer`` the short name ``name``, replacing what it named before.

    Raises:
        ConfigError: the name is invalid, or the file is invalid.
    """
    path = Path(path)
    check_peer_name(name, f"names.{name}")
    value = peer.to_base58()

    def mutate(doc: CommentedMap) -> bool:
        names = _section(doc, "names", path)
        if names.get(name) == value:
            return False
        names[name] = value
        return True

    def splice(lines: _Lines, doc: CommentedMap) -> _Lines | None:
        names = doc.get("names")
        if isinstance(names, CommentedMap) and name in names:
            return _splice_set_value(lines, names, name, value)
        return _splice_add(lines, doc, "names", [f"{_scalar(name)}: {value}"])

    _edit(path, mutate, splice)


def remove_name(path: Path, name: str) -> None:
    """Remove the short name ``name``.

    Raises:
        ConfigError: no such name, it is still used in a service's allowed_peers, or
            the file is invalid.
    """
    path = Path(path)

    def mutate(doc: CommentedMap) -> bool:
        names = doc.get("names")
        if not isinstance(names, CommentedMap) or name not in names:
            raise _no_such("name", name, names, path, "names")
        del names[name]
        return True

    def splice(lines: _Lines, doc: CommentedMap) -> _Lines | None:
        return _splice_remove(lines, doc, "names", name)

    _edit(path, mutate, splice)


def add_proxy(path: Path, proxy: ProxyConfig) -> None:
    """Append the lasting proxy ``proxy`` to ``proxies``.

    Raises:
        ConfigError: another entry listens on the same ``bind:port``, the peer is
            neither a peer ID nor a defined name, or the file is invalid.
    """
    path = Path(path)

    def mutate(doc: CommentedMap) -> bool:
        items = _list_section(doc, "proxies", path)
        for i, item in enumerate(items):
            other = _proxy_of(item)
            if other.listen_key == proxy.listen_key:
                raise ConfigError(
                    f"a proxy already listens on {other.listen} "
                    f"({other.peer}/{other.service})",
                    path=str(path),
                    field=f"proxies[{i}]",
                    line=_Reader.item_line(items, i),
                    hint="pick another port, or remove that one first with "
                    f"`{remove_proxy_command(other)}`",
                )
        items.append(_proxy_node(proxy))
        return True

    def splice(lines: _Lines, doc: CommentedMap) -> _Lines | None:
        return _splice_add_item(lines, doc, "proxies", _proxy_lines(proxy))

    _edit(path, mutate, splice)


def remove_proxy(path: Path, port: int, bind: str | None = None) -> ProxyConfig:
    """Remove the lasting proxy on ``port`` (on ``bind``, needed only when several
    entries use ``port``); returns the entry removed.

    Raises:
        ConfigError: no such entry, several and no ``bind``, or the file is invalid.
    """
    path = Path(path)
    removed: list[tuple[int, ProxyConfig]] = []

    def mutate(doc: CommentedMap) -> bool:
        items = doc.get("proxies")
        entries = (
            [_proxy_of(item) for item in items]
            if isinstance(items, CommentedSeq)
            else []
        )
        index = find_proxy(entries, port, bind, path)
        assert isinstance(items, CommentedSeq)  # find_proxy found an entry in it
        removed.append((index, entries[index]))
        del items[index]
        return True

    def splice(lines: _Lines, doc: CommentedMap) -> _Lines | None:
        return _splice_remove_item(lines, doc, "proxies", removed[-1][0])

    _edit(path, mutate, splice)
    return removed[-1][1]


def find_proxy(
    proxies: Iterable[ProxyConfig], port: int, bind: str | None, path: Path
) -> int:
    """The index of the one entry listening on ``port`` (and ``bind``, if given).

    Raises:
        ConfigError: none, or several (``bind`` not given); the hint lists them.
    """
    entries = list(proxies)
    want = None
    if bind is not None:
        try:
            want = ProxyConfig("x", "x", port, bind).listen_key
        except ConfigError as exc:
            raise ConfigError(
                exc.reason, path=str(path), field="proxies", hint=exc.hint
            ) from None
    found = [
        i
        for i, p in enumerate(entries)
        if p.port == port and (want is None or p.listen_key == want)
    ]
    if len(found) == 1:
        return found[0]
    where = f"{bind}:{port}" if bind is not None else f"port {port}"
    described = ", ".join(f"{p.listen} ({p.peer}/{p.service})" for p in entries)
    if not found:
        raise ConfigError(
            f"no proxy on {where}",
            path=str(path),
            field="proxies",
            hint=f"defined: {described}"
            if described
            else "there are no proxies in this file",
        )
    raise ConfigError(
        f"{len(found)} proxies use port {port}: "
        + ", ".join(
            f"{entries[i].listen} ({entries[i].peer}/{entries[i].service})"
            for i in found
        ),
        path=str(path),
        field="proxies",
        hint=f"say which with --bind, e.g. `peerup proxy remove {port} --bind "
        f"{entries[found[0]].bind}`",
    )


def remove_proxy_command(proxy: ProxyConfig) -> str:
    """The ``peerup proxy remove …`` command line that removes ``proxy``."""
    if proxy.bind == DEFAULT_PROXY_BIND:
        return f"peerup proxy remove {proxy.port}"
    return f"peerup proxy remove {proxy.port} --bind {proxy.bind}"


def add_relay(path: Path, relay: str) -> bool:
    """Add a relay multiaddr (ending in ``/p2p/<relay ID>``) to ``relays:``; False
    if it is listed already.

    Raises:
        ConfigError: not a relay address, or the file is invalid.
    """
    path = Path(path)
    try:
        addr = Multiaddr.parse(relay)
    except ValueError as exc:
        raise ConfigError(f"not a multiaddr: {exc}", field="relays") from None
    if addr.peer_id is None or addr.is_circuit:
        raise ConfigError(
            f"{relay} does not end in /p2p/<relay peer ID>",
            field="relays",
            hint="`peerup relay info` on the relay prints its full address",
        )
    text = str(addr)

    def mutate(doc: CommentedMap) -> bool:
        relays = _list_section(doc, "relays", path)
        if any(Multiaddr.parse(str(r)) == addr for r in relays):
            return False
        relays.append(text)
        return True

    before = _read(path)
    _edit(path, mutate, lambda _lines, _doc: None)
    return _read(path) != before


def remove_relay(path: Path, relay: str) -> None:
    """Remove a relay from ``relays:`` by its address or its peer ID.

    Raises:
        ConfigError: no such relay, or the file is invalid.
    """
    path = Path(path)

    def matches(item: object) -> bool:
        addr = Multiaddr.parse(str(item))
        return str(addr) == relay or str(addr.peer_id) == relay

    def mutate(doc: CommentedMap) -> bool:
        relays = _list_section(doc, "relays", path)
        keep = [r for r in relays if not matches(r)]
        if len(keep) == len(relays):
            raise ConfigError(
                f"no relay {relay!r} in relays:",
                path=str(path),
                field="relays",
                hint="`peerup relay list` shows them",
            )
        relays[:] = keep
        return True

    _edit(path, mutate, lambda _lines, _doc: None)


def _list_section(doc: CommentedMap, key: str, path: Path) -> CommentedSeq:
    value = doc.get(key)
    if value is None:
        value = CommentedSeq()
        doc[key] = value
    if not isinstance(value, CommentedSeq):
        raise ConfigError("must be a list", path=str(path), field=key)
    return value


def _proxy_of(item: object) -> ProxyConfig:
    """The entry ``item`` of a file that has already been validated."""
    assert isinstance(item, CommentedMap)
    bind = item.get("bind")
    return ProxyConfig(
        str(item["peer"]).strip(),
        str(item["service"]).strip(),
        int(item["port"]),
        DEFAULT_PROXY_BIND if bind is None else str(bind).strip(),
    )


def _proxy_node(proxy: ProxyConfig) -> CommentedMap:
    node = CommentedMap()
    node["peer"] = proxy.peer
    node["service"] = proxy.service
    node["port"] = proxy.port
    node["bind"] = proxy.bind
    return node


def _proxy_lines(proxy: ProxyConfig) -> list[str]:
    return [
        f"- peer: {_scalar(proxy.peer)}",
        f"  service: {_scalar(proxy.service)}",
        f"  port: {proxy.port}",
        f"  bind: {_scalar(proxy.bind)}",
    ]


def _section(doc: CommentedMap, key: str, path: Path) -> CommentedMap:
    value = doc.get(key)
    if value is None:
        value = CommentedMap()
        doc[key] = value
    if not isinstance(value, CommentedMap):
        raise ConfigError("must be a mapping", path=str(path), field=key)
    return value


def _no_such(
    kind: str, name: str, section: object, path: Path, field: str
) -> ConfigError:
    known = ", ".join(section) if isinstance(section, CommentedMap) and section else ""
    return ConfigError(
        f"no {kind} named {name!r}",
        path=str(path),
        field=field,
        hint=f"defined: {known}" if known else f"there are no {field} in this file",
    )


def _service_node(service: ServiceConfig) -> CommentedMap:
    node = CommentedMap()
    node["local_address"] = service.local_address
    node["enabled"] = service.enabled
    node["allowed_peers"] = CommentedSeq(p.to_base58() for p in service.allowed_peers)
    return node


def _service_lines(service: ServiceConfig) -> list[str]:
    return [
        f"{_scalar(service.name)}:",
        f"  local_address: {_scalar(service.local_address)}",
        f"  enabled: {'true' if service.enabled else 'false'}",
        *_block_list(
            "allowed_peers", [p.to_base58() for p in service.allowed_peers], "  "
        ),
    ]


def _edit(path: Path, mutate: _Mutate, splice: _Splice) -> None:
    text = _read(path)
    if go_original.is_go_format(_parse(text, path)):
        raise ConfigError(
            "this file is in the Go original's format, which is read but not edited",
            path=str(path),
            hint="`peerup config migrate` rewrites it in this project's format first",
        )
    _node_from_text(text, path)  # refuse to edit a file that is already invalid
    expected = _parse(text, path)
    if not mutate(expected):
        return
    new_text: str | None = None
    lines = _split_lines(text)
    spliced = splice(lines, _parse(text, path))
    if spliced is not None:
        candidate = "".join(spliced)
        try:
            if _plain(_parse(candidate, path)) == _plain(expected):
                new_text = candidate
        except ConfigError:
            new_text = None
    if new_text is None:
        new_text = _dump(expected)
    try:
        _node_from_text(new_text, path)
    except ConfigError as exc:
        raise ConfigError(
            f"the change would make the file invalid: {exc.reason}",
            path=str(path),
            field=exc.field,
            hint=exc.hint,
        ) from None
    files.write_atomic(path, new_text)


def _dump(doc: CommentedMap) -> str:
    out = io.StringIO()
    _yaml().dump(doc, out)
    return out.getvalue()


def _plain(node: object) -> object:
    """A comparable form of a parsed tree, ignoring comments and quoting style."""
    if isinstance(node, dict):
        return ("map", tuple((_plain(k), _plain(v)) for k, v in node.items()))
    if isinstance(node, list):
        return ("seq", tuple(_plain(v) for v in node))
    if isinstance(node, bool | ScalarBoolean):
        return ("bool", bool(node))
    if isinstance(node, str):
        return ("str", str(node))
    if isinstance(node, int):
        return ("int", int(node))
    return ("other", repr(node))


# --- line splicing: edit the text, leave every other byte alone ----------------------


def _split_lines(text: str) -> _Lines:
    return re.findall(r"[^\n]*\n|[^\n]+\Z", text)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _owned_end(lines: _Lines, key_line: int, key_col: int, stop: int) -> int:
    """The index after the last line that belongs to the entry at ``key_line``.

    Blank lines and comments at or left of the key's column after the entry's content
    belong to whatever follows (a section header comment), so they are not included.
    """
    end = key_line + 1
    for i in range(key_line + 1, stop):
        stripped = lines[i].strip()
        if not stripped:
            continue
        indent = _indent(lines[i])
        if stripped.startswith("#"):
            if indent > key_col:
                end = i + 1
            continue
        # A block sequence may sit at its key's column ("listen:\n- /ip4/…").
        is_item = stripped == "-" or stripped.startswith("- ")
        if indent < key_col or (indent == key_col and not is_item):
            break
        end = i + 1
    return end


def _is_block(m: object) -> bool:
    return isinstance(m, CommentedMap) and m.fa.flow_style() is False and len(m) > 0


def _entry_range(lines: _Lines, m: CommentedMap, key: str) -> tuple[int, int]:
    keys = list(m)
    index = keys.index(key)
    start, col = m.lc.key(key)
    stop = m.lc.key(keys[index + 1])[0] if index + 1 < len(keys) else len(lines)
    return int(start), _owned_end(lines, int(start), int(col), int(stop))


def _insert(lines: _Lines, at: int, body: list[str], indent: int) -> _Lines:
    nl = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    out = list(lines)
    if at > 0 and not out[at - 1].endswith("\n"):
        out[at - 1] += nl
    out[at:at] = [(" " * indent + b).rstrip() + nl for b in body]
    return out


def _key_line_match(line: str, key: str) -> re.Match[str] | None:
    return re.match(rf"^(\s*{re.escape(key)}\s*:)(.*)$", line, re.DOTALL)


def _splice_append(lines: _Lines, m: CommentedMap, body: list[str]) -> _Lines | None:
    """Add ``body`` after the last entry of the block mapping ``m``."""
    if not _is_block(m):
        return None
    last = list(m)[-1]
    col = int(m.lc.key(last)[1])
    return _insert(lines, _entry_range(lines, m, last)[1], body, col)


def _splice_add(
    lines: _Lines, doc: CommentedMap, section: str, body: list[str]
) -> _Lines | None:
    """Add ``body`` (an entry) to the top-level mapping ``section``, creating it."""
    return _splice_into(lines, doc, section, body, is_list=False)


def _splice_into(
    lines: _Lines, doc: CommentedMap, section: str, body: list[str], *, is_list: bool
) -> _Lines | None:
    """Add ``body`` to the top-level mapping (or, ``is_list``, list) ``section``:
    created when missing, filled when empty (``~``, nothing, ``{}`` / ``[]``),
    appended to when a block; None when the text's layout is one we do not edit."""
    if section not in doc:
        if not _is_block(doc):
            return None
        return _splice_append(lines, doc, [f"{section}:", *("  " + b for b in body)])
    value = doc[section]
    key_line, key_col = (int(x) for x in doc.lc.key(section))
    match = _key_line_match(lines[key_line], section)
    if match is None:
        return None
    rest = match.group(2).strip()
    if value is None:
        if rest and not rest.startswith("#"):  # written as ~ or null
            return None
        return _insert(lines, key_line + 1, body, key_col + 2)
    kind, opening, flow = (
        (CommentedSeq, "[", r"\[\s*\]") if is_list else (CommentedMap, "{", r"\{\s*\}")
    )
    if isinstance(value, kind) and not value and rest.startswith(opening):
        empty = re.match(rf"^\s*{flow}(.*)$", match.group(2), re.DOTALL)
        if empty is None:
            return None
        out = list(lines)
        out[key_line] = match.group(1) + empty.group(1)
        return _insert(out, key_line + 1, body, key_col + 2)
    if not is_list and isinstance(value, CommentedMap):
        return _splice_append(lines, value, body)
    if is_list and _is_block_list(value):
        found = _item_range(lines, value, len(value) - 1)
        if found is None:
            return None
        return _insert(lines, found[1], body, found[2])
    return None


def _splice_remove(
    lines: _Lines, doc: CommentedMap, section: str, key: str
) -> _Lines | None:
    """Delete the entry ``key`` of the top-level block mapping ``section``."""
    m = doc.get(section)
    if not isinstance(m, CommentedMap) or not _is_block(m) or key not in m:
        return None
    start, end = _entry_range(lines, m, key)
    out = lines[:start] + lines[end:]
    if len(m) == 1:
        key_line = int(doc.lc.key(section)[0])
        match = _key_line_match(out[key_line], section)
        if match is None:
            return None
        out[key_line] = match.group(1) + " {}" + match.group(2)
    return out


def _is_block_list(s: object) -> bool:
    return isinstance(s, CommentedSeq) and s.fa.flow_style() is False and len(s) > 0


def _item_range(
    lines: _Lines, seq: CommentedSeq, index: int
) -> tuple[int, int, int] | None:
    """First line, end and dash column of item ``index`` of the block list ``seq``
    (None when the item does not start on its ``-`` line)."""
    start = int(seq.lc.item(index)[0])
    if not lines[start].lstrip(" ").startswith("-"):
        return None
    col = _indent(lines[start])
    stop = int(seq.lc.item(index + 1)[0]) if index + 1 < len(seq) else len(lines)
    return start, _owned_end(lines, start, col, stop), col


def _splice_add_item(
    lines: _Lines, doc: CommentedMap, section: str, body: list[str]
) -> _Lines | None:
    """Add ``body`` (one ``- …`` item) to the top-level list ``section``, creating it."""
    return _splice_into(lines, doc, section, body, is_list=True)


def _splice_remove_item(
    lines: _Lines, doc: CommentedMap, section: str, index: int
) -> _Lines | None:
    """Delete item ``index`` of the top-level block list ``section``."""
    seq = doc.get(section)
    if not _is_block_list(seq) or not 0 <= index < len(seq):
        return None
    found = _item_range(lines, seq, index)
    if found is None:
        return None
    start, end, _ = found
    out = lines[:start] + lines[end:]
    if len(seq) == 1:
        key_line = int(doc.lc.key(section)[0])
        match = _key_line_match(out[key_line], section)
        if match is None:
            return None
        out[key_line] = match.group(1) + " []" + match.group(2)
    return out


_SCALAR_RE: Final = re.compile(r"\"[^\"\n]*\"|'[^'\n]*'|[^\s#,\]}]+")


def _splice_set_value(
    lines: _Lines, m: CommentedMap, key: str, value: str
) -> _Lines | None:
    """Replace the one-line scalar value of ``key`` in the block mapping ``m``."""
    if not _is_block(m) or m.get(key) is None:
        return None
    line, col = (int(x) for x in m.lc.value(key))
    match = _SCALAR_RE.match(lines[line], col)
    if match is None:
        return None
    out = list(lines)
    out[line] = lines[line][:col] + value + lines[line][match.end() :]
    return out
