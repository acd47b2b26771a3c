"""`snapshot` and `reset` on real VMs, on the shared 3-manager lab t1 and a 1-node lab r1:
what a student broke comes back over SSH, a killed leader comes back by snapshot, a lab without
a snapshot is rebuilt, kill -9 in the middle of a revert is finished by the next reset, and
`reset --all` handles both labs. Each result is read back as an instructor would."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from swarmlab.adapters.hypervisor import Hypervisor
from swarmlab.classroom import access
from swarmlab.lab import model as labs
from tests.conftest import ROOT, docker_json, swarmlab

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1800)]


def sw(path, *args, lab="t1", timeout=900):
    proc = swarmlab(*args, config=path, timeout=timeout)
    return proc


def running(path, service: str, via="swr1", lab="t1") -> int:
    return len([t for t in docker_json(path, via, "service", "ps", service, "--filter", "desired-state=running",
                                       lab=lab) if t["CurrentState"].startswith("Running")])


def wait_running(path, service: str, count: int, via="swr1", lab="t1", timeout=240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and running(path, service, via, lab) != count:
        time.sleep(3)
    assert running(path, service, via, lab) == count


def clock_offsets(config, lab="t1") -> dict[str, float]:
    with Hypervisor(config.uri) as hv:
        return {n.name: hv.guest_clock_offset(n.domain) for n in labs.load_journal(config, lab).nodes}


@pytest.fixture(scope="module")
def exercise(lab3):
    """t1 back at `formed`, then one service `keep` and a snapshot `exercise` of that."""
    path, config, result = lab3
    assert result["snapshot"]["name"] == "formed" and result["snapshot"]["bytes"] > 0
    back = sw(path, "reset", "--lab", "t1", "--level", "snapshot", "--json")
    assert back.returncode == 0, back.stderr + back.stdout
    for s in docker_json(path, "swr1", "service", "ls"):
        sw(path, "docker", "swr1", "--lab", "t1", "--", "service", "rm", s["Name"])
    create = sw(path, "docker", "swr1", "--lab", "t1", "--", "service", "create", "--detach", "--name", "keep",
                "--replicas", "2", "--no-resolve-image", "swarmlab/busybox:latest", "sleep", "1d")
    assert create.returncode == 0, create.stderr
    wait_running(path, "keep", 2)
    saved = sw(path, "snapshot", "save", "exercise", "--lab", "t1", "--json")
    assert saved.returncode == 0, saved.stderr
    assert json.loads(saved.stdout)["services"] == ["keep"]
    return path, config


def test_state_reset_brings_back_exactly_the_baseline(exercise):
    path, config = exercise
    before = {n["Hostname"]: n for n in docker_json(path, "swr1", "node", "ls")}
    d = lambda *args: sw(path, "docker", "swr1", "--lab", "t1", "--", *args)  # noqa: E731
    assert d("service", "rm", "keep").returncode == 0
    assert d("service", "create", "--detach", "--name", "student", "--no-resolve-image", "swarmlab/busybox:latest",
             "sleep", "1d").returncode == 0
    assert d("node", "update", "--availability", "drain", "swr3").returncode == 0
    assert d("node", "update", "--label-add", "broken=yes", "swr2").returncode == 0
    secret = subprocess.run([sys.executable, "-m", "swarmlab", "docker", "swr1", "--lab", "t1", "--", "secret",
                             "create", "student-secret", "-"], input="s3cr3t-value", capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "SWARMLAB_CONFIG": str(path)})
    assert secret.returncode == 0, secret.stderr

    # forced: by the prior, starting `keep`'s 2 tasks again is dearer than a revert, which t1 has measured
    proc = sw(path, "reset", "--lab", "t1", "--to", "exercise", "--level", "state", "--json")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    data = json.loads(proc.stdout)
    assert data["levels"] == ["state"] and data["ok"] and data["problems"] == []
    assert "s3cr3t-value" not in proc.stdout + proc.stderr
    services = {s["Name"]: s for s in docker_json(path, "swr1", "service", "ls")}
    assert list(services) == ["keep"] and services["keep"]["Replicas"] == "2/2"
    assert [s["Name"] for s in docker_json(path, "swr1", "secret", "ls")] == []
    after = {n["Hostname"]: n for n in docker_json(path, "swr1", "node", "ls")}
    assert {h: (n["Availability"], n["ManagerStatus"]) for h, n in after.items()} == \
        {h: (n["Availability"], n["ManagerStatus"]) for h, n in before.items()}
    labels = {n: docker_json(path, "swr1", "node", "inspect", n)[0]["Spec"]["Labels"] for n in ("swr1", "swr2", "swr3")}
    assert labels == {"swr1": {"placepoint": "gdc"}, "swr2": {"env": "dev"}, "swr3": {}}

    # this lab's costs are measured now (the fixture's revert, this state level): the same loss
    # of `keep` again is weighed by them, and the level run is the cheaper
    assert d("service", "rm", "keep").returncode == 0
    again = sw(path, "reset", "--lab", "t1", "--to", "exercise", "--json")
    data = json.loads(again.stdout)
    costs = data["estimates"]
    assert costs and costs["snapshot_s"] > 0, again.stdout + again.stderr
    # the base of a state level that started no task is this lab's once an earlier module ran one on t1
    assert costs["from"]["snapshot_s"] == costs["from"]["per_task_s"] == "this lab", costs["from"]
    assert costs["from"]["state_base_s"] in ("this lab", "prior"), costs["from"]
    assert data["ok"]
    if costs["tasks"] is None:  # a busy machine: the swarm did not answer within the read's budget
        assert data["levels"] == ["snapshot"] and "did not answer" in data["reasons"][0], data
    else:
        assert costs["tasks"] == 2, costs
        assert data["levels"][0] == ("snapshot" if costs["state_s"] > costs["snapshot_s"] else "state"), data
    wait_running(path, "keep", 2)


def test_after_the_leader_is_powered_off_reset_picks_the_snapshot(exercise):
    """The leader's VM powered off the way an instructor does it by hand (the chaos drill and
    its timeline are the chaos module's), then one reset."""
    path, config = exercise
    old = next(n["Hostname"] for n in docker_json(path, "swr1", "node", "ls") if n["ManagerStatus"] == "Leader")
    off = subprocess.run(["virsh", "-c", config.uri, "destroy", f"t1-{old}"], capture_output=True, text=True)
    assert off.returncode == 0, off.stderr
    proc = sw(path, "reset", "--lab", "t1", "--to", "exercise", "--json")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    data = json.loads(proc.stdout)
    assert data["levels"] == ["snapshot"] and data["ok"]
    assert "down" in data["reasons"][0] or "leader moved" in data["reasons"][0] or "shut off" in data["reasons"][0]
    nodes = {n["Hostname"]: n for n in docker_json(path, "swr1", "node", "ls")}
    assert all(n["Status"] == "Ready" for n in nodes.values())
    assert sorted(n["ManagerStatus"] for n in nodes.values()) == ["Leader", "Reachable", "Reachable"]
    assert nodes[old]["ManagerStatus"] == "Leader"  # as at the snapshot
    wait_running(path, "keep", 2, timeout=60)
    assert all(abs(offset) <= 1.0 for offset in clock_offsets(config).values()), clock_offsets(config)


def test_kill_9_during_a_revert_is_finished_by_the_next_reset(exercise):
    path, config = exercise
    env = {**os.environ, "SWARMLAB_CONFIG": str(path)}
    proc = subprocess.Popen([sys.executable, "-m", "swarmlab", "reset", "--lab", "t1", "--to", "exercise",
                             "--level", "snapshot"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    with Hypervisor(config.uri) as hv:
        domains = [n.domain for n in labs.load_journal(config, "t1").nodes]
        deadline = time.monotonic() + 120
        while not any(hv.domain_state(d).state == "paused" for d in domains):
            assert proc.poll() is None and time.monotonic() < deadline, "reset ended before a node was paused"
            time.sleep(0.05)
        # frozen first, so that it cannot resume anything between what we read and the kill
        os.kill(proc.pid, signal.SIGSTOP)
        paused = [d for d in domains if hv.domain_state(d).state == "paused"]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert paused, "the killed reset left no node paused: the test proves nothing"
    again = sw(path, "reset", "--lab", "t1", "--to", "exercise", "--json")
    assert again.returncode == 0, again.stderr + again.stdout
    assert json.loads(again.stdout)["ok"] and "(left paused by an interrupted run)" in again.stderr, again.stderr
    states = json.loads(sw(path, "status", "--lab", "t1", "--json").stdout)["nodes"]
    assert {r["state"] for r in states} == {"running"}


def test_refusals_name_the_fix(exercise):
    path, _ = exercise
    unknown = sw(path, "reset", "--lab", "t1", "--to", "nosuch")
    assert unknown.returncode == 3 and "lab t1 has no snapshot nosuch (snapshots: formed, exercise)" in unknown.stderr
    listing = json.loads(sw(path, "snapshot", "ls", "--lab", "t1", "--json").stdout)
    assert [s["name"] for s in listing] == ["formed", "exercise"]
    assert "snapshots: formed, exercise" in sw(path, "status", "--lab", "t1").stdout


def test_a_lab_without_a_snapshot_is_rebuilt_and_reset_all_takes_both(exercise):
    path, config = exercise
    up = sw(path, "up", "1", "--lab", "r1", "--no-snapshot", "--json")
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout)["snapshot"] is None
    first_ip = json.loads(up.stdout)["nodes"][0]["ip"]
    access.ensure_credentials(config, "r1")  # as `class up` gives a student's lab: its account must survive
    rebuilt = sw(path, "reset", "--lab", "r1", "--json")
    assert rebuilt.returncode == 0, rebuilt.stderr + rebuilt.stdout
    data = json.loads(rebuilt.stdout)
    assert data["levels"] == ["rebuild"] and data["reasons"] == ["the lab has no snapshot"] and data["ok"]
    account = sw(path, "ssh", "swr1", "--lab", "r1", "--", "id -nG student; cat ~student/.ssh/authorized_keys")
    assert account.stdout.split() == ["student", "docker", *access.public_key(config, "r1").split()], account.stderr
    status = json.loads(sw(path, "status", "--lab", "r1", "--json").stdout)
    assert status["snapshots"] == ["formed"] and status["nodes"][0]["ip"] == first_ip
    assert status["nodes"][0]["manager_status"] == "Leader"

    # a student's service on r1, a drained node on t1: one command puts both back
    sw(path, "docker", "swr1", "--lab", "r1", "--", "service", "create", "--detach", "--name", "x",
       "--no-resolve-image", "swarmlab/busybox:latest", "sleep", "1d")
    sw(path, "docker", "swr1", "--lab", "t1", "--", "node", "update", "--availability", "drain", "swr2")
    both = sw(path, "reset", "--all", "--to", "formed", "--json")
    assert both.returncode == 0, both.stderr + both.stdout
    results = {r["lab"]: r for r in json.loads(both.stdout)}
    assert set(results) == {"t1", "r1"} and all(r["ok"] for r in results.values())
    assert docker_json(path, "swr1", "service", "ls", lab="r1") == []
    assert docker_json(path, "swr1", "node", "inspect", "swr2")[0]["Spec"]["Availability"] == "active"
    text = sw(path, "reset", "--all", "--to", "formed")
    assert text.returncode == 0 and "LAB" in text.stdout and "healthy" in text.stdout
    sw(path, "down", "--lab", "r1", "--yes")
    access.revoke(config, "r1")
