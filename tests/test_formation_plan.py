"""The formation plan from facts: who inits, who joins as what, who is promoted or demoted,
which labels are added. Facts in, commands out, in milliseconds."""

from types import SimpleNamespace

from swarmlab.config_values import NodeLabel
from swarmlab.core import swarm
from swarmlab.core.command import Secret
from swarmlab.core.swarm import SwarmInfo, SwarmNode

ORDER = ["swr1", "swr2", "swr3"]
IPS = {"swr1": "10.77.0.10", "swr2": "10.77.0.11", "swr3": "10.77.0.12"}
TOKENS = {"manager": Secret("SWMTKN-1-manager-token"), "worker": Secret("SWMTKN-1-worker-token")}
IDLE = SwarmInfo("inactive")


def active(manager: bool) -> SwarmInfo:
    return SwarmInfo("active", is_manager=manager)


def member(name: str, manager_status: str = "", status: str = "Ready", node_id: str | None = None) -> SwarmNode:
    return SwarmNode(node_id or f"id-{name}", name, status, "Active", manager_status, "20.10.24")


def shown(steps) -> list[tuple[str, str, str]]:
    return [(s.kind, s.on, s.command.shown) for s in steps]


def test_a_fresh_lab_inits_on_the_first_node_and_joins_the_others_as_managers():
    infos = {n: IDLE for n in ORDER}
    entry, bootstrap = swarm.plan_bootstrap(ORDER, IPS, infos)
    assert entry == "swr1"
    assert shown(bootstrap) == [("init", "swr1", "docker swarm init --advertise-addr 10.77.0.10")]
    wanted, steps = swarm.plan_membership(ORDER, IPS, infos, [member("swr1", "Leader")], None, entry, TOKENS)
    assert wanted == ["swr1", "swr2", "swr3"]
    assert shown(steps) == [
        ("join-manager", "swr2", "docker swarm join --advertise-addr 10.77.0.11 --token <hidden> 10.77.0.10:2377"),
        ("join-manager", "swr3", "docker swarm join --advertise-addr 10.77.0.12 --token <hidden> 10.77.0.10:2377")]
    assert "SWMTKN-1-manager-token" in steps[0].command.shell  # the shell gets it, nothing shown does
    assert [s.wait for s in steps] == ["manager", "manager"]


def test_one_manager_makes_the_others_workers():
    infos = {n: IDLE for n in ORDER}
    wanted, steps = swarm.plan_membership(ORDER, IPS, infos, [member("swr1", "Leader")], 1, "swr1", TOKENS)
    assert wanted == ["swr1"]
    assert [(s.kind, s.node, s.wait) for s in steps] == [("join-worker", "swr2", "worker"),
                                                         ("join-worker", "swr3", "worker")]


def test_a_formed_swarm_needs_nothing():
    infos = {"swr1": active(True), "swr2": active(True), "swr3": active(True)}
    members = [member("swr1", "Leader"), member("swr2", "Reachable"), member("swr3", "Reachable")]
    assert swarm.plan_bootstrap(ORDER, IPS, infos) == ("swr1", [])
    assert swarm.plan_membership(ORDER, IPS, infos, members, None, "swr1", TOKENS) == (ORDER, [])
    assert swarm.plan_membership(ORDER, IPS, infos, members, 3, "swr1", TOKENS)[1] == []


def test_more_managers_promote_existing_workers_one_at_a_time():
    """The defect: `swarm form --managers 3` on 1 manager + 2 workers said 'nothing changed'."""
    infos = {"swr1": active(True), "swr2": active(False), "swr3": active(False)}
    members = [member("swr1", "Leader"), member("swr2"), member("swr3")]
    wanted, steps = swarm.plan_membership(ORDER, IPS, infos, members, 3, "swr1", TOKENS)
    assert wanted == ORDER
    assert shown(steps) == [("promote", "swr1", "docker node promote swr2"),
                            ("promote", "swr1", "docker node promote swr3")]
    assert [s.wait for s in steps] == ["manager", "manager"]
    # without --managers, roles are left as they are
    assert swarm.plan_membership(ORDER, IPS, infos, members, None, "swr1", TOKENS)[1] == []


def test_fewer_managers_demote_last_through_a_manager_that_stays():
    infos = {n: active(True) for n in ORDER}
    members = [member("swr1", "Reachable"), member("swr2", "Leader"), member("swr3", "Reachable")]
    wanted, steps = swarm.plan_membership(ORDER, IPS, infos, members, 1, "swr1", TOKENS)
    assert wanted == ["swr1"]
    assert shown(steps) == [("demote", "swr1", "docker node demote swr2"),
                            ("demote", "swr1", "docker node demote swr3")]
    # the entry itself is demoted through the manager that stays
    wanted, steps = swarm.plan_membership(["swr2", "swr1", "swr3"], IPS, infos, members, 1, "swr1", TOKENS)
    assert wanted == ["swr2"]
    assert shown(steps) == [("demote", "swr2", "docker node demote swr1"),
                            ("demote", "swr2", "docker node demote swr3")]


def test_current_managers_are_kept_rather_than_swapped():
    infos = {"swr1": active(True), "swr2": active(False), "swr3": active(True)}
    members = [member("swr1", "Leader"), member("swr2"), member("swr3", "Reachable")]
    wanted, steps = swarm.plan_membership(ORDER, IPS, infos, members, 2, "swr1", TOKENS)
    assert wanted == ["swr1", "swr3"] and steps == []


def test_a_node_listed_down_leaves_is_removed_and_rejoins():
    infos = {"swr1": active(True), "swr2": active(True), "swr3": active(False)}
    members = [member("swr1", "Leader"), member("swr2", "Reachable"),
               member("swr3", "", status="Down", node_id="old3"), member("swr3", "", status="Down", node_id="old3")]
    wanted, steps = swarm.plan_membership(ORDER, IPS, infos, members, 3, "swr1", TOKENS)
    assert shown(steps)[:2] == [("leave", "swr3", "docker swarm leave --force"),
                                ("remove", "swr1", "docker node rm --force old3")]
    assert (steps[2].kind, steps[2].node) == ("join-manager", "swr3")


def test_a_node_in_a_swarm_that_is_gone_leaves_before_init():
    infos = {"swr1": SwarmInfo("error"), "swr2": IDLE, "swr3": IDLE}
    entry, steps = swarm.plan_bootstrap(ORDER, IPS, infos)
    assert shown(steps) == [("leave", "swr1", "docker swarm leave --force"),
                            ("init", "swr1", "docker swarm init --advertise-addr 10.77.0.10")]


def test_a_rejoined_node_listed_twice_counts_by_its_ready_entry():
    members = [member("swr2", "Reachable"), member("swr2", "", status="Down", node_id="old")]
    assert swarm.current_members(members)["swr2"].id == "id-swr2"
    assert swarm.current_members(list(reversed(members)))["swr2"].id == "id-swr2"


def test_hostile_names_from_guests_are_quoted():
    """Hostnames and node IDs come from docker output; they reach root shells quoted."""
    evil = "swr3; rm -rf /"
    infos = {"swr1": active(True), evil: active(False)}
    members = [member("swr1", "Leader"), member(evil)]
    _, steps = swarm.plan_membership(["swr1", evil], {"swr1": "10.77.0.10", evil: "10.77.0.12"}, infos, members,
                                     2, "swr1", TOKENS)
    assert steps[0].command.shell == "docker node promote 'swr3; rm -rf /'"
    labels = swarm.plan_labels([NodeLabel(evil, "env", "dev$(reboot)")], {}, "swr1")
    assert labels[0].command.shell == "docker node update --label-add 'env=dev$(reboot)' 'swr3; rm -rf /'"


def test_labels_are_added_only_where_missing_or_different():
    labels = [NodeLabel("swr1", "placepoint", "gdc"), NodeLabel("swr2", "env", "dev"), NodeLabel("swr3", "env", "prod")]
    current = {"swr1": {"placepoint": "gdc"}, "swr2": {"env": "test"}, "swr3": {}}
    steps = swarm.plan_labels(labels, current, "swr1")
    assert [(s.node, s.detail, s.on) for s in steps] == [("swr2", "env=dev", "swr1"), ("swr3", "env=prod", "swr1")]


def test_a_new_swarm_gives_each_node_the_role_the_full_plan_gives():
    """The pipelined formation of a new lab must end where the full plan would have."""
    for count in range(1, 6):
        order = [f"swr{i}" for i in range(1, count + 1)]
        ips = {n: f"10.77.0.{10 + i}" for i, n in enumerate(order)}
        infos = {n: IDLE for n in order}
        for managers in (None, *range(1, count + 1)):
            roles = swarm.plan_new_swarm(order, managers)
            entry, bootstrap = swarm.plan_bootstrap(order, ips, infos)
            _, steps = swarm.plan_membership(order, ips, infos, [member(entry, "Leader")], managers, entry, TOKENS)
            full = {entry: "init", **{s.node: s.wait for s in steps}}
            assert roles == full, (count, managers)
    assert swarm.plan_new_swarm(ORDER, None) == {"swr1": "init", "swr2": "manager", "swr3": "manager"}


def test_the_preparation_script_is_valid_shell_and_its_output_parses(tmp_path):
    import subprocess

    from swarmlab.lab.node_prep import parse_prepared, prepare_script
    for mirror in (None, "10.77.0.1:5000"):
        proc = subprocess.run(["sh", "-n", "-c", prepare_script(mirror)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    assert "10.77.0.1:5000" not in prepare_script(None)
    found = parse_prepared("change=started docker\nengine=running\nfirewall=none\nmirror=set\n"
                           "image=swarmlab/busybox:latest\nimage=swarmlab/whoami:latest\n"
                           'swarm={"LocalNodeState":"inactive","NodeID":""}\n')
    assert found["image"] == ["swarmlab/busybox:latest", "swarmlab/whoami:latest"]
    assert swarm.parse_swarm_info(found["swarm"][0]).state == "inactive"
    assert found["change"] == ["started docker"] and found["engine"] == ["running"]


def test_the_preparation_script_reports_a_missing_engine_and_stops(tmp_path):
    """Run for real with a PATH that has no dockerd: it must say so and touch nothing."""
    import subprocess

    from swarmlab.lab.node_prep import parse_prepared, prepare_script
    proc = subprocess.run(["/bin/sh", "-c", prepare_script(None)], capture_output=True, text=True,
                          env={"PATH": str(tmp_path)})
    assert parse_prepared(proc.stdout) == {"engine": ["missing"]}


def test_the_engine_apis_nodes_read_as_node_ls_lists_them():
    api = [{"ID": "a1", "Description": {"Hostname": "swr1", "Engine": {"EngineVersion": "20.10.24+dfsg1"}},
            "Spec": {"Role": "manager", "Availability": "active"}, "Status": {"State": "ready"},
            "ManagerStatus": {"Leader": True, "Reachability": "reachable"}},
           {"ID": "b2", "Description": {"Hostname": "swr2"}, "Spec": {"Role": "manager", "Availability": "drain"},
            "Status": {"State": "down"}, "ManagerStatus": {"Reachability": "unreachable"}},
           {"ID": "c3", "Description": {"Hostname": "swr3"}, "Spec": {"Role": "worker", "Availability": "pause"},
            "Status": {"State": "ready"}}]
    assert swarm.parse_api_nodes(api) == [
        SwarmNode("a1", "swr1", "Ready", "Active", "Leader", "20.10.24+dfsg1"),
        SwarmNode("b2", "swr2", "Down", "Drain", "Unreachable", ""),
        SwarmNode("c3", "swr3", "Ready", "Pause", "", "")]
    assert [n.role for n in swarm.parse_api_nodes(api)] == ["manager", "manager", "worker"]


NO_SSH = SimpleNamespace(host="10.77.0.11")  # a connection nothing opens: preparation is stubbed


class Waiter:
    """swr2's node_ready in a thread of its own: whether it returned, and what it raised."""

    def __init__(self, pipeline, lab):
        import threading
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(pipeline, lab), daemon=True)

    def _run(self, pipeline, lab) -> None:
        try:
            pipeline.node_ready(lab, lab.nodes[1], NO_SSH)
        except BaseException as e:  # surfaced by the test, not lost with the thread
            self.error = e


def _new_swarm(tmp_path, monkeypatch, prepare):
    """(pipeline, lab, swr2's waiter, an event set once swr2 is prepared: from then on it waits
    for the first node's init)."""
    import threading

    from swarmlab import config as configuration
    from swarmlab.lab import formation
    from swarmlab.lab.model import Lab, Node
    from tests.conftest import write_config
    config = configuration.load(write_config(tmp_path / "swarmlab.toml", tmp_path / "state"))
    swr2_prepared = threading.Event()

    def prepared(config, node, *args):
        info = prepare(config, node, *args)
        if node.name == "swr2":
            swr2_prepared.set()
        return info
    monkeypatch.setattr(formation, "prepare_node", prepared)
    lab = Lab("t1", [Node(n, f"t1-{n}", "", "", IPS[n], "") for n in ORDER])
    pipeline = formation.NewSwarm(config, None, swarm.FormReport(), lambda *_: None)
    return pipeline, lab, Waiter(pipeline, lab), swr2_prepared


def test_a_new_swarm_stops_waiting_when_the_first_node_fails_to_come_up(tmp_path, monkeypatch):
    """Otherwise `up` would sit for twice the boot timeout after the failure it must report."""
    pipeline, lab, waiter, swr2_prepared = _new_swarm(tmp_path, monkeypatch, lambda *_: IDLE)
    waiter.thread.start()
    assert swr2_prepared.wait(5)
    assert waiter.thread.is_alive()  # prepared, and nothing can end its wait for swr1's init but swr1
    pipeline.node_failed(lab, lab.nodes[0])
    waiter.thread.join(5)
    assert not waiter.thread.is_alive() and waiter.error is None
    assert pipeline.formed(lab) is None and pipeline.joined == {}


def test_a_new_swarm_stops_waiting_when_the_first_nodes_preparation_fails(tmp_path, monkeypatch):
    import pytest

    from swarmlab.lab.formation import FormError

    def prepare(config, node, *_):
        if node.name == "swr1":
            raise FormError("swr1: the Docker engine does not start")
        return IDLE
    pipeline, lab, waiter, swr2_prepared = _new_swarm(tmp_path, monkeypatch, prepare)
    waiter.thread.start()
    assert swr2_prepared.wait(5) and waiter.thread.is_alive()
    with pytest.raises(FormError, match="does not start"):
        pipeline.node_ready(lab, lab.nodes[0], NO_SSH)
    waiter.thread.join(5)
    assert not waiter.thread.is_alive() and waiter.error is None and pipeline.formed(lab) is None


def test_an_engine_bundle_is_refused_for_a_node_of_another_release_with_the_fix():
    from swarmlab.lab.node_prep import bundle_refusal, debian_release
    assert debian_release('PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nVERSION_CODENAME=trixie\n') == "trixie"
    assert bundle_refusal("swr1", "bookworm", "bookworm") is None
    refusal = bundle_refusal("swr1", "bookworm", "trixie")
    assert "swr1 runs Debian trixie" in refusal and 'install = "apt"' in refusal and "--suite bookworm" in refusal
