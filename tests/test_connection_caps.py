"""One laptop cannot take every socket of the portal's process, nor guess tokens at leisure: the
pages and the gateway cap the connections one address keeps open, an address that names no
valid token too often waits, and a token is found without reading every student's file."""

import asyncio
import dataclasses
import resource
import socket

import asyncssh
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from swarmlab.classroom import access, connection_caps, portal
from swarmlab.classroom.limits import AddressLimits, StudentLimits
from tests.conftest import free_port
from tests.test_access import a_class  # noqa: F401 (the fixture: a class of Ann and Bo on loopback)


async def still_open(reader: asyncio.StreamReader) -> bool:
    """Whether the server kept the connection (it answers nothing until asked)."""
    try:
        return await asyncio.wait_for(reader.read(1), 0.3) != b""
    except asyncio.TimeoutError:
        return True
    except ConnectionError:
        return False


def test_the_pages_cap_the_connections_one_address_keeps_open(a_class):  # noqa: F811
    config = dataclasses.replace(a_class, max_connections_per_address=3)
    port = free_port()

    async def scenario():
        pages = portal.Portal(config)
        runner = web.AppRunner(pages.app())
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", port))
        sock.listen(16)
        server = await connection_caps.serve_capped(runner, sock, None, pages.state.addresses)
        try:
            held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
            over = await asyncio.open_connection("127.0.0.1", port)
            kept = [await still_open(r) for r, _ in held] + [await still_open(over[0])]
            other = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.9", 0))
            other[1].write(b"GET /static/nothing HTTP/1.1\r\nHost: x\r\n\r\n")
            answered = (await asyncio.wait_for(other[0].readline(), 5)).split()[1]
            held[0][1].close()  # one closed: the address may connect again
            await asyncio.sleep(0.2)
            again = await asyncio.open_connection("127.0.0.1", port)
            return kept, answered, await still_open(again[0])
        finally:
            server.close()
            await runner.cleanup()

    kept, answered, again = asyncio.run(scenario())
    assert kept == [True, True, True, False]
    assert answered == b"404" and again  # another address is served; a freed place is taken again


def test_the_gateway_caps_the_connections_one_address_keeps_open(a_class):  # noqa: F811
    config = dataclasses.replace(a_class, max_connections_per_address=2)
    port = free_port()
    ann_key = asyncssh.read_private_key(str(access.credentials_dir(config, "ann") / "id_ed25519"))

    async def scenario():
        gateway = await access.start_gateway(config, lambda: ["ann", "bo"], StudentLimits(config), "127.0.0.1",
                                             port, addresses=AddressLimits(config))
        try:
            silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]  # never log in
            try:
                async with asyncssh.connect("127.0.0.1", port, username="ann", client_keys=[ann_key],
                                            known_hosts=None, login_timeout=5):
                    refused = False
            except (asyncssh.Error, OSError):
                refused = True
            async with asyncssh.connect("127.0.0.1", port, username="ann", client_keys=[ann_key], known_hosts=None,
                                        local_addr=("127.0.0.9", 0)):
                other = True
            for _, writer in silent:
                writer.close()
            await asyncio.sleep(0.3)
            async with asyncssh.connect("127.0.0.1", port, username="ann", client_keys=[ann_key], known_hosts=None):
                again = True
            return refused, other, again
        finally:
            gateway.close()

    assert asyncio.run(scenario()) == (True, True, True)


def test_an_address_that_guesses_tokens_waits_and_the_others_do_not(a_class):  # noqa: F811
    config = dataclasses.replace(a_class, guesses_per_minute=5)
    ann = access.token(config, "ann")

    async def scenario():
        app = portal.Portal(config)
        async with TestClient(TestServer(app.app())) as client:
            guesses = [(await client.get(f"/s/guess{i}")).status for i in range(6)]
            own = await client.get(f"/s/{ann}/nodes")  # the same address, a right token: it waits too
            app.state.addresses.guesses.clear()  # another address, as far as the limit can tell
            later = await client.get(f"/s/{ann}/nodes")
            return guesses, own.status, own.headers.get("Retry-After"), later.status

    guesses, own, retry, later = asyncio.run(scenario())
    assert guesses == [403] * 5 + [429]
    assert own == 429 and int(retry) > 0 and later == 200


def test_a_token_is_found_without_reading_every_file_and_a_revoked_one_stops_at_once(a_class, monkeypatch):  # noqa: F811
    from swarmlab.classroom.portal_tokens import TokenBook
    config = a_class
    book, ann, bo = TokenBook(config), access.token(config, "ann"), access.token(config, "bo")
    reads = []
    real = access.token
    monkeypatch.setattr(access, "token", lambda c, lab: reads.append(lab) or real(c, lab))
    assert [book.lab_of(t) for t in (ann, bo, "nope", ann)] == ["ann", "bo", None, "ann"]
    assert reads == ["ann", "bo"]  # read once, not at each request
    access.revoke(config, "bo")  # `class down` of Bo's lab
    assert book.lab_of(bo) is None and book.lab_of(ann) == "ann"


def test_the_portal_raises_its_open_files_limit_to_the_hard_one():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
        raised = connection_caps.raise_open_files_limit()
        assert raised == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert raised == (hard if hard != resource.RLIM_INFINITY else 1 << 20)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture(autouse=True)
def _no_leftover_loop():
    yield
    asyncio.set_event_loop(None)
