"""A student's page (/s/<token>): the current exercise's text, Check and Hint, and which of
their nodes is down. The terminals and their own restart and reset are portal_terminals.py and
portal_self_service.py."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json

import markupsafe
from aiohttp import web

from swarmlab.classroom import access, class_end, class_log
from swarmlab.classroom.limits import OverLimit
from swarmlab.classroom.page_text import page_text
from swarmlab.classroom.portal_state import PortalState
from swarmlab.classroom.portal_web import too_soon
from swarmlab.core import checks
from swarmlab.errors import SwarmlabError
from swarmlab.lab.kept_nodes import KeptNodes
from swarmlab.render import render
from swarmlab.teach import exercise_files, exercises

CHECK_EVERY = 10.0  # seconds between two checks of one lab
CHECK_WORKERS = 4  # checks of all students at once; each student holds at most [portal] checks_at_once


def task_html(text: str) -> markupsafe.Markup:
    """An exercise's Markdown as HTML. The text comes from labs/<id>/README.md, the
    instructor's own files, with lab names and image names rendered in: no student input."""
    import markdown
    first, _, rest = text.lstrip().partition("\n")
    if first.startswith("# "):
        text = rest  # the README's title: the page shows the exercise's title as its heading
    return markupsafe.Markup(markdown.markdown(text, extensions=["fenced_code"]))


class StudentDesk:
    def __init__(self, state: PortalState):
        self.state = state
        # checks wait for swarms and nodes: a pool of their own, so pages never queue behind them
        self.check_pool = concurrent.futures.ThreadPoolExecutor(CHECK_WORKERS, thread_name_prefix="check")
        self.last_check: dict[str, float] = {}

    def lab_view(self, lab: str) -> dict:
        scoped = self.state.scoped(lab)
        found = access.student_lab(self.state.config, lab)
        saved = exercises.load_state(scoped, lab)
        view = {"lab": lab, "nodes": [{"node": n.name, "ip": n.ip} for n in (found.nodes if found else [])],
                "exercise": None, "last_check": saved.get("last_check"), "ends": class_end.class_ends(self.state.config)}
        if saved.get("exercise"):
            try:
                exercise = self.state.exercise(saved["exercise"])
                ctx = exercise_files.context(exercise, found, saved.get("images"))
                view["exercise"] = {"id": exercise.id, "title": exercise.title,
                                    "html": task_html(exercise_files.student_text(exercise, ctx)),
                                    "hints": len(exercise.hints), "seen": saved.get("hints", 0)}
            except SwarmlabError as e:
                view["exercise"] = {"id": saved["exercise"], "title": saved["exercise"],
                                    "html": markupsafe.escape(str(e)), "hints": 0}
        return view

    async def student_page(self, request: web.Request) -> web.Response:
        lab = request["lab"]
        view = await asyncio.to_thread(self.lab_view, lab)
        language = await asyncio.to_thread(self.state.language)
        return web.Response(content_type="text/html", text=render(
            "portal-student.html.j2", view=view, token=request.match_info["token"], check_every=int(CHECK_EVERY),
            language=language, t=page_text(language), text_json=json.dumps(page_text(language), ensure_ascii=False)))

    async def check(self, request: web.Request) -> web.Response:
        lab = request["lab"]
        now = self.state.clock()
        wait = CHECK_EVERY - (now - self.last_check.get(lab, -CHECK_EVERY))
        if wait > 0:
            return too_soon(f"checks run at most every {CHECK_EVERY:g} s", wait)
        try:
            self.state.limits.take("checks", lab)
        except OverLimit as e:
            return web.json_response({"error": str(e)}, status=429)
        try:
            self.last_check[lab] = now
            scoped = self.state.scoped(lab)
            saved = exercises.load_state(scoped, lab)
            if not saved.get("exercise"):
                return web.json_response({"error": "no exercise has started yet: wait for your instructor"},
                                         status=409)
            exercise = self.state.exercise(saved["exercise"])
            kept = self.state.check_sessions.setdefault(lab, KeptNodes())
            verdicts = await asyncio.get_running_loop().run_in_executor(
                self.check_pool, functools.partial(exercises.check, scoped, lab, exercise, False, kept=kept))
        except SwarmlabError as e:
            return web.json_response({"error": str(e)}, status=502)
        finally:
            self.state.limits.give("checks", lab)
        tally = checks.tally(verdicts)
        await asyncio.to_thread(class_log.record, self.state.config, lab, "check", exercise=exercise.id, by="student",
                                **tally)
        shown = [v.as_dict() | ({"check": exercise.check_titles[i]} if i < len(exercise.check_titles) else {})
                 for i, v in enumerate(verdicts)]  # the checks' titles in the class's language
        return web.json_response({"exercise": exercise.id, "ok": tally["ok"], "verdicts": shown})

    async def hint(self, request: web.Request) -> web.Response:
        lab = request["lab"]
        scoped = self.state.scoped(lab)
        saved = exercises.load_state(scoped, lab)
        if not saved.get("exercise"):
            return web.json_response({"error": "no exercise has started yet"}, status=409)
        wait = self.state.limits.hint_wait(lab)
        if wait > 0:
            return too_soon(f"at most {self.state.limits.hints_per_minute} hints a minute", wait)
        try:
            answer = await asyncio.to_thread(exercises.hint, scoped, lab, self.state.exercise(saved["exercise"]))
        except SwarmlabError as e:
            return web.json_response({"error": str(e)}, status=502)
        if answer["number"]:
            await asyncio.to_thread(class_log.record, self.state.config, lab, "hint", exercise=saved["exercise"],
                                    by="student", number=answer["number"])
        return web.json_response(answer)

    async def nodes(self, request: web.Request) -> web.Response:
        """Which of the student's nodes are up, so the page can say which one is down."""
        lab = request["lab"]
        health = await self.state.health.of(self.state.scoped(lab), lab)
        return web.json_response({**health, "ends": await asyncio.to_thread(class_end.class_ends, self.state.config)})

    def routes(self) -> list:
        return [web.get("/s/{token}", self.student_page), web.post("/s/{token}/check", self.check),
                web.post("/s/{token}/hint", self.hint), web.get("/s/{token}/nodes", self.nodes)]

    def close(self) -> None:
        self.check_pool.shutdown(wait=False, cancel_futures=True)
