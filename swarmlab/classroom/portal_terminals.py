"""The portal's terminals: a student's page opens a shell per node (/s/<token>/term/<node>),
the instructor watches it (/i/<token>/term/<lab>/<node>) and may take the keyboard. Both are
viewers of one shared session (terminal_sessions.py). Sessions end when their lab is reset
(by any process) or leaves the class, and when the class's clock runs out.
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import WSMsgType, web

from swarmlab.classroom import access, class_end
from swarmlab.classroom.portal_state import PortalState
from swarmlab.classroom.portal_web import peer_gone
from swarmlab.classroom.limits import OverLimit
from swarmlab.classroom.terminal_sessions import TerminalSession, Viewer, serve_viewer
from swarmlab.errors import SwarmlabError
from swarmlab.lab import reset as resets


class Terminals:
    def __init__(self, state: PortalState):
        self.state = state
        self.sessions: dict[tuple[str, str], TerminalSession] = {}
        self.opening: dict[tuple[str, str], asyncio.Lock] = {}

    # --- the student's terminals -----------------------------------------------------
    async def terminal(self, request: web.Request) -> web.StreamResponse:
        lab = request["lab"]
        found = access.student_lab(self.state.config, lab)
        node = found.node(request.match_info["node"]) if found else None
        if node is None:
            return web.Response(status=404, text="404 no such node in your lab\n")
        if await asyncio.to_thread(class_end.is_over, self.state.config):
            return await self._refuse(request, f"\r\n[{await asyncio.to_thread(class_end.ended_message, self.state.config)}]\r\n")
        try:
            self.state.limits.take("terminals", lab)
        except OverLimit as e:
            return web.Response(status=429, text=f"429 {e}\n")
        try:
            ws = self._websocket()
            await ws.prepare(request)
            try:
                session = await self._session(lab, node)
            except (OSError, SwarmlabError, asyncio.TimeoutError) as e:
                return await self._say_and_close(ws, f"\r\n[swarmlab: {node.name} does not answer: "
                                                     f"{type(e).__name__}]\r\n")
            except Exception as e:  # asyncssh's errors: shown in the terminal, never a traceback
                return await self._say_and_close(ws, f"\r\n[swarmlab: {node.name}: {e}]\r\n")
            return await self._serve(request, ws, session, Viewer(ws, "student"))
        finally:
            self.state.limits.give("terminals", lab)

    async def _session(self, lab: str, node) -> TerminalSession:
        """The node's shared session, opened at the first browser that asks."""
        key = (lab, node.name)
        async with self.opening.setdefault(key, asyncio.Lock()):
            session = self.sessions.get(key)
            if session is not None and not session.ended.is_set():
                return session
            conn = await access.connect_as_student(self.state.config, lab, node.ip)
            try:
                process = await conn.create_process(term_type="xterm-256color", term_size=(100, 30), encoding=None)
            except BaseException:
                _close_connection(conn)
                raise
            session = self.sessions[key] = TerminalSession(lab, node.name, process, lambda: _close_connection(conn))
            return session

    # --- the instructor's view ---------------------------------------------------------
    async def watch(self, request: web.Request) -> web.StreamResponse:
        """A student's terminal on the instructor's page: read-only until the keyboard is taken."""
        lab, node = request.match_info["lab"], request.match_info["node"]
        session = self.sessions.get((lab, node))
        if session is None or session.ended.is_set():
            return await self._refuse(request, f"\r\n[no terminal on {node} is open on {lab}'s page now: it shows "
                                               "here once they open one]\r\n")
        return await self._serve(request, self._websocket(), session, Viewer(None, "instructor"))

    async def terminals_open(self, request: web.Request) -> web.Response:
        """What each student has open: the page's shared terminals (watchable) and their SSH
        connections through the gateway (only counted: they are the student's own)."""
        rows = []
        for lab in self.state.class_labs():
            shells = [{"node": node, "students": len(s.students()), "watching": s.marks()["watching"],
                       "typing": s.marks()["typing"]}
                      for (lab_, node), s in sorted(self.sessions.items()) if lab_ == lab and not s.ended.is_set()]
            rows.append({"lab": lab, "terminals": shells, "ssh_connections": self.state.limits.held["channels", lab]})
        return web.json_response(rows)

    # --- one browser -------------------------------------------------------------------
    def _websocket(self) -> web.WebSocketResponse:
        return web.WebSocketResponse(heartbeat=30, max_msg_size=self.state.config.max_request_kib * 1024)

    async def _serve(self, request: web.Request, ws: web.WebSocketResponse, session: TerminalSession,
                     viewer: Viewer) -> web.WebSocketResponse:
        if not ws.prepared:
            await ws.prepare(request)
        viewer.ws = ws

        async def read_events() -> None:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    return
                await self._event(session, viewer, message.data)

        async def browser_gone() -> None:
            while not ws.closed and not peer_gone(request.transport):
                await asyncio.sleep(1)
        try:
            await serve_viewer(session, viewer, read_events, browser_gone)
        except (ConnectionError, RuntimeError):
            pass  # the browser went away mid-send
        await ws.close()
        return ws

    @staticmethod
    async def _event(session: TerminalSession, viewer: Viewer, text: str) -> None:
        """Keystrokes, a new size, or the instructor's keyboard switch; anything else is ignored."""
        try:
            event = json.loads(text)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if kind == "input":
            await session.type(viewer, str(event.get("data", "")))
        elif kind == "resize":
            try:
                session.resize(viewer, min(500, int(event.get("cols", 100))), min(200, int(event.get("rows", 30))))
            except (TypeError, ValueError):
                pass
        elif kind == "keyboard" and viewer.role == "instructor":
            await session.take_keyboard(viewer, event.get("take") is True)

    async def _refuse(self, request: web.Request, message: str) -> web.WebSocketResponse:
        ws = self._websocket()
        await ws.prepare(request)
        return await self._say_and_close(ws, message)

    @staticmethod
    async def _say_and_close(ws: web.WebSocketResponse, text: str) -> web.WebSocketResponse:
        if not ws.closed:
            try:
                await ws.send_str(text)
            except (ConnectionError, RuntimeError):
                pass  # the browser went away first
        await ws.close()
        return ws

    # --- ending sessions ---------------------------------------------------------------
    async def end_sessions(self, lab: str, why: str = "the lab was reset") -> None:
        """Ends the lab's sessions; ending never waits on a browser (terminal_sessions)."""
        await self.end_sessions_of([lab], why)

    async def end_sessions_of(self, labs: list[str], why: str) -> None:
        ending = [self.sessions.pop(key) for key in list(self.sessions) if key[0] in labs]
        await asyncio.gather(*(session.end(f"\r\n[session ended: {why}]\r\n") for session in ending))

    def sessions_to_end(self) -> list[tuple[TerminalSession, str]]:
        """Sessions on a lab that left the class, or that was reset (by any process: the CLI,
        `class start`, a page) after they opened."""
        labs_now = set(self.state.class_labs())
        ending = []
        for (lab, _node), session in list(self.sessions.items()):
            if session.ended.is_set():
                self.sessions.pop((lab, _node), None)
            elif lab not in labs_now:
                ending.append((session, "the lab was removed"))
            elif session.opened < resets.last_reset(self.state.scoped(lab), lab):
                ending.append((session, "the lab was reset"))
        return ending

    async def end_stale_sessions(self) -> None:
        """Ends every session `sessions_to_end` names, each with its reason in the terminal."""
        for session, why in self.sessions_to_end():
            self.sessions.pop((session.lab, session.node), None)
            await session.end(f"\r\n[session ended: {why}]\r\n")

    async def end_every_session(self, why: str) -> None:
        await self.end_sessions_of([lab for lab, _ in self.sessions], why)

    def close(self) -> None:
        for session in self.sessions.values():
            session.close()

    def routes(self) -> list:
        return [web.get("/s/{token}/term/{node}", self.terminal), web.get("/i/{token}/term/{lab}/{node}", self.watch),
                web.get("/i/{token}/terminals", self.terminals_open)]


def _close_connection(conn) -> None:
    conn.close()
    if conn.tunnel is not None:
        conn.tunnel.close()
