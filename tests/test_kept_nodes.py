"""A Check over kept sessions costs the guest one `docker system dial-stdio` for any number of
Checks, not an SSH login per node and a process per read; a reset of the lab drops what was
kept. A stand-in node on 127.0.0.4:22 (asyncssh) counts its logins and its engine sessions,
and answers the Engine API over dial-stdio as dockerd would."""

import asyncio
import json
import threading
import time

import asyncssh
import pytest

from swarmlab import config as configuration
from swarmlab.lab import model as labs
from swarmlab.lab.kept_nodes import KeptNodes
from swarmlab.teach.exercises import gather
from tests.conftest import write_config
from tests.standin_ssh import AcceptKeys

NODE_IP = "127.0.0.4"
SWR1 = {"ID": "n1", "Description": {"Hostname": "swr1"}, "Status": {"State": "ready"},
        "Spec": {"Role": "manager", "Availability": "active"}, "ManagerStatus": {"Leader": True}}


class Counted(AcceptKeys):
    user = "root"


engine_sessions = []


async def node_process(process):
    if process.command != "docker system dial-stdio":
        process.exit(127)
        return
    engine_sessions.append(process.command)
    try:
        while True:  # HTTP/1.1 keep-alive, one request after another
            head = await process.stdin.readuntil("\r\n\r\n")
            path = head.split()[1]
            body = json.dumps([SWR1] if path == "/nodes" else [])
            process.stdout.write(f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 f"Content-Length: {len(body)}\r\n\r\n{body}")
    except (asyncio.IncompleteReadError, asyncssh.Error, ConnectionError):
        pass
    process.exit(0)


@pytest.fixture
def lab_on_a_standin_node(tmp_path):
    key = tmp_path / "id_ed25519"
    key.write_bytes(asyncssh.generate_private_key("ssh-ed25519").export_private_key())
    key.chmod(0o600)
    config = configuration.load(write_config(tmp_path / "swarmlab.toml", tmp_path / "state",
                                             ssh={"key": str(key)}, libvirt={"uri": "test:///default"}))
    lab = labs.Lab("kp", [labs.Node("swr1", "kp-swr1", "v", "52:54:00:00:00:04", NODE_IP, "swr1.kp.test.")])
    labs.save_journal(config, lab)
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    known = labs.known_hosts(config, "kp")
    known.parent.mkdir(parents=True, exist_ok=True)
    known.write_text(f"{NODE_IP} {host_key.export_public_key().decode().strip()}\n")
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    async def serve():
        return await asyncssh.create_server(Counted, NODE_IP, 22, server_host_keys=[host_key],
                                            process_factory=node_process, encoding="utf-8")
    try:
        server = asyncio.run_coroutine_threadsafe(serve(), loop).result(10)
    except OSError:
        pytest.skip(f"port 22 of {NODE_IP} is taken: the stand-in node needs it")
    Counted.logins, engine_sessions[:] = 0, []
    yield config, lab
    loop.call_soon_threadsafe(server.close)
    loop.call_soon_threadsafe(loop.stop)


def test_checks_over_kept_sessions_log_in_once_and_start_one_engine_session(lab_on_a_standin_node):
    config, lab = lab_on_a_standin_node
    kept = KeptNodes()
    for _ in range(3):  # three Checks
        conns = kept.connect(config, lab)
        facts = gather(conns, lab, None, kept)
        assert [n["ID"] for n in facts.nodes] == ["n1"]
    assert (Counted.logins, len(engine_sessions)) == (1, 1)
    # the lab is reset: what was kept goes, and the next Check logs in afresh
    time.sleep(0.01)
    (labs.lab_dir(config, "kp") / "reset-at").write_text(str(time.time()))
    gather(kept.connect(config, lab), lab, None, kept)
    assert (Counted.logins, len(engine_sessions)) == (2, 2)
    kept.close()


def test_without_kept_sessions_each_check_starts_its_own_engine_session(lab_on_a_standin_node):
    """The premise of the test above: gather alone opens a session per Check."""
    config, lab = lab_on_a_standin_node
    kept = KeptNodes()
    conns = kept.connect(config, lab)
    for _ in range(3):
        gather(conns, lab, None)
    assert len(engine_sessions) == 3
    kept.close()
