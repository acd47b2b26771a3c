"""Shared terminal sessions, against a stand-in shell: what each viewer sees, who may type, the
watch mark on the student's page, and that a watcher never slows the student down."""

import asyncio
import json

from swarmlab.classroom import terminal_sessions
from swarmlab.classroom.terminal_sessions import TerminalSession, Viewer


class Shell:
    """A process as asyncssh gives it: stdout to read, stdin to write."""

    def __init__(self):
        self.stdout = asyncio.StreamReader()
        self.typed = bytearray()
        self.size = None
        shell = self

        class Stdin:
            def write(self, data):
                shell.typed += data

            async def drain(self):
                pass
        self.stdin = Stdin()

    def change_terminal_size(self, cols, rows):
        self.size = (cols, rows)


class Browser:
    def __init__(self, stalled=False):
        self.got, self.stalled = [], stalled

    async def send_bytes(self, data):
        if self.stalled:
            await asyncio.sleep(3600)
        self.got.append(data)

    async def send_str(self, text):
        await self.send_bytes(text)

    def marks(self):
        return [json.loads(x) for x in self.got if isinstance(x, str) and x.startswith("{")]

    def output(self):
        return b"".join(x for x in self.got if isinstance(x, bytes))


async def settle():
    for _ in range(20):
        await asyncio.sleep(0)


def test_the_instructor_sees_the_students_screen_types_only_with_the_keyboard_and_is_shown():
    async def scenario():
        shell, closed = Shell(), []
        session = TerminalSession("ann", "swr1", shell, lambda: closed.append(True))
        student = Viewer(Browser(), "student")
        writer = asyncio.ensure_future(student.write())
        await session.attach(student)
        shell.stdout.feed_data(b"$ docker node ls\r\n")
        await settle()
        teacher = Viewer(Browser(), "instructor")
        watcher = asyncio.ensure_future(teacher.write())
        await session.attach(teacher)
        await settle()
        await session.type(teacher, "rm -rf /\r")  # read-only until the keyboard is taken
        session.resize(teacher, 40, 10)  # the student's window sets the size
        await session.take_keyboard(teacher, True)
        await session.type(teacher, "docker service ls\r")
        await session.type(student, "exit\r")
        session.resize(student, 120, 40)
        await settle()
        marks_while = student.ws.marks()
        await session.detach(teacher)
        await settle()
        shell.stdout.feed_eof()
        await settle()
        for task in (writer, watcher):
            task.cancel()
        return shell, student.ws, teacher.ws, marks_while, closed

    shell, student, teacher, marks, closed = asyncio.run(scenario())
    assert teacher.output().startswith(b"$ docker node ls")  # the screen so far, first
    assert bytes(shell.typed) == b"docker service ls\rexit\r" and shell.size == (120, 40)
    assert marks == [{"type": "watch", "watching": 0, "typing": False},
                     {"type": "watch", "watching": 1, "typing": False},
                     {"type": "watch", "watching": 1, "typing": True}]
    assert student.marks()[-1] == {"type": "watch", "watching": 0, "typing": False}
    assert "[session ended]" in student.got[-1] and closed == [True]


def test_a_watcher_that_falls_behind_is_dropped_and_the_student_goes_on():
    async def scenario():
        shell = Shell()
        session = TerminalSession("ann", "swr1", shell, lambda: None)
        student, teacher = Viewer(Browser(), "student"), Viewer(Browser(stalled=True), "instructor")
        tasks = [asyncio.ensure_future(v.write()) for v in (student, teacher)]
        await session.attach(student)
        await session.attach(teacher)
        for i in range(terminal_sessions.QUEUED * 4):
            shell.stdout.feed_data(b"x" * 1000 + str(i).encode())
            await settle()
        for task in tasks:
            task.cancel()
        session.close()
        return student, teacher

    student, teacher = asyncio.run(scenario())
    assert teacher.gone.is_set()
    assert student.ws.output().count(b"x" * 1000) == terminal_sessions.QUEUED * 4


def test_a_shell_lingers_for_a_reload_then_closes(monkeypatch):
    """The reload comes back within the linger (at once: nothing here depends on timing), so
    the pending close is called off; when the last student's page goes, the close comes."""
    monkeypatch.setattr(terminal_sessions, "LINGER", 0.2)

    async def scenario():
        closed = asyncio.Event()
        session = TerminalSession("ann", "swr1", Shell(), closed.set)
        first = Viewer(Browser(), "student")
        await session.attach(first)
        await session.detach(first)  # the close is due in LINGER
        reloaded = Viewer(Browser(), "student")
        await session.attach(reloaded)  # within the linger: the same shell
        await asyncio.sleep(0.5)  # well past the linger: a close not called off would have come
        kept = not closed.is_set()
        teacher = Viewer(Browser(), "instructor")
        watcher = asyncio.ensure_future(teacher.write())
        await session.attach(teacher)
        await session.detach(reloaded)
        await asyncio.wait_for(closed.wait(), 10)
        await asyncio.wait_for(watcher, 10)  # the watcher is told, then let go
        return kept, teacher.ws.got

    kept, watched = asyncio.run(scenario())
    assert kept
    assert "[session ended: the student's page closed]" in watched[-1]  # a watcher alone is told, not kept


def test_ending_a_session_never_waits_on_a_browser_that_stopped_reading():
    """A flooding shell and a student's tab that never reads: the pump waits for that tab; a
    reset, the class clock or `Start for everyone` ending the session must not wait with it."""
    async def scenario():
        shell, closed = Shell(), []
        session = TerminalSession("ann", "swr1", shell, lambda: closed.append(True))
        stuck = Viewer(Browser(stalled=True), "student")
        writer = asyncio.ensure_future(stuck.write())
        await session.attach(stuck)
        for _ in range(terminal_sessions.QUEUED * 4):
            shell.stdout.feed_data(b"y" * 65536)
        await settle()
        assert stuck.queue.full() and not stuck.gone.is_set()  # the pump now waits for this tab
        began = asyncio.get_running_loop().time()
        await asyncio.wait_for(session.end("\r\n[session ended: the lab was reset]\r\n"), 1)
        writer.cancel()
        return asyncio.get_running_loop().time() - began, closed, stuck

    took, closed, stuck = asyncio.run(scenario())
    assert took < 0.5 and closed == [True] and stuck.gone.is_set()


def test_a_students_tab_that_takes_nothing_is_let_go_and_their_other_tab_goes_on(monkeypatch):
    monkeypatch.setattr(terminal_sessions, "SEND_WITHIN", 0.3)

    async def scenario():
        shell = Shell()
        session = TerminalSession("ann", "swr1", shell, lambda: None)
        stuck, reading = Viewer(Browser(stalled=True), "student"), Viewer(Browser(), "student")
        tasks = [asyncio.ensure_future(v.write()) for v in (stuck, reading)]
        await session.attach(stuck)
        await session.attach(reading)
        chunks = terminal_sessions.QUEUED * 4
        for i in range(chunks):
            shell.stdout.feed_data(b"z" * 1000 + str(i).encode())
        await asyncio.sleep(1.5)
        for task in tasks:
            task.cancel()
        session.close()
        return stuck, reading, chunks

    stuck, reading, chunks = asyncio.run(scenario())
    assert stuck.gone.is_set()
    assert reading.ws.output().count(b"z" * 1000) == chunks
