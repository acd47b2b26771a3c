"""Browser terminals as shared sessions: one login shell as `student` per lab and node, shown in
every browser that attaches to it. The student's tabs type into it; the instructor watches it
read-only, and types only after taking the keyboard. The student's page is told whenever the
instructor watches or types (a JSON text frame: {"type": "watch", "watching": N, "typing": B}).

Flow control is as it was with one browser per shell: the shell's output is read only when the
student's browsers have taken the last of it (each viewer holds at most QUEUED chunks), so a
flood waits in the SSH window, not here. An instructor's browser that falls behind is dropped
instead: watching never slows a student down. Nothing waits on a browser for long: one that
takes nothing for SEND_WITHIN seconds is let go, and ending a session never waits at all. A new viewer first gets the last SCREEN_BYTES of
output, so it sees what the student sees. When the last student's browser goes, the shell
lingers LINGER seconds: a reloaded page finds it again.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Awaitable, Callable

SCREEN_BYTES = 64 * 1024
QUEUED = 4  # chunks of up to 64 KiB waiting for one browser
LINGER = 30.0
SEND_WITHIN = 20.0  # seconds a browser may take nothing before it is let go (the page reconnects)


class Viewer:
    """One browser's websocket on a session."""

    def __init__(self, ws, role: str):
        self.ws, self.role = ws, role  # role: student or instructor
        self.queue: asyncio.Queue = asyncio.Queue(QUEUED)
        self.gone = asyncio.Event()

    async def offer(self, data: bytes | str) -> None:
        """Queues output for this browser. A student's waits for room (the shell waits with
        it), for SEND_WITHIN seconds at most: a browser that takes nothing for that long is let
        go, so that nothing waits on it. An instructor's is dropped when full."""
        if self.gone.is_set():
            return
        if self.role != "student":
            try:
                self.queue.put_nowait(data)
            except asyncio.QueueFull:
                self.gone.set()
            return
        put = asyncio.ensure_future(self.queue.put(data))
        gone = asyncio.ensure_future(self.gone.wait())
        _, pending = await asyncio.wait({put, gone}, timeout=SEND_WITHIN, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if put in pending:
            self.gone.set()

    def finish(self, message: str) -> None:
        """The last words and the end, without waiting: a browser with no room left for them is
        simply let go."""
        if self.gone.is_set():
            return
        if self.queue.maxsize - self.queue.qsize() < 2:
            self.gone.set()
            return
        self.queue.put_nowait(message)
        self.queue.put_nowait(None)  # its writer sends what is queued, then stops

    async def write(self) -> None:
        """Sends what is queued until the browser or the session goes. A send the browser does
        not take within SEND_WITHIN seconds (it stopped reading) lets it go."""
        while True:
            data = await self.queue.get()
            if data is None:
                return
            send = self.ws.send_str(data) if isinstance(data, str) else self.ws.send_bytes(data)
            try:
                await asyncio.wait_for(send, SEND_WITHIN)
            except asyncio.TimeoutError:
                self.gone.set()
                return


class TerminalSession:
    def __init__(self, lab: str, node: str, process, close: Callable[[], None]):
        self.lab, self.node, self.process, self._close = lab, node, process, close
        self.opened = time.time()
        self.viewers: list[Viewer] = []
        self.screen = bytearray()
        self.typist: Viewer | None = None  # the instructor's viewer that holds the keyboard
        self.ended = asyncio.Event()
        self.linger: asyncio.TimerHandle | None = None
        self.pump = asyncio.ensure_future(self._pump())

    # --- viewers ---------------------------------------------------------------------
    async def attach(self, viewer: Viewer) -> None:
        if self.linger is not None:
            self.linger.cancel()
            self.linger = None
        if self.screen:
            await viewer.offer(bytes(self.screen))
        self.viewers.append(viewer)
        await self._tell_students()

    async def detach(self, viewer: Viewer) -> None:
        viewer.gone.set()
        if viewer in self.viewers:
            self.viewers.remove(viewer)
        if self.typist is viewer:
            self.typist = None
        if not self.ended.is_set():
            await self._tell_students()
            if not self.students():  # a watcher alone does not keep the shell: it is told, after the linger
                self.linger = asyncio.get_running_loop().call_later(
                    LINGER, lambda: asyncio.ensure_future(self.end("\r\n[session ended: the student's page closed]\r\n")))

    def students(self) -> list[Viewer]:
        return [v for v in self.viewers if v.role == "student"]

    def marks(self) -> dict:
        return {"type": "watch", "watching": sum(v.role == "instructor" for v in self.viewers),
                "typing": self.typist is not None}

    async def _tell_students(self) -> None:
        text = json.dumps(self.marks())
        for v in self.students():
            await v.offer(text)

    async def take_keyboard(self, viewer: Viewer, take: bool) -> None:
        if take:
            self.typist = viewer
        elif self.typist is viewer:
            self.typist = None
        await self._tell_students()

    # --- the shell -------------------------------------------------------------------
    async def type(self, viewer: Viewer, data: str) -> None:
        """Keystrokes: a student's always; an instructor's only with the keyboard."""
        if viewer.role == "student" or viewer is self.typist:
            self.process.stdin.write(data.encode())
            await self.process.stdin.drain()

    def resize(self, viewer: Viewer, cols: int, rows: int) -> None:
        if viewer.role == "student":  # the student's window sets the size; a watcher follows it
            self.process.change_terminal_size(cols, rows)

    async def _pump(self) -> None:
        try:
            while data := await self.process.stdout.read(65536):
                self.screen += data
                del self.screen[:-SCREEN_BYTES]
                for v in list(self.viewers):
                    await v.offer(data)
        except Exception:  # the SSH connection went: the session ends as if the shell had
            pass
        await self.end("\r\n[session ended]\r\n")

    async def end(self, message: str) -> None:
        """Says why to every browser and closes them; the shell goes. Never waits on a browser."""
        if self.ended.is_set():
            return
        self.ended.set()
        for v in list(self.viewers):
            v.finish(message)
        self.close()

    def close(self) -> None:
        if self.linger is not None:
            self.linger.cancel()
        self.ended.set()
        self.pump.cancel()
        self._close()


async def serve_viewer(session: TerminalSession, viewer: Viewer, read_events: Callable[[], Awaitable[None]],
                       browser_gone: Callable[[], Awaitable[None]]) -> None:
    """One browser on a session until it goes, the session ends, or it falls behind."""
    await session.attach(viewer)
    tasks = [asyncio.ensure_future(t) for t in (viewer.write(), read_events(), browser_gone(), viewer.gone.wait())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await session.detach(viewer)
