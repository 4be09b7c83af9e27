"""Delegated relay enrollment: a member asks its relay for an enrollment code to put
into its own invite (peer-up's own protocol, issue 13; no libp2p spec).

``/peerup/relay-delegate/1.0.0``, one exchange on one stream over the member's
authenticated (Noise) connection to the relay, each message a varint-prefixed
protobuf:

    member -> relay   DelegateRequest  { uint32 ttl_s = 1; }
    relay  -> member  DelegateResponse { Status status = 1; bytes invite_id = 2;
                                         bytes secret = 3; uint32 expires_at = 4;
                                         uint32 remaining = 5; string detail = 6; }

The relay answers only members whose ``relay_authorized_keys`` entry carries
``may_invite=N`` with N > 0, and counts N down; the code it returns is an ordinary
enrollment code of the relay (app/relay_enrollment.py) that the member embeds in its
peer invite (proto/invite_code.py ``Enrollment``). The secret travels only inside the
Noise session between the member and the relay.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from peerup.core import pb
from peerup.core.errors import RemoteProtocolError

PROTOCOL_ID: Final = "/peerup/relay-delegate/1.0.0"
MAX_MESSAGE_BYTES: Final = 1024
MAX_TTL_S: Final = 7 * 24 * 3600


class Status(enum.IntEnum):
    OK = 0
    NOT_ALLOWED = 1
    """The member has no ``may_invite`` grant (or it was taken back)."""
    LIMIT_REACHED = 2
    """The member used every enrollment the operator granted."""
    INTERNAL = 3
    """The relay could not write its files (see its log)."""


@dataclass(frozen=True, slots=True)
class DelegateRequest:
    ttl_s: int

    def encode(self) -> bytes:
        return pb.encode_varint_field(1, self.ttl_s)

    @classmethod
    def decode(cls, raw: bytes) -> DelegateRequest:
        """Raises RemoteProtocolError on anything malformed or out of range."""
        r = pb.Reader(raw, "DelegateRequest")
        ttl = r.uint(1)
        if ttl is None or not 0 < ttl <= MAX_TTL_S:
            raise RemoteProtocolError(f"DelegateRequest: ttl_s must be 1-{MAX_TTL_S}")
        return cls(ttl)


@dataclass(frozen=True, slots=True)
class DelegateResponse:
    status: Status
    invite_id: bytes = b""
    secret: bytes = b""
    expires_at: int = 0
    remaining: int = 0
    detail: str = ""

    def encode(self) -> bytes:
        parts = [pb.encode_varint_field(1, int(self.status))]
        if self.invite_id:
            parts.append(pb.encode_bytes_field(2, self.invite_id))
        if self.secret:
            parts.append(pb.encode_bytes_field(3, self.secret))
        if self.expires_at:
            parts.append(pb.encode_varint_field(4, self.expires_at))
        if self.remaining:
            parts.append(pb.encode_varint_field(5, self.remaining))
        if self.detail:
            parts.append(pb.encode_str_field(6, self.detail))
        return pb.join(parts)

    @classmethod
    def decode(cls, raw: bytes) -> DelegateResponse:
        """Raises RemoteProtocolError on anything malformed."""
        r = pb.Reader(raw, "DelegateResponse")
        value = r.uint(1)
        try:
            status = Status(value if value is not None else -1)
        except ValueError:
            raise RemoteProtocolError(f"DelegateResponse: unknown status {value}") from None
        expires = r.uint(4) or 0
        if expires >= 2**32:
            raise RemoteProtocolError("DelegateResponse: expires_at past 32 bits")
        return cls(
            status,
            r.bytes_(2) or b"",
            r.bytes_(3) or b"",
            expires,
            min(r.uint(5) or 0, 2**32 - 1),
            (r.str_(6) or "")[:200],
        )
