"""A student's own restart and reset, from their page: "Restart this exercise" (the exercise's
start, on their lab only) and "Reset my lab" (back to `formed`).

Each asks for confirmation (the page, and `{"confirm": true}` in the body), at most one per
[portal] self_service_every seconds per student, and at most [portal] self_service_at_once in
the whole class at a time (the others wait their turn: a reset is emulated CPU that every lab
shares). It runs as a job the page follows (GET /s/<token>/job), ends the lab's terminals,
collects what the student typed first, and goes into the class's record.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field

from aiohttp import web

from swarmlab.classroom import class_end, class_log, typed_history
from swarmlab.classroom.portal_state import PortalState
from swarmlab.classroom.portal_terminals import Terminals
from swarmlab.classroom.portal_web import json_body, too_soon
from swarmlab.classroom.student_lab import CLASS_FINISH
from swarmlab.errors import SwarmlabError
from swarmlab.lab import reset as resets
from swarmlab.teach import exercise_files, exercises

KEEP_STEPS = 20  # the job's last progress lines the page shows


@dataclass
class Job:
    what: str  # restart or reset
    exercise: str | None
    started: float = field(default_factory=time.time)
    steps: list[str] = field(default_factory=list)
    done: bool = False
    ok: bool | None = None
    error: str | None = None

    def step(self, text: str) -> None:
        self.steps = (self.steps + [text])[-KEEP_STEPS:]


class SelfService:
    def __init__(self, state: PortalState, terminals: Terminals):
        self.state, self.terminals = state, terminals
        self.jobs: dict[str, Job] = {}
        self.self_service_gate = asyncio.Semaphore(state.config.self_service_at_once)

    async def restart_exercise(self, request: web.Request) -> web.Response:
        return await self._ask(request, "restart")

    async def reset_lab(self, request: web.Request) -> web.Response:
        return await self._ask(request, "reset")

    async def job(self, request: web.Request) -> web.Response:
        lab = request["lab"]
        job = self.jobs.get(lab)
        return web.json_response(asdict(job) if job else {})

    async def _ask(self, request: web.Request, what: str) -> web.Response:
        lab = request["lab"]
        body = await json_body(request)
        if body is None or body.get("confirm") is not True:
            return web.json_response({"error": 'confirm it: the body must be {"confirm": true}'}, status=400)
        running = self.jobs.get(lab)
        if running and not running.done:
            return web.json_response({"error": f"your lab's {running.what} is still running"}, status=409)
        exercise = None
        if what == "restart":
            exercise = (await asyncio.to_thread(exercises.load_state, self.state.scoped(lab), lab)).get("exercise")
            if not exercise:
                return web.json_response({"error": "no exercise has started yet: nothing to restart"}, status=409)
        if await asyncio.to_thread(class_end.is_over, self.state.config):
            return web.json_response({"error": "the class has ended"}, status=409)
        wait = self.state.limits.self_service_wait(lab)
        if wait > 0:
            return too_soon(f"one restart or reset every {self.state.limits.self_service_every} s", wait)
        job = self.jobs[lab] = Job(what, exercise)
        asyncio.ensure_future(self._run(lab, job))
        return web.json_response(asdict(job), status=202)

    async def _run(self, lab: str, job: Job) -> None:
        loop = asyncio.get_running_loop()

        def progress(text: str) -> None:  # called from the worker thread
            loop.call_soon_threadsafe(job.step, text)
        job.step("ending your terminals; your commands are kept")
        # before the class-wide gate, never under it (ending waits on no browser anyway)
        await self.terminals.end_sessions(lab, "you restarted the exercise" if job.what == "restart" else "you reset your lab")
        if self.self_service_gate.locked():
            job.step("waiting: another student's lab is resetting")
        async with self.self_service_gate:
            try:
                await asyncio.to_thread(self._work, lab, job, progress)
                job.ok = True
            except SwarmlabError as e:
                job.ok, job.error = False, str(e).splitlines()[0]
            except Exception as e:  # the page must learn the end of its job, whatever happened
                job.ok, job.error = False, f"{type(e).__name__}: {e}"
            finally:
                job.done = True
                self.state.lab_changed(lab)

    def _work(self, lab: str, job: Job, progress) -> None:
        scoped = self.state.scoped(lab)
        typed_history.collect_quietly(self.state.config, lab)
        if job.what == "restart":
            exercises.start(scoped, lab, exercise_files.find(job.exercise), progress=progress, finish=CLASS_FINISH)
        else:
            result = resets.reset(scoped, lab, progress=progress, finish=CLASS_FINISH)
            if not result.ok:
                raise SwarmlabError((result.problems or [result.error or "the reset failed"])[0])
        class_log.record(self.state.config, lab, job.what, by="student",
                         **({"exercise": job.exercise} if job.exercise else {}))
        progress("done")

    def routes(self) -> list:
        return [web.post("/s/{token}/restart", self.restart_exercise), web.post("/s/{token}/reset", self.reset_lab),
                web.get("/s/{token}/job", self.job)]
