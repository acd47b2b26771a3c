"""known_hosts: recorded at first contact without losing lines to parallel connections, and a
changed key is refused."""

import threading

import paramiko
import pytest

from swarmlab.adapters.remote import Jump, RecordHostKey


def test_parallel_first_contacts_all_land_in_known_hosts(tmp_path):
    """paramiko's AutoAddPolicy rewrote the whole file from each client's copy: parallel
    connections in `up` dropped each other's lines, and strict `swarmlab ssh` then failed."""
    path = tmp_path / "known_hosts"
    path.touch()
    keys = {f"10.77.0.{i}": paramiko.ECDSAKey.generate() for i in range(10, 30)}
    start = threading.Barrier(len(keys))

    def contact(host, key):
        client = paramiko.SSHClient()
        client.get_host_keys().load(str(path))
        start.wait()
        RecordHostKey(path).missing_host_key(client, host, key)
        assert client.get_host_keys().lookup(host)

    threads = [threading.Thread(target=contact, args=item) for item in keys.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    recorded = paramiko.HostKeys(str(path))
    assert {h: recorded.lookup(h)[k.get_name()] for h, k in keys.items()} == keys
    assert len(path.read_text().splitlines()) == len(keys)


def test_a_key_recorded_meanwhile_must_match(tmp_path):
    path = tmp_path / "known_hosts"
    first, other = paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()
    path.write_text(f"10.77.0.10 {first.get_name()} {first.get_base64()}\n")
    client = paramiko.SSHClient()  # loaded before the line was there
    with pytest.raises(paramiko.BadHostKeyException):
        RecordHostKey(path).missing_host_key(client, "10.77.0.10", other)
    RecordHostKey(path).missing_host_key(client, "10.77.0.10", first)  # the same key: fine, not written twice
    assert len(path.read_text().splitlines()) == 1


def test_a_key_read_out_of_band_is_recorded_and_then_enforced(tmp_path):
    from swarmlab.adapters.remote import record_host_key
    path = tmp_path / "lab" / "known_hosts"
    key, impostor = paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()
    assert record_host_key(path, "10.77.0.10", f"{key.get_name()} {key.get_base64()} root@swr1\n")
    assert path.read_text() == f"10.77.0.10 {key.get_name()} {key.get_base64()}\n"
    assert path.stat().st_mode & 0o077 == 0
    assert not record_host_key(path, "10.77.0.11", "not a key")
    # the first SSH contact now meets a recorded key: an impostor is refused, not trusted
    with pytest.raises(paramiko.BadHostKeyException):
        RecordHostKey(path).missing_host_key(paramiko.SSHClient(), "10.77.0.10", impostor)


def test_the_jump_to_another_hosts_nodes_is_the_same_for_paramiko_and_openssh(tmp_path):
    jump = Jump.parse("admin@h2.example:2222", tmp_path / "lab-key", tmp_path / "known_hosts")
    assert (jump.user, jump.host, jump.port) == ("admin", "h2.example", 2222)
    hop = jump.proxy_command()
    # our key only, host keys recorded in our own file, never a password prompt
    assert f"-i {tmp_path / 'lab-key'} -o IdentitiesOnly=yes" in hop and "-o BatchMode=yes" in hop
    assert f"UserKnownHostsFile={tmp_path / 'known_hosts'}" in hop and hop.endswith("-p 2222 -W %h:%p admin@h2.example")
    assert "-i" not in Jump.parse("root@h3", None, tmp_path / "k").proxy_command()  # root's own keys and agent


def test_an_engine_api_error_never_shows_a_secret_the_engine_echoes():
    """A join's body holds its token; an engine that quotes it back must not put it on screen."""
    from swarmlab.adapters.engine_api import EngineAPI
    from swarmlab.adapters.remote import RemoteError
    from swarmlab.core.command import Secret
    token = Secret("SWMTKN-1-echoed-back-by-the-engine")
    api = EngineAPI.__new__(EngineAPI)  # no node: only the answer matters here
    api.host = "swr2"
    api.call = lambda method, path, body=None: (400, {"message": f"invalid join token {token.value}"})
    with pytest.raises(RemoteError) as failed:
        api.request("POST", "/swarm/join", {"JoinToken": token.value})
    assert "SWMTKN" not in str(failed.value) and "swr2: Docker API POST /swarm/join: 400" in str(failed.value)
