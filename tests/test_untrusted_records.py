"""A student is root on their nodes and writes their own history file: nothing in it may stop a
class operation, break the pages' JSON, drive the instructor's terminal or make the board slow.
The last test plays a node whose history is poisoned, and removes the class all the same."""

import asyncio
import json
import math
import os
import threading
from pathlib import Path

import asyncssh
import pytest

from swarmlab import config as configuration
from swarmlab.classroom import class_log, typed_history
from swarmlab.classroom import room as classroom
from swarmlab.core import untrusted
from swarmlab.core.typed_commands import MOST_COMMANDS, parse_record
from swarmlab.lab import model as labs
from tests.conftest import swarmlab, write_config
from tests.standin_ssh import AcceptKeys
from tests.test_access import NODE_IP, a_class  # noqa: F401 (the fixture: a class of Ann and Bo on loopback)

NOW = 1_800_000_000.0
POISON = ("²\tdocker ps\n"  # str.isdigit() takes it, float() does not
          + "9" * 400 + "\tdocker node ls\n"  # float() makes it Infinity, which JSON cannot carry
          + "1700000000\t\x1b]0;owned\x07\x1b[2Jclear the instructor's screen\n"
          + "1700000001\tdocker service ls\n"
          + "4102444800\tdocker info\n")  # the year 2100: a clock far ahead, or a forgery


def test_a_poisoned_record_gives_only_sane_events():
    events = parse_record(POISON, "swr1", "ann", now=NOW)
    assert [(e["at"], e["line"]) for e in events] == [
        (1700000000.0, "\ufffd]0;owned\ufffd\ufffd[2Jclear the instructor's screen"),
        (1700000001.0, "docker service ls"),
        (NOW, "docker info")]
    json.dumps(events, allow_nan=False)  # the browser's JSON.parse takes it


def test_a_record_of_many_short_lines_is_read_as_its_last_commands():
    text = "".join(f"{1700000000 + i}\tls\n" for i in range(MOST_COMMANDS * 5))
    events = parse_record(text, "swr1", "ann", now=NOW)
    assert len(events) == MOST_COMMANDS and events[-1]["at"] == 1700000000 + MOST_COMMANDS * 5 - 1


def test_printable_leaves_text_and_tabs_and_replaces_controls():
    assert untrusted.printable("docker\tps ✓ кириллица") == "docker\tps ✓ кириллица"
    assert untrusted.printable("a\x1b[31mb\x9bc\x7f\r\n") == "a\ufffd[31mb\ufffdc\ufffd\ufffd\ufffd"


def test_the_class_record_skips_events_without_a_finite_time_and_reads_only_what_was_appended(tmp_path):
    config = type("C", (), {"state_dir": tmp_path})()
    good = {"at": 1.5, "lab": "ann", "kind": "reset"}
    class_log.path(config).write_text(
        json.dumps(good) + "\n" + '{"at": Infinity, "lab": "ann", "kind": "reset"}\n'
        + '{"at": "12", "lab": "ann", "kind": "reset"}\n' + '{"at": true, "lab": "ann", "kind": "reset"}\n'
        + '{"at": 2, "lab": "ann", "ki')  # a line still being written
    assert class_log.read(config) == [good]
    with open(class_log.path(config), "a") as f:
        f.write('nd": "hint"}\n')
    assert class_log.read(config) == [good, {"at": 2, "lab": "ann", "kind": "hint"}]
    class_log.append(config, [{"at": 3, "lab": "bo", "kind": "reset"}])
    assert [e["at"] for e in class_log.read(config)] == [1.5, 2, 3]
    replaced = class_log.path(config).with_suffix(".new")  # `class up` starts a new record
    replaced.write_text(json.dumps({"at": 9, "lab": "cy", "kind": "reset"}) + "\n")
    os.replace(replaced, class_log.path(config))
    assert class_log.read(config) == [{"at": 9, "lab": "cy", "kind": "reset"}]


class PoisonedNode(AcceptKeys):
    user = "root"


async def answers_with_poison(process):
    process.stdout.write(POISON)
    process.exit(0)


async def serve(ip: str, key):
    return await asyncssh.create_server(PoisonedNode, ip, 22, server_host_keys=[key],
                                        process_factory=answers_with_poison)


@pytest.fixture
def poisoned_nodes(a_class, pdns_server):  # noqa: F811
    """Ann's and Bo's node on 127.0.0.2 and .3:22, both answering every command with POISON; the
    class's config gets a lab key of its own and a real PowerDNS with the lab zone."""
    client, server, api_key = pdns_server
    client.ensure_zone("lab.swarmlab.test.")
    here = Path(a_class.source).parent
    (here / "pdns-key").write_text(api_key)
    (here / "pdns-key").chmod(0o600)
    key_file = here / "id_ed25519"
    key_file.write_bytes(asyncssh.generate_private_key("ssh-ed25519").export_private_key())
    key_file.chmod(0o600)
    config = configuration.load(write_config(
        Path(a_class.source), a_class.state_dir, ssh={"key": str(key_file)}, libvirt={"uri": "test:///default"},
        dns={"api_url": f"http://127.0.0.1:{server.api_port}", "api_key_file": str(here / "pdns-key")}))
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    servers = []
    for lab, ip in (("ann", NODE_IP), ("bo", "127.0.0.3")):
        key = asyncssh.generate_private_key("ssh-ed25519")
        known = labs.known_hosts(config, lab)
        known.parent.mkdir(parents=True, exist_ok=True)
        known.write_text(f"{ip} {key.export_public_key().decode().strip()}\n")
        try:
            servers.append(asyncio.run_coroutine_threadsafe(serve(ip, key), loop).result(10))
        except OSError:
            pytest.skip(f"port 22 of {ip} is taken: the stand-in node needs it")
    yield config
    for server in servers:
        loop.call_soon_threadsafe(server.close)
    loop.call_soon_threadsafe(loop.stop)


def test_class_down_removes_every_lab_whatever_their_records_hold(poisoned_nodes):
    config = poisoned_nodes
    assert typed_history.collect(config, "ann") == 3
    results = classroom.class_down(config)
    assert [(r.lab, r.ok, r.error) for r in results] == [("ann", True, None), ("bo", True, None)]
    assert classroom.load(config) is None  # the class is over: the next one can start
    events = class_log.read(config)
    assert all(math.isfinite(e["at"]) for e in events)
    assert sorted({e["lab"] for e in events if e["kind"] == "command"}) == ["ann", "bo"]


def test_class_history_prints_no_escape_sequence(poisoned_nodes):
    config = poisoned_nodes
    typed_history.collect(config, "ann")
    class_log.record(config, "", "class", students=[["Ann", "ann"], ["Bo", "bo"]])
    shown = swarmlab("class", "history", "ann", config=Path(config.source), check=True).stdout
    assert "clear the instructor's screen" in shown and "\x1b" not in shown and "\x07" not in shown


def test_the_instructors_history_comes_a_page_at_a_time_the_last_by_default():
    from swarmlab.classroom.portal_instructor import HISTORY_PAGE, history_page
    assert history_page({}, 90_000) == (HISTORY_PAGE, 90_000 - HISTORY_PAGE)
    assert history_page({}, 12) == (HISTORY_PAGE, 0)
    assert history_page({"limit": "50", "offset": "100"}, 90_000) == (50, 100)
    assert history_page({"limit": "999999", "offset": "x"}, 90_000) == (HISTORY_PAGE, 90_000 - HISTORY_PAGE)
    assert history_page({"offset": "10**9"}, 10) == (HISTORY_PAGE, 0)
