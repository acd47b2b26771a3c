"""Reset by cost: what each level cost on a lab is learnt from its resets, and a state level
that must start tasks again gives way to a revert measured cheaper. Facts in, decisions out."""

from swarmlab.core import baseline as bl, reset_costs as rc
from tests.test_baseline import FORMED, formed, output, service


def keep_removed():
    """The baseline runs `keep` (3 tasks); a student removed it."""
    base = formed(services=[service("s1", "keep", 3)], replicas=[("keep", "3/3")])
    return base, bl.diff(base, bl.parse_swarm_state(output(FORMED)))


def test_the_tasks_a_state_level_starts_are_the_replicas_it_recreates_or_restores():
    base, d = keep_removed()
    assert d.missing_services == ["keep"] and rc.tasks_to_start(base, d) == 3
    assert rc.tasks_to_start(base, bl.diff(base, base)) == 0


def test_tasks_a_drained_node_left_to_move_count_as_tasks_to_start():
    """A student drained a node a moment ago: putting its availability back starts nothing, but
    the health gate waits for its service's task that is still moving (a 12 s gate, measured)."""
    base = formed(services=[service("s1", "web", 3)], replicas=[("web", "3/3")])
    moving = formed(services=[service("s1", "web", 3)], replicas=[("web", "2/3")])
    assert rc.tasks_to_start(base, bl.diff(base, moving), moving) == 1
    assert rc.tasks_to_start(base, bl.diff(base, base), base) == 0


def test_without_figures_or_tasks_to_start_the_choice_stands():
    chosen = ("state", "the swarm can be put back over SSH")
    assert rc.weigh(*chosen, 3, rc.LevelCosts()) == (*chosen, None)
    assert rc.weigh(*chosen, 3, rc.LevelCosts(snapshot_s=12.0)) == (*chosen, None)  # no task was timed yet
    assert rc.weigh(*chosen, 0, rc.LevelCosts(12.0, 5.0, 15.0)) == (*chosen, None)  # nothing to start
    assert rc.weigh("snapshot", "the leader moved", 3, rc.LevelCosts(12.0, 5.0, 15.0))[0] == "snapshot"


def test_a_new_lab_with_no_history_and_no_siblings_chooses_by_the_prior():
    """Its first reset after a student removed a 3-task service: a revert, not 65 s of tasks."""
    base, d = keep_removed()
    costs, sources = rc.known(rc.LevelCosts(), rc.LevelCosts())
    assert costs == rc.PRIOR and set(sources.values()) == {"prior"}
    level, why, estimates = rc.weigh("state", "the swarm can be put back over SSH", rc.tasks_to_start(base, d),
                                     costs, sources)
    assert level == "snapshot" and estimates["state_s"] > estimates["snapshot_s"]
    assert estimates["from"] == {"snapshot_s": "prior", "state_base_s": "prior", "per_task_s": "prior"}
    assert why.endswith("(~66 s as measured on this machine kind) and a revert takes 8 s")


def test_a_new_lab_starts_from_what_its_siblings_measured_and_then_from_its_own():
    # the siblings' tasks start fast (a KVM host, say): the state level wins
    siblings = rc.LevelCosts(snapshot_s=9.0, state_base_s=2.0, per_task_s=1.0)
    costs, sources = rc.known(rc.LevelCosts(), siblings)
    level, why, estimates = rc.weigh("state", "over SSH", 3, costs, sources)
    assert level == "state" and estimates["state_s"] == 5.0 and set(estimates["from"].values()) == {"sibling labs"}
    # the lab's own revert, once measured, counts before its siblings'
    costs, sources = rc.known(rc.LevelCosts(snapshot_s=4.0), siblings)
    level, why, estimates = rc.weigh("state", "over SSH", 3, costs, sources)
    assert level == "snapshot" and estimates["from"]["snapshot_s"] == "this lab" and why.endswith("a revert took 4 s")


def test_a_state_level_that_would_wait_longer_than_a_revert_gives_way_to_it():
    level, why, estimates = rc.weigh("state", "the swarm can be put back over SSH", 2, rc.LevelCosts(10.6, 5.0, 20.0))
    assert level == "snapshot" and estimates == {"state_s": 45.0, "snapshot_s": 10.6, "tasks": 2}
    assert why.endswith("but it would start 2 tasks again (~45 s here) and a revert took 11 s")
    level, why, estimates = rc.weigh("state", "over SSH", 1, rc.LevelCosts(30.0, 5.0, 4.0))
    assert level == "state" and why == "over SSH (~9 s; a revert took 30 s)" and estimates["state_s"] == 9.0


def test_costs_are_learnt_from_levels_that_ended_healthy_and_kept_per_lab(tmp_path):
    costs = rc.learn(rc.LevelCosts(), "snapshot", 10.6, 0)
    assert rc.learn(costs, "state", 44.9, 2, state_base_s=5.0) == rc.LevelCosts(10.6, None, 19.95)  # the known base
    costs = rc.learn(costs, "state", 8.0, 0)  # nothing to start: the level's own cost
    costs = rc.learn(costs, "state", 44.9, 2)
    assert costs == rc.LevelCosts(10.6, 8.0, 18.45)
    assert rc.learn(costs, "rebuild", 300.0, 0) == costs
    assert rc.load(tmp_path) == rc.LevelCosts()  # nothing measured yet
    rc.save(tmp_path, costs)
    assert rc.load(tmp_path) == costs
    (tmp_path / "reset-costs.json").write_text("{not json")
    assert rc.load(tmp_path) == rc.LevelCosts()
    shared = rc.siblings_path(tmp_path, "local", "debian13")  # the labs of one host and template together
    rc.save_file(shared, costs)
    assert rc.load_file(shared) == costs and shared.parent.name == "reset-costs"


def test_reading_the_swarm_may_take_what_a_state_level_could_save_over_a_revert():
    assert rc.read_budget(rc.LevelCosts(8.0, 3.0, 20.0)) == 5.0
    assert rc.read_budget(rc.PRIOR) == rc.PRIOR.snapshot_s - rc.STATE_BASE_S > 4  # a quiet read takes ~2 s
    # a state level once measured dearer than a revert (under load) is still read for, briefly,
    # so that a quick swarm runs it and measures it again
    assert rc.read_budget(rc.LevelCosts(8.0, 10.0, 20.0)) == rc.READ_FLOOR_S
    assert rc.read_budget(rc.LevelCosts()) == float("inf")  # nothing to weigh against


def test_a_read_that_runs_over_its_budget_is_given_up_and_closes_its_connection_later(monkeypatch):
    import threading
    import time
    from swarmlab.lab import reset_gate as reset
    closed, ended = [], threading.Event()

    class Conn:
        def close(self):
            closed.append(True)
            ended.set()

    def slow(config, lab, baseline):
        time.sleep(0.3)
        return {"swr1": Conn()}, "state", {}
    monkeypatch.setattr(reset, "manager_session", slow)
    assert reset.manager_session_within(None, reset.Lab("l", []), None, 0.05) == ({}, None, False)
    assert ended.wait(5) and closed == [True]
    conns, now, in_time = reset.manager_session_within(None, reset.Lab("l", []), None, 5)
    assert in_time and now == "state" and list(conns) == ["swr1"] and closed == [True]
    assert reset.manager_session_within(None, reset.Lab("l", []), None, -1) == ({}, None, False)


def test_the_health_gate_answers_what_still_fails_at_its_deadline_and_stops_on_ctrl_c(monkeypatch):
    """`reset --all` runs the gate in worker threads, which get no KeyboardInterrupt: Ctrl-C
    reaches them through `cancelled`, or the interrupted reset waited out the whole timeout."""
    import pytest

    from swarmlab.lab import reset_gate
    from swarmlab.waiting import Cancelled, cancelled
    asked, said = [], []

    def failing(config, hv, lab, baseline, conns, timings):
        asked.append(conns)
        if len(asked) == 2 and interrupt:
            cancelled.set()
        return ["swr2 is down"]
    monkeypatch.setattr(reset_gate, "check_health", failing)
    monkeypatch.setattr(reset_gate, "GATE_EVERY_S", 0.01)
    interrupt = False
    lab = reset_gate.Lab("l", [])
    assert reset_gate.wait_healthy(None, None, lab, None, 0.1, said.append, {"swr1": "live"}) == ["swr2 is down"]
    assert asked[0] == {"swr1": "live"} and asked[1:] == [None] * (len(asked) - 1)  # live conns serve the first only
    assert said[0] == "waiting for health: swr2 is down"
    asked.clear()
    interrupt = True
    try:
        with pytest.raises(Cancelled):
            reset_gate.wait_healthy(None, None, lab, None, 600, said.append)
    finally:
        cancelled.clear()
    assert len(asked) == 2
