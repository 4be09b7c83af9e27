"""The outcome of an access decision: allowed or not, and why.

Used by the connection peer gate (net), the allowlist and relay policy (app). A value
with a reason rather than a bool, so every refusal can be logged and shown to a user.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Access:
    """A gate decision."""

    is_allowed: bool
    reason: str

    @classmethod
    def allow(cls, reason: str = "allowed") -> Access:
        return cls(True, reason)

    @classmethod
    def deny(cls, reason: str) -> Access:
        return cls(False, reason)
