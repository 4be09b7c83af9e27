"""Refusals for the log: the first from a source at once, the rest summed up.

Spec: none (operations). Under attack one refusal repeats thousands of times a second
(garbage or silent connections from one address, a peer the gate refuses, a peer over
its limits); a line each would flood the log (2,000 garbage connections once wrote
282 KB). :class:`RefusalLog` lets the first refusal from a source be logged as it
happens, counts the ones that follow for ``interval_s``, and then gives one summary
("refused 1,998 more connections from 127.0.0.1 in the last 10 s: handshake timeout").
A source that keeps being refused gets one summary per interval and no other line;
one that stays quiet for a whole interval is forgotten, so its next refusal is logged
at once again. At most ``max_sources`` sources are followed; refusals from others are
counted under :data:`OTHER_SOURCES`.

Pure: the time is passed in; the owner logs what :meth:`RefusalLog.add` and
:meth:`RefusalLog.due` say and arms a timer at :meth:`RefusalLog.next_deadline`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

OTHER_SOURCES: Final = "other sources"
"""Where refusals are counted once ``max_sources`` sources are followed."""


@dataclass(frozen=True, slots=True)
class Summary:
    """Refusals from one source not logged one by one."""

    source: str
    count: int
    window_s: float
    reasons: tuple[tuple[str, int], ...]
    """Each reason with its count, the most frequent first."""
    what: str = "connections"
    """What was refused, plural."""

    def line(self) -> str:
        """One log line: ``refused 1,998 more connections from 127.0.0.1 in the
        last 10 s: handshake timeout``."""
        what = self.what
        if len(self.reasons) == 1:
            why = self.reasons[0][0]
        else:
            shown = ", ".join(f"{r} ({n:,})" for r, n in self.reasons[:4])
            rest = len(self.reasons) - 4
            why = shown + (f", {rest} other reasons" if rest > 0 else "")
        window = self.window_s
        return (
            f"refused {self.count:,} more {what} from {self.source} in the last "
            f"{window:.0f} s: {why}"
            if window >= 9.5
            else f"refused {self.count:,} more {what} from {self.source} in the last "
            f"{window:.1f} s: {why}"
        )


class _Source:
    __slots__ = ("started_at", "ends_at", "count", "reasons", "what")

    def __init__(self, now: float, interval_s: float, what: str) -> None:
        self.started_at = now
        self.ends_at = now + interval_s
        self.count = 0
        self.reasons: dict[str, int] = {}
        self.what = what


class RefusalLog:
    """Which refusals to log now, and summaries of the others (see the module
    docstring)."""

    def __init__(self, interval_s: float = 10.0, max_sources: int = 1024) -> None:
        self.interval_s = interval_s
        self.max_sources = max_sources
        self._sources: dict[str, _Source] = {}
        """In the order their intervals end (each new interval goes last)."""

    def add(
        self, source: str, reason: str, now: float, what: str = "connections"
    ) -> bool:
        """Count one refusal of ``source`` for ``reason``; True if it is to be
        logged now (the first from this source), False if a summary will say it.
        ``what`` (plural) names what was refused in the summary."""
        state = self._sources.get(source)
        if state is None:
            if len(self._sources) < self.max_sources:
                self._sources[source] = _Source(now, self.interval_s, what)
                return True
            source = OTHER_SOURCES
            state = self._sources.get(source)
            if state is None:
                state = self._sources[source] = _Source(now, self.interval_s, what)
        state.count += 1
        state.reasons[reason] = state.reasons.get(reason, 0) + 1
        return False

    def next_deadline(self) -> float | None:
        """When :meth:`due` has something to say or forget next."""
        for state in self._sources.values():
            return state.ends_at
        return None

    def due(self, now: float) -> list[Summary]:
        """Summaries of the sources whose interval ended by ``now``."""
        out: list[Summary] = []
        while self._sources:
            source, state = next(iter(self._sources.items()))
            if state.ends_at > now:
                break
            del self._sources[source]
            if state.count:
                out.append(_summary(source, state, now))
                # Still refused: the next interval is summed up too, not logged.
                self._sources[source] = _Source(now, self.interval_s, state.what)
        return out

    def flush(self, now: float) -> list[Summary]:
        """Summaries of everything counted and not yet said (e.g. at shutdown)."""
        out = [
            _summary(source, state, now)
            for source, state in self._sources.items()
            if state.count
        ]
        self._sources.clear()
        return out


def _summary(source: str, state: _Source, now: float) -> Summary:
    reasons = sorted(state.reasons.items(), key=lambda item: -item[1])
    return Summary(
        source,
        state.count,
        max(now - state.started_at, 0.0),
        tuple(reasons),
        state.what,
    )
