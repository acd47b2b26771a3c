"""What a student's page says of their own nodes: which are up, as libvirt says. Read at most
every HEALTH_EVERY seconds per lab, however many pages (or a student's script) ask, so asking
costs the lab host nothing that grows with the asking."""

from __future__ import annotations

import asyncio
import time

from swarmlab.config import Config
from swarmlab.errors import SwarmlabError
from swarmlab.lab import node_status

HEALTH_EVERY = 5.0


class NodeHealth:
    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.read_at: dict[str, tuple[float, dict]] = {}
        self.locks: dict[str, asyncio.Lock] = {}

    async def of(self, scoped: Config, lab: str) -> dict:
        """{"nodes": [{"node", "state", "up"}...]} or {"error": why}: the host did not answer."""
        async with self.locks.setdefault(lab, asyncio.Lock()):  # one read per lab at a time
            at, answer = self.read_at.get(lab, (float("-inf"), {}))
            if self.clock() - at >= HEALTH_EVERY:
                try:
                    answer = {"nodes": await asyncio.to_thread(node_status.node_states, scoped, lab)}
                except SwarmlabError as e:
                    answer = {"error": f"your lab's host does not answer: {e}"}
                self.read_at[lab] = (self.clock(), answer)
        return answer

    def forget(self, lab: str) -> None:
        """After a reset, the next question reads again."""
        self.read_at.pop(lab, None)
