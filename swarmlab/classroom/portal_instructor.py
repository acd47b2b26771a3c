"""The instructor's side of the portal (/i/<token>): the class status, live; the progress
board (students × exercises) and one student's history; start an exercise for everyone, reset
one lab or all; the last class drill's timelines. Starting and resetting end the labs'
terminals first (portal_terminals.py) and mark the labs changed (portal_state.py).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from swarmlab.classroom import class_chaos, class_exercises, class_log, room as classroom, typed_history
from swarmlab.classroom.portal_state import PortalState
from swarmlab.classroom.portal_terminals import Terminals
from swarmlab.classroom.portal_web import json_body
from swarmlab.core import progress
from swarmlab.errors import SwarmlabError
from swarmlab.render import render
from swarmlab.teach import exercise_files

STATUS_EVERY = 4.0  # the class status is read over SSH at most this often, however many pages show it


class InstructorDesk:
    def __init__(self, state: PortalState, terminals: Terminals):
        self.state, self.terminals = state, terminals

    async def instructor_page(self, request: web.Request) -> web.Response:
        return web.Response(content_type="text/html", text=render(
            "portal-instructor.html.j2", token=request.match_info["token"],
            exercises=[(e.id, e.title) for e in exercise_files.load_all()]))

    async def status(self, request: web.Request) -> web.Response:
        state = self.state
        async with state.status_lock:  # one reading at a time for every open instructor page
            if state.clock() - state.status_read[0] >= STATUS_EVERY:
                try:
                    rows = await asyncio.to_thread(classroom.class_status, state.config, state.swarm_views)
                except SwarmlabError as e:
                    return web.json_response({"error": str(e)}, status=409)
                state.status_read = (state.clock(), rows)
        return web.json_response(state.status_read[1])

    async def start(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        if body is None:
            return web.json_response({"error": "the body must be a JSON object"}, status=400)
        try:
            exercise = exercise_files.find(str(body.get("exercise", "")))
        except SwarmlabError as e:
            return web.json_response({"error": str(e)}, status=400)
        labs_now = self.state.class_labs()
        await self.terminals.end_sessions_of(labs_now, "the lab was reset")
        results = await asyncio.to_thread(class_exercises.class_start, self.state.config, exercise)
        for lab in labs_now:
            self.state.lab_changed(lab)
        return web.json_response([{"lab": r.lab, "ok": r.ok, "error": r.error, "levels": r.detail.get("levels"),
                                   "seconds": r.seconds} for r in results])

    async def reset(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        if body is None or not isinstance(body.get("lab") or "", str):
            return web.json_response({"error": "the body must be a JSON object, its lab a name"}, status=400)
        only = body.get("lab") or None
        labs_now = self.state.class_labs()
        if only is not None and only not in labs_now:
            return web.json_response({"error": f"no lab {only} in the class"}, status=400)
        await self.terminals.end_sessions_of([only] if only else labs_now, "the lab was reset")
        results = await asyncio.to_thread(classroom.class_reset, self.state.config, None, [only] if only else None)
        for lab in ([only] if only else labs_now):
            self.state.lab_changed(lab)
        return web.json_response([{"lab": r.lab, "ok": r.ok, "error": r.error} for r in results])

    async def board(self, request: web.Request) -> web.Response:
        """The grid: a row per student, a cell per exercise the class has met."""
        _events, cells = await asyncio.to_thread(class_log.board, self.state.config)
        return web.json_response(board_view(cells))

    async def history(self, request: web.Request) -> web.Response:
        """One student's checks, hints, resets and commands, for one exercise or all."""
        lab, exercise = request.match_info["lab"], request.query.get("exercise") or None
        names = class_log.names(await asyncio.to_thread(class_log.read, self.state.config))
        if lab not in names:
            return web.json_response({"error": f"no student with lab {lab} in the class"}, status=404)
        if lab in self.state.class_labs():  # what they typed until now, from their nodes
            await asyncio.to_thread(typed_history.collect_quietly, self.state.config, lab)
        events = progress.history(await asyncio.to_thread(class_log.read, self.state.config), lab, exercise)
        limit, offset = history_page(request.query, len(events))
        return web.json_response({"student": names[lab], "lab": lab, "exercise": exercise,
                                  "total": len(events), "offset": offset,
                                  "events": [{**e, "text": progress.describe(e)}
                                             for e in events[offset:offset + limit]]})

    async def drill(self, _request: web.Request) -> web.Response:
        """The last `class chaos` drill: every lab's timeline on one page."""
        page = await asyncio.to_thread(class_chaos.last_report, self.state.config)
        if page is None:
            return web.Response(status=404, text="no class drill has run yet: `swarmlab class chaos lose-quorum`")
        return web.Response(content_type="text/html", text=page)

    def routes(self) -> list:
        return [web.get("/i/{token}", self.instructor_page), web.get("/i/{token}/status", self.status),
                web.get("/i/{token}/drill", self.drill),
                web.get("/i/{token}/board", self.board), web.get("/i/{token}/history/{lab}", self.history),
                web.post("/i/{token}/start", self.start), web.post("/i/{token}/reset", self.reset)]


HISTORY_PAGE = 500  # events a history answers with at most: a student can write ~88k lines


def history_page(query, total: int) -> tuple[int, int]:
    """(limit, offset) from `?limit=&offset=`; by default the last page."""
    def number(name: str, default: int) -> int:
        try:
            return max(0, int(query.get(name, default)))
        except ValueError:
            return default
    limit = min(number("limit", HISTORY_PAGE), HISTORY_PAGE) or HISTORY_PAGE
    return limit, min(number("offset", max(0, total - limit)), total)


def board_view(cells: list[progress.Cell]) -> dict:
    """The grid as the pages draw it: per student, per exercise, the cell's brief."""
    students: dict[str, dict] = {}
    for c in cells:
        row = students.setdefault(c.lab, {"student": c.student, "lab": c.lab, "cells": []})
        row["cells"].append({"exercise": c.exercise, "state": c.state(), "brief": progress.brief(c),
                             "attempts": c.attempts, "hints": c.hints,
                             "seconds_to_pass": c.seconds_to_pass, "best": c.best, "last": c.last})
    return {"exercises": list(dict.fromkeys(c.exercise for c in cells)), "students": list(students.values())}
