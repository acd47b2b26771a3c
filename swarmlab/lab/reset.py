"""`reset`: any lab back to a snapshot's state (snapshots.py) in seconds. Reverting one
manager alone would bring back an old raft log that never rejoins, so a lab is only ever
reverted whole.

`reset` has three levels: `state` (over SSH, no VM touched), `snapshot` (revert every node,
resume together, sync guest clocks) and `rebuild` (new overlays from the template: `down`,
then the `up` path). Without a level it takes the cheapest that can work, judged from the
diff (baseline.choose_level), and escalates when the health gate fails.
"""

from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

from fabric import Connection

from swarmlab.adapters.engine_api import EngineAPI
from swarmlab.adapters.hypervisor import Hypervisor
from swarmlab.adapters.remote import run
from swarmlab.config import Config
from swarmlab.config_values import NodeLabel, parse_label
from swarmlab.core import baseline as bl, reset_costs
from swarmlab.errors import NotFound, Refused, SwarmlabError
from swarmlab.lab import formation, lab_down
from swarmlab.lab.model import Lab, each_node, lab_config, lab_dir, lab_lock, require_lab
from swarmlab.lab.partition import heal_links
from swarmlab.lab.reset_gate import manager_session_within, wait_healthy
from swarmlab.lab.session import close
from swarmlab.lab.snapshots import (DEFAULT_SNAPSHOT, SnapshotRecord, list_snapshots, load_snapshot, resume_paused,
                                    save_snapshot, sync_clocks)

Progress = Callable[[str], None]


class ResetError(SwarmlabError):
    pass


# --- the levels ------------------------------------------------------------------------------
def _reset_state(config: Config, hv: Hypervisor, lab: Lab, record: SnapshotRecord, conns: dict[str, Connection],
                 now: bl.SwarmState | None, progress: Progress) -> list[str]:
    baseline = record.state
    done = []
    for node in lab.nodes:
        if not hv.domain_state(node.domain).running:
            progress(f"starting {node.name}")
            hv.start(node.domain)
            done.append(f"started {node.name}")
    if now is None:
        raise ResetError("no manager answers with the swarm's state: the state level needs quorum")
    d = bl.diff(baseline, now)
    if d.missing_nodes:
        raise ResetError(f"{', '.join(d.missing_nodes)} rejoined under new node IDs: the state level cannot "
                         "bring them back")
    managers = [n for n, f in now.nodes.items() if f.manager_status in ("Leader", "Reachable") and n in conns]
    if not managers:
        raise ResetError("no reachable manager to run the reset on")
    via = conns[managers[0]]
    steps = bl.plan_state_reset(baseline, now, d)
    with EngineAPI(via) as api:
        for step in steps:
            progress(step.what)
            if step.command is not None:
                run(via, step.command, timeout=120)
            else:
                _restore_service(api, baseline.services[step.service], now.services.get(step.service))
            done.append(step.what)
    sync_clocks(hv, lab)
    return done + ["synced guest clocks"]


def _restore_service(api: EngineAPI, base: bl.ServiceFacts, now: bl.ServiceFacts | None) -> None:
    """The baseline's spec through the Engine API: created when missing, updated when changed."""
    if now is None:
        status, answer = api.call("POST", "/services/create", base.spec)
    else:
        status, answer = api.call("POST", f"/services/{now.id}/update?version={now.version}", base.spec)
    if status >= 300:
        message = answer.get("message") if isinstance(answer, dict) else answer
        raise ResetError(f"restoring service {base.name} failed: {message}")


def _reset_snapshot(config: Config, hv: Hypervisor, lab: Lab, record: SnapshotRecord, progress: Progress) -> list[str]:
    progress(f"reverting {len(lab.nodes)} nodes to snapshot {record.name}")
    for node in lab.nodes:
        if record.name not in hv.snapshot_names(node.domain):
            raise NotFound(f"{node.name} has no snapshot {record.name} in libvirt: `reset --level rebuild`")
    try:  # each node loads its own memory image: together, not one after another
        each_node(lambda node: hv.revert_snapshot(node.domain, record.name), lab.nodes)
    finally:
        progress("resuming every node together")
        for node in lab.nodes:
            hv.resume(node.domain)
    return [f"reverted to {record.name}"]  # the health gate syncs the clocks while it reads the swarm


def _reset_rebuild(config: Config, lab_name: str, record: SnapshotRecord | None, progress: Progress,
                   finish: Sequence[formation.Finish]) -> tuple[list[str], bl.SwarmState | None]:
    """(what was done, the new swarm's state for its snapshot)."""
    with Hypervisor(config.uri) as hv:
        lab = require_lab(config, hv, lab_name)
    names = [n.name for n in lab.nodes]
    prefix = names[0].rstrip("0123456789")
    baseline = record.state if record else None
    if baseline is not None:
        managers = sum(1 for n in baseline.nodes.values() if n.role == "manager")
        labels = [NodeLabel(n.hostname, k, v) for n in baseline.nodes.values() for k, v in n.labels.items()]
    else:
        managers, labels = lab.managers, [parse_label(s) for s in lab.labels]
    progress(f"rebuilding {len(names)} nodes from the template")
    lab_down.down(config, lab_name)
    _, report, added = formation.make_lab(config, len(names), lab_name, prefix, managers, labels, True,
                                          lambda node, phase, detail: progress(f"{node}: {phase} {detail}".strip()),
                                          finish, read_baseline=True)  # before the snapshot the reset saves next
    return [f"rebuilt {len(names)} nodes", *added], report.baseline if report else None


@dataclass
class ResetResult:
    lab: str
    levels: list[str] = field(default_factory=list)  # levels run, in order
    reasons: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    estimates: dict | None = None  # what the state level and a revert were expected to cost, when weighed
    # seconds of each part: the level's own work ("snapshot_s": revert and resume), then the health
    # gate ("gate_s"), whose first check synced clocks ("clocks_s") while it read the swarm ("swarm_s")
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems and self.error is None


def reset(config: Config, lab_name: str, to: str = DEFAULT_SNAPSHOT, level: str | None = None,
          timeout: float = 120, progress: Progress = lambda _m: None,
          finish: Sequence[formation.Finish] = (),
          rebuild_slot: contextlib.AbstractContextManager | None = None) -> ResetResult:
    """The lab back at snapshot `to` by the cheapest level that works, weighed by what each
    level cost on this lab before (reset_costs). `finish` is what the caller adds to a lab the
    rebuild level makes anew (formation.make_lab); `rebuild_slot`, what that level waits for
    first (a class's resets run side by side, its labs are made a few at a time).

    Under the lab's lock: the refusals, then the lab made readable (paused nodes resumed, cut
    links healed), the level chosen, and the levels run in order until the health gate passes.
    A rebuild runs after the lock is let go: it is `down` and `up`, which take it themselves."""
    config = lab_config(config, lab_name)
    started = time.monotonic()
    result = ResetResult(lab_name)
    with Hypervisor(config.uri) as hv:
        with lab_lock(config, lab_name):
            lab = require_lab(config, hv, lab_name)
            record = _snapshot_to_return_to(config, lab, to, level)
            mark_reset(config, lab_name)  # past the refusals: from here on the lab changes
            resumed, healed, stopped = _made_readable(hv, lab, result, progress)
            baseline = record.state if record else None
            # Read the swarm only when the answer can matter: a node that is off, or a revert
            # that stopped halfway, already decides the level.
            read = baseline is not None and not stopped and not resumed and not healed and level in (None, "state")
            costs = _Costs.of(config, lab_name)
            budget = reset_costs.read_budget(costs.known) if level is None else float("inf")
            conns, now, in_time = manager_session_within(config, lab, baseline, budget) if read else ({}, None, True)
            try:
                tasks = reset_costs.tasks_to_start(baseline, bl.diff(baseline, now), now) if now is not None else 0
                chosen = _choose_level(result, level, record, now, in_time, budget, tasks, costs,
                                       resumed, stopped, healed)
                order = bl.levels_to_run(chosen, forced=level is not None, has_snapshot=record is not None)
                _run_levels(config, hv, lab, record, order, conns, now, tasks, costs, timeout, progress, result)
            finally:
                close(conns)
    if result.levels and result.levels[-1] == "rebuild":
        with rebuild_slot or contextlib.nullcontext():
            _rebuild_and_snapshot(config, lab_name, record, progress, finish, timeout, result)
    mark_reset(config, lab_name)  # again: a session opened while it ran is on the old lab too
    result.seconds = round(time.monotonic() - started, 1)
    return result


def _snapshot_to_return_to(config: Config, lab: Lab, to: str, level: str | None) -> SnapshotRecord | None:
    """The snapshot's record (None: only a rebuild can work), or the refusal that leaves the lab
    as it is: no such snapshot, one of another size, or one older than the swarm's certificates."""
    record = load_snapshot(config, lab.name, to)
    if record is None and (level in ("state", "snapshot") or to != DEFAULT_SNAPSHOT):
        raise NotFound(f"lab {lab.name} has no snapshot {to} (snapshots: "
                       f"{', '.join(r.name for r in list_snapshots(config, lab.name)) or 'none'}): "
                       "`swarmlab snapshot save` takes one, or `reset --level rebuild`")
    if record is not None:
        if sorted(record.nodes) != sorted(n.name for n in lab.nodes):
            raise Refused(f"lab {lab.name} has {len(lab.nodes)} nodes, snapshot {to} was taken with "
                          f"{len(record.nodes)}: take a new one (`swarmlab snapshot save {to}`) or "
                          "`reset --level rebuild`")
        expiry = record.state.node_cert_expiry_s if record.state else None
        if expiry and time.time() > record.created + expiry:
            raise Refused(f"snapshot {to} is older than the swarm's node certificates "
                          f"({expiry // 86400} days): its nodes would not trust each other; "
                          "`reset --level rebuild`, then `snapshot save`")
    return record


def _made_readable(hv: Hypervisor, lab: Lab, result: ResetResult, progress: Progress
                   ) -> tuple[list[str], list[str], list[str]]:
    """(nodes resumed, nodes healed, nodes not running): what an interrupted run or a drill
    left is undone first, and decides the level."""
    resumed = resume_paused(hv, lab)
    if resumed:
        progress(f"resumed {', '.join(resumed)} (left paused by an interrupted run)")
    healed = heal_links(hv, lab)  # a revert would keep a cut link: it is QEMU's, not the snapshot's
    if healed:
        result.done.append(f"healed the cut links of {', '.join(healed)}")
        progress(result.done[-1])
    stopped = [n.name for n in lab.nodes if not ((s := hv.domain_state(n.domain)) and s.running)]  # or gone
    return resumed, healed, stopped


@dataclass
class _Costs:
    """What each level cost before, on this lab and on its siblings (reset_costs), and the files
    a level that worked adds its cost to."""
    known: reset_costs.LevelCosts
    sources: dict
    files: dict

    @classmethod
    def of(cls, config: Config, lab_name: str) -> "_Costs":
        siblings = reset_costs.siblings_path(config.state_dir, config.lab_host or "local", config.template)
        files = {lab_dir(config, lab_name) / "reset-costs.json": reset_costs.load(lab_dir(config, lab_name)),
                 siblings: reset_costs.load_file(siblings)}
        known, sources = reset_costs.known(*files.values())
        return cls(known, sources, files)

    def learn(self, level: str, took: float, tasks: int) -> None:
        for target, measured in self.files.items():
            reset_costs.save_file(target, reset_costs.learn(measured, level, took, tasks if level == "state" else 0,
                                                            self.known.state_base_s))


def _choose_level(result: ResetResult, level: str | None, record: SnapshotRecord | None, now: bl.SwarmState | None,
                  in_time: bool, budget: float, tasks: int, costs: _Costs, resumed: list[str], stopped: list[str],
                  healed: list[str]) -> str:
    """The level to start from, its reason in `result` (and the estimates it was weighed by)."""
    if level is not None:
        result.reasons.append(f"--level {level}")
        return level
    if not in_time:
        result.reasons.append(f"the swarm did not answer within {budget:.1f} s; "
                              f"a revert takes {costs.known.snapshot_s:.0f} s")
        result.estimates = reset_costs.unread_estimates(costs.known, costs.sources)
        return "snapshot"
    chosen, why = bl.choose(record is not None, record.state if record else None, now, resumed, stopped, healed)
    chosen, why, result.estimates = reset_costs.weigh(chosen, why, tasks, costs.known, costs.sources)
    result.reasons.append(why)
    return chosen


def _run_levels(config: Config, hv: Hypervisor, lab: Lab, record: SnapshotRecord | None, order: list[str],
                conns: dict[str, Connection], now: bl.SwarmState | None, tasks: int, costs: _Costs,
                timeout: float, progress: Progress, result: ResetResult) -> None:
    """Each level in turn until the health gate passes; a rebuild is left to the caller, outside
    the lab's lock."""
    baseline = record.state if record else None
    for current in order:
        result.levels.append(current)
        progress(f"level {current}: {result.reasons[-1]}")
        level_started = time.monotonic()
        if current == "rebuild":
            return
        live = None
        try:
            if current == "state":
                result.done += _reset_state(config, hv, lab, record, conns, now, progress)
                live = conns
            else:
                result.done += _reset_snapshot(config, hv, lab, record, progress)
        except SwarmlabError as e:
            result.problems = [str(e)]
        else:
            result.timings[f"{current}_s"] = round(time.monotonic() - level_started, 2)
            result.problems = wait_healthy(config, hv, lab, baseline, timeout, progress, live, result.timings)
        if not result.problems:  # what this level cost, for the next choice here and on siblings
            costs.learn(current, time.monotonic() - level_started, tasks)
            return
        if current != order[-1]:
            result.reasons.append(f"{current} left: {result.problems[0]}")
            progress(f"escalating: {result.problems[0]}")


def _rebuild_and_snapshot(config: Config, lab_name: str, record: SnapshotRecord | None, progress: Progress,
                          finish: Sequence[formation.Finish], timeout: float, result: ResetResult) -> None:
    try:
        done, formed = _reset_rebuild(config, lab_name, record, progress, finish)
        result.done += done
        with Hypervisor(config.uri) as hv:
            lab = require_lab(config, hv, lab_name)
            record = save_snapshot(config, lab_name, DEFAULT_SNAPSHOT, progress=progress,
                                   baseline=formed)  # syncs the clocks
            result.done.append(f"saved snapshot {record.name}")
            result.problems = wait_healthy(config, hv, lab, record.state, timeout, progress)
    except SwarmlabError as e:
        result.problems = [str(e)]


def mark_reset(config: Config, lab_name: str) -> None:
    """When the lab was last reset: the portal ends the terminals opened before that moment,
    whichever process reset it."""
    path = lab_dir(config, lab_name) / "reset-at"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{time.time():.3f}\n")


def last_reset(config: Config, lab_name: str) -> float:
    try:
        return float((lab_dir(config, lab_name) / "reset-at").read_text())
    except (OSError, ValueError):
        return 0.0


def reset_all(config: Config, names: list[str], to: str, level: str | None, timeout: float,
              progress: Callable[[str, str], None], finish: Sequence[formation.Finish] = ()) -> list[ResetResult]:
    """Every lab at once, as many at a time as the host has CPUs; one lab's failure does not
    stop the others."""
    def one(lab: str) -> ResetResult:
        try:
            return reset(config, lab, to, level, timeout, lambda message: progress(lab, message), finish)
        except SwarmlabError as e:
            return ResetResult(lab, error=str(e))
    with ThreadPoolExecutor(max_workers=max(1, min(len(names), os.cpu_count() or 1))) as pool:
        return list(pool.map(one, names))
