"""Per-student caps in the process that runs the portal and the SSH gateway, so that one
student cannot stall the others: connections through the gateway, browser terminals and
checks at once, hints per minute, and the time between two restarts or resets they ask for.
Each cap is a [portal] setting; a refusal says which."""

from __future__ import annotations

import collections
import contextlib
import time

from swarmlab.config import Config


class OverLimit(Exception):
    """A student asked for more than their share; the message says what and how much."""


class StudentLimits:
    def __init__(self, config: Config, clock=time.monotonic):
        self.clock = clock
        self.caps = {"channels": (config.max_channels, "SSH connections through the gateway", "close one first"),
                     "terminals": (config.max_terminals, "terminals", "close one first"),
                     "checks": (config.checks_at_once, "checks", "wait for the running one to finish")}
        self.hints_per_minute = config.hints_per_minute
        self.self_service_every = config.self_service_every
        self.self_served: dict[str, float] = {}
        self.held: dict[tuple[str, str], int] = collections.Counter()
        self.hints: dict[str, collections.deque] = collections.defaultdict(collections.deque)

    def take(self, kind: str, lab: str) -> None:
        cap, what, advice = self.caps[kind]
        if self.held[kind, lab] >= cap:
            raise OverLimit(f"{what} at once per student: at most {cap}; {advice}")
        self.held[kind, lab] += 1

    def give(self, kind: str, lab: str) -> None:
        self.held[kind, lab] = max(0, self.held[kind, lab] - 1)

    @contextlib.contextmanager
    def holding(self, kind: str, lab: str):
        self.take(kind, lab)
        try:
            yield
        finally:
            self.give(kind, lab)

    def hint_wait(self, lab: str) -> float:
        """0 and the hint is counted, or the seconds until the student may ask again."""
        now, seen = self.clock(), self.hints[lab]
        while seen and now - seen[0] >= 60:
            seen.popleft()
        if len(seen) >= self.hints_per_minute:
            return 60 - (now - seen[0])
        seen.append(now)
        return 0.0

    def self_service_wait(self, lab: str) -> float:
        """0 and the restart or reset is counted, or the seconds until the student may ask again."""
        now, last = self.clock(), self.self_served.get(lab)
        if last is not None and now - last < self.self_service_every:
            return self.self_service_every - (now - last)
        self.self_served[lab] = now
        return 0.0
