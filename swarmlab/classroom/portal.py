"""`swarmlab portal`: the class in a browser, beside the SSH gateway.

- A student's page (/s/<token>): the current exercise's text, a terminal per node (xterm.js,
  bridged to SSH as `student` on that node), Check and Hint, which of their nodes is down, the
  class's clock, and their own restart and reset (portal_self_service.py).
- The instructor's page (/i/<token>, portal_instructor.py): the class status and progress board,
  live; a student's history; a student's terminals, watched or typed into (portal_terminals.py);
  start an exercise for everyone, reset one lab or all.

A student's token is looked up in a book read again whenever the class or its credentials
change (portal_tokens.py), the instructor's at each request, so `class down` revokes at once; a
wrong or missing token gets the same bare 403, and an address that guesses too often waits. Terminals of a lab end when it is reset (from a page or by
any swarmlab command), when the lab leaves the class, and at the class's end. The portal calls
classroom, exercises, reset, access and lab_health only: it knows nothing of libvirt or
PowerDNS. aiohttp serves HTTP and websockets on the same asyncio loop as the gateway (asyncssh).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hmac
import json
import time
from pathlib import Path

import markupsafe
from aiohttp import web

from swarmlab.classroom import access, class_end, class_log, room as classroom
from swarmlab.classroom.access import instructor_token
from swarmlab.classroom.lab_health import NodeHealth
from swarmlab.classroom.limits import AddressLimits, OverLimit, StudentLimits
from swarmlab.classroom.page_text import class_language, page_text
from swarmlab.classroom.portal_clock import ClassClock
from swarmlab.classroom.portal_instructor import InstructorDesk
from swarmlab.classroom.portal_self_service import SelfService
from swarmlab.classroom.portal_terminals import Terminals
from swarmlab.classroom.portal_tokens import TokenBook
from swarmlab.classroom.portal_web import guess_limit, security_headers, token_gate, too_soon
from swarmlab.config import Config
from swarmlab.core import checks
from swarmlab.errors import SwarmlabError
from swarmlab.lab.kept_nodes import KeptNodes
from swarmlab.render import render
from swarmlab.teach import exercise_files, exercises

CHECK_EVERY = 10.0  # seconds between two checks of one lab
STATIC = Path(__file__).resolve().parent / "static"
CHECK_WORKERS = 4  # checks of all students at once; each student holds at most [portal] checks_at_once


def task_html(text: str) -> markupsafe.Markup:
    """An exercise's Markdown as HTML. The text comes from labs/<id>/README.md, the
    instructor's own files, with lab names and image names rendered in: no student input."""
    import markdown
    first, _, rest = text.lstrip().partition("\n")
    if first.startswith("# "):
        text = rest  # the README's title: the page shows the exercise's title as its heading
    return markupsafe.Markup(markdown.markdown(text, extensions=["fenced_code"]))


class Portal(InstructorDesk, SelfService, Terminals):
    def __init__(self, config: Config, clock=time.monotonic, limits: StudentLimits | None = None):
        self.config, self.clock = config, clock
        self.limits = limits or StudentLimits(config, clock)
        self.addresses = AddressLimits(config, clock)  # the gateway's and the pages' connections, and guessers
        self.tokens = TokenBook(config)
        # checks wait for swarms and nodes: a pool of their own, so pages never queue behind them
        self.check_pool = concurrent.futures.ThreadPoolExecutor(CHECK_WORKERS, thread_name_prefix="check")
        self.last_check: dict[str, float] = {}
        self.status_lock = asyncio.Lock()
        self.status_read: tuple[float, list] = (float("-inf"), [])
        self.health = NodeHealth(clock)
        self.swarm_views: dict = {}  # lab -> its manager session, kept between status reads
        self.check_sessions: dict[str, KeptNodes] = {}  # lab -> its nodes' sessions, kept between Checks
        self._self_service_init()
        self._terminals_init()
        self.class_clock = ClassClock(config, self.end_every_session)

    # --- who is asking ------------------------------------------------------------------
    def class_labs(self) -> list[str]:
        room = classroom.load(self.config)
        return [s.lab for s in room.students] if room else []

    def is_instructor(self, token: str) -> bool:
        return hmac.compare_digest(instructor_token(self.config).encode(), token.encode())

    def drop_check_sessions(self, lab: str) -> None:
        """The lab was reset, restarted or reverted here: its next Check logs in afresh."""
        kept = self.check_sessions.pop(lab, None)
        if kept is not None:  # in a thread: a Check may hold it while it logs in
            asyncio.get_running_loop().run_in_executor(None, kept.close)

    def _scoped(self, lab: str) -> Config:
        return access.lab_config_of(self.config, lab)

    def language(self) -> str:
        return class_language(self.config)

    def exercise(self, exercise_id: str) -> exercise_files.Exercise:
        """The exercise in the class's language."""
        return exercise_files.translate(exercise_files.find(exercise_id), self.language())

    # --- the student's page -------------------------------------------------------------
    def lab_view(self, lab: str) -> dict:
        scoped = self._scoped(lab)
        found = access.student_lab(self.config, lab)
        state = exercises.load_state(scoped, lab)
        view = {"lab": lab, "nodes": [{"node": n.name, "ip": n.ip} for n in (found.nodes if found else [])],
                "exercise": None, "last_check": state.get("last_check"), "ends": class_end.class_ends(self.config)}
        if state.get("exercise"):
            try:
                exercise = self.exercise(state["exercise"])
                ctx = exercise_files.context(exercise, found, state.get("images"))
                view["exercise"] = {"id": exercise.id, "title": exercise.title,
                                    "html": task_html(exercise_files.student_text(exercise, ctx)),
                                    "hints": len(exercise.hints), "seen": state.get("hints", 0)}
            except SwarmlabError as e:
                view["exercise"] = {"id": state["exercise"], "title": state["exercise"],
                                    "html": markupsafe.escape(str(e)), "hints": 0}
        return view

    async def student_page(self, request: web.Request) -> web.Response:
        lab = request["lab"]
        view = await asyncio.to_thread(self.lab_view, lab)
        language = await asyncio.to_thread(self.language)
        return web.Response(content_type="text/html", text=render(
            "portal-student.html.j2", view=view, token=request.match_info["token"], check_every=int(CHECK_EVERY),
            language=language, t=page_text(language), text_json=json.dumps(page_text(language), ensure_ascii=False)))

    async def check(self, request: web.Request) -> web.Response:
        lab = request["lab"]
        now = self.clock()
        wait = CHECK_EVERY - (now - self.last_check.get(lab, -CHECK_EVERY))
        if wait > 0:
            return too_soon(f"checks run at most every {CHECK_EVERY:g} s", wait)
        try:
            self.limits.take("checks", lab)
        except OverLimit as e:
            return web.json_response({"error": str(e)}, status=429)
        try:
            self.last_check[lab] = now
            scoped = self._scoped(lab)
            state = exercises.load_state(scoped, lab)
            if not state.get("exercise"):
                return web.json_response({"error": "no exercise has started yet: wait for your instructor"},
                                         status=409)
            exercise = self.exercise(state["exercise"])
            kept = self.check_sessions.setdefault(lab, KeptNodes())
            verdicts = await asyncio.get_running_loop().run_in_executor(
                self.check_pool, functools.partial(exercises.check, scoped, lab, exercise, False, kept=kept))
        except SwarmlabError as e:
            return web.json_response({"error": str(e)}, status=502)
        finally:
            self.limits.give("checks", lab)
        tally = checks.tally(verdicts)
        await asyncio.to_thread(class_log.record, self.config, lab, "check", exercise=exercise.id, by="student",
                                **tally)
        shown = [v.as_dict() | ({"check": exercise.check_titles[i]} if i < len(exercise.check_titles) else {})
                 for i, v in enumerate(verdicts)]  # the checks' titles in the class's language
        return web.json_response({"exercise": exercise.id, "ok": tally["ok"], "verdicts": shown})

    async def hint(self, request: web.Request) -> web.Response:
        lab = request["lab"]
        scoped = self._scoped(lab)
        state = exercises.load_state(scoped, lab)
        if not state.get("exercise"):
            return web.json_response({"error": "no exercise has started yet"}, status=409)
        wait = self.limits.hint_wait(lab)
        if wait > 0:
            return too_soon(f"at most {self.limits.hints_per_minute} hints a minute", wait)
        try:
            answer = await asyncio.to_thread(exercises.hint, scoped, lab, self.exercise(state["exercise"]))
        except SwarmlabError as e:
            return web.json_response({"error": str(e)}, status=502)
        if answer["number"]:
            await asyncio.to_thread(class_log.record, self.config, lab, "hint", exercise=state["exercise"],
                                    by="student", number=answer["number"])
        return web.json_response(answer)

    async def nodes(self, request: web.Request) -> web.Response:
        """Which of the student's nodes are up, so the page can say which one is down."""
        lab = request["lab"]
        health = await self.health.of(self._scoped(lab), lab)
        return web.json_response({**health, "ends": await asyncio.to_thread(class_end.class_ends, self.config)})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_request_kib * 1024,
                              middlewares=[guess_limit(self.addresses), token_gate(self.tokens.lab_of, self.is_instructor)])
        app.on_response_prepare.append(security_headers)
        app.on_shutdown.append(self._shutdown)
        app.add_routes([
            web.get("/s/{token}", self.student_page), web.post("/s/{token}/check", self.check),
            web.post("/s/{token}/hint", self.hint),
            web.get("/s/{token}/nodes", self.nodes),
            *self.terminal_routes(), *self.self_service_routes(), *self.instructor_routes(),
            web.static("/static", STATIC),
        ])
        return app

    async def _shutdown(self, _app: web.Application) -> None:
        self.check_pool.shutdown(wait=False, cancel_futures=True)
        for session in self.sessions.values():
            session.close()
        for view in [*self.swarm_views.values(), *self.check_sessions.values()]:
            view.close()
