"""The class's clock and a student's own restart and reset: pure, and against the portal's
test server (the a_class fixture: Ann and Bo on loopback stand-ins)."""

import asyncio
import json
import time

import pytest

from swarmlab import config as configuration
from swarmlab.classroom import access, room as classroom
from swarmlab.core import class_clock, roster
from swarmlab.core.class_clock import ClockError
from swarmlab.classroom.limits import StudentLimits
from tests.conftest import swarmlab, write_config
from tests.test_access import a_class  # noqa: F401
from tests.test_portal import run


def at(hh_mm: str) -> float:
    day = time.localtime()
    h, m = map(int, hh_mm.split(":"))
    return time.mktime((day.tm_year, day.tm_mon, day.tm_mday, h, m, 0, 0, 0, -1))


def test_the_end_is_a_time_of_day_today_that_has_not_passed():
    now = at("10:00")
    assert class_clock.parse_ends("16:30", now) == at("16:30")
    with pytest.raises(ClockError, match=r"--ends 09:30 has passed \(it is 10:00\): give a later time"):
        class_clock.parse_ends("09:30", now)
    with pytest.raises(ClockError, match="is not a time of day: give HH:MM"):
        class_clock.parse_ends("4pm", now, "--ends")
    assert ClockError("x").exit_code == 2


def test_time_left_and_extensions():
    now = at("16:00")
    assert class_clock.left(at("16:30"), now) == 1800 and class_clock.left(None, now) is None
    assert class_clock.say_left(at("16:30"), now) == "ends at 16:30 (30 min left)"
    assert class_clock.say_left(at("18:00"), now) == "ends at 18:00 (2 h 0 min left)"
    assert class_clock.say_left(at("15:00"), now) == "ended at 15:00" and class_clock.over(at("15:00"), now)
    assert class_clock.extended(at("16:30"), 15, now) == at("16:45")
    assert class_clock.extended(at("15:00"), 15, now) == at("16:15")  # ended: from now
    assert class_clock.extended(None, 15, now) == at("16:15")
    assert class_clock.ended_now(at("16:30"), now) == now and class_clock.ended_now(None, now) == now
    assert class_clock.ended_now(at("15:00"), now) == at("15:00")  # ended already: its own end stays


def test_class_end_ends_now_and_asks_first_when_the_labs_would_be_removed(tmp_path):
    path = write_config(tmp_path / "swarmlab.toml", tmp_path / "state")
    config = configuration.load(path)
    classroom.save(config, classroom.Classroom(1, [roster.Student("Ann", "ann")], ends=time.time() + 3600,
                                               teardown=True))
    refused = swarmlab("class", "end", config=path)
    assert refused.returncode == 4 and "made with --teardown" in refused.stderr and "--yes" in refused.stderr
    assert classroom.load(config).ends > time.time() + 3000  # nothing changed
    ended = swarmlab("class", "end", "--yes", "--json", config=path)
    assert ended.returncode == 0, ended.stderr
    assert json.loads(ended.stdout)["said"].startswith("ended at")
    assert class_clock.over(classroom.load(config).ends, time.time())


def test_a_student_may_restart_or_reset_once_per_interval(a_class):  # noqa: F811
    now = [0.0]
    limits = StudentLimits(a_class, lambda: now[0])
    assert limits.self_service_wait("ann") == 0
    assert limits.self_service_wait("ann") == a_class.self_service_every
    assert limits.self_service_wait("bo") == 0  # another student's own pace
    now[0] += a_class.self_service_every
    assert limits.self_service_wait("ann") == 0


def test_restart_and_reset_ask_for_confirmation_one_job_per_student_and_are_rate_limited(a_class):  # noqa: F811
    config = a_class
    ann = access.token(config, "ann")

    async def scenario(client):
        out = {"no confirm": (await client.post(f"/s/{ann}/reset", json={})).status,
               "restart, no exercise": (await client.post(f"/s/{ann}/restart", json={"confirm": True})).status}
        first = await client.post(f"/s/{ann}/reset", json={"confirm": True})
        out["first"] = (first.status, (await first.json())["what"])
        again = await client.post(f"/s/{ann}/reset", json={"confirm": True})
        out["again"] = again.status
        for _ in range(100):  # the stand-in lab cannot be reset: the job ends with why
            job = await (await client.get(f"/s/{ann}/job")).json()
            if job["done"]:
                break
            await asyncio.sleep(0.1)
        out["job"] = (job["done"], job["ok"], bool(job["error"]))
        later = await client.post(f"/s/{ann}/reset", json={"confirm": True})
        out["later"] = (later.status, later.headers.get("Retry-After") is not None)
        out["bo's job"] = await (await client.get(f"/s/{access.token(config, 'bo')}/job")).json()
        return out

    seen = run(config, scenario)
    assert seen == {"no confirm": 400, "restart, no exercise": 409, "first": (202, "reset"), "again": 409,
                    "job": (True, False, True), "later": (429, True), "bo's job": {}}, seen


def test_students_resets_run_one_at_a_time_in_the_whole_class(a_class, monkeypatch):  # noqa: F811
    """[portal] self_service_at_once = 1: Ann's reset holds the class-wide gate; Bo's, pressed
    meanwhile, says it waits and starts only once Ann's has ended."""
    import threading

    from swarmlab.classroom import portal_self_service
    from swarmlab.lab.reset import ResetResult
    config = a_class
    release, running, most = threading.Event(), [], [0]
    lock = threading.Lock()

    def reset(scoped, lab, progress, finish):  # a reset that lasts until the test releases it
        with lock:
            running.append(lab)
            most[0] = max(most[0], len(running))
        release.wait(10)
        with lock:
            running.remove(lab)
        return ResetResult(lab)
    monkeypatch.setattr(portal_self_service.resets, "reset", reset)
    monkeypatch.setattr(portal_self_service.class_log, "record", lambda *a, **k: None)
    ann, bo = access.token(config, "ann"), access.token(config, "bo")

    async def job(client, token):
        return await (await client.get(f"/s/{token}/job")).json()

    async def until(predicate, client, token):
        for _ in range(100):
            seen = await job(client, token)
            if predicate(seen):
                return seen
            await asyncio.sleep(0.05)
        raise AssertionError(f"never: {seen}")

    async def scenario(client):
        assert (await client.post(f"/s/{ann}/reset", json={"confirm": True})).status == 202
        await until(lambda j: running == ["ann"], client, ann)
        assert (await client.post(f"/s/{bo}/reset", json={"confirm": True})).status == 202
        waiting = await until(lambda j: "waiting: another student's lab is resetting" in j["steps"], client, bo)
        both_held = list(running)
        release.set()
        ann_done = await until(lambda j: j["done"], client, ann)
        bo_done = await until(lambda j: j["done"], client, bo)
        return waiting["done"], both_held, ann_done["ok"] or ann_done["error"], bo_done["ok"] or bo_done["error"]

    bo_was_done, held, ann_ok, bo_ok = run(config, scenario)
    assert (bo_was_done, held, ann_ok, bo_ok) == (False, ["ann"], True, True)
    assert most[0] == 1  # never both at once


def test_after_the_end_terminals_close_with_a_message_and_pages_learn_the_end(a_class):  # noqa: F811
    config = a_class
    room = classroom.load(config)
    room.ends = time.time() - 60
    classroom.save(config, room)
    ann = access.token(config, "ann")

    async def scenario(client):
        ws = await client.ws_connect(f"/s/{ann}/term/swr1")
        said = await ws.receive_str()
        closed = await ws.receive()
        nodes = await (await client.get(f"/s/{ann}/nodes")).json()
        restart = await client.post(f"/s/{ann}/reset", json={"confirm": True})
        return said, closed.type.name, nodes["ends"], restart.status, (await restart.json())["error"]

    said, closed, ends, status, error = run(config, scenario)
    assert "the class ended at" in said and "Check still works" in said and closed in ("CLOSE", "CLOSED")
    assert ends == room.ends and (status, error) == (409, "the class has ended")


def test_teardown_grades_each_labs_current_exercise_before_it_calls_class_down(a_class, monkeypatch):  # noqa: F811
    """--teardown at the end: a check per lab on its own current exercise, recorded as the
    clock's, and only then `class down` (what class down removes is test_classroom's); a lab
    without an exercise is not graded."""
    from swarmlab.classroom import class_end, class_log
    from swarmlab.core.checks import Verdict
    from swarmlab.teach import exercises
    config = a_class
    exercises.save_state(access.lab_config_of(config, "ann"), "ann", {"exercise": "services"})
    done = []
    monkeypatch.setattr(exercises, "check", lambda scoped, lab, exercise, wait: done.append(("check", lab, exercise.id, wait))
                        or [Verdict(True, "t", "", ""), Verdict(False, "t", "", "")])
    monkeypatch.setattr(classroom, "class_down", lambda c: done.append(("class down",)) or [])
    class_end.grade_and_remove(config)
    assert done == [("check", "ann", "services", False), ("class down",)]
    [event] = [e for e in class_log.read(config) if e["kind"] == "check"]
    assert (event["lab"], event["by"], event["passed"], event["of"], event["ok"]) == ("ann", "clock", 1, 2, False)


def test_a_tab_that_stopped_reading_holds_up_no_ones_reset(a_class, monkeypatch):  # noqa: F811
    """Ann's terminal floods into a tab that never reads; she presses "Reset my lab", then Bo
    does: both jobs end at once (they waited forever when ending a session waited on the tab,
    under the class-wide gate)."""
    import types

    from aiohttp.test_utils import TestClient, TestServer

    from swarmlab.classroom import portal, portal_self_service, terminal_sessions
    from swarmlab.classroom.terminal_sessions import TerminalSession, Viewer
    from tests.test_terminal_sessions import Browser, Shell
    config = a_class
    monkeypatch.setattr(portal_self_service.typed_history, "collect_quietly", lambda *a: None)
    monkeypatch.setattr(portal_self_service.resets, "reset", lambda *a, **k: types.SimpleNamespace(ok=True))
    ann, bo = access.token(config, "ann"), access.token(config, "bo")

    async def scenario():
        app = portal.Portal(config)
        async with TestClient(TestServer(app.app())) as client:
            shell = Shell()
            session = app.terminals.sessions[("ann", "swr1")] = TerminalSession("ann", "swr1", shell, lambda: None)
            stuck = Viewer(Browser(stalled=True), "student")
            writer = asyncio.ensure_future(stuck.write())
            await session.attach(stuck)
            for _ in range(terminal_sessions.QUEUED * 4):
                shell.stdout.feed_data(b"y" * 65536)
            await asyncio.sleep(0.1)
            began = time.monotonic()
            for token in (ann, bo):
                assert (await client.post(f"/s/{token}/reset", json={"confirm": True})).status == 202
            jobs = {}
            while len(jobs) < 2 and time.monotonic() - began < 10:
                for name, token in (("ann", ann), ("bo", bo)):
                    job = await (await client.get(f"/s/{token}/job")).json()
                    if job.get("done"):
                        jobs[name] = job["ok"]
                await asyncio.sleep(0.05)
            writer.cancel()
            return jobs, time.monotonic() - began

    jobs, took = asyncio.run(scenario())
    assert jobs == {"ann": True, "bo": True} and took < 5, (jobs, took)


def test_at_the_end_the_portal_closes_every_terminal_and_tears_down_once_until_extended(a_class, monkeypatch):  # noqa: F811
    from swarmlab.classroom import class_end, portal_clock
    config = a_class
    room = classroom.load(config)
    room.teardown = True
    classroom.save(config, room)
    over, ended, removed = [True], [], []
    monkeypatch.setattr(class_end, "is_over", lambda c: over[0])
    monkeypatch.setattr(class_end, "ended_message", lambda c: "the class ended at 16:30")
    monkeypatch.setattr(class_end, "grade_and_remove", lambda c: removed.append(True))

    async def end_every_session(why):
        ended.append(why)
    clock = portal_clock.ClassClock(config, end_every_session)

    async def scenario():
        await clock.watch()
        await clock.watch()  # still over: terminals are ended again (new ones), the class not again
        over[0] = False  # `class extend`
        await clock.watch()
        over[0] = True
        await clock.watch()
    asyncio.run(scenario())
    assert ended == ["the class ended at 16:30"] * 3 and removed == [True, True]
