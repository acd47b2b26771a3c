"""One student cannot stall the others: the gateway and the terminals wait for the slower side
instead of buffering a flood, every per-student cap refuses in words, and another student's
page answers while one student floods. A fake node stands in for a lab's VM: an SSH server on
127.0.0.2:22 (the stand-in address of Ann's node) that takes the student's key and never reads."""

import asyncio
import json
import socket
import struct
import time

import asyncssh
import pytest
from aiohttp.test_utils import TestClient, TestServer

from swarmlab.classroom import access, portal, portal_student, portal_web
from swarmlab.classroom.limits import StudentLimits
from swarmlab.lab import model as labs
from swarmlab.teach import exercises
from tests.conftest import free_port
from tests.test_access import NODE_IP, a_class  # noqa: F401 (the fixture: a class of Ann and Bo on loopback)

FLOOD_MIB = 64  # what a flooding student tries to push
RSS_BOUND_MIB = 40  # what the portal process may grow by meanwhile (buffers in flight, not the flood)


def rss_mib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class SilentNode(asyncssh.SSHServer):
    """Accepts `student` with any key (the portal's key check is on the client side) and runs
    sessions that never read their input."""

    def begin_auth(self, username):
        return True

    def public_key_auth_supported(self):
        return True

    def validate_public_key(self, username, key):
        return username == access.STUDENT_USER


async def never_reads(process):
    await asyncio.sleep(3600)


async def silent_node(config, lab: str = "ann"):
    """The fake node on 127.0.0.2:22 with its host key recorded as swarmlab records a node's."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    known = labs.known_hosts(config, lab)
    known.parent.mkdir(parents=True, exist_ok=True)
    known.write_text(f"{NODE_IP} {key.export_public_key().decode().strip()}\n")
    try:
        return await asyncssh.create_server(SilentNode, NODE_IP, 22, server_host_keys=[key],
                                            process_factory=never_reads, line_editor=False)
    except OSError:
        pytest.skip("port 22 of 127.0.0.2 is taken (a machine sshd on *:22): the fake node needs it")


async def send_until_blocked(write, drain, chunk: bytes, budget: int, stall: float = 2.0) -> int:
    """Writes chunks until `budget` bytes went or one write waited `stall` seconds; the bytes sent."""
    sent = 0
    while sent < budget:
        write(chunk)
        try:
            await asyncio.wait_for(drain(), stall)
        except asyncio.TimeoutError:
            break
        sent += len(chunk)
    return sent


def with_limits(config, **caps):
    import dataclasses
    return dataclasses.replace(config, **caps)


def test_a_flood_through_the_gateway_waits_in_the_students_window_not_in_the_portal(a_class):  # noqa: F811
    config = a_class
    port = free_port()
    ann_key = asyncssh.read_private_key(str(access.credentials_dir(config, "ann") / "id_ed25519"))

    async def scenario():
        held = []

        async def reads_nothing(reader, writer):
            held.append(writer)  # the connection stays open; nobody reads it
        try:
            node = await asyncio.start_server(reads_nothing, NODE_IP, 22)
        except OSError:
            pytest.skip("port 22 of 127.0.0.2 is taken: the stand-in node needs it")
        gateway = await access.start_gateway(config, lambda: ["ann", "bo"], StudentLimits(config), "127.0.0.1", port)
        before = rss_mib()
        try:
            async with asyncssh.connect("127.0.0.1", port, username="ann", client_keys=[ann_key],
                                        known_hosts=None) as conn:
                _, writer = await conn.open_connection(NODE_IP, 22, encoding=None)
                sent = await send_until_blocked(writer.write, writer.drain, b"x" * (1 << 20), FLOOD_MIB << 20)
                return sent, rss_mib() - before
        finally:
            gateway.close()
            node.close()

    sent, grown = asyncio.run(scenario())
    assert sent < 16 << 20, f"the gateway took {sent >> 20} MiB for a node that reads nothing"
    assert grown < RSS_BOUND_MIB, f"the portal grew by {grown:.0f} MiB"


def test_the_gateway_caps_connections_per_student(a_class):  # noqa: F811
    config = with_limits(a_class, max_channels=2)
    port = free_port()
    ann_key = asyncssh.read_private_key(str(access.credentials_dir(config, "ann") / "id_ed25519"))
    bo_key = asyncssh.read_private_key(str(access.credentials_dir(config, "bo") / "id_ed25519"))

    async def scenario():
        async def hold(reader, writer):
            await reader.read()
        try:
            node = await asyncio.start_server(hold, NODE_IP, 22)
            other = await asyncio.start_server(hold, "127.0.0.3", 22)
        except OSError:
            pytest.skip("port 22 of 127.0.0.2/3 is taken: the stand-in nodes need it")
        gateway = await access.start_gateway(config, lambda: ["ann", "bo"], StudentLimits(config), "127.0.0.1", port)
        seen = []
        try:
            async with asyncssh.connect("127.0.0.1", port, username="ann", client_keys=[ann_key],
                                        known_hosts=None) as ann, \
                    asyncssh.connect("127.0.0.1", port, username="bo", client_keys=[bo_key],
                                     known_hosts=None) as bo:
                opened = [await ann.open_connection(NODE_IP, 22) for _ in range(2)]
                try:
                    await ann.open_connection(NODE_IP, 22)
                    seen.append("third opened")
                except asyncssh.ChannelOpenError as e:
                    seen.append(e.reason)
                await bo.open_connection("127.0.0.3", 22)  # Bo has his own share
                seen.append("bo opened")
                opened[0][1].close()  # one closed: Ann may open another
                await asyncio.sleep(0.3)
                await ann.open_connection(NODE_IP, 22)
                seen.append("again opened")
        finally:
            gateway.close()
            node.close()
            other.close()
        return seen

    assert asyncio.run(scenario()) == ["SSH connections through the gateway at once per student: at most 2; "
                                       "close one first", "bo opened", "again opened"]


def run_portal(config, scenario, clock=None):
    app = portal.Portal(config, clock=clock) if clock else portal.Portal(config)

    async def go():
        async with TestClient(TestServer(app.app())) as client:
            return await scenario(client, app)
    return asyncio.run(go())


def test_a_flood_of_keystrokes_waits_in_the_browser_and_another_students_page_still_answers(a_class):  # noqa: F811
    config = a_class
    ann, bo = access.token(config, "ann"), access.token(config, "bo")
    message = json.dumps({"type": "input", "data": "x" * 60000})

    async def scenario(client, app):
        node = await silent_node(config)
        try:
            before = rss_mib()
            ws = await client.ws_connect(f"/s/{ann}/term/swr1")
            sent = 0
            while sent < FLOOD_MIB << 20:  # until the portal stops taking keystrokes
                try:
                    await asyncio.wait_for(ws.send_str(message), 2)
                except asyncio.TimeoutError:
                    break
                sent += len(message)
            started = time.monotonic()
            page = await client.get(f"/s/{bo}")  # while Ann's flood waits
            took = time.monotonic() - started
            grown = rss_mib() - before
            # the browser is killed mid-flood: its kernel resets the connection
            ws.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            ws._response.connection.transport.abort()
            for _ in range(50):  # its browser's terminal ends, and with it the slot it held
                if not app.state.limits.held["terminals", "ann"]:
                    break
                await asyncio.sleep(0.1)
            return page.status, took, sent, grown, app.state.limits.held["terminals", "ann"]
        finally:
            node.close()

    status, took, sent, grown, held = run_portal(config, scenario)
    assert sent < 16 << 20, f"the portal took {sent >> 20} MiB of keystrokes for a node that reads nothing"
    assert grown < RSS_BOUND_MIB, f"the portal grew by {grown:.0f} MiB"
    assert status == 200 and took < 0.5, f"Bo's page took {took:.2f} s while Ann flooded"
    assert held == 0, "the terminal of a browser that went away still counts"


def test_terminals_checks_and_hints_are_capped_per_student(a_class, monkeypatch):  # noqa: F811
    config = with_limits(a_class, max_terminals=2, hints_per_minute=3)
    ann, bo = access.token(config, "ann"), access.token(config, "bo")
    for lab in ("ann", "bo"):
        exercises.save_state(access.lab_config_of(config, lab), lab, {"exercise": "services"})
    import threading
    gate = {"ann": threading.Event(), "bo": threading.Event()}
    running = {"ann": threading.Event(), "bo": threading.Event()}

    def slow_check(scoped, lab, exercise, wait, kept=None):
        running[lab].set()
        gate[lab].wait(20)  # a check waiting for a slow swarm
        return []
    monkeypatch.setattr(exercises, "check", slow_check)
    monkeypatch.setattr(exercises, "hint", lambda scoped, lab, exercise: {"hint": "h", "number": 1, "of": 3})
    now = [1000.0]

    async def scenario(client, app):
        node = await silent_node(config)
        out = {}
        try:
            terms = [await client.ws_connect(f"/s/{ann}/term/swr1") for _ in range(2)]
            third = await client.get(f"/s/{ann}/term/swr1", headers={"Connection": "Upgrade", "Upgrade": "websocket",
                                                                      "Sec-WebSocket-Version": "13",
                                                                      "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
            out["third terminal"] = (third.status, (await third.text()).strip())
            first = asyncio.ensure_future(client.post(f"/s/{ann}/check"))
            assert await asyncio.to_thread(running["ann"].wait, 10)
            now[0] += portal_student.CHECK_EVERY  # spaced as the page allows, but the first is still running
            second = await client.post(f"/s/{ann}/check")
            out["second check"] = (second.status, (await second.json())["error"])
            started = time.monotonic()
            bo_check = asyncio.ensure_future(client.post(f"/s/{bo}/check"))
            page = await client.get(f"/s/{bo}")
            out["bo's page"] = (page.status, time.monotonic() - started < 0.5)
            gate["ann"].set()
            gate["bo"].set()
            out["checks"] = ((await first).status, (await bo_check).status)
            out["hints"] = [(await client.post(f"/s/{ann}/hint")).status for _ in range(4)]
            out["bo's hint"] = (await client.post(f"/s/{bo}/hint")).status
            for t in terms:
                await t.close()
        finally:
            node.close()
        return out

    seen = run_portal(config, scenario, clock=lambda: now[0])
    assert seen == {
        "third terminal": (429, "429 terminals at once per student: at most 2; close one first"),
        "second check": (429, "checks at once per student: at most 1; wait for the running one to finish"),
        "bo's page": (200, True),
        "checks": (200, 200),
        "hints": [200, 200, 200, 429],
        "bo's hint": 200,
    }


def test_bad_requests_get_400_405_413_and_every_answer_the_security_headers(a_class):  # noqa: F811
    config = with_limits(a_class, max_request_kib=4)
    ann, instructor = access.token(config, "ann"), access.instructor_token(config)

    async def scenario(client, app):
        out = {}
        for name, (method, path, body) in {
                "bad json": ("POST", f"/i/{instructor}/start", b"{not json"),
                "not an object": ("POST", f"/i/{instructor}/reset", b"[1, 2]"),
                "lab not a name": ("POST", f"/i/{instructor}/reset", b'{"lab": ["x"]}'),
                "too big": ("POST", f"/i/{instructor}/start", b'{"exercise": "' + b"x" * 8000 + b'"}'),
                "get a post": ("GET", f"/s/{ann}/check", None),
                "get a post, bad token": ("GET", "/s/nope/hint", None),
                "put the page": ("PUT", f"/s/{ann}", None)}.items():
            r = await client.request(method, path, data=body)
            out[name] = r.status
        page = await client.get(f"/s/{ann}")
        out["headers"] = {k: page.headers.get(k) for k in portal_web.SECURITY_HEADERS}
        return out

    seen = run_portal(config, scenario)
    assert seen.pop("headers") == portal_web.SECURITY_HEADERS
    assert seen == {"bad json": 400, "not an object": 400, "lab not a name": 400, "too big": 413,
                    "get a post": 405, "get a post, bad token": 405, "put the page": 405}
    csp = portal_web.SECURITY_HEADERS["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp
