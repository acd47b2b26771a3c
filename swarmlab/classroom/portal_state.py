"""What every part of the portal shares, in one object each part is given: the class and its
labs, the per-student and per-address limits, the token book, and the caches a reset or a
start makes stale (the class status, node health, kept Check sessions)."""

from __future__ import annotations

import asyncio
import hmac
import time

from swarmlab.classroom import access, room as classroom
from swarmlab.classroom.access import instructor_token
from swarmlab.classroom.lab_health import NodeHealth
from swarmlab.classroom.limits import AddressLimits, StudentLimits
from swarmlab.classroom.page_text import class_language
from swarmlab.classroom.portal_tokens import TokenBook
from swarmlab.config import Config
from swarmlab.lab.kept_nodes import KeptNodes
from swarmlab.teach import exercise_files


class PortalState:
    def __init__(self, config: Config, clock=time.monotonic, limits: StudentLimits | None = None):
        self.config, self.clock = config, clock
        self.limits = limits or StudentLimits(config, clock)
        self.addresses = AddressLimits(config, clock)  # the gateway's and the pages' connections, and guessers
        self.tokens = TokenBook(config)
        self.health = NodeHealth(clock)
        self.check_sessions: dict[str, KeptNodes] = {}  # lab -> its nodes' sessions, kept between Checks
        # the class status: one reading at a time, shared by every open instructor page
        self.status_lock = asyncio.Lock()
        self.status_read: tuple[float, list] = (float("-inf"), [])
        self.swarm_views: dict = {}  # lab -> its manager session, kept between status reads

    # --- who is asking ------------------------------------------------------------------
    def class_labs(self) -> list[str]:
        room = classroom.load(self.config)
        return [s.lab for s in room.students] if room else []

    def is_instructor(self, token: str) -> bool:
        return hmac.compare_digest(instructor_token(self.config).encode(), token.encode())

    def scoped(self, lab: str) -> Config:
        return access.lab_config_of(self.config, lab)

    def language(self) -> str:
        return class_language(self.config)

    def exercise(self, exercise_id: str) -> exercise_files.Exercise:
        """The exercise in the class's language."""
        return exercise_files.translate(exercise_files.find(exercise_id), self.language())

    # --- a lab changed under the portal ---------------------------------------------------
    def lab_changed(self, lab: str) -> None:
        """The lab was reset, restarted or reverted here: the next status reads it again, its
        node health is read afresh and its next Check logs in afresh."""
        self.status_read = (float("-inf"), [])
        self.health.forget(lab)
        kept = self.check_sessions.pop(lab, None)
        if kept is not None:  # in a thread: a Check may hold it while it logs in
            asyncio.get_running_loop().run_in_executor(None, kept.close)

    def close(self) -> None:
        for view in [*self.swarm_views.values(), *self.check_sessions.values()]:
            view.close()
