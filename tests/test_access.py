"""The students' SSH gateway against a real asyncssh client on loopback: a student's key opens
port 22 of their own lab's node and nothing else, no shell, no other student's name; revoking
the credentials locks them out at once. The VM test drives it with OpenSSH's `ssh -J`."""

import asyncio
import os
import time
from pathlib import Path

import asyncssh
import pytest

from swarmlab import config as configuration
from swarmlab.classroom import access, cards, node_account, room as classroom
from swarmlab.classroom.limits import StudentLimits
from swarmlab.core import roster
from swarmlab.lab import model as labs
from tests.conftest import free_port, write_config

NODE_IP = "127.0.0.2"  # a loopback address of its own stands in for Ann's node


@pytest.fixture
def a_class(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the stand-in node listens on port 22")
    # libvirt's test driver: a reset or a status of these stand-in labs never reaches a real host's
    config = configuration.load(write_config(tmp_path / "swarmlab.toml", tmp_path / "state",
                                             libvirt={"uri": "test:///default"}))
    classroom.save(config, classroom.Classroom(1, [roster.Student("Ann", "ann"), roster.Student("Bo", "bo")]))
    for lab, ip in (("ann", NODE_IP), ("bo", "127.0.0.3")):
        labs.save_journal(config, labs.Lab(lab, [labs.Node("swr1", f"{lab}-swr1", "v", "52:54:00:00:00:01", ip,
                                                           f"swr1.{lab}.lab.swarmlab.test.")]))
        assert access.ensure_credentials(config, lab)
    assert not access.ensure_credentials(config, "ann")  # a rerun keeps them
    return config


async def _echo(reader, writer):
    writer.write(b"SSH-2.0-standin\r\n" + await reader.read(100))
    await writer.drain()
    writer.close()


def test_a_student_reaches_port_22_of_their_own_nodes_and_nothing_else(a_class):
    config = a_class
    port = free_port()
    ann_key = asyncssh.read_private_key(str(access.credentials_dir(config, "ann") / "id_ed25519"))

    async def scenario() -> dict:
        try:
            node = await asyncio.start_server(_echo, NODE_IP, 22)
        except OSError:  # an sshd of the machine holds *:22: it answers for the node just as well
            node = None
        gateway = await access.start_gateway(config, lambda: ["ann", "bo"], StudentLimits(config), "127.0.0.1", port)
        seen = {}
        try:
            async with asyncssh.connect("127.0.0.1", port, username="ann", client_keys=[ann_key],
                                        known_hosts=None) as conn:
                reader, writer = await conn.open_connection(NODE_IP, 22)
                writer.write(b"hello")
                seen["own node"] = await reader.read(100)
                for name, (host, p) in {"another lab": ("127.0.0.3", 22), "another port": (NODE_IP, 2377),
                                        "the lab host": ("127.0.0.1", port)}.items():
                    try:
                        await conn.open_connection(host, p)
                        seen[name] = "opened"
                    except asyncssh.ChannelOpenError as e:
                        seen[name] = e.reason
                try:
                    await conn.run("id", check=True)
                    seen["shell"] = "ran"
                except asyncssh.Error as e:
                    seen["shell"] = type(e).__name__
            for user in ("bo", "root"):
                try:
                    async with asyncssh.connect("127.0.0.1", port, username=user, client_keys=[ann_key],
                                                known_hosts=None):
                        seen[user] = "in"
                except asyncssh.PermissionDenied:
                    seen[user] = "denied"
            access.revoke(config, "ann")  # as `class down` does
            try:
                async with asyncssh.connect("127.0.0.1", port, username="ann", client_keys=[ann_key],
                                            known_hosts=None):
                    seen["after revoke"] = "in"
            except asyncssh.PermissionDenied:
                seen["after revoke"] = "denied"
        finally:
            gateway.close()
            if node is not None:
                node.close()
        return seen

    seen = asyncio.run(scenario())
    assert seen.pop("own node").startswith(b"SSH-2.0-")  # an sshd's greeting came back through the gateway
    assert seen == {"another lab": "only port 22 of your own lab's nodes", "another port":
                    "only port 22 of your own lab's nodes", "the lab host": "only port 22 of your own lab's nodes",
                    "shell": "ChannelOpenError", "bo": "denied", "root": "denied", "after revoke": "denied"}


def test_the_node_account_command_quotes_the_key_and_is_idempotent():
    command = node_account.node_account_command("ssh-ed25519 AAAA'; rm -rf / #")
    # the key travels as one quoted argument, never as shell syntax
    assert " sh 'ssh-ed25519 AAAA'\"'\"'; rm -rf / #' '" in command.shell
    assert "useradd -m -s /bin/bash -G docker" in command.shell and 'id "$u"' in command.shell
    assert command.parts[-2:] == (node_account.history_hook(), node_account.ssh_command())  # each one argument


def test_the_history_hook_records_each_typed_command_with_its_time_once(tmp_path):
    """The hook as the node's bash runs it, in a bash of this machine: an interactive shell fed
    commands, a second login that must not record the first one's commands again."""
    import re
    import subprocess
    hook = tmp_path / "hook.bash"
    record = tmp_path / "record"
    hook.write_text(node_account.history_hook().replace('"student"', f'"{os.environ.get("USER", "root")}"')
                    .replace(node_account.HISTORY_RECORD, str(record)))
    env = {**os.environ, "HOME": str(tmp_path), "HISTFILE": str(tmp_path / "bash_history"),
           "USER": os.environ.get("USER", "root")}
    typed = 'echo one\necho one\n echo spaced\necho "a\nb" | cat\n\nfalse\n'
    for commands in (typed, "echo again\n"):
        subprocess.run(["bash", "--rcfile", str(hook), "-i"], input=commands, text=True, env=env,
                       capture_output=True, check=False)
    lines = record.read_text().splitlines()
    assert [line.split("\t", 1)[1] for line in lines] == ["echo one", "echo one", " echo spaced",
                                                          'echo "a b" | cat', "false", "echo again"]
    assert all(re.fullmatch(r"\d{10}", line.split("\t")[0]) for line in lines)


def test_a_command_given_to_ssh_is_recorded_then_run_and_a_login_gets_a_shell(tmp_path):
    import subprocess
    wrapper = tmp_path / "ssh-command"
    record = tmp_path / "record"
    wrapper.write_text(node_account.ssh_command().replace(node_account.HISTORY_RECORD, str(record)))
    env = {**os.environ, "SHELL": "/bin/sh", "SSH_ORIGINAL_COMMAND": "echo ran; printf 'a\tb\n'"}
    ran = subprocess.run(["sh", str(wrapper)], env=env, capture_output=True, text=True)
    assert ran.stdout == "ran\na\tb\n"
    when, line = record.read_text().rstrip("\n").split("\t")
    assert when.isdigit() and line == "echo ran; printf 'a b '"
    login = subprocess.run(["sh", str(wrapper)], env={**env, "SSH_ORIGINAL_COMMAND": ""}, input="echo shell\n",
                           capture_output=True, text=True)
    assert login.stdout == "shell\n" and len(record.read_text().splitlines()) == 1


def test_the_students_ssh_config_goes_through_the_gateway_with_verified_host_keys(a_class, tmp_path):
    config = a_class
    folders = cards.write_card_folders(config, tmp_path / "out")
    assert [f.name for f in folders] == ["swarmlab-ann", "swarmlab-bo"]
    text = (folders[0] / "ssh_config").read_text()
    assert f"Host swarmlab-gateway\n    HostName 127.0.0.1\n    Port {config.gateway_port}\n    User ann\n" in text
    assert f"Host swr1\n    HostName {NODE_IP}\n    User student\n" in text and "ProxyJump swarmlab-gateway" in text
    assert text.count("StrictHostKeyChecking yes") == 2 and "IdentityFile id_ed25519" in text
    gateway_key = access.gateway_host_key(config).with_suffix(".pub").read_text().split()[1]
    assert gateway_key in (folders[0] / "known_hosts").read_text()
    assert all((f / "id_ed25519").stat().st_mode & 0o077 == 0 for f in folders)


def test_cards_say_where_the_running_portal_listens_with_its_fingerprint(a_class, tmp_path):
    import subprocess
    import sys

    from swarmlab.classroom import portal_endpoint
    from tests.conftest import swarmlab
    config = a_class
    idle = cards.cards(config)[0]
    assert not idle["portal_running"] and idle["gateway"] == f"ann@127.0.0.1:{config.gateway_port}"
    cert, _ = portal_endpoint.self_signed_certificate(config, "10.250.0.1")
    fingerprint = portal_endpoint.fingerprint(cert)
    assert len(fingerprint) == 95 and fingerprint.count(":") == 31
    # a portal started with its own address and ports records them; the cards follow
    portal = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "swarmlab-portal-standin"])
    while b"standin" not in Path(f"/proc/{portal.pid}/cmdline").read_bytes():  # until its exec is complete
        time.sleep(0.05)
    try:
        portal_endpoint.record(config, portal_endpoint.Endpoint("10.250.0.1", 9443, 2022, fingerprint, "0.0.0.0",
                                                                portal.pid))
        card = cards.cards(config)[0]
        assert card["portal_running"] and card["fingerprint"] == fingerprint
        assert card["gateway"] == "ann@10.250.0.1:2022"
        assert card["portal"] == f"https://10.250.0.1:9443/s/{access.token(config, 'ann')}"
        folder = cards.write_card_folders(config, tmp_path / "out")[0]
        assert "HostName 10.250.0.1\n    Port 2022\n" in (folder / "ssh_config").read_text()
        assert (folder / "known_hosts").read_text().startswith("[10.250.0.1]:2022 ssh-ed25519 ")
        assert fingerprint in (folder / "portal.txt").read_text()
        assert (folder / "portal.txt").stat().st_mode & 0o077 == 0
        shown = swarmlab("class", "cards", "--html", str(tmp_path / "cards.html"), config=tmp_path / "swarmlab.toml")
        assert shown.returncode == 0 and f"SHA-256 {fingerprint}" in shown.stdout, shown.stderr
        assert fingerprint in (tmp_path / "cards.html").read_text()
    finally:
        portal.kill()
        portal.wait()
    assert not cards.cards(config)[0]["portal_running"]  # a portal that died is not where students go
    gone = swarmlab("class", "cards", config=tmp_path / "swarmlab.toml")
    assert "no portal runs now" in gone.stderr
    # every student's token is in cards.html, names and hosts in class.json: 0600
    for path in (tmp_path / "cards.html", config.state_dir / "class.json"):
        assert path.stat().st_mode & 0o077 == 0, path


def test_a_new_instructor_token_replaces_the_old_one(a_class):
    config = a_class
    first = access.instructor_token(config)
    assert access.instructor_token(config) == first  # kept while nothing replaces it
    second = access.new_instructor_token(config)
    assert second != first and access.instructor_token(config) == second
    assert (config.state_dir / "portal" / "instructor-token").stat().st_mode & 0o077 == 0
