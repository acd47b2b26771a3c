"""The swarm as data: docker info's JSON and the Engine API's answers, parsed by key."""

import pytest

from swarmlab.config_values import parse_label
from swarmlab.core import swarm
from swarmlab.errors import SwarmlabError


def test_swarm_info_active_manager_and_inactive():
    info = swarm.parse_swarm_info('{"NodeID":"k2y0","NodeAddr":"10.77.0.10","LocalNodeState":"active",'
                                  '"ControlAvailable":true,"Error":"","RemoteManagers":[{"NodeID":"k2y0",'
                                  '"Addr":"10.77.0.10:2377"}],"Nodes":3,"Managers":3,"Cluster":{}}')
    assert (info.state, info.is_manager, info.managers, info.nodes) == ("active", True, 3, 3)
    assert info.remote_managers == ("10.77.0.10:2377",)
    idle = swarm.parse_swarm_info('{"NodeID":"","NodeAddr":"","LocalNodeState":"inactive","ControlAvailable":false,'
                                  '"Error":"","RemoteManagers":null}')
    assert (idle.state, idle.is_manager, idle.managers) == ("inactive", False, 0)


def test_the_engine_apis_services_and_tasks_read_as_the_cli_lists_them():
    services = swarm.parse_api_services([
        {"ID": "s1", "Spec": {"Name": "web", "Mode": {"Replicated": {"Replicas": 3}},
                              "TaskTemplate": {"ContainerSpec": {"Image": "swarmlab/busybox:latest@sha256:ab"}}},
         "ServiceStatus": {"RunningTasks": 2, "DesiredTasks": 3}},
        {"ID": "s2", "Spec": {"Name": "agent", "Mode": {"Global": {}}}, "ServiceStatus": {"RunningTasks": 3,
                                                                                        "DesiredTasks": 3}}])
    assert [(s.name, s.mode, s.running, s.desired, s.image) for s in services] == [
        ("web", "replicated", 2, 3, "swarmlab/busybox:latest"), ("agent", "global", 3, 3, "")]
    nodes = [swarm.SwarmNode("n1", "swr1", "Ready", "Active", "Leader", ""),
             swarm.SwarmNode("n2", "swr2", "Ready", "Drain", "Reachable", "")]
    tasks = swarm.parse_api_tasks([
        {"ID": "t1", "ServiceID": "s1", "Slot": 1, "NodeID": "n2", "DesiredState": "running",
         "Status": {"State": "running"}},
        {"ID": "t2", "ServiceID": "s1", "Slot": 2, "NodeID": "n1", "DesiredState": "running",
         "Status": {"State": "preparing"}},
        {"ID": "t3", "ServiceID": "s2", "NodeID": "n1", "DesiredState": "running",
         "Status": {"State": "failed", "Err": "task: non-zero exit (1)"}}], services, nodes)
    assert [(t.name, t.node, t.state, t.desired_state) for t in tasks] == [
        ("web.1", "swr2", "Running", "Running"), ("web.2", "swr1", "Preparing", "Running"),
        ("agent.n1", "swr1", "Failed", "Running")]
    assert tasks[2].error == "task: non-zero exit (1)"


def test_engine_api_swarm_requests_are_what_the_cli_sends():
    from swarmlab.core.command import Secret
    assert swarm.init_request("10.77.0.11") == {"ListenAddr": "0.0.0.0:2377", "AdvertiseAddr": "10.77.0.11",
                                                "Availability": "active"}
    join = swarm.join_request("10.77.0.12", Secret("SWMTKN-1-join"), "10.77.0.11")
    assert join["RemoteAddrs"] == ["10.77.0.11:2377"] and join["JoinToken"] == "SWMTKN-1-join"
    assert join["AdvertiseAddr"] == "10.77.0.12" and join["ListenAddr"] == "0.0.0.0:2377"
    tokens = swarm.join_tokens({"ID": "c1", "JoinTokens": {"Worker": "SWMTKN-1-w", "Manager": "SWMTKN-1-m"}})
    assert {role: t.value for role, t in tokens.items()} == {"manager": "SWMTKN-1-m", "worker": "SWMTKN-1-w"}
    assert "SWMTKN" not in repr(tokens)
    with pytest.raises(SwarmlabError, match="no join tokens: is this node a manager"):
        swarm.join_tokens({"ID": "c1"})  # what a worker's GET /swarm would not even give


def test_engine_api_images_and_swarm_state_read_as_the_cli_shows_them():
    images = [{"RepoTags": ["swarmlab/busybox:latest", "busybox:1.36"]}, {"RepoTags": None},
              {"RepoTags": ["<none>:<none>"]}, {"RepoTags": ["swarmlab/whoami:latest"]}]
    assert swarm.image_tags(images) == {"swarmlab/busybox:latest", "busybox:1.36", "swarmlab/whoami:latest"}
    info = swarm.swarm_info({"NodeID": "", "LocalNodeState": "inactive", "ControlAvailable": False,
                             "RemoteManagers": None})
    assert (info.state, info.is_manager, info.remote_managers) == ("inactive", False, ())
    assert swarm.swarm_info({}).state == "inactive"


def test_garbage_is_a_clear_error():
    with pytest.raises(SwarmlabError, match="unexpected output from `docker info`: Error response"):
        swarm.parse_swarm_info("Error response from daemon: Cannot connect to the Docker daemon.")


@pytest.mark.parametrize("spec, expected", [
    ("swr1:placepoint=gdc", ("swr1", "placepoint", "gdc")),
    ("swr2:env=dev", ("swr2", "env", "dev")),
    ("swr3:empty=", ("swr3", "empty", "")),
])
def test_labels(spec, expected):
    label = parse_label(spec)
    assert (label.node, label.key, label.value) == expected


@pytest.mark.parametrize("spec", ["swr1", "swr1:env", "env=prod", "SWR1:env=prod", "swr1:=x"])
def test_bad_labels_name_the_form(spec):
    with pytest.raises(SwarmlabError, match="is not NODE:KEY=VALUE"):
        parse_label(spec)


def test_manager_defaults_and_even_warning():
    assert [swarm.default_managers(n) for n in (1, 2, 3, 5)] == [1, 1, 3, 3]
    assert swarm.manager_warning(3) is None
    assert "majority (2 of 2)" in swarm.manager_warning(2)
    assert "majority (3 of 4)" in swarm.manager_warning(4) and "chaos split" in swarm.manager_warning(4)
    assert "chaos split" not in swarm.manager_warning(2)  # a split needs two managers a side


def test_plan_checks_before_anything_is_created():
    from swarmlab.lab import formation
    names = ["swr1", "swr2", "swr3"]
    formation.check_plan("t1", names, 3, [parse_label("swr2:env=dev")])
    with pytest.raises(SwarmlabError, match="--managers 4 is out of range: use 1 to 3 for 3 nodes"):
        formation.check_plan("t1", names, 4, [])
    with pytest.raises(SwarmlabError, match="--managers 0 is out of range"):
        formation.check_plan("t1", names, 0, [])
    with pytest.raises(SwarmlabError, match="names node swr9, which lab t1 does not have"):
        formation.check_plan("t1", names, 1, [parse_label("swr9:env=dev")])


def test_a_form_report_with_only_checks_is_no_change():
    report = swarm.FormReport(firewall=["swr1: no firewall, nothing needed"])
    assert report.changed is False
    report.firewall.append("swr2: opened swarm ports in ufw")
    assert report.changed is True
