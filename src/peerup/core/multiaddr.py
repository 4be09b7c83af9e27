"""Multiaddr: the subset of protocols peer-up uses, in text and binary form.

Spec: multiformats/multiaddr and its protocols.csv. Supported: ip4, ip6, ip6zone, dns,
dns4, dns6, dnsaddr, tcp, udp, quic, quic-v1, ws, wss, tls, p2p (alias ipfs),
p2p-circuit, webtransport, certhash, unix, memory (in-memory test transport). Anything
else is rejected with ValueError (text) or RemoteProtocolError (bytes from the wire),
never passed through blindly.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

from peerup.core import varint
from peerup.core.errors import RemoteProtocolError
from peerup.core.peer_id import PeerId

# name -> (code, size): size is a byte count, 0 for none, -1 for varint-length-prefixed.
_PROTOCOLS: Final[dict[str, tuple[int, int]]] = {
    "ip4": (4, 4),
    "tcp": (6, 2),
    "udp": (273, 2),
    "dns": (53, -1),
    "dns4": (54, -1),
    "dns6": (55, -1),
    "dnsaddr": (56, -1),
    "ip6": (41, 16),
    "ip6zone": (42, -1),
    "p2p": (421, -1),
    "p2p-circuit": (290, 0),
    "quic": (460, 0),
    "quic-v1": (461, 0),
    "webtransport": (465, 0),
    "certhash": (466, -1),
    "tls": (448, 0),
    "ws": (477, 0),
    "wss": (478, 0),
    "unix": (400, -1),
    "memory": (777, -1),
}
_BY_CODE: Final = {code: (name, size) for name, (code, size) in _PROTOCOLS.items()}
_ALIASES: Final = {"ipfs": "p2p"}

Component = tuple[str, str | None]


@dataclass(frozen=True, slots=True)
class Multiaddr:
    """An immutable multiaddr: a tuple of ``(protocol, value)`` components."""

    components: tuple[Component, ...]

    @classmethod
    def parse(cls, text: str) -> Multiaddr:
        """Parse the text form, e.g. ``/ip4/1.2.3.4/tcp/4001/p2p/12D3…``.

        Raises:
            ValueError: with a message naming the bad part.
        """
        if not text.startswith("/"):
            raise ValueError(f"multiaddr must start with '/': {text!r}")
        parts = text.rstrip("/").split("/")[1:]
        comps: list[Component] = []
        i = 0
        while i < len(parts):
            name = _ALIASES.get(parts[i], parts[i])
            if name not in _PROTOCOLS:
                raise ValueError(f"unknown multiaddr protocol {parts[i]!r} in {text!r}")
            _, size = _PROTOCOLS[name]
            if size == 0:
                comps.append((name, None))
                i += 1
                continue
            if name == "unix":
                value = "/" + "/".join(parts[i + 1 :])
                _encode_value(name, value)  # validates (UTF-8)
                comps.append((name, value))
                break
            if i + 1 >= len(parts):
                raise ValueError(f"multiaddr protocol {name!r} needs a value")
            value = parts[i + 1]
            _encode_value(name, value)  # validates
            if name == "p2p":
                value = PeerId.from_string(value).to_base58()
            elif name == "ip6":
                value = str(ipaddress.IPv6Address(value))
            elif name in ("tcp", "udp"):
                value = str(int(value))
            comps.append((name, value))
            i += 2
        if not comps:
            raise ValueError("empty multiaddr")
        return cls(tuple(comps))

    @classmethod
    def from_bytes(cls, raw: bytes) -> Multiaddr:
        """Decode the binary form.

        Raises:
            RemoteProtocolError: malformed or unsupported bytes.
        """
        comps: list[Component] = []
        pos = 0
        while pos < len(raw):
            code, pos = varint.decode(raw, pos)
            if code not in _BY_CODE:
                raise RemoteProtocolError(f"unknown multiaddr code {code}")
            name, size = _BY_CODE[code]
            if size == 0:
                comps.append((name, None))
                continue
            if size < 0:
                size, pos = varint.decode(raw, pos)
            if pos + size > len(raw):
                raise RemoteProtocolError("truncated multiaddr")
            try:
                comps.append((name, _decode_value(name, raw[pos : pos + size])))
            except ValueError as exc:
                raise RemoteProtocolError(
                    f"bad multiaddr {name} value: {exc}"
                ) from None
            pos += size
        if not comps:
            raise RemoteProtocolError("empty multiaddr")
        return cls(tuple(comps))

    def to_bytes(self) -> bytes:
        """The binary form."""
        out = bytearray()
        for name, value in self.components:
            code, _ = _PROTOCOLS[name]
            out += varint.encode(code)
            if value is not None:
                out += _encode_value(name, value)
        return bytes(out)

    def __str__(self) -> str:
        return "".join(
            f"/{n}" if v is None else (f"/{n}{v}" if n == "unix" else f"/{n}/{v}")
            for n, v in self.components
        )

    def __repr__(self) -> str:
        return f"Multiaddr({self})"

    def value_for(self, name: str) -> str | None:
        """The value of the first component named ``name``."""
        for n, v in self.components:
            if n == name:
                return v
        return None

    @property
    def peer_id(self) -> PeerId | None:
        """The last ``/p2p/`` component's peer ID (the target for circuits)."""
        for n, v in reversed(self.components):
            if n == "p2p" and v is not None:
                return PeerId.from_string(v)
        return None

    def without_peer_id(self) -> Multiaddr:
        """This address with a trailing ``/p2p/…`` removed."""
        if self.components and self.components[-1][0] == "p2p":
            return Multiaddr(self.components[:-1])
        return self

    def with_peer_id(self, peer: PeerId) -> Multiaddr:
        """This address ending in ``/p2p/<peer>`` (replacing a trailing one)."""
        return Multiaddr((*self.without_peer_id().components, ("p2p", str(peer))))

    def encapsulate(self, other: Multiaddr) -> Multiaddr:
        """``self`` followed by ``other``."""
        return Multiaddr(self.components + other.components)

    @property
    def is_circuit(self) -> bool:
        """Whether this address goes through a relay."""
        return any(n == "p2p-circuit" for n, _ in self.components)

    def split_circuit(self) -> tuple[Multiaddr, Multiaddr | None]:
        """``(relay part, target part)`` around the first ``/p2p-circuit``."""
        for i, (n, _) in enumerate(self.components):
            if n == "p2p-circuit":
                rest = self.components[i + 1 :]
                return Multiaddr(self.components[:i]), (
                    Multiaddr(rest) if rest else None
                )
        return self, None

    def tcp_endpoint(self) -> tuple[str, int] | None:
        """``(host, port)`` for an ip4/ip6/dns*/tcp address, else None."""
        if len(self.components) < 2:
            return None
        (proto, host), (transport, port) = self.components[0], self.components[1]
        if transport != "tcp" or host is None or port is None:
            return None
        if proto not in ("ip4", "ip6", "dns", "dns4", "dns6"):
            return None
        return host, int(port)

    @classmethod
    def from_tcp(cls, host: str, port: int) -> Multiaddr:
        """``/ip4|ip6/<host>/tcp/<port>`` for a literal IP address."""
        ip = ipaddress.ip_address(host.split("%")[0])
        proto = "ip4" if ip.version == 4 else "ip6"
        return cls(((proto, str(ip)), ("tcp", str(port))))


def _encode_value(name: str, value: str) -> bytes:
    if name == "ip4":
        return ipaddress.IPv4Address(value).packed
    if name == "ip6":
        if "%" in value:
            # A zone has no place in /ip6/'s 16 bytes (multiaddr writes /ip6zone/).
            raise ValueError(f"IPv6 zone in {value!r} is not supported")
        return ipaddress.IPv6Address(value).packed
    if name in ("tcp", "udp"):
        if not (value.isascii() and value.isdigit()):
            raise ValueError(f"bad port {value!r}")
        port = int(value)
        if not 0 <= port <= 65535:
            raise ValueError(f"port out of range: {value}")
        return port.to_bytes(2, "big")
    if name == "p2p":
        mh = PeerId.from_string(value).multihash
        return varint.encode(len(mh)) + mh
    try:
        raw = value.encode()
    except UnicodeEncodeError:
        raise ValueError(f"{name} value is not valid UTF-8") from None
    if not raw:
        raise ValueError(f"empty {name} value")
    return varint.encode(len(raw)) + raw


def _decode_value(name: str, raw: bytes) -> str:
    if name == "ip4":
        return str(ipaddress.IPv4Address(raw))
    if name == "ip6":
        return str(ipaddress.IPv6Address(raw))
    if name in ("tcp", "udp"):
        return str(int.from_bytes(raw, "big"))
    if name == "p2p":
        return PeerId(raw).to_base58()
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None
    if name != "unix" and (not text or "/" in text):
        raise ValueError(f"{name} value must be non-empty and contain no '/'")
    return text
