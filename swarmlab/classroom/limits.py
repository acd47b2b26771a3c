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


class AddressLimits:
    """Per client address, for the gateway and the portal alike: connections open at once, and
    requests that named no valid token (someone guessing) per minute. Generous: a school's NAT
    puts a whole class behind one address; what they stop is one laptop taking every socket."""

    def __init__(self, config: Config, clock=time.monotonic):
        self.clock = clock
        self.most_connections = config.max_connections_per_address
        self.guesses_per_minute = config.guesses_per_minute
        self.open: dict[str, int] = collections.Counter()
        self.guesses: dict[str, collections.deque] = collections.defaultdict(collections.deque)

    def connect(self, address: str) -> bool:
        """Counts a new connection; False (and not counted) when the address has its most."""
        if self.open[address] >= self.most_connections:
            return False
        self.open[address] += 1
        return True

    def disconnect(self, address: str) -> None:
        self.open[address] -= 1
        if self.open[address] <= 0:
            del self.open[address]

    def guessing(self, address: str) -> float:
        """0, or the seconds until the address may try a token again."""
        now, seen = self.clock(), self.guesses.get(address)
        if not seen:
            return 0.0
        while seen and now - seen[0] >= 60:
            seen.popleft()
        if not seen:
            del self.guesses[address]
            return 0.0
        return 60 - (now - seen[0]) if len(seen) >= self.guesses_per_minute else 0.0

    def guessed(self, address: str) -> None:
        self.guesses[address].append(self.clock())
