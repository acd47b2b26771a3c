"""Chaos drills with a measured timeline (timeline.py: the events and their detection): kill the leader (or any node), start it again,
drain/activate a node, demote the leader.

All times are seconds on one monotonic clock, from the moment of the disruption. Surviving
managers are polled about once a second (survivors.py: how).
"""

from __future__ import annotations

import time
from typing import Callable

from swarmlab.adapters.libvirt_events import LifecycleWatch
from swarmlab.adapters.remote import read
from swarmlab.config import Config
from swarmlab.core import swarm
from swarmlab.core.command import Command
from swarmlab.core.timeline import EventDetector, Timeline, quorum_refusal, tasks_settled
from swarmlab.errors import NotFound, Refused, SwarmlabError
from swarmlab.host.images import BAKED_IMAGE
from swarmlab.lab.model import Node
from swarmlab.lab.session import LabSession, open_lab
from swarmlab.lab.survivors import Survivors
from swarmlab.waiting import poll_until, rounds

POLL = 1.0  # seconds between polls

Progress = Callable[[str], None]


class ChaosError(SwarmlabError):
    pass


# --- reading the swarm ----------------------------------------------------------------------
def snapshot(survivors: Survivors, exclude: set[str] = frozenset()) -> dict:
    nodes = survivors.nodes(exclude) or []
    tasks = [{"service": name, "task": t.name, "node": t.node, "state": t.state}
             for name, (_desired, ps) in (survivors.tasks(None, exclude, nodes or None) or {}).items() for t in ps]
    return {"nodes": [{"node": n.hostname, "status": n.status, "availability": n.availability,
                       "manager": n.manager_status} for n in nodes], "tasks": tasks}


# --- exercises ------------------------------------------------------------------------------
DRILL_SERVICE = "swarmlab-drill"
STEADY_TIMEOUT = 30.0  # a change, or a reading before the drill breaks anything: slow is not down


def managers_of(session: LabSession) -> tuple[Survivors, list[swarm.SwarmNode]]:
    managers = {}
    for name, conn in session.conns.items():
        try:
            if read(conn, swarm.SWARM, timeout=10).is_manager:
                managers[name] = conn
        except SwarmlabError:
            continue
    if not managers:
        raise ChaosError(f"no manager of lab {session.lab.name} answers: check `swarmlab status --lab {session.lab.name}`")
    survivors = Survivors.over(managers)
    nodes = survivors.nodes(timeout=STEADY_TIMEOUT)
    if nodes is None:
        survivors.close()
        raise ChaosError(f"no manager of lab {session.lab.name} answers `docker node ls`")
    return survivors, nodes


def _watch(timeline: Timeline, survivors: Survivors, target: str, deadline: float, want: list[str],
           progress: Progress, exclude: set[str], services: list[str] | None = None) -> None:
    """Polls until every wanted event happened or the deadline passes."""
    was_manager = any(n["node"] == target and n["manager"] for n in timeline.before.get("nodes", []))
    detector = EventDetector(target, want, was_manager)
    for round_started in rounds(deadline, POLL):
        if detector.done:
            break
        nodes = survivors.nodes(exclude)
        tasks = survivors.tasks(services, exclude, nodes) if nodes is not None and detector.wants_tasks() else None
        for event, detail in detector.feed(nodes, tasks):
            timeline.mark(event, detail, at=round_started if event == "api-unavailable" else None)
            if event == "new-leader":
                timeline.new_leader = detail
            progress(f"{event} {detail}".strip() if event not in ("api-unavailable",) else event)
    timeline.missing = [e for e in want if not timeline.has(e)]


def finish(timeline: Timeline, survivors: Survivors, exclude: set[str]) -> Timeline:
    nodes = survivors.nodes(exclude) or []
    timeline.final_leader = next((n.hostname for n in nodes if n.manager_status == "Leader"), None)
    timeline.after = snapshot(survivors, exclude)
    timeline.events.sort(key=lambda e: e.t)
    return timeline


def drill_service(survivors: Survivors, replicas: int, timeout: float, progress: Progress) -> None:
    """A small service of the baked image, so that the drill always has tasks to reschedule."""
    progress(f"no service runs: creating {DRILL_SERVICE} ({replicas} replicas of {BAKED_IMAGE}) for the drill")
    create = Command("docker", "service", "create", "--detach", "--name", DRILL_SERVICE, "--replicas", str(replicas),
                     "--no-resolve-image", BAKED_IMAGE, "sleep", "1d")
    if survivors.ask(create, timeout=STEADY_TIMEOUT) is None:
        raise ChaosError(f"creating the drill service {DRILL_SERVICE} failed: see `swarmlab status`")
    def running() -> bool:
        tasks = survivors.tasks([DRILL_SERVICE], set())
        return bool(tasks) and tasks_settled(tasks, None)[0]
    poll_until(running, timeout, POLL, lambda: ChaosError(
        f"the drill service {DRILL_SERVICE} did not reach {replicas} running tasks in {timeout:g} s"))


def kill(config: Config, lab_name: str, target: str | None, restore: bool, timeout: float, force: bool,
         service: str | None = None, progress: Progress = lambda _m: None) -> Timeline:
    """Hard power-off of a node (the leader when target is None), then watch the swarm heal.
    With `service`, only that service's tasks are followed; with no service at all, a drill
    service is created for the run and removed afterwards."""
    with open_lab(config, lab_name, "running", lock=True) as session:
        if target is not None:
            session.node(target)  # a wrong name is refused before any node is asked
        survivors, nodes = managers_of(session)
        drill = False
        try:
            leader = next((n.hostname for n in nodes if n.manager_status == "Leader"), None)
            if target is None:
                if leader is None:
                    raise ChaosError(f"lab {lab_name} has no leader right now: the swarm is already unhealthy")
                target = leader
            node = session.node(target)
            member = next((n for n in nodes if n.hostname == target), None)
            if not session.running(node) or (member and member.status == "Down"):
                raise ChaosError(f"{target} is already down: `swarmlab chaos start {target}` brings it back")
            refusal = quorum_refusal(nodes, target)
            if refusal and not force:
                raise Refused(refusal)
            listed = survivors.services(timeout=STEADY_TIMEOUT)
            if listed is None:
                raise ChaosError(f"no manager of lab {lab_name} answers `docker service ls`")
            services = [s.name for s in listed]
            if service is not None and service not in services:
                raise NotFound(f"lab {lab_name} has no service {service} "
                               f"(services: {', '.join(services) or 'none'}); leave out --service for a drill service")
            if not services:
                drill_service(survivors, max(2, len(nodes)), timeout, progress)
                drill, service = True, DRILL_SERVICE
            exercise = "kill-leader" if target == leader else "kill"
            timeline = Timeline(exercise, lab_name, target, old_leader=leader)
            timeline.before = snapshot(survivors)
            want = ["node-down", "tasks-rescheduled"]
            if target == leader:
                want = ["new-leader", *want]
            with LifecycleWatch(session.hv.uri, node.domain) as watch:
                progress(f"killing {target} ({node.domain})" + (" - the leader" if target == leader else ""))
                timeline.started = time.monotonic()
                session.hv.destroy(node.domain)
                stopped = watch.wait("stopped")
                if stopped is not None:
                    timeline.started = min(timeline.started, stopped)
                timeline.mark("killed", f"{target} powered off" + (" (libvirt event)" if stopped else ""),
                              at=timeline.started)
                _watch(timeline, survivors, target, timeline.started + timeout, want, progress, {target},
                       [service] if service else None)
                if restore:
                    _restart(session, timeline, node, watch, survivors, timeout, progress)
            return finish(timeline, survivors, set())
        finally:
            if drill:
                survivors.ask(Command("docker", "service", "rm", DRILL_SERVICE), timeout=STEADY_TIMEOUT)
            survivors.close()


def _restart(session: LabSession, timeline: Timeline, node: Node, watch: LifecycleWatch,
             survivors: Survivors, timeout: float, progress: Progress) -> None:
    progress(f"starting {node.name} again")
    before = time.monotonic()
    session.hv.start(node.domain)
    started = watch.wait("started")
    timeline.mark("restarted", f"{node.name} started" + (" (libvirt event)" if started else ""),
                  at=started or before)
    missing = timeline.missing
    _watch(timeline, survivors, node.name, time.monotonic() + timeout + 120, ["rejoined"], progress, {node.name})
    timeline.missing = missing + timeline.missing


def start(config: Config, lab_name: str, names: list[str] | None, timeout: float,
          progress: Progress = lambda _m: None) -> list[Timeline]:
    """Starts stopped nodes (all when names is None) and waits until each is back in the swarm."""
    with open_lab(config, lab_name) as session:
        hv, found = session.hv, session.lab
        targets = found.nodes if names is None else [found.require_node(n) for n in names]
        stopped = [n for n in targets if not session.running(n)]
        if names and not stopped:
            raise ChaosError(f"{', '.join(names)} already running")
        timelines = []
        for node in stopped:
            with LifecycleWatch(hv.uri, node.domain) as watch:
                timeline = Timeline("start", lab_name, node.name)
                progress(f"starting {node.name}")
                timeline.started = time.monotonic()
                hv.start(node.domain)
                at = watch.wait("started")
                timeline.mark("restarted", f"{node.name} started", at=at or timeline.started)
                timelines.append(timeline)
        if not timelines:
            return []
        session.connect("running")
        survivors, _ = managers_of(session)
        try:
            before = snapshot(survivors)
            for timeline in timelines:
                timeline.before = before
                _watch(timeline, survivors, timeline.target, timeline.started + timeout + 120, ["rejoined"],
                       progress, {timeline.target})
                finish(timeline, survivors, set())
        finally:
            survivors.close()
    return timelines


def availability(config: Config, lab_name: str, target: str, mode: str, timeout: float,
                 progress: Progress = lambda _m: None) -> Timeline:
    """drain or active, with the time until the tasks have moved."""
    with open_lab(config, lab_name, "running") as session:
        session.node(target)
        survivors, nodes = managers_of(session)
        try:
            if not any(n.hostname == target for n in nodes):
                raise ChaosError(f"{target} is not in the swarm of lab {lab_name}")
            timeline = Timeline("drain" if mode == "drain" else "activate", lab_name, target)
            timeline.before = snapshot(survivors)
            progress(f"setting {target} availability to {mode}")
            timeline.started = time.monotonic()
            if survivors.ask(Command("docker", "node", "update", "--availability", mode, target),
                             timeout=STEADY_TIMEOUT) is None:
                raise ChaosError(f"no manager answered `docker node update` for {target}")
            if mode == "active":
                timeline.mark("activated", target)
            want = ["drained"] if mode == "drain" else []
            _watch(timeline, survivors, target, timeline.started + timeout, want, progress, set())
            return finish(timeline, survivors, set())
        finally:
            survivors.close()


def demote_leader(config: Config, lab_name: str, timeout: float, progress: Progress = lambda _m: None) -> Timeline:
    """The graceful contrast: demote the leader, time the hand-over, promote it back and time
    its return as a Reachable manager. A promotion that fails is in the timeline (missing
    `promoted`, exit 5): the lab is then a manager short, and the output says so."""
    with open_lab(config, lab_name, "running") as session:
        survivors, nodes = managers_of(session)
        try:
            leader = next((n.hostname for n in nodes if n.manager_status == "Leader"), None)
            managers = [n for n in nodes if n.manager_status]
            if leader is None or len(managers) < 2:
                raise Refused(f"lab {lab_name} needs a leader and a second manager to hand over to")
            timeline = Timeline("demote-leader", lab_name, leader, old_leader=leader)
            timeline.before = snapshot(survivors)
            progress(f"demoting {leader}")
            timeline.started = time.monotonic()
            if survivors.ask(Command("docker", "node", "demote", leader), timeout=STEADY_TIMEOUT) is None:
                raise ChaosError(f"no manager answered `docker node demote {leader}`")
            timeline.mark("demoted", leader)
            _watch(timeline, survivors, leader, timeline.started + timeout, ["new-leader"], progress, {leader})
            missing = timeline.missing
            progress(f"promoting {leader} back")
            # Right after the hand-over the managers may still be removing the old leader from
            # raft and refuse the promotion for a moment: retry for a while before calling it failed.
            promoted = None
            for _ in rounds(time.monotonic() + min(timeout, 60), 2):
                promoted = survivors.ask(Command("docker", "node", "promote", leader), exclude={leader},
                                         timeout=STEADY_TIMEOUT)
                if promoted is not None:
                    break
            if promoted is None:
                timeline.missing = missing + ["promoted"]
                timeline.mark("promote-failed", f"`docker node promote {leader}` failed: the lab is a manager "
                                                f"short; run it again with `swarmlab docker {timeline.new_leader or 'NODE'}"
                                                f" -- node promote {leader}`")
                progress(f"promote-failed {leader}")
            else:
                _watch(timeline, survivors, leader, time.monotonic() + timeout, ["promoted"], progress, set())
                timeline.missing = missing + timeline.missing
            return finish(timeline, survivors, set())
        finally:
            survivors.close()
