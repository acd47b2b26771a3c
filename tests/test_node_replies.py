"""A student is root on their nodes, so whatever a node answers is untrusted: a command or an
Engine API reply that drips forever or floods is cut off at its deadline or its size cap, and
the caller (a status read, a Check worker the class shares) gets a one-line error instead of
waiting. A real SSH server (asyncssh, in a thread) stands in for the node."""

import asyncio
import socket
import threading
import time

import asyncssh
import paramiko
import pytest
from fabric import Connection

from swarmlab.adapters import engine_api, remote
from swarmlab.core.command import Command
from tests.conftest import free_port
from tests.standin_ssh import AcceptKeys


async def node_process(process):
    """What the stand-in node does for each command it is given."""
    command = process.command
    try:
        if command == "drip":  # a byte now and then, forever: each read is quick, the whole never ends
            while True:
                process.stdout.write("x")
                await asyncio.sleep(0.1)
        elif command == "flood":
            chunk = "y" * 65536
            while True:
                process.stdout.write(chunk)
                await process.stdout.drain()
        elif command == "fails":
            process.stdout.write("partial\n")
            process.stderr.write("first\nsecond\nit broke\n")
            process.exit(3)
        else:
            process.stdout.write(f"ran {command}\n")
            process.exit(0)
    except (asyncssh.BreakReceived, asyncssh.TerminalSizeChanged, BrokenPipeError, ConnectionError):
        pass


class AnyKey(AcceptKeys):
    user = None


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """A fabric connection to the stand-in node."""
    port = free_port()
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    async def serve():
        server = await asyncssh.create_server(AnyKey, "127.0.0.1", port, process_factory=node_process,
                                              server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")])
        ready.set()
        return server
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(serve(), loop)
    assert ready.wait(10)
    key = tmp_path_factory.mktemp("node") / "id_ed25519"
    key.write_bytes(asyncssh.generate_private_key("ssh-ed25519").export_private_key())
    conn = Connection("127.0.0.1", user="root", port=port, connect_kwargs={
        "key_filename": str(key), "look_for_keys": False, "allow_agent": False})
    conn.client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    conn.open()
    yield conn
    conn.close()
    loop.call_soon_threadsafe(loop.stop)


def test_a_command_answers_with_its_output_and_a_failure_names_its_last_lines(node):
    assert remote.run(node, Command("hello")) == "ran hello\n"
    with pytest.raises(remote.CommandFailed) as failed:
        remote.run(node, Command("fails"))
    assert failed.value.exit_code == 3 and str(failed.value).endswith("exited 3: first | second | it broke")
    assert remote.run(node, Command("fails"), check=False) == "partial\n"


def test_a_command_that_drips_forever_ends_at_its_deadline(node):
    began = time.monotonic()
    with pytest.raises(remote.RemoteError, match="did not finish within 1 s"):
        remote.run(node, Command("drip"), timeout=1)
    assert time.monotonic() - began < 4
    assert remote.run(node, Command("after")) == "ran after\n"  # the connection is still good


def test_a_command_that_floods_is_cut_off_at_the_size_cap(node):
    began = time.monotonic()
    with pytest.raises(remote.ReplyTooLarge, match="more than 1024 KiB"):
        remote.run(node, Command("flood"), timeout=60, most_bytes=1 << 20)
    assert time.monotonic() - began < 10


def fake_engine(answer) -> tuple[engine_api.EngineAPI, socket.socket]:
    """An EngineAPI whose channel is one end of a socket pair; `answer(sock)` plays the engine
    on the other end in a thread."""
    ours, theirs = socket.socketpair()
    api = engine_api.EngineAPI.__new__(engine_api.EngineAPI)
    api.host, api.timeout, api.channel = "swr1", 1, ours
    api.socket = engine_api._BoundedSocket(ours, 1 << 20)
    import http.client
    api.http = http.client.HTTPConnection("docker")
    api.http.sock = api.socket

    def engine():
        theirs.recv(65536)  # the request
        try:
            answer(theirs)
        except OSError:
            pass  # we hung up on it
    threading.Thread(target=engine, daemon=True).start()
    return api, theirs


def test_an_engine_reply_that_drips_is_cut_off_at_the_requests_deadline():
    def drip(sock):
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
        while True:
            sock.sendall(b" ")
            time.sleep(0.1)  # far quicker than the per-read timeout: only an overall deadline stops it
    api, _ = fake_engine(drip)
    began = time.monotonic()
    with pytest.raises(engine_api.EngineAPIBroken, match="GET /nodes failed"):
        api.request("GET", "/nodes")
    assert time.monotonic() - began < 3


def test_an_engine_reply_that_floods_is_cut_off_at_the_size_cap():
    def flood(sock):
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n[")
        while True:
            sock.sendall(b"0," * 32768)
    api, _ = fake_engine(flood)
    with pytest.raises(engine_api.EngineAPIBroken, match="more than 1024 KiB"):
        api.request("GET", "/tasks")


def test_an_engine_reply_within_its_bounds_is_read_whole_and_the_session_kept():
    def two_answers(sock):
        for body in (b'[{"ID": "n1"}]', b'{"Swarm": {}}'):
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
            if body.startswith(b"["):
                sock.recv(65536)  # the second request, on the same session
    api, _ = fake_engine(two_answers)
    assert api.request("GET", "/nodes") == [{"ID": "n1"}]
    assert api.request("GET", "/info") == {"Swarm": {}}
