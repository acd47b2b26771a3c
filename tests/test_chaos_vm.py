"""Chaos on the shared 3-manager lab: the failover exercise with the kill-leader drill (the
killed node brought back), drain and activate a node under a 3-replica service, demote the
leader. Everything is read back the way an instructor would."""

import json
import time

import pytest

from tests.conftest import docker_json, swarmlab

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def service(lab3):
    path, _, _ = lab3
    create = swarmlab("docker", "swr1", "--lab", "t1", "--", "service", "create", "--detach", "--name", "web",
                      "--replicas", "3", "--no-resolve-image", "swarmlab/busybox:latest", "sleep", "1d", config=path)
    assert create.returncode == 0, create.stderr
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        running = [t for t in docker_json(path, "swr1", "service", "ps", "web", "--filter", "desired-state=running")
                   if t["CurrentState"].startswith("Running")]
        if len(running) == 3:
            break
        time.sleep(3)
    assert len(running) == 3
    yield "web"
    swarmlab("docker", "swr1", "--lab", "t1", "--", "service", "rm", "web", config=path)


def running_tasks(path, via: str) -> list[dict]:
    return [t for t in docker_json(path, via, "service", "ps", "web", "--filter", "desired-state=running")
            if t["CurrentState"].startswith("Running")]


def test_the_failover_exercise_with_kill_leader_and_restore(lab3, tmp_path):
    """The failover exercise as a class runs it: started, its checks fail, the instructor's
    drill kills the leader and brings it back, its checks pass. (`exercise test` runs the other
    exercises; this is the one whose solution is this drill.)"""
    path, _, _ = lab3
    started = swarmlab("exercise", "start", "failover", "--lab", "t1", "--json", config=path, timeout=600)
    assert started.returncode == 0, started.stderr + started.stdout
    before = swarmlab("exercise", "check", "failover", "--lab", "t1", "--no-wait", "--json", config=path)
    failing = [c["check"] for c in json.loads(before.stdout)["checks"] if not c["ok"]]
    assert before.returncode == 1 and "leader changed" in failing, before.stdout
    report = tmp_path / "kill-leader.html"
    proc = swarmlab("chaos", "kill-leader", "--lab", "t1", "--restore", "--json", "--report", str(report),
                    config=path, timeout=900)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    # only swarmlab's own progress lines reach the terminal (paramiko's channel noise did)
    assert all(line.startswith("[") for line in proc.stderr.splitlines()), proc.stderr
    data = json.loads(proc.stdout)
    times = {e["event"]: e["t"] for e in data["events"]}
    old, new = data["old_leader"], data["new_leader"]
    assert old and new and new != old and data["target"] == old
    assert times["killed"] == 0
    assert 0 < times["new-leader"] < times["node-down"] < times["tasks-rescheduled"] < times["rejoined"]
    assert data["missing"] == []
    rescheduled = next(e["detail"] for e in data["events"] if e["event"] == "tasks-rescheduled")
    assert rescheduled.startswith("HelloWorld 6/6"), rescheduled
    page = report.read_text()
    assert "<svg" in page and all(e["event"] in page for e in data["events"])
    after = swarmlab("exercise", "check", "failover", "--lab", "t1", "--json", config=path, timeout=600)
    assert after.returncode == 0, after.stdout + after.stderr
    nodes = {n["Hostname"]: n for n in docker_json(path, new, "node", "ls")}
    assert (nodes[old]["Status"], nodes[old]["ManagerStatus"]) == ("Ready", "Reachable")
    swarmlab("docker", "swr1", "--lab", "t1", "--", "service", "rm", "HelloWorld", config=path)


def test_drain_moves_tasks_off_and_activate_makes_the_node_eligible(lab3, service):
    path, _, _ = lab3
    drained = swarmlab("chaos", "drain", "swr3", "--lab", "t1", "--json", config=path, timeout=600)
    assert drained.returncode == 0, drained.stderr + drained.stdout
    data = json.loads(drained.stdout)
    drained_event = next(e for e in data["events"] if e["event"] == "drained")
    assert "web 3/3" in drained_event["detail"] and data["missing"] == []
    tasks = running_tasks(path, "swr1")
    assert len(tasks) == 3 and all(t["Node"] != "swr3" for t in tasks)
    assert docker_json(path, "swr1", "node", "inspect", "swr3")[0]["Spec"]["Availability"] == "drain"

    activated = swarmlab("chaos", "activate", "swr3", "--lab", "t1", "--json", config=path)
    assert activated.returncode == 0, activated.stderr
    assert docker_json(path, "swr1", "node", "inspect", "swr3")[0]["Spec"]["Availability"] == "active"


def test_bad_chaos_input_destroys_nothing(lab3):
    path, _, _ = lab3
    unknown = swarmlab("chaos", "kill", "swr9", "--lab", "t1", config=path)
    assert unknown.returncode == 3 and "lab t1 has no node swr9" in unknown.stderr
    no_lab = swarmlab("chaos", "kill-leader", "--lab", "nosuch", config=path)
    assert no_lab.returncode == 3 and "lab nosuch does not exist" in no_lab.stderr
    running = json.loads(swarmlab("status", "--lab", "t1", "--json", config=path).stdout)["nodes"]
    assert all(r["state"] == "running" for r in running)


def test_demote_leader_hands_over_and_promotes_it_back(lab3):
    path, _, _ = lab3
    proc = swarmlab("chaos", "demote-leader", "--lab", "t1", "--json", config=path, timeout=600)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    data = json.loads(proc.stdout)
    times = {e["event"]: e["t"] for e in data["events"]}
    assert times["demoted"] < times["new-leader"] < times["promoted"] and data["missing"] == []
    assert data["new_leader"] != data["old_leader"]
    nodes = {n["Hostname"]: n for n in docker_json(path, "swr1", "node", "ls")}
    assert nodes[data["old_leader"]]["ManagerStatus"] == "Reachable"
    assert sorted(n["ManagerStatus"] for n in nodes.values()) == ["Leader", "Reachable", "Reachable"]


POLL_SLACK = 5  # a round reads once a second and waits up to 4 s for a manager that hangs


def test_losing_the_majority_and_getting_it_back(lab3, service):
    """Two of t1's three managers cut off by the hypervisor: the leader left in sight steps
    down and says the swarm has no leader, a `service create` is refused and `web` goes on running; healed, a leader and all three
    managers are back. Each event inside swarmkit's window."""
    path, _, _ = lab3
    proc = swarmlab("chaos", "lose-quorum", "--lab", "t1", "--restore", "--json", config=path, timeout=900)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    data = json.loads(proc.stdout)
    events = {e["event"]: e for e in data["events"]}
    assert list(events) == ["partitioned", "leader-lost", "no-leader", "writes-refused", "tasks-running", "healed",
                            "leader-back", "managers-reachable", "services-back"], events
    assert sorted(data["target"].split(", ")) == sorted({"swr1", "swr2", "swr3"} - {data["old_leader"]})
    assert "does not have a leader" in events["writes-refused"]["detail"]
    assert events["services-back"]["detail"].startswith("web 3/3"), events["services-back"]
    for e in events.values():
        if e["expected"]:
            low, high = e["expected"]
            assert low - 1 <= e["t"] <= high + POLL_SLACK, f"{e['event']} at {e['t']} s, expected {low}-{high} s"
    assert len(running_tasks(path, "swr1")) == 3
    nodes = docker_json(path, "swr1", "node", "ls")
    assert sorted(n["ManagerStatus"] for n in nodes) == ["Leader", "Reachable", "Reachable"]


def test_the_quorum_exercise_tests_itself_and_reset_heals_a_cut(lab3):
    """swr2 and swr3 cut off for good: the checks fail; the solution (force-new-cluster on swr1,
    the dead managers removed, the nodes healed and joined again as managers) makes them pass.
    Then a cut by hand, and the reset that ends it."""
    path, config, _ = lab3
    from swarmlab.adapters.hypervisor import Hypervisor
    try:
        proc = swarmlab("exercise", "test", "quorum", "--lab", "t1", "--json", config=path, timeout=1200)
        results = json.loads(proc.stdout or "[]")
        assert proc.returncode == 0 and results and results[0]["ok"], proc.stderr[-2000:] + proc.stdout
        assert results[0]["failed_before_solve"]
        assert "SWMTKN" not in proc.stdout + proc.stderr  # the manager join token stays hidden
        nodes = docker_json(path, "swr1", "node", "ls")
        assert sorted((n["Hostname"], n["ManagerStatus"]) for n in nodes) == [
            ("swr1", "Leader"), ("swr2", "Reachable"), ("swr3", "Reachable")]
        # a cut by hand: refused where it costs the majority, shown by status, healed by reset
        whole = swarmlab("chaos", "partition", "swr2", "swr3", "--lab", "t1", config=path)
        assert whole.returncode == 4 and "the swarm would lose its majority" in whole.stderr, whole.stderr
        cut = swarmlab("chaos", "partition", "swr3", "--lab", "t1", "--json", config=path)
        assert cut.returncode == 0 and json.loads(cut.stdout) == {"cut": ["swr3"]}, cut.stderr
        rows = json.loads(swarmlab("status", "--lab", "t1", "--json", config=path).stdout)["nodes"]
        assert [r["node"] for r in rows if r["cut_off"]] == ["swr3"]
    finally:  # the shared lab back to its own swarm, whatever happened, cut links healed
        reset = swarmlab("reset", "--lab", "t1", "--json", config=path, timeout=600)
    assert reset.returncode == 0, reset.stderr
    result = json.loads(reset.stdout)
    assert result["done"][0] == "healed the cut links of swr3", result
    assert (result["reasons"], result["levels"]) == (["swr3 was cut off the network"], ["snapshot"]), result
    with Hypervisor(config.uri) as hv:
        assert hv.link_up("t1-swr3") is True
