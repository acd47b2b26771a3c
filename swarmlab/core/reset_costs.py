"""What each reset level costs on one lab, learnt from the resets that ran on it, and the trade
between the state level and a revert by that cost. Pure but for the small file it is kept in.

The state level touches no VM, but every task it has to start again (a removed service, a
changed one) waits for the scheduler and the engine: under TCG, 30 of 45 s. A revert costs the
same whatever the students did. So a state level that must start tasks is traded for a revert
when this lab's revert was measured cheaper. What either disturbs is the same: every reset ends
the portal's terminals on the lab (reset.mark_reset)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from swarmlab.core.baseline import Diff, SwarmState

STATE_BASE_S = 5.0  # a state level that starts no task, until one is measured


@dataclass
class LevelCosts:
    snapshot_s: float | None = None  # the last revert that ended healthy, health gate included
    state_base_s: float = STATE_BASE_S  # the last state level that started no task
    per_task_s: float | None = None  # what each task the state level started cost, last measured

    def estimate_state(self, tasks: int) -> float | None:
        if tasks and self.per_task_s is None:
            return None
        return self.state_base_s + tasks * (self.per_task_s or 0.0)


def tasks_to_start(baseline: SwarmState, d: Diff) -> int:
    """Tasks the state level starts: every replica of a service it recreates or restores."""
    return sum(baseline.services[name].desired for name in (*d.missing_services, *d.changed_services)
               if name in baseline.services)


def weigh(level: str, why: str, tasks: int, costs: LevelCosts) -> tuple[str, str, dict | None]:
    """(level, why, the estimates compared or None). Only a state level that starts tasks is
    weighed, and only once this lab's costs are known."""
    if level != "state" or not tasks:
        return level, why, None
    state_s = costs.estimate_state(tasks)
    if state_s is None or costs.snapshot_s is None:
        return level, why, None
    estimates = {"state_s": round(state_s, 1), "snapshot_s": round(costs.snapshot_s, 1), "tasks": tasks}
    if state_s > costs.snapshot_s:
        return "snapshot", (f"{why}; but it would start {tasks} tasks again (~{state_s:.0f} s here) and a revert "
                            f"took {costs.snapshot_s:.0f} s"), estimates
    return level, f"{why} (~{state_s:.0f} s; a revert took {costs.snapshot_s:.0f} s)", estimates


def learn(costs: LevelCosts, level: str, seconds: float, tasks: int) -> LevelCosts:
    """The costs after a level that ended healthy took `seconds` and started `tasks` tasks."""
    if level == "snapshot":
        return LevelCosts(seconds, costs.state_base_s, costs.per_task_s)
    if level == "state" and not tasks:
        return LevelCosts(costs.snapshot_s, seconds, costs.per_task_s)
    if level == "state":
        return LevelCosts(costs.snapshot_s, costs.state_base_s, max(0.5, (seconds - costs.state_base_s) / tasks))
    return costs


def path(lab_dir: Path) -> Path:
    return lab_dir / "reset-costs.json"


def load(lab_dir: Path) -> LevelCosts:
    try:
        data = json.loads(path(lab_dir).read_text())
        return LevelCosts(**{k: v for k, v in data.items() if k in LevelCosts.__dataclass_fields__})
    except (OSError, ValueError, TypeError):
        return LevelCosts()  # none measured yet, or a file from another version: measured again


def save(lab_dir: Path, costs: LevelCosts) -> None:
    target = path(lab_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(costs), indent=2) + "\n")
    tmp.replace(target)
