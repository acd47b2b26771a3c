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


def test_until_both_levels_were_measured_on_the_lab_the_choice_stands():
    chosen = ("state", "the swarm can be put back over SSH")
    assert rc.weigh(*chosen, 3, rc.LevelCosts()) == (*chosen, None)
    assert rc.weigh(*chosen, 3, rc.LevelCosts(snapshot_s=12.0)) == (*chosen, None)  # no task was timed yet
    assert rc.weigh(*chosen, 0, rc.LevelCosts(12.0, 5.0, 15.0)) == (*chosen, None)  # nothing to start
    assert rc.weigh("snapshot", "the leader moved", 3, rc.LevelCosts(12.0, 5.0, 15.0))[0] == "snapshot"


def test_a_state_level_that_would_wait_longer_than_a_revert_gives_way_to_it():
    level, why, estimates = rc.weigh("state", "the swarm can be put back over SSH", 2, rc.LevelCosts(10.6, 5.0, 20.0))
    assert level == "snapshot" and estimates == {"state_s": 45.0, "snapshot_s": 10.6, "tasks": 2}
    assert why.endswith("but it would start 2 tasks again (~45 s here) and a revert took 11 s")
    level, why, estimates = rc.weigh("state", "over SSH", 1, rc.LevelCosts(30.0, 5.0, 4.0))
    assert level == "state" and why == "over SSH (~9 s; a revert took 30 s)" and estimates["state_s"] == 9.0


def test_costs_are_learnt_from_levels_that_ended_healthy_and_kept_per_lab(tmp_path):
    costs = rc.learn(rc.LevelCosts(), "snapshot", 10.6, 0)
    costs = rc.learn(costs, "state", 8.0, 0)  # nothing to start: the level's own cost
    costs = rc.learn(costs, "state", 44.9, 2)
    assert costs == rc.LevelCosts(10.6, 8.0, 18.45)
    assert rc.learn(costs, "rebuild", 300.0, 0) == costs
    assert rc.load(tmp_path) == rc.LevelCosts()  # nothing measured yet
    rc.save(tmp_path, costs)
    assert rc.load(tmp_path) == costs
    (tmp_path / "reset-costs.json").write_text("{not json")
    assert rc.load(tmp_path) == rc.LevelCosts()
