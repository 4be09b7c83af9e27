"""Retry backoff with jitter: the one retry policy, shared by the relay client and the
tunnel dialer (STYLE.md 3.2). Exponential from ``initial_s`` to ``max_s``, each delay
scaled by a random factor in [1 - jitter, 1]; randomness is injected for tests.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    initial_s: float = 0.25
    max_s: float = 4.0
    factor: float = 2.0
    jitter: float = 0.5


class Backoff:
    """Yields successive delays; :meth:`reset` after a success."""

    def __init__(
        self,
        policy: BackoffPolicy | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.policy = policy or BackoffPolicy()
        self._rng = rng
        self._next = self.policy.initial_s

    def next_delay(self) -> float:
        base = self._next
        self._next = min(self.policy.max_s, self._next * self.policy.factor)
        return base * (1.0 - self.policy.jitter * self._rng())

    def reset(self) -> None:
        self._next = self.policy.initial_s
