"""Losing the majority, pure: which managers the drills cut (lose-quorum) or split off, the
events from what the managers in and out of sight answer, the windows counted from the heal,
the link and network in a domain's XML, and reset's choice after a heal."""

import pytest

from swarmlab.adapters.libvirt_xml import interface_link, interface_network, on_network, split_network_xml, with_link
from swarmlab.core import baseline as bl
from swarmlab.core.quorum import QuorumDetector, lose_quorum_cut, other_half_says, services_back, split_halves
from swarmlab.core.swarm import SwarmNode, Task
from swarmlab.core.timeline import Timeline
from swarmlab.errors import Refused, SwarmlabError


def node(name: str, manager: str = "Reachable", status: str = "Ready") -> SwarmNode:
    return SwarmNode(name, name, status, "Active", manager, "26.1.5")


def test_the_drill_cuts_as_few_managers_as_lose_the_majority_and_never_the_leader():
    three = [node("swr1", "Leader"), node("swr2"), node("swr3")]
    assert lose_quorum_cut(three, "t1") == (["swr2", "swr3"], "swr1")
    five = [node("a"), node("b"), node("c", "Leader"), node("d"), node("e"), node("w", "")]
    assert lose_quorum_cut(five, "t1") == (["a", "b", "d"], "c")  # 2 of 5 left: short of 3; workers stay
    one_down = [node("a", "Leader"), node("b"), node("c"), node("d"), node("e", "Unreachable", "Down")]
    assert lose_quorum_cut(one_down, "t1") == (["b", "c"], "a")


@pytest.mark.parametrize("nodes, words", [
    ([node("swr1", "Leader"), node("swr2", "")], "lab t1 has 1 manager: losing the majority needs 3 or more"),
    ([node("swr1"), node("swr2"), node("swr3", "Unreachable")], "lab t1 has no leader right now"),
    ([node("a", "Leader"), node("b", "Unreachable", "Down"), node("c", "Unreachable", "Down")],
     "lab t1 has 1 of 3 managers reachable: its swarm is short of a majority already"),
])
def test_a_swarm_that_cannot_lose_its_majority_is_refused_in_words(nodes, words):
    with pytest.raises(Refused, match=words):
        lose_quorum_cut(nodes, "t1")


def test_a_split_gives_each_half_as_many_managers_the_leader_in_sight_and_shares_the_workers():
    four = [node("swr1"), node("swr2", "Leader"), node("swr3"), node("swr4")]
    assert split_halves(four, "t2") == (["swr1", "swr2"], ["swr3", "swr4"], "swr2")
    six = [node("a"), node("b"), node("c", "Leader"), node("d"), node("w1", ""), node("w2", ""), node("w3", "")]
    sight, away, leader = split_halves(six, "t2")
    assert (sight, away, leader) == (["a", "c", "w1", "w3"], ["b", "d", "w2"], "c")


@pytest.mark.parametrize("nodes, words", [
    ([node("swr1", "Leader"), node("swr2"), node("swr3")],
     r"lab t2 has 3 managers: a split that leaves neither half a majority needs an even number, 4 or more "
     r"\(`swarmlab up 4 --managers 4`"),
    ([node("a", "Leader"), node("b"), node("c", ""), node("d", "")], "lab t2 has 2 managers"),
    ([node("a"), node("b"), node("c"), node("d")], "lab t2 has no leader right now"),
    ([node("a", "Leader"), node("b"), node("c"), node("d", "Unreachable", "Down")],
     r"lab t2 has managers that are not reachable \(d\): `swarmlab chaos heal --all --lab t2`"),
])
def test_a_lab_that_cannot_be_split_evenly_is_refused_in_words(nodes, words):
    with pytest.raises(Refused, match=words):
        split_halves(nodes, "t2")


def test_the_other_half_is_read_from_what_docker_node_ls_printed():
    assert other_half_says("Error response from daemon: rpc error: code = Unknown desc = The swarm does not have "
                           "a leader. It's possible that too few managers are online.") == "no-leader"
    assert other_half_says("swr1 Reachable\nswr2 Leader\nswr3 Reachable\n") == "swr2"
    assert other_half_says("") is None  # timed out: its manager still waits on the lost leader
    assert other_half_says("swr1 Leader of the pack\n") is None  # a student's own words are no answer


NO_LEADER = ("swr1: Docker API GET /nodes: 503 rpc error: The swarm does not have a leader. It's possible that "
             "too few managers are online.")
TIMED_OUT = "swr1: Docker API GET /nodes failed: TimeoutError"


def test_the_leader_is_lost_when_its_api_stops_answering_for_good_and_back_after_the_heal():
    detector = QuorumDetector(["swr1", "swr2", "swr3"])
    cut = [node("swr1", "Leader"), node("swr2", "Unreachable"), node("swr3", "Unreachable")]
    assert detector.feed(1, cut) == []
    assert detector.feed(16, None, TIMED_OUT) == []  # stepped down, or only slow: not known yet
    assert detector.feed(20, None, TIMED_OUT) == []
    assert detector.feed(28, None, NO_LEADER) == [
        ("leader-lost", "the leader stopped answering as leader", 16),
        ("no-leader", "the manager in sight answers: the swarm does not have a leader", 28)]
    assert detector.feed(29, None, NO_LEADER) == []
    detector.healed = True
    assert detector.feed(40, None, NO_LEADER) == []
    assert detector.feed(41, [node("swr1"), node("swr2", "Leader"), node("swr3", "Unreachable")]) == \
        [("leader-back", "swr2", 41)]
    assert detector.feed(44, [node("swr1"), node("swr2", "Leader"), node("swr3")]) == \
        [("managers-reachable", "swr1, swr2, swr3", 44)]


def test_a_read_slow_for_a_moment_is_not_a_lost_leader():
    detector = QuorumDetector(["swr1", "swr2", "swr3"])
    leads = [node("swr1", "Leader"), node("swr2"), node("swr3", "Unreachable")]
    assert detector.feed(5, None, TIMED_OUT) == []
    assert detector.feed(9, leads) == []  # the leader again: the timeout was load
    assert detector.feed(20, None, TIMED_OUT) == []
    assert detector.feed(30, None, NO_LEADER)[0] == ("leader-lost", "the leader stopped answering as leader", 20)


def test_a_node_list_without_a_leader_is_a_lost_leader_at_once():
    detector = QuorumDetector(["swr1", "swr2", "swr3"])
    assert detector.feed(12, [node("swr1"), node("swr2", "Unreachable"), node("swr3", "Unreachable")]) == \
        [("leader-lost", "no manager is Leader", 12)]


def test_after_a_heal_the_windows_count_from_the_heal():
    timeline = Timeline("lose-quorum", "t1", "swr2, swr3")
    timeline.mark("partitioned", at=timeline.started)
    lost = timeline.mark("leader-lost", at=timeline.started + 14)
    healed = timeline.mark("healed", at=timeline.started + 30)
    back = timeline.mark("leader-back", at=timeline.started + 41)
    assert lost.expected == (10, 21) and healed.expected is None and back.expected == (30, 61)


DOMAIN = """<domain><name>t1-swr2</name><devices>
<interface type="network"><mac address="52:54:00:aa:bb:cc"/><source network="sl-t1"/><model type="virtio"/></interface>
</devices></domain>"""


def test_a_link_is_set_down_and_up_with_the_rest_of_the_interface_kept():
    interface, up = interface_link(DOMAIN)
    assert up and 'mac address="52:54:00:aa:bb:cc"' in interface
    down = with_link(interface, False)
    assert '<link state="down" />' in down and 'source network="sl-t1"' in down
    assert interface_link(f"<domain><devices>{down}</devices></domain>")[1] is False
    assert with_link(down, True).count("<link ") == 1 and '<link state="up" />' in with_link(down, True)


def test_a_node_moves_to_another_network_with_its_mac_tap_and_link_kept():
    live = DOMAIN.replace('<source network="sl-t1"/>',
                          '<source network="sl-t1" portid="b2008f17" bridge="sl-sl-t1"/><target dev="vnet3"/>'
                          '<link state="up"/>')
    interface, _ = interface_link(live)
    moved = on_network(interface, "swarmlab-split-t1")
    assert interface_network(moved) == "swarmlab-split-t1" and interface_network(interface) == "sl-t1"
    assert "portid" not in moved and "bridge=" not in moved  # the old network's port: libvirt makes a new one
    assert all(part in moved for part in ('52:54:00:aa:bb:cc', 'dev="vnet3"', '<link state="up" />'))
    bridged = '<interface type="bridge"><source bridge="br0"/></interface>'
    with pytest.raises(SwarmlabError, match="not on a libvirt network"):
        on_network(bridged, "x")


def test_a_split_network_is_an_owned_bridge_with_no_address_dhcp_or_route():
    from swarmlab.adapters.libvirt_xml import ownership
    xml = split_network_xml("swarmlab-split-a-lab-with-a-long-name", "a-lab-with-a-long-name")
    assert ownership(xml) == {"role": "split", "lab": "a-lab-with-a-long-name"}
    assert "<ip" not in xml and "<forward" not in xml and "<dns" not in xml
    bridge = xml.split('<bridge name="')[1].split('"')[0]
    assert len(bridge) <= 15  # Linux's cap on an interface name


def test_reset_reverts_a_lab_whose_links_it_has_just_healed():
    state = bl.SwarmState(nodes={}, services={}, configs=[], secrets=[], networks=[])
    assert bl.choose(True, state, state, [], [], ["swr2", "swr3"]) == \
        ("snapshot", "swr2, swr3 were cut off the network")


def test_a_class_drill_runs_on_every_lab_at_once_and_one_failure_stops_no_other(tmp_path, monkeypatch):
    import threading

    from swarmlab import config as configuration
    from swarmlab.classroom import class_chaos, room as classroom
    from swarmlab.core import roster
    from swarmlab.errors import NotFound
    from tests.conftest import write_config

    config = configuration.load(write_config(tmp_path / "swarmlab.toml", tmp_path / "state"))
    classroom.save(config, classroom.Classroom(1, [roster.Student("Ann", "ann"), roster.Student("Bo", "bo"),
                                                   roster.Student("Cy", "cy")]))
    together = threading.Barrier(3, timeout=5)  # breaks unless all three labs run at the same time

    def drill(scoped, lab, restore, timeout, progress):
        together.wait()
        if lab == "bo":
            raise Refused("lab bo has 1 manager: losing the majority needs 3 or more")
        timeline = Timeline("lose-quorum", lab, "swr2, swr3")
        timeline.missing = ["leader-back"] if lab == "cy" else []
        return timeline
    monkeypatch.setattr(class_chaos.quorum_drills, "lose_quorum", drill)
    monkeypatch.setattr(classroom, "student_config", lambda config, student: config)
    results, timelines = class_chaos.class_chaos(config, "lose-quorum", True, 60)
    assert [(r.lab, r.ok, r.error) for r in results] == [
        ("ann", True, None), ("bo", False, "lab bo has 1 manager: losing the majority needs 3 or more"),
        ("cy", True, None)]
    assert [t.lab for t in timelines] == ["ann", "cy"] and timelines[1].missing == ["leader-back"]
    split = []
    monkeypatch.setattr(class_chaos.quorum_drills, "split", lambda scoped, lab, *a: split.append(lab) or Timeline("split", lab))
    assert [t.exercise for t in class_chaos.class_chaos(config, "split", True, 60, only=["cy"])[1]] == ["split"]
    assert split == ["cy"]
    with pytest.raises(NotFound, match="no class drill split-brain"):
        class_chaos.class_chaos(config, "split-brain", True, 60)
    with pytest.raises(NotFound, match="the class has no lab zed"):
        class_chaos.class_chaos(config, "lose-quorum", True, 60, only=["ann", "zed"])


def test_the_nodes_check_counts_every_listed_node_and_wants_them_ready():
    from swarmlab.core import checks

    def listed(*states):
        return [{"Description": {"Hostname": name}, "Status": {"State": state}} for name, state in states]
    check = {"type": "nodes", "count": 3}
    ok = checks.judge(0, check, checks.Facts(nodes=listed(("swr1", "ready"), ("swr2", "ready"), ("swr3", "ready"))))
    assert ok.ok and ok.title == "3 nodes listed"
    stale = checks.judge(0, check, checks.Facts(nodes=listed(("swr1", "ready"), ("swr2", "down"), ("swr2", "ready"),
                                                             ("swr3", "down"), ("swr3", "ready"))))
    assert not stale.ok and stale.found == "5 nodes (swr1, swr2, swr2, swr3, swr3); not ready: swr2, swr3"


def test_heal_wants_nodes_or_all(tmp_path):
    from tests.conftest import swarmlab, write_config
    path = write_config(tmp_path / "swarmlab.toml", tmp_path / "state")
    neither = swarmlab("chaos", "heal", config=path)
    assert neither.returncode == 2 and "name the NODEs to heal or pass --all" in neither.stderr
    both = swarmlab("chaos", "heal", "swr2", "--all", config=path)
    assert both.returncode == 2 and "Traceback" not in both.stderr


def test_a_timeline_prints_no_escape_a_node_sent(capsys):
    from swarmlab.cli.chaos import _render_timelines
    timeline = Timeline("lose-quorum", "t1", "swr2, swr3")
    timeline.mark("writes-refused", "service create: \x1b[2Jgone", at=timeline.started + 25)
    _render_timelines([timeline], False, None)
    out = capsys.readouterr().out
    assert "writes-refused" in out and "\x1b" not in out


def task(name: str, state: str) -> Task:
    return Task(id=name, name=name, node="swr1", desired_state="Running", current_state=f"{state} 3 seconds ago", error="")


def test_services_are_back_when_each_runs_as_many_tasks_as_before_the_cut():
    before = {"web": 3, "broken": 0}
    starting = {"web": (3, [task("web.1", "Running"), task("web.2", "Running"), task("web.3", "Starting")]),
                "broken": (2, [task("broken.1", "Rejected")])}
    assert services_back(before, starting) == (False, "web 2/3, broken 0/2")
    running = {**starting, "web": (3, [task(f"web.{i}", "Running") for i in (1, 2, 3)])}
    assert services_back(before, running) == (True, "web 3/3, broken 0/2")  # broken was short before: not waited for
    assert services_back({"web": 3}, {}) == (True, "no services")  # removed meanwhile: nothing to wait for
    assert services_back({"web": 3}, {"web": (1, [task("web.1", "Running")])}) == (True, "web 1/1")  # scaled down
    assert services_back({}, {}) == (True, "no services")


def test_the_other_half_is_watched_until_it_says_there_is_no_leader_or_the_time_is_up(monkeypatch):
    from types import SimpleNamespace

    from swarmlab.lab import chaos, quorum_drills
    answers = iter(["", "swr3 Reachable\nswr4 Leader\n", "Error response from daemon: rpc error: code = Unknown "
                    "desc = The swarm does not have a leader. It's possible that too few managers are online."])
    asked = []

    def guest_exec(domain, argv, timeout):
        asked.append((domain, argv[2:4]))
        return 1, next(answers)
    monkeypatch.setattr(chaos, "POLL", 0.01)
    timeline = Timeline("split", "t2", "swr3, swr4")
    session = SimpleNamespace(hv=SimpleNamespace(guest_exec=guest_exec))
    quorum_drills.OtherHalf(session, "t2-swr3", timeline.started + 10).record(timeline, lambda _m: None)
    assert [e.event for e in timeline.events] == ["other-half-no-leader"] and timeline.missing == []
    assert asked == [("t2-swr3", ["/usr/bin/docker", "node"])] * 3  # a timeout and a leader are no event

    timeline = Timeline("split", "t2", "swr3, swr4")
    silent = SimpleNamespace(hv=SimpleNamespace(guest_exec=lambda *a, **k: (124, "")))
    quorum_drills.OtherHalf(silent, "t2-swr3", timeline.started + 0.1).record(timeline, lambda _m: None)
    assert timeline.events == [] and timeline.missing == ["other-half-no-leader"]


def test_what_a_guest_prints_is_kept_up_to_a_cap():
    """Root in the guest decides what `docker node ls` prints: a flood is cut, not held whole."""
    import base64

    from swarmlab.adapters.guest_agent import GuestAgentMixin

    class Guest(GuestAgentMixin):
        def _owned(self, name):
            return name

        def _agent(self, dom, command, timeout=5, **arguments):
            if command == "guest-exec":
                return {"pid": 1}
            flood = base64.b64encode(b"x" * 1_000_000).decode()
            return {"exited": True, "exitcode": 0, "out-data": flood, "err-data": base64.b64encode(b"tail").decode()}
    code, output = Guest().guest_exec("t2-swr3", ["/usr/bin/docker"], timeout=5, most_bytes=1000)
    assert code == 0 and len(output) <= 1002 + 4 and output.endswith("tail")
