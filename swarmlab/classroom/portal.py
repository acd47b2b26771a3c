"""`swarmlab portal`: the class in a browser, beside the SSH gateway.

- A student's page (/s/<token>, portal_student.py): the current exercise's text, a terminal per
  node (xterm.js, bridged to SSH as `student` on that node), Check and Hint, which of their
  nodes is down, the class's clock, and their own restart and reset (portal_self_service.py).
- The instructor's page (/i/<token>, portal_instructor.py): the class status and progress board,
  live; a student's history; a student's terminals, watched or typed into (portal_terminals.py);
  start an exercise for everyone, reset one lab or all.

A student's token is looked up in a book read again whenever the class or its credentials
change (portal_tokens.py), the instructor's at each request, so `class down` revokes at once; a
wrong or missing token gets the same bare 403, and an address that guesses too often waits. Terminals of a lab end when it is reset (from a page or by
any swarmlab command), when the lab leaves the class, and at the class's end. The portal calls
classroom, exercises, reset, access and lab_health only: it knows nothing of libvirt or
PowerDNS. aiohttp serves HTTP and websockets on the same asyncio loop as the gateway (asyncssh).

Each part is an object with its own routes, given what it shares (portal_state.PortalState)
and the terminals it ends; the Portal puts them together into one application.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aiohttp import web

from swarmlab.classroom.limits import StudentLimits
from swarmlab.classroom.portal_clock import ClassClock
from swarmlab.classroom.portal_instructor import InstructorDesk
from swarmlab.classroom.portal_self_service import SelfService
from swarmlab.classroom.portal_state import PortalState
from swarmlab.classroom.portal_student import StudentDesk
from swarmlab.classroom.portal_terminals import Terminals
from swarmlab.classroom.portal_web import guess_limit, security_headers, token_gate
from swarmlab.config import Config

STATIC = Path(__file__).resolve().parent / "static"
WATCH_EVERY = 2.0  # how soon a terminal ends after its lab was reset or removed, or the class's end


class Portal:
    def __init__(self, config: Config, clock=time.monotonic, limits: StudentLimits | None = None):
        self.state = PortalState(config, clock, limits)
        self.terminals = Terminals(self.state)
        self.students = StudentDesk(self.state)
        self.self_service = SelfService(self.state, self.terminals)
        self.instructor = InstructorDesk(self.state, self.terminals)
        self.class_clock = ClassClock(config, self.terminals.end_every_session)

    async def watch_class(self) -> None:
        """Ends the terminals of labs reset or removed elsewhere, and carries out the class's end."""
        while True:
            await asyncio.sleep(WATCH_EVERY)
            await self.terminals.end_stale_sessions()
            await self.class_clock.watch()

    def app(self) -> web.Application:
        state = self.state
        app = web.Application(client_max_size=state.config.max_request_kib * 1024,
                              middlewares=[guess_limit(state.addresses), token_gate(state.tokens.lab_of, state.is_instructor)])
        app.on_response_prepare.append(security_headers)
        app.on_shutdown.append(self._shutdown)
        app.add_routes([*self.students.routes(), *self.terminals.routes(), *self.self_service.routes(),
                        *self.instructor.routes(), web.static("/static", STATIC)])
        return app

    async def _shutdown(self, _app: web.Application) -> None:
        self.students.close()
        self.terminals.close()
        self.state.close()
