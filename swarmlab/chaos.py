"""Chaos exercises with a measured timeline: kill the leader (or any node), start it again,
drain/activate a node, demote the leader.

All times are seconds on one monotonic clock, from the moment of the disruption. Survivors
are polled about once a second, each over its own persistent SSH connection and in its own
thread, because a manager's API hangs during an election: whichever answers first counts.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, TimeoutError as FuturesTimeout, as_completed
from dataclasses import asdict, dataclass, field
from typing import Callable

from fabric import Connection

from . import swarm
from .images import BAKED_IMAGE
from .command import Command, Fact
from .config import Config
from .errors import NotFound, Refused, SwarmlabError
from .libvirt_events import LifecycleWatch
from .lab import Node
from .remote import read, run
from .session import LabSession, open_lab
from .waiting import poll_until

POLL = 1.0  # seconds between polls
API_TIMEOUT = 4.0  # a manager slower than this counts as unavailable (the CLI alone takes ~1 s under TCG)

# Expected windows (seconds after the kill) from swarmkit's defaults: election timeout 10
# ticks of 1 s, randomised up to 19 s; heartbeat 5 s with a grace of 3, so Down after ~15 s,
# but a new leader treats every node as Unknown for about twice that grace; restart delay 5 s.
EXPECTED = {
    "killed": (0, 0),
    "api-unavailable": (0, 5),
    "api-back": (10, 31),
    "new-leader": (10, 31),
    "node-unreachable": (10, 31),
    "node-down": (15, 60),
    "tasks-rescheduled": (20, 70),
    "demoted": (0, 5),
    "restarted": (0, 5),
    "rejoined": (30, 120),
    "drained": (0, 30),
    "activated": (0, 5),
    "promoted": (0, 60),
}

Progress = Callable[[str], None]


class ChaosError(SwarmlabError):
    pass


@dataclass
class Event:
    event: str
    t: float
    detail: str = ""
    expected: tuple[float, float] | None = None


@dataclass
class Timeline:
    exercise: str
    lab: str
    target: str = ""
    events: list[Event] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    old_leader: str | None = None
    new_leader: str | None = None
    final_leader: str | None = None
    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic, repr=False)

    def mark(self, event: str, detail: str = "", at: float | None = None) -> Event:
        t = round((at if at is not None else time.monotonic()) - self.started, 2)
        window = EXPECTED.get(event)
        restart = next((e.t for e in self.events if e.event == "restarted"), None)
        if window and restart is not None and event in ("rejoined",):
            window = (round(restart + window[0], 1), round(restart + window[1], 1))  # counted from the restart
        if event == "restarted":
            window = None  # it happens when we decide, not when swarm does
        e = Event(event, t, detail, window)
        self.events.append(e)
        return e

    def has(self, event: str) -> bool:
        return any(e.event == event for e in self.events)

    def as_dict(self) -> dict:
        data = asdict(self)
        data.pop("started")
        return data


# --- reading the swarm ----------------------------------------------------------------------
class Survivors:
    """One connection per manager; ask all at once, take the first answer."""

    def __init__(self, conns: dict[str, Connection]):
        self.conns = conns
        # Room for a few hung calls per manager while later polls go on.
        self.pool = ThreadPoolExecutor(max_workers=4 * max(1, len(conns)))

    def ask(self, command: Command, exclude: set[str] = frozenset()) -> str | None:
        """The first answer from any manager not excluded, or None when none answers in time
        (or every one that answered failed)."""
        futures = [self.pool.submit(run, self.conns[n], command, API_TIMEOUT) for n in self.conns if n not in exclude]
        try:
            for future in as_completed(futures, timeout=API_TIMEOUT + 1):
                if future.exception() is None:
                    return future.result()
        except FuturesTimeout:
            pass
        return None

    def read(self, fact: Fact, exclude: set[str] = frozenset()):
        out = self.ask(fact.command, exclude)
        return fact.parse(out) if out is not None else None

    def nodes(self, exclude: set[str] = frozenset()) -> list[swarm.SwarmNode] | None:
        return self.read(swarm.NODES, exclude)

    def tasks(self, services: list[str] | None, exclude: set[str]) -> dict[str, tuple[int, list[swarm.Task]]] | None:
        """Desired replicas and running-desired tasks per service (all when services is None)."""
        listed = self.read(swarm.SERVICES, exclude)
        if listed is None:
            return None
        out = {}
        for service in listed:
            if services is not None and service.name not in services:
                continue
            ps = self.read(swarm.tasks(service.name, running_only=True), exclude)
            if ps is None:
                return None
            out[service.name] = (service.desired, ps)
        return out

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def tasks_settled(tasks: dict[str, tuple[int, list[swarm.Task]]], away_from: str | None) -> tuple[bool, str]:
    """(every service at its desired count of Running tasks, none on away_from; a summary)."""
    summary, settled = [], True
    for name, (desired, ps) in tasks.items():
        running = [t for t in ps if t.state == "Running"]
        summary.append(f"{name} {len(running)}/{desired}")
        if len(running) < desired or any(t.node == away_from for t in running):
            settled = False
    return settled, ", ".join(summary) or "no services"


def snapshot(survivors: Survivors, exclude: set[str] = frozenset()) -> dict:
    nodes = survivors.nodes(exclude) or []
    tasks = [{"service": name, "task": t.name, "node": t.node, "state": t.state}
             for name, (_desired, ps) in (survivors.tasks(None, exclude) or {}).items() for t in ps]
    return {"nodes": [{"node": n.hostname, "status": n.status, "availability": n.availability,
                       "manager": n.manager_status} for n in nodes], "tasks": tasks}


# --- event detection: pure, fed with what the managers answered ------------------------------
@dataclass
class EventDetector:
    """Turns successive observations of the swarm into timeline events. `want` names the
    events the exercise waits for; API outages are recorded whenever they happen."""

    target: str
    want: list[str]
    was_manager: bool
    seen: set[str] = field(default_factory=set)
    api_down: bool = False

    @property
    def done(self) -> bool:
        return all(e in self.seen for e in self.want)

    def wants_tasks(self) -> bool:
        """Whether the next observation should include the services' tasks."""
        if "drained" in self.want and "drained" not in self.seen:
            return True
        return ("tasks-rescheduled" in self.want and "tasks-rescheduled" not in self.seen
                and ("node-down" in self.seen or "node-down" not in self.want))

    def feed(self, nodes: list[swarm.SwarmNode] | None,
             tasks: dict[str, tuple[int, list[swarm.Task]]] | None = None) -> list[tuple[str, str]]:
        """New (event, detail) pairs from one round: `nodes` is `docker node ls` from the first
        surviving manager that answered (None: none did), `tasks` what Survivors.tasks gave."""
        out: list[tuple[str, str]] = []

        def event(name: str, detail: str = "") -> None:
            if name not in self.seen:
                self.seen.add(name)
                out.append((name, detail))

        if nodes is None:
            if not self.api_down:
                self.seen.add("api-unavailable")
                out.append(("api-unavailable", f"no surviving manager answered within {API_TIMEOUT:g} s"))
            self.api_down = True
            return out
        if self.api_down:
            event("api-back")
        self.api_down = False
        leader = next((n.hostname for n in nodes if n.manager_status == "Leader"), None)
        if "new-leader" in self.want and leader and leader != self.target:
            event("new-leader", leader)
        me = next((n for n in nodes if n.hostname == self.target), None)
        if me and "node-down" in self.want:
            # A new leader reports its dead predecessor Unreachable at once (it is why it was
            # elected); the node turns Down only when its heartbeats are missed long enough.
            if me.manager_status == "Unreachable":
                event("node-unreachable", self.target)
            if me.status == "Down":
                event("node-down", f"{self.target} {me.status}/{me.manager_status or 'worker'}")
        if me and "rejoined" in self.want and me.status == "Ready" and \
                (me.manager_status in ("Reachable", "Leader") or not self.was_manager):
            event("rejoined", f"{self.target} {me.status}/{me.manager_status or 'worker'}")
        if me and "promoted" in self.want and me.manager_status in ("Reachable", "Leader"):
            event("promoted", f"{self.target} {me.manager_status}")
        if tasks is not None and self.wants_tasks():
            settled, summary = tasks_settled(tasks, self.target)
            if settled:
                event("drained" if "drained" in self.want else "tasks-rescheduled", summary)
        return out


def quorum_refusal(nodes: list[swarm.SwarmNode], target: str) -> str | None:
    """Why powering off `target` would cost the swarm its raft quorum, or None."""
    member = next((n for n in nodes if n.hostname == target), None)
    managers = [n for n in nodes if n.manager_status]
    reachable = [n for n in managers if n.manager_status in ("Leader", "Reachable")]
    if member and member.manager_status and len(reachable) - 1 <= len(managers) // 2:
        return (f"killing manager {target} leaves {len(reachable) - 1} of {len(managers)} managers: raft needs a "
                f"majority ({len(managers) // 2 + 1}), so the swarm would stop accepting changes until it returns. "
                "Use 3 or more managers, or --force")
    return None


# --- exercises ------------------------------------------------------------------------------
DRILL_SERVICE = "swarmlab-drill"


def _managers(session: LabSession) -> tuple[Survivors, list[swarm.SwarmNode]]:
    managers = {}
    for name, conn in session.conns.items():
        try:
            if read(conn, swarm.SWARM, timeout=10).is_manager:
                managers[name] = conn
        except SwarmlabError:
            continue
    if not managers:
        raise ChaosError(f"no manager of lab {session.lab.name} answers: check `swarmlab status --lab {session.lab.name}`")
    survivors = Survivors(managers)
    nodes = survivors.nodes()
    if nodes is None:
        survivors.close()
        raise ChaosError(f"no manager of lab {session.lab.name} answers `docker node ls`")
    return survivors, nodes


def _watch(timeline: Timeline, survivors: Survivors, target: str, deadline: float, want: list[str],
           progress: Progress, exclude: set[str], services: list[str] | None = None) -> None:
    """Polls until every wanted event happened or the deadline passes."""
    was_manager = any(n["node"] == target and n["manager"] for n in timeline.before.get("nodes", []))
    detector = EventDetector(target, want, was_manager)
    while time.monotonic() < deadline and not detector.done:
        round_started = time.monotonic()
        nodes = survivors.nodes(exclude)
        tasks = survivors.tasks(services, exclude) if nodes is not None and detector.wants_tasks() else None
        for event, detail in detector.feed(nodes, tasks):
            timeline.mark(event, detail, at=round_started if event == "api-unavailable" else None)
            if event == "new-leader":
                timeline.new_leader = detail
            progress(f"{event} {detail}".strip() if event not in ("api-unavailable",) else event)
        time.sleep(max(0.0, POLL - (time.monotonic() - round_started)))
    timeline.missing = [e for e in want if not timeline.has(e)]


def _finish(timeline: Timeline, survivors: Survivors, exclude: set[str]) -> Timeline:
    nodes = survivors.nodes(exclude) or []
    timeline.final_leader = next((n.hostname for n in nodes if n.manager_status == "Leader"), None)
    timeline.after = snapshot(survivors, exclude)
    timeline.events.sort(key=lambda e: e.t)
    return timeline


def _drill_service(survivors: Survivors, replicas: int, timeout: float, progress: Progress) -> None:
    """A small service of the baked image, so that the drill always has tasks to reschedule."""
    progress(f"no service runs: creating {DRILL_SERVICE} ({replicas} replicas of {BAKED_IMAGE}) for the drill")
    create = Command("docker", "service", "create", "--detach", "--name", DRILL_SERVICE, "--replicas", str(replicas),
                     "--no-resolve-image", BAKED_IMAGE, "sleep", "1d")
    if survivors.ask(create) is None:
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
        survivors, nodes = _managers(session)
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
            listed = survivors.read(swarm.SERVICES)
            if listed is None:
                raise ChaosError(f"no manager of lab {lab_name} answers `docker service ls`")
            services = [s.name for s in listed]
            if service is not None and service not in services:
                raise NotFound(f"lab {lab_name} has no service {service} "
                               f"(services: {', '.join(services) or 'none'}); leave out --service for a drill service")
            if not services:
                _drill_service(survivors, max(2, len(nodes)), timeout, progress)
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
            return _finish(timeline, survivors, set())
        finally:
            if drill:
                survivors.ask(Command("docker", "service", "rm", DRILL_SERVICE))
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
        survivors, _ = _managers(session)
        try:
            before = snapshot(survivors)
            for timeline in timelines:
                timeline.before = before
                _watch(timeline, survivors, timeline.target, timeline.started + timeout + 120, ["rejoined"],
                       progress, {timeline.target})
                _finish(timeline, survivors, set())
        finally:
            survivors.close()
    return timelines


def availability(config: Config, lab_name: str, target: str, mode: str, timeout: float,
                 progress: Progress = lambda _m: None) -> Timeline:
    """drain or active, with the time until the tasks have moved."""
    with open_lab(config, lab_name, "running") as session:
        session.node(target)
        survivors, nodes = _managers(session)
        try:
            if not any(n.hostname == target for n in nodes):
                raise ChaosError(f"{target} is not in the swarm of lab {lab_name}")
            timeline = Timeline("drain" if mode == "drain" else "activate", lab_name, target)
            timeline.before = snapshot(survivors)
            progress(f"setting {target} availability to {mode}")
            timeline.started = time.monotonic()
            if survivors.ask(Command("docker", "node", "update", "--availability", mode, target)) is None:
                raise ChaosError(f"no manager answered `docker node update` for {target}")
            if mode == "active":
                timeline.mark("activated", target)
            want = ["drained"] if mode == "drain" else []
            _watch(timeline, survivors, target, timeline.started + timeout, want, progress, set())
            return _finish(timeline, survivors, set())
        finally:
            survivors.close()


def demote_leader(config: Config, lab_name: str, timeout: float, progress: Progress = lambda _m: None) -> Timeline:
    """The graceful contrast: demote the leader, time the hand-over, promote it back and time
    its return as a Reachable manager. A promotion that fails is in the timeline (missing
    `promoted`, exit 5): the lab is then a manager short, and the output says so."""
    with open_lab(config, lab_name, "running") as session:
        survivors, nodes = _managers(session)
        try:
            leader = next((n.hostname for n in nodes if n.manager_status == "Leader"), None)
            managers = [n for n in nodes if n.manager_status]
            if leader is None or len(managers) < 2:
                raise Refused(f"lab {lab_name} needs a leader and a second manager to hand over to")
            timeline = Timeline("demote-leader", lab_name, leader, old_leader=leader)
            timeline.before = snapshot(survivors)
            progress(f"demoting {leader}")
            timeline.started = time.monotonic()
            if survivors.ask(Command("docker", "node", "demote", leader)) is None:
                raise ChaosError(f"no manager answered `docker node demote {leader}`")
            timeline.mark("demoted", leader)
            _watch(timeline, survivors, leader, timeline.started + timeout, ["new-leader"], progress, {leader})
            missing = timeline.missing
            progress(f"promoting {leader} back")
            # Right after the hand-over the managers may still be removing the old leader from
            # raft and refuse the promotion for a moment: retry for a while before calling it failed.
            deadline = time.monotonic() + min(timeout, 60)
            promoted = survivors.ask(Command("docker", "node", "promote", leader), exclude={leader})
            while promoted is None and time.monotonic() < deadline:
                time.sleep(2)
                promoted = survivors.ask(Command("docker", "node", "promote", leader), exclude={leader})
            if promoted is None:
                timeline.missing = missing + ["promoted"]
                timeline.mark("promote-failed", f"`docker node promote {leader}` failed: the lab is a manager "
                                                f"short; run it again with `swarmlab docker {timeline.new_leader or 'NODE'}"
                                                f" -- node promote {leader}`")
                progress(f"promote-failed {leader}")
            else:
                _watch(timeline, survivors, leader, time.monotonic() + timeout, ["promoted"], progress, set())
                timeline.missing = missing + timeline.missing
            return _finish(timeline, survivors, set())
        finally:
            survivors.close()


def html_report(timelines: list[Timeline]) -> str:
    """One self-contained page (inline SVG and CSS) an instructor can project, with a section
    per timeline."""
    from .render import render
    sections = []
    for timeline in timelines:
        last = max([e.t for e in timeline.events]
                   + [hi for e in timeline.events if e.expected for hi in e.expected[1:]] + [10.0])
        step = 5 if last <= 60 else 10 if last <= 150 else 30
        span = (int(last // step) + 1) * step
        sections.append({"t": timeline.as_dict(), "span": span, "ticks": list(range(0, span + 1, step))})
    return render("report.html.j2", sections=sections)
