"""The class's end as the portal carries it out: once the clock has run out, every terminal
closes with the message, and with `--teardown` the labs are graded and removed, once. A
`class extend` after the end lets the class go on (class_end holds the clock itself)."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from swarmlab.classroom import class_end, room as classroom
from swarmlab.config import Config


class ClassClock:
    def __init__(self, config: Config, end_every_session: Callable[[str], Awaitable[None]]):
        self.config, self.end_every_session = config, end_every_session
        self.torn_down = False

    def over(self) -> bool:
        return class_end.is_over(self.config)

    async def watch(self) -> None:
        """One look at the clock: called every few seconds by the portal's watch."""
        if not await asyncio.to_thread(self.over):
            self.torn_down = False  # `class extend` after the end: the class goes on
            return
        await self.end_every_session(await asyncio.to_thread(class_end.ended_message, self.config))
        room = await asyncio.to_thread(classroom.load, self.config)
        if room and room.teardown and not self.torn_down:
            self.torn_down = True
            await asyncio.to_thread(class_end.grade_and_remove, self.config)
