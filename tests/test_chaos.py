"""The chaos timeline and its HTML report, from a timeline as a real run produces it."""

from swarmlab.core import timeline


def sample() -> timeline.Timeline:
    t = timeline.Timeline("kill-leader", "t1", "swr1", old_leader="swr1", new_leader="swr2", final_leader="swr2")
    t.started = 100.0
    for event, at, detail in (("killed", 100.0, "swr1 powered off"), ("api-unavailable", 100.4, ""),
                              ("new-leader", 118.2, "swr2"), ("api-back", 118.3, ""),
                              ("node-down", 151.0, "swr1 Down/Unreachable"),
                              ("tasks-rescheduled", 175.5, "hello 5/5")):
        t.mark(event, detail, at=at)
    t.missing = ["rejoined"]
    t.before = {"nodes": [{"node": "swr1", "status": "Ready", "availability": "Active", "manager": "Leader"}],
                "tasks": [{"service": "hello", "task": "hello.1", "node": "swr1", "state": "Running"}]}
    t.after = {"nodes": [{"node": "swr1", "status": "Down", "availability": "Active", "manager": "Unreachable"}],
               "tasks": [{"service": "hello", "task": "hello.1", "node": "swr3", "state": "Running"}]}
    return t


def test_events_are_seconds_since_the_kill_with_expected_windows():
    data = sample().as_dict()
    times = {e["event"]: e["t"] for e in data["events"]}
    assert times == {"killed": 0.0, "api-unavailable": 0.4, "new-leader": 18.2, "api-back": 18.3,
                     "node-down": 51.0, "tasks-rescheduled": 75.5}
    windows = {e["event"]: e["expected"] for e in data["events"]}
    assert windows["new-leader"] == (10, 31) and windows["node-down"] == (15, 60)
    assert data["missing"] == ["rejoined"]


def test_html_report_is_self_contained_with_svg_and_every_event():
    page = timeline.html_report([sample()])
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "</svg>" in page
    for event in ("killed", "api-unavailable", "new-leader", "api-back", "node-down", "tasks-rescheduled", "rejoined"):
        assert event in page
    # tasks-rescheduled at 75.5 s is past its 20-70 s window, and only it is marked late
    assert page.count('<span class="late">late</span>') == 1
    row = page[page.index("<td>tasks-rescheduled</td>"):]
    assert row[:row.index("</tr>")].count('class="late"') == 1
    assert "not seen before the timeout" in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing to fetch
    assert "hello.1" in page and "swr3" in page


def test_a_report_over_several_timelines_is_one_page():
    second = sample()
    second.exercise, second.target = "start", "swr3"
    page = timeline.html_report([sample(), second])
    assert page.count("<!DOCTYPE html>") == 1 and page.count("<html") == 1 and page.count("</html>") == 1
    assert page.count("<section>") == 2 and page.count("<svg") == 2
    assert "start: swr3 in lab t1" in page and "kill-leader: swr1 in lab t1" in page


# --- event detection from scripted `docker node ls` / `service ps` answers ---------------------
from swarmlab.core.swarm import SwarmNode, Task  # noqa: E402


def nodes(**states) -> list[SwarmNode]:
    """nodes(swr1=("Down", "Unreachable"), ...)"""
    return [SwarmNode(f"id-{n}", n, st, "Active", ms, "20.10") for n, (st, ms) in states.items()]


def web(desired: int, *placements: tuple[str, str]) -> dict:
    return {"web": (desired, [Task(f"t{i}", f"web.{i}", node, "Running", f"{state} 1 second ago", "")
                              for i, (node, state) in enumerate(placements, 1)])}


def feed_all(detector, rounds):
    seen = []
    for answer, tasks in rounds:
        seen += detector.feed(answer, tasks)
    return seen


def test_kill_leader_events_come_in_swarm_order():
    d = timeline.EventDetector("swr1", ["new-leader", "node-down", "tasks-rescheduled"], was_manager=True)
    healthy = nodes(swr1=("Ready", "Leader"), swr2=("Ready", "Reachable"), swr3=("Ready", "Reachable"))
    elected = nodes(swr1=("Unknown", "Unreachable"), swr2=("Ready", "Leader"), swr3=("Ready", "Reachable"))
    down = nodes(swr1=("Down", "Unreachable"), swr2=("Ready", "Leader"), swr3=("Ready", "Reachable"))
    events = feed_all(d, [(healthy, None), (None, None), (None, None), (elected, None)])
    assert [e for e, _ in events] == ["api-unavailable", "api-back", "new-leader", "node-unreachable"]
    assert dict(events)["new-leader"] == "swr2"
    assert not d.wants_tasks()  # tasks are judged only once the node is Down
    assert d.feed(down, None) == [("node-down", "swr1 Down/Unreachable")]
    assert d.wants_tasks()
    # a task still on the dead node, or too few Running, is not rescheduled yet
    assert d.feed(down, web(3, ("swr1", "Running"), ("swr2", "Running"), ("swr3", "Running"))) == []
    assert d.feed(down, web(3, ("swr2", "Running"), ("swr3", "Starting"), ("swr3", "Running"))) == []
    assert d.feed(down, web(3, ("swr2", "Running"), ("swr2", "Running"), ("swr3", "Running"))) == \
        [("tasks-rescheduled", "web 3/3")]
    assert d.done


def test_a_restarted_manager_rejoins_only_when_reachable_again():
    d = timeline.EventDetector("swr1", ["rejoined"], was_manager=True)
    assert d.feed(nodes(swr1=("Ready", "Unreachable"), swr2=("Ready", "Leader")), None) == []
    assert d.feed(nodes(swr1=("Ready", "Reachable"), swr2=("Ready", "Leader")), None) == \
        [("rejoined", "swr1 Ready/Reachable")]
    worker = timeline.EventDetector("swr4", ["rejoined"], was_manager=False)
    assert worker.feed(nodes(swr4=("Ready", "")), None) == [("rejoined", "swr4 Ready/worker")]


def test_events_that_never_come_leave_the_detector_waiting():
    d = timeline.EventDetector("swr1", ["new-leader", "node-down", "tasks-rescheduled"], was_manager=True)
    stuck = nodes(swr1=("Unknown", "Unreachable"), swr2=("Ready", "Reachable"), swr3=("Ready", "Reachable"))
    for _ in range(5):  # no leader is ever elected (lost quorum), the node never turns Down
        d.feed(stuck, None)
        d.feed(None, None)
    assert not d.done and d.seen == {"api-unavailable", "api-back", "node-unreachable"}
    assert [e for e in d.want if e not in d.seen] == ["new-leader", "node-down", "tasks-rescheduled"]


def test_drain_waits_for_every_task_to_leave_and_promotion_for_reachable():
    d = timeline.EventDetector("swr3", ["drained"], was_manager=True)
    up = nodes(swr1=("Ready", "Leader"), swr3=("Ready", "Reachable"))
    assert d.feed(up, web(2, ("swr3", "Running"), ("swr1", "Running"))) == []
    assert d.feed(up, web(2, ("swr1", "Running"), ("swr1", "Running"))) == [("drained", "web 2/2")]
    p = timeline.EventDetector("swr1", ["promoted"], was_manager=True)
    assert p.feed(nodes(swr1=("Ready", ""), swr2=("Ready", "Leader")), None) == []
    assert p.feed(nodes(swr1=("Ready", "Reachable"), swr2=("Ready", "Leader")), None) == \
        [("promoted", "swr1 Reachable")]


def test_no_services_is_said_as_such():
    assert timeline.tasks_settled({}, "swr1") == (True, "no services")


def test_the_quorum_guard_refuses_what_would_lose_the_majority():
    three = nodes(swr1=("Ready", "Leader"), swr2=("Ready", "Reachable"), swr3=("Ready", "Reachable"))
    assert timeline.quorum_refusal(three, "swr1") is None
    one_gone = nodes(swr1=("Ready", "Leader"), swr2=("Down", "Unreachable"), swr3=("Ready", "Reachable"))
    assert "leaves 1 of 3 managers: raft needs a majority (2)" in timeline.quorum_refusal(one_gone, "swr1")
    single = nodes(swr1=("Ready", "Leader"), swr2=("Ready", ""))
    assert "leaves 0 of 1 managers" in timeline.quorum_refusal(single, "swr1")
    assert timeline.quorum_refusal(single, "swr2") is None  # a worker costs no quorum


class FakeManager:
    """A manager whose engine answers once `released` is set (at once, unless held), counting
    the requests it got; `answered` is set as each answer has gone back."""

    def __init__(self, name: str, held: bool):
        import threading
        self.host, self.requests = name, 0
        self.released, self.answered = threading.Event(), threading.Event()
        if not held:
            self.released.set()
        self.busy = threading.Lock()

    def get(self, path: str, timeout: float):
        self.requests += 1
        if not self.released.wait(timeout):
            raise OSError("timed out")
        self.answered.set()
        return [{"ID": self.host, "Description": {"Hostname": self.host}, "Status": {"State": "ready"},
                 "Spec": {"Availability": "active"}, "ManagerStatus": {"Leader": True}}]

    def close(self) -> None:
        pass


def test_a_hung_manager_is_not_asked_again_until_it_answers_and_the_others_still_count():
    import time

    from swarmlab.lab.survivors import Survivors
    hung, quick = FakeManager("swr1", held=True), FakeManager("swr2", held=False)
    survivors = Survivors({"swr1": hung, "swr2": quick})
    try:
        for _ in range(5):  # five polls while swr1 is still busy with the first
            assert [n.hostname for n in survivors.nodes(timeout=30)] == ["swr2"]
        assert (hung.requests, quick.requests) == (1, 5)
        assert survivors.nodes(exclude={"swr2"}, timeout=0.2) is None  # only the busy one left: no answer
        assert hung.requests == 1
        hung.released.set()  # its first request answers at last
        assert hung.answered.wait(5)
        deadline = time.monotonic() + 5  # the pool's thread hands the manager back just after
        while hung.busy.locked() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [n.hostname for n in survivors.nodes(exclude={"swr2"}, timeout=5)] == ["swr1"]
        assert hung.requests == 2  # asked again once it had answered
    finally:
        survivors.close()
