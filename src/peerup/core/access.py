"""The outcome of an access decision: allowed or not, and why.

Used by the connection peer gate (net), the allowlist and relay policy (app). A value
with a reason rather than a bool, so every refusal can be logged and shown to a user.
An admission may be limited to some protocols (``only_protocols``): a peer not yet
authorized that may only run the pairing protocol while an invite is pending.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Access:
    """A gate decision."""

    is_allowed: bool
    reason: str
    only_protocols: frozenset[str] | None = None
    """When set, the peer may open streams for these protocols only (None: any)."""

    @classmethod
    def allow(cls, reason: str = "allowed") -> Access:
        return cls(True, reason)

    @classmethod
    def allow_only(cls, protocols: frozenset[str], reason: str) -> Access:
        """Admit the peer to ``protocols`` and nothing else."""
        return cls(True, reason, protocols)

    @classmethod
    def deny(cls, reason: str) -> Access:
        return cls(False, reason)
