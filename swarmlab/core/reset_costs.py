"""What each reset level costs on one lab, learnt from the resets that ran on it, and the trade
between the state level and a revert by that cost. Pure but for the small file it is kept in.

The state level touches no VM, but every task it has to start again (a removed service, a
changed one) waits for the scheduler and the engine: under TCG, 30 of 45 s. A revert costs the
same whatever the students did. So a state level that must start tasks is traded for a revert
whenever it is estimated dearer: from this lab's own resets, else from its siblings' (the labs of
the same host and template, kept together), else from the prior measured on this machine kind,
so that a lab's first reset chooses as well as its tenth. What either disturbs is the same: every reset ends
the portal's terminals on the lab (reset.mark_reset)."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from swarmlab.core.baseline import Diff, SwarmState

READ_FLOOR_S = 1.5  # an Engine API session and one read of a quiet swarm: ~0.8 s under TCG
STATE_BASE_S = 2.5  # a state level that starts no task (labels put back: 1.6 s, gate 0.7 s), until measured


@dataclass
class LevelCosts:
    snapshot_s: float | None = None  # the last revert that ended healthy, health gate included
    state_base_s: float | None = None  # the last state level that started no task
    per_task_s: float | None = None  # what each task the state level started cost, last measured

    def estimate_state(self, tasks: int) -> float | None:
        if tasks and self.per_task_s is None:
            return None
        return (self.state_base_s or STATE_BASE_S) + tasks * (self.per_task_s or 0.0)


# What a new lab starts from when neither it nor a sibling (a lab on the same host, of the same
# template) has measured a level yet: a new 3-node lab on 2 cores under TCG (LAB-HOST-FACTS,
# 2026-12-07) reverted with its health gate in 7.1-8.1 s (a quiet snapshot, clocks stepped while
# the gate reads one manager), and a state level that had to start a removed service's 3 tasks
# again took 65.8 s, ~21 s a task above the base. Measured figures replace them.
PRIOR = LevelCosts(snapshot_s=7.6, state_base_s=STATE_BASE_S, per_task_s=21.0)
FIELDS = ("snapshot_s", "state_base_s", "per_task_s")


def known(own: LevelCosts, siblings: LevelCosts) -> tuple[LevelCosts, dict[str, str]]:
    """Every figure from the lab's own resets, else from its siblings', else the prior; and
    where each came from ("this lab", "sibling labs", "prior")."""
    values, sources = {}, {}
    for name in FIELDS:
        for source, costs in (("this lab", own), ("sibling labs", siblings), ("prior", PRIOR)):
            if getattr(costs, name) is not None:
                values[name], sources[name] = getattr(costs, name), source
                break
    return LevelCosts(**values), sources


def tasks_to_start(baseline: SwarmState, d: Diff, now: SwarmState | None = None) -> int:
    """Tasks the state level starts, or waits for: every replica of a service it recreates or
    restores, and those a kept service is short of now (a drained node's, still moving)."""
    remade = (*d.missing_services, *d.changed_services)
    short = 0 if now is None else sum(max(0, base.desired - now.services[name].running)
                                      for name, base in baseline.services.items()
                                      if name in now.services and name not in remade)
    return short + sum(baseline.services[name].desired for name in remade if name in baseline.services)


def read_budget(costs: LevelCosts) -> float:
    """Seconds that reading the swarm may take before a revert is surely the cheaper level: all
    a state level that starts nothing could save over it. A read that takes longer (guests busy
    stopping a student's tasks took 6 s to answer) is given up for the revert. Never less than a
    quick read: a lab whose one state level was measured under load, dearer than a revert, would
    otherwise never read, never run a state level and never measure it again."""
    if costs.snapshot_s is None:
        return float("inf")
    return max(READ_FLOOR_S, costs.snapshot_s - costs.estimate_state(0))


def unread_estimates(costs: LevelCosts, sources: dict[str, str]) -> dict:
    """What `--json` shows when the swarm was not read in time: the revert against the least a
    state level costs, with no count of tasks."""
    return {"state_s": round(costs.estimate_state(0), 1), "snapshot_s": round(costs.snapshot_s, 1),
            "tasks": None, "from": dict(sources)}


def weigh(level: str, why: str, tasks: int, costs: LevelCosts,
          sources: dict[str, str] | None = None) -> tuple[str, str, dict | None]:
    """(level, why, the estimates compared or None). Only a state level that starts tasks is
    weighed; it gives way to a revert whenever its estimate is higher, whether the figures
    were measured on this lab, on its siblings or are the prior (`known`)."""
    if level != "state" or not tasks:
        return level, why, None
    state_s = costs.estimate_state(tasks)
    if state_s is None or costs.snapshot_s is None:
        return level, why, None
    estimates = {"state_s": round(state_s, 1), "snapshot_s": round(costs.snapshot_s, 1), "tasks": tasks}
    if sources:
        estimates["from"] = dict(sources)
    measured = "here" if not sources or sources.get("per_task_s") == "this lab" else \
        "on sibling labs" if sources.get("per_task_s") == "sibling labs" else "as measured on this machine kind"
    revert = "a revert took" if not sources or sources.get("snapshot_s") == "this lab" else "a revert takes"
    if state_s > costs.snapshot_s:
        return "snapshot", (f"{why}; but it would start {tasks} tasks again (~{state_s:.0f} s {measured}) and "
                            f"{revert} {costs.snapshot_s:.0f} s"), estimates
    return level, f"{why} (~{state_s:.0f} s; {revert} {costs.snapshot_s:.0f} s)", estimates


def learn(costs: LevelCosts, level: str, seconds: float, tasks: int, state_base_s: float | None = None) -> LevelCosts:
    """The costs after a level that ended healthy took `seconds` and started `tasks` tasks;
    `state_base_s`, the base a task's share is counted above (the known one, when `costs` has none)."""
    if level == "snapshot":
        return LevelCosts(seconds, costs.state_base_s, costs.per_task_s)
    if level == "state" and not tasks:
        return LevelCosts(costs.snapshot_s, seconds, costs.per_task_s)
    if level == "state":
        base = costs.state_base_s or state_base_s or STATE_BASE_S
        return LevelCosts(costs.snapshot_s, costs.state_base_s, max(0.5, (seconds - base) / tasks))
    return costs


def path(lab_dir: Path) -> Path:
    return lab_dir / "reset-costs.json"


def siblings_path(state_dir: Path, host: str, template: str) -> Path:
    """Where the labs of one host and template keep what they measured together."""
    return state_dir / "reset-costs" / f"{host}-{template}.json"


def load(lab_dir: Path) -> LevelCosts:
    return load_file(path(lab_dir))


def load_file(target: Path) -> LevelCosts:
    try:
        data = json.loads(target.read_text())
        return LevelCosts(**{k: v for k, v in data.items() if k in LevelCosts.__dataclass_fields__})
    except (OSError, ValueError, TypeError):
        return LevelCosts()  # none measured yet, or a file from another version: measured again


def save(lab_dir: Path, costs: LevelCosts) -> None:
    save_file(path(lab_dir), costs)


def save_file(target: Path, costs: LevelCosts) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp")  # siblings reset at once
    tmp.write_text(json.dumps(asdict(costs), indent=2) + "\n")
    tmp.replace(target)
