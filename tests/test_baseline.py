"""Reset's decisions from facts: the swarm's state parsed from one SSH round trip, the diff to a
baseline, the level that can undo it, the state-level commands and the health gate."""

import json

from swarmlab.core import baseline as bl


def node(id_, host, role="manager", leader=False, reach="reachable", avail="active", state="ready", labels=None):
    out = {"ID": id_, "Description": {"Hostname": host},
           "Spec": {"Role": role, "Availability": avail, "Labels": labels or {}}, "Status": {"State": state}}
    if role == "manager":
        out["ManagerStatus"] = {"Leader": leader, "Reachability": reach}
    return out


def service(id_, name, replicas=2, version=10, stack=None):
    labels = {"com.docker.stack.namespace": stack} if stack else {}
    return {"ID": id_, "Version": {"Index": version},
            "Spec": {"Name": name, "Labels": labels, "Mode": {"Replicated": {"Replicas": replicas}},
                     "TaskTemplate": {"ContainerSpec": {"Image": "swarmlab/busybox:latest", "Args": ["sleep", "1d"]}}}}


def output(nodes, services=(), replicas=(), configs=(), secrets=(), networks=()) -> dict:
    """The Engine API's answers to STATE_REQUESTS."""
    running = dict(replicas)
    services = [{**s, "ServiceStatus": {"RunningTasks": int(running.get(s["Spec"]["Name"], "0/0").split("/")[0]),
                                        "DesiredTasks": int(running.get(s["Spec"]["Name"], "0/0").split("/")[1])}}
                for s in services]
    return {"nodes": list(nodes), "services": services,
            "configs": [{"Spec": {"Name": c}} for c in configs], "secrets": [{"Spec": {"Name": c}} for c in secrets],
            "networks": [{"Name": n} for n in ("ingress", *networks)],
            "info": {"Swarm": {"Cluster": {"Spec": {"CAConfig": {"NodeCertExpiry": 7776000000000000}}}}}}


FORMED = [node("a", "swr1", leader=True, labels={"placepoint": "gdc"}), node("b", "swr2", labels={"env": "dev"}),
          node("c", "swr3")]


def formed(**kw) -> bl.SwarmState:
    return bl.parse_swarm_state(output(FORMED, **kw))


def test_the_state_is_parsed_from_one_round_trip():
    state = bl.parse_swarm_state(output(FORMED, [service("s1", "web")], [("web", "2/2")], ["passwdfile"],
                                        ["shadowfile"], ["appnet"]))
    assert state.leader == "swr1" and state.nodes["swr2"].labels == {"env": "dev"}
    assert state.nodes["swr3"].manager_status == "Reachable"
    assert state.services["web"].desired == 2 and state.services["web"].running == 2
    assert (state.configs, state.secrets, state.networks) == (["passwdfile"], ["shadowfile"], ["appnet"])
    assert state.node_cert_expiry_s == 90 * 86400
    assert bl.SwarmState.from_dict(json.loads(json.dumps(state.as_dict()))) == state  # kept in the journal
    assert bl.STATE_REQUESTS["networks"] == "/networks?filters=%7B%22scope%22%3A%20%7B%22swarm%22%3A%20true%7D%7D"


def test_a_student_s_changes_are_a_state_level_reset_with_exact_commands():
    base = formed(services=[service("s1", "web")], replicas=[("web", "2/2")])
    drained = [node("a", "swr1", leader=True, labels={"placepoint": "gdc", "extra": "1"}),
               node("b", "swr2", labels={"env": "dev"}, avail="drain"), node("c", "swr3")]
    now = bl.parse_swarm_state(output(drained, [service("s2", "mine", 3)], [("mine", "3/3")],
                                      secrets=["student-secret"]))
    d = bl.diff(base, now)
    assert d.missing_services == ["web"] and d.extra_services == ["mine"] and d.extra_secrets == ["student-secret"]
    assert d.availability == {"swr2": "active"} and list(d.labels) == ["swr1"]
    level, why = bl.choose_level(d, has_snapshot=True)
    assert level == "state" and "over SSH" in why
    steps = bl.plan_state_reset(base, now, d)
    assert [s.command.shown if s.command else f"API {s.service}" for s in steps] == [
        "docker service rm mine",
        "docker secret rm student-secret",
        "docker node update --availability active swr2",
        "docker node update --label-rm extra swr1",
        "API web"]


def test_a_changed_leader_or_a_down_node_needs_the_snapshot():
    base = formed()
    moved = [node("a", "swr1", reach="reachable"), node("b", "swr2", leader=True), node("c", "swr3")]
    level, why = bl.choose_level(bl.diff(base, bl.parse_swarm_state(output(moved))), has_snapshot=True)
    assert (level, why) == ("snapshot", "the leader moved from swr1 to swr2")
    down = [node("a", "swr1", reach="unreachable", state="down"), node("b", "swr2", leader=True), node("c", "swr3")]
    level, why = bl.choose_level(bl.diff(base, bl.parse_swarm_state(output(down))), has_snapshot=True)
    assert level == "snapshot" and "swr1 down" in why
    assert bl.choose_level(None, has_snapshot=True)[0] == "snapshot"  # no quorum: nothing answers
    assert bl.choose_level(None, has_snapshot=False)[0] == "rebuild"


def test_a_node_that_rejoined_under_a_new_id_or_a_removed_secret_cannot_be_put_back_over_ssh():
    base = formed(secrets=["shadowfile"])
    rejoined = [FORMED[0], FORMED[1], node("z", "swr3")]
    d = bl.diff(base, bl.parse_swarm_state(output(rejoined, secrets=["shadowfile"])))
    assert d.missing_nodes == ["swr3"] and bl.choose_level(d, True)[0] == "snapshot"
    d = bl.diff(base, formed())
    assert d.missing_secrets == ["shadowfile"]
    assert bl.choose_level(d, True) == ("snapshot", "secrets shadowfile removed (their content is not kept)")


def test_an_unchanged_swarm_needs_nothing_and_roles_come_back():
    assert bl.diff(formed(), formed()).empty
    assert bl.choose_level(bl.diff(formed(), formed()), True) == ("state", "the swarm is as at the snapshot")
    demoted = [FORMED[0], FORMED[1], node("c", "swr3", role="worker")]
    d = bl.diff(formed(), bl.parse_swarm_state(output(demoted)))
    assert [s.command.shown for s in bl.plan_state_reset(formed(), None, d)] == ["docker node promote swr3"]


def test_an_extra_stack_is_removed_whole():
    now = formed(services=[service("x1", "dash_ui", stack="dash"), service("x2", "dash_agent", stack="dash")],
                 networks=["dash_net", "other"])
    d = bl.diff(formed(), now)
    assert d.extra_stacks == ["dash"] and d.extra_services == [] and d.extra_networks == ["dash_net", "other"]
    # `stack rm` takes the stack's network with it; removing it again failed with "not found"
    assert [s.command.shown for s in bl.plan_state_reset(formed(), now, d)] == ["docker stack rm dash",
                                                                                 "docker network rm other"]


def test_the_health_gate_names_what_is_still_wrong():
    base = formed(services=[service("s1", "web")], replicas=[("web", "2/2")])
    healthy = formed(services=[service("s1", "web")], replicas=[("web", "2/2")])
    clocks = {"swr1": 0.2, "swr2": -0.4, "swr3": 0.0}
    everyone = {"swr1": True, "swr2": True, "swr3": True}
    assert bl.health_problems(base, healthy, clocks, everyone, everyone) == []
    sick = bl.parse_swarm_state(output(
        [node("a", "swr1", leader=True, labels={"placepoint": "gdc"}), node("b", "swr2", reach="unreachable",
                                                                          labels={"env": "dev"}),
         node("c", "swr3", avail="drain")], [service("s1", "web")], [("web", "1/2")]))
    problems = bl.health_problems(base, sick, {**clocks, "swr3": 42.0}, {**everyone, "swr2": False},
                                  {**everyone, "swr1": False})
    assert sorted(problems) == sorted([
        "swr1's SSH host key changed", "swr2's DNS name does not resolve to it",
        "swr3's clock is +42.0 s off the host's", "manager swr2 is Unreachable, not Reachable",
        "swr3 is drain, baseline active", "service web runs 1/2, baseline 2 replicas"])
    assert bl.health_problems(base, None, clocks, everyone, everyone) == ["no manager answers with the swarm's state"]
    two_leaders = [node("a", "swr1", leader=True), node("b", "swr2", leader=True), node("c", "swr3")]
    assert any("2 leaders" in p for p in bl.health_problems(formed(), bl.parse_swarm_state(output(two_leaders)),
                                                             {}, {}, {}))


def test_what_reset_found_decides_the_level_before_any_diff():
    base = formed()
    assert bl.choose(False, base, base, [], []) == ("rebuild", "the lab has no snapshot")
    assert bl.choose(True, base, None, ["swr2"], []) == ("snapshot", "an interrupted run left swr2 paused")
    assert bl.choose(True, None, None, [], []) == ("snapshot", "the lab has no swarm baseline")
    assert bl.choose(True, base, None, [], ["swr3"]) == ("snapshot", "swr3 shut off")
    assert bl.choose(True, base, None, [], [])[0] == "snapshot"  # the swarm did not answer
    assert bl.choose(True, base, base, [], []) == ("state", "the swarm is as at the snapshot")


def test_a_chosen_level_escalates_and_a_forced_one_runs_alone():
    assert bl.levels_to_run("state", forced=False, has_snapshot=True) == ["state", "snapshot", "rebuild"]
    assert bl.levels_to_run("snapshot", forced=False, has_snapshot=True) == ["snapshot", "rebuild"]
    assert bl.levels_to_run("state", forced=True, has_snapshot=True) == ["state"]
    assert bl.levels_to_run("rebuild", forced=False, has_snapshot=False) == ["rebuild"]


def test_the_gate_reads_the_swarm_from_the_leader_first_then_the_other_managers():
    moved = bl.parse_swarm_state(output([node("a", "swr1"), node("b", "swr2"), node("c", "swr3", leader=True),
                                         node("d", "swr4", role="worker")]))
    assert moved.managers_leader_first == ["swr3", "swr1", "swr2"]
    assert formed().managers_leader_first == ["swr1", "swr2", "swr3"]
