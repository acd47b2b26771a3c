"""The portal's pages and rules against aiohttp's test server: tokens (a wrong or missing one
gets the same bare 403), one student's token never reaches another's lab, checks are
rate-limited. The browser test on VMs (tests/test_classroom_vm.py) drives the terminals."""

import asyncio

from aiohttp.test_utils import TestClient, TestServer

from swarmlab.classroom import access, lab_health, portal, portal_endpoint, portal_student
from swarmlab.lab import model as labs, node_status
from tests.test_access import a_class  # noqa: F401 (the fixture: a class of Ann and Bo on loopback)


def run(config, scenario, clock=None):
    app = portal.Portal(config, clock=clock) if clock else portal.Portal(config)

    async def go():
        async with TestClient(TestServer(app.app())) as client:
            return await scenario(client)
    return asyncio.run(go())


def test_a_wrong_or_missing_token_gets_the_same_bare_403(a_class):  # noqa: F811
    config = a_class
    ann = access.token(config, "ann")

    async def scenario(client):
        out = {}
        for path in ("/s/", "/s/nope", f"/s/{ann[:-1]}", f"/s/{ann}x/term/swr1", "/i/", "/i/nope",
                     f"/i/{ann}", "/i/nope/status", f"/s/{ann}/nothing-here"):
            r = await client.get(path)
            out[path] = (r.status, await r.text())
        r = await client.post(f"/s/{ann[:-1]}/check")
        out["post check"] = (r.status, await r.text())
        return out

    seen = run(config, scenario)
    assert set(seen.values()) == {(403, "403 forbidden\n")}, seen


def test_a_students_page_shows_their_lab_only(a_class):  # noqa: F811
    config = a_class

    async def scenario(client):
        ann = await client.get(f"/s/{access.token(config, 'ann')}")
        bo = await client.get(f"/s/{access.token(config, 'bo')}")
        other = await client.get(f"/s/{access.token(config, 'bo')}/term/swr9")
        return ann.status, await ann.text(), bo.status, await bo.text(), other.status

    ann_status, ann_page, bo_status, bo_page, other = run(config, scenario)
    assert ann_status == bo_status == 200
    assert 'id="lab">ann<' in ann_page and "127.0.0.2" in ann_page and "127.0.0.3" not in ann_page
    assert 'id="lab">bo<' in bo_page and "127.0.0.3" in bo_page and "127.0.0.2" not in bo_page
    assert "Waiting for the first exercise" in ann_page
    assert other == 404  # a node that is not in Bo's lab


def test_checks_are_rate_limited_per_lab(a_class):  # noqa: F811
    config = a_class
    now = [1000.0]

    async def scenario(client):
        ann, bo = access.token(config, "ann"), access.token(config, "bo")
        out = [(await client.post(f"/s/{ann}/check")).status]
        out.append((await client.post(f"/s/{ann}/check")).status)
        answer = await client.post(f"/s/{ann}/check")
        out.append((answer.status, answer.headers.get("Retry-After")))
        out.append((await client.post(f"/s/{bo}/check")).status)  # another lab has its own pace
        now[0] += portal_student.CHECK_EVERY
        out.append((await client.post(f"/s/{ann}/check")).status)
        return out

    seen = run(config, scenario, clock=lambda: now[0])
    # 409: no exercise started yet (the check itself ran); 429: too soon
    assert seen == [409, 429, (429, "10"), 409, 409]


def test_the_instructor_page_needs_its_own_token(a_class):  # noqa: F811
    config = a_class
    token = access.instructor_token(config)
    assert access.instructor_token(config) == token  # made once
    assert (config.state_dir / "portal" / "instructor-token").stat().st_mode & 0o077 == 0

    async def scenario(client):
        page = await client.get(f"/i/{token}")
        return page.status, await page.text()

    status, page = run(config, scenario)
    assert status == 200 and 'id="start"' in page and "services" in page


def test_the_instructor_sees_the_board_and_a_students_history_and_a_student_cannot(a_class):  # noqa: F811
    from swarmlab.classroom import class_log
    from swarmlab.core.roster import Student
    config = a_class
    token, ann = access.instructor_token(config), access.token(config, "ann")
    class_log.begin(config, [Student("Ann", "ann"), Student("Bo", "bo")], new_class=True)
    class_log.record(config, "ann", "start", exercise="services", by="instructor")
    class_log.record(config, "ann", "check", exercise="services", by="student", ok=False, passed=1, of=2)
    class_log.record(config, "ann", "command", by="student", node="swr1", line="docker service ls")

    async def scenario(client):
        board = await client.get(f"/i/{token}/board")
        history = await client.get(f"/i/{token}/history/ann", params={"exercise": "services"})
        stranger = await client.get(f"/i/{token}/history/zed")
        students_try = [(await client.get(f"/i/{ann}/board")).status,
                        (await client.get(f"/i/{ann}/history/bo")).status]
        return await board.json(), await history.json(), stranger.status, students_try

    board, history, stranger, students_try = run(config, scenario)
    assert board["exercises"] == ["services"]
    assert [(s["lab"], s["cells"][0]["brief"]) for s in board["students"]] == [("ann", "✗ 1/2 1a"), ("bo", "·")]
    assert [e["kind"] for e in history["events"]] == ["start", "check", "command"]
    assert history["student"] == "Ann" and stranger == 404 and students_try == [403, 403]


def test_the_instructor_sees_the_last_class_drill_and_a_student_cannot(a_class):  # noqa: F811
    from swarmlab.classroom import class_chaos
    from swarmlab.core.timeline import Timeline, html_report
    config = a_class
    token, ann = access.instructor_token(config), access.token(config, "ann")

    async def scenario(client):
        pages = []
        for who in (token, token, ann):
            page = await client.get(f"/i/{who}/drill")
            pages.append((page.status, await page.text()))
            class_chaos.report_path(config).parent.mkdir(parents=True, exist_ok=True)
            timeline = Timeline("lose-quorum", "ann", "swr2, swr3")
            timeline.mark("leader-lost", "<b>node text</b>", at=timeline.started + 14)
            class_chaos.report_path(config).write_text(html_report([timeline]))
        return pages

    (before, _), (status, page), (student, _) = run(config, scenario)
    assert before == 404 and status == 200 and student == 403
    assert "leader-lost" in page and "<b>node text</b>" not in page  # what a node said is escaped


def test_without_a_certificate_the_portal_makes_a_self_signed_one_once(a_class):  # noqa: F811
    import ssl
    import subprocess
    config = a_class
    cert, key = portal_endpoint.self_signed_certificate(config, "10.200.0.1")
    assert key.stat().st_mode & 0o077 == 0 and "BEGIN CERTIFICATE" in cert.read_text()
    assert portal_endpoint.self_signed_certificate(config, "10.200.0.1") == (cert, key)
    assert cert.read_text() == portal_endpoint.self_signed_certificate(config, "10.200.0.1")[0].read_text()
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)  # a pair that TLS takes
    # told another address (portal --address), it is made again for that one: no browser warning for a name
    first = portal_endpoint.fingerprint(cert)
    portal_endpoint.self_signed_certificate(config, "10.250.0.1")
    assert portal_endpoint.fingerprint(cert) != first
    assert "10.250.0.1" in subprocess.run(["openssl", "x509", "-noout", "-subject", "-in", str(cert)],
                                          capture_output=True, text=True).stdout


def test_the_exercise_text_is_shown_as_a_page_not_as_markdown():
    html = str(portal_student.task_html("1. Create **HelloWorld**: `docker service ls 2>/dev/null`\n2. Scale it"))
    assert "<li>Create <strong>HelloWorld</strong>: <code>docker service ls 2&gt;/dev/null</code></li>" in html
    # the README's own title would repeat the page's heading
    titled = str(portal_student.task_html("# Services\n\n1. Create it\n\n## Then\n"))
    assert "Services" not in titled and "<h2>Then</h2>" in titled and "<li>Create it</li>" in titled


def test_a_terminal_ends_when_its_lab_is_reset_by_any_process_or_leaves_the_class(a_class):  # noqa: F811
    import types
    from swarmlab.classroom import room as classroom
    from swarmlab.lab import reset as resets
    config = a_class
    app = portal.Portal(config)
    said: dict[tuple[str, str], str] = {}

    def session(lab, node, opened):  # a stand-in for an open shared terminal: what it was told at its end
        async def end(message):
            said[(lab, node)] = message
        return types.SimpleNamespace(lab=lab, node=node, opened=opened, end=end,
                                     ended=types.SimpleNamespace(is_set=lambda: (lab, node) in said))
    app.terminals.sessions = {("ann", "swr1"): session("ann", "swr1", 0.0), ("bo", "swr1"): session("bo", "swr1", 0.0)}
    asyncio.run(app.terminals.end_stale_sessions())
    assert said == {} and len(app.terminals.sessions) == 2  # no lab was reset since they opened
    resets.mark_reset(access.lab_config_of(config, "ann"), "ann")  # as `swarmlab reset --lab ann` does
    app.terminals.sessions[("ann", "swr2")] = session("ann", "swr2", resets.last_reset(access.lab_config_of(config, "ann"), "ann") + 1)
    asyncio.run(app.terminals.end_stale_sessions())
    assert said == {("ann", "swr1"): "\r\n[session ended: the lab was reset]\r\n"}
    assert sorted(app.terminals.sessions) == [("ann", "swr2"), ("bo", "swr1")]  # the one opened after the reset stays
    room = classroom.load(config)
    room.students = [s for s in room.students if s.lab != "bo"]
    classroom.save(config, room)
    asyncio.run(app.terminals.end_stale_sessions())
    assert said[("bo", "swr1")] == "\r\n[session ended: the lab was removed]\r\n"
    assert sorted(app.terminals.sessions) == [("ann", "swr2")]


def test_the_portal_command_records_where_it_listens_and_can_replace_the_instructor_token(a_class, tmp_path):  # noqa: F811
    """`swarmlab portal` as the instructor runs it: the endpoint goes on record for the cards
    while it runs and away when it stops (SIGTERM); --new-instructor-token replaces the token."""
    import json
    import signal
    import socket
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT, free_port
    config = a_class
    old = access.instructor_token(config)
    https, ssh = free_port(), free_port()
    log = tmp_path / "portal.log"
    proc = subprocess.Popen([sys.executable, "-m", "swarmlab", "--config", str(tmp_path / "swarmlab.toml"), "portal",
                             "--listen", "127.0.0.1", "--address", "127.0.0.1", "--port", str(https), "--ssh-port",
                             str(ssh), "--new-instructor-token"], cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while "instructor: " not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        new = access.instructor_token(config)
        assert new != old and f"instructor: https://127.0.0.1:{https}/i/{new}" in log.read_text()
        recorded = json.loads((config.state_dir / "portal" / "endpoint.json").read_text())
        assert (recorded["address"], recorded["https_port"], recorded["ssh_port"], recorded["pid"]) == \
            ("127.0.0.1", https, ssh, proc.pid)
        assert recorded["fingerprint"] == portal_endpoint.fingerprint(config.state_dir / "portal" / "portal.crt")
        again = subprocess.run([sys.executable, "-m", "swarmlab", "--config", str(tmp_path / "swarmlab.toml"), "portal",
                                "--listen", "127.0.0.1", "--port", str(https), "--ssh-port", str(free_port())],
                               cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert again.returncode == 4 and f"cannot listen on 127.0.0.1:{https}" in again.stderr, again.stderr
        assert "Traceback" not in again.stderr
        # a laptop that connected to the gateway and said nothing, and an idle page connection
        silent = socket.create_connection(("127.0.0.1", ssh), timeout=5)
        idle = socket.create_connection(("127.0.0.1", https), timeout=5)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)  # the gateway's login timeout is 30 s: the stop does not wait for it
        finally:
            proc.kill()
    assert not (config.state_dir / "portal" / "endpoint.json").exists()
    assert silent.recv(4096).startswith(b"SSH-2.0-") and silent.recv(4096) == b"", "the gateway left it open"
    silent.close()
    idle.close()


def test_a_stop_does_not_wait_for_a_reading_blocked_in_a_thread():
    """An SSH connect to a node being removed blocked the portal's exit for its timeout (the
    class test's SIGTERM waited 30 s in vain): asyncio.run and the interpreter join the threads."""
    import subprocess
    import sys
    import time
    code = ("import asyncio, time\n"
            "from swarmlab.classroom.portal_server import close_without_waiting\n"
            "loop = asyncio.new_event_loop()\n"
            "async def main():\n"
            "    loop.create_task(asyncio.to_thread(time.sleep, 60))\n"
            "    await asyncio.sleep(0.2)\n"
            "loop.run_until_complete(main())\n"
            "close_without_waiting(loop)\n")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 10


def test_a_students_page_learns_which_node_is_down_with_one_read_per_interval(a_class, monkeypatch):  # noqa: F811
    config = a_class
    now = [1000.0]
    reads = []

    def node_states(scoped, lab):
        reads.append(lab)
        if lab == "bo":
            raise labs.LabError("cannot connect to qemu+ssh://h2/system")
        return [{"node": "swr1", "state": "shut off", "up": False}]
    monkeypatch.setattr(node_status, "node_states", node_states)

    async def scenario(client):
        ann, bo = access.token(config, "ann"), access.token(config, "bo")
        out = [await (await client.get(f"/s/{ann}/nodes")).json() for _ in range(3)]
        out.append(await (await client.get(f"/s/{bo}/nodes")).json())
        out.append((await client.get(f"/s/{ann}x/nodes")).status)
        now[0] += lab_health.HEALTH_EVERY
        out.append(await (await client.get(f"/s/{ann}/nodes")).json())
        return out

    seen = run(config, scenario, clock=lambda: now[0])
    down = {"nodes": [{"node": "swr1", "state": "shut off", "up": False}], "ends": None}  # ends: the class's clock
    assert seen[:3] == [down] * 3 and seen[5] == down
    assert seen[3] == {"error": "your lab's host does not answer: cannot connect to qemu+ssh://h2/system",
                       "ends": None}
    assert seen[4] == 403
    assert reads == ["ann", "bo", "ann"]  # three asks within the interval are one read
