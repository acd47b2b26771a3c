"""Chaos exercises with a measured timeline: kill the leader (or any node), start it again,
drain/activate a node, demote the leader.

All times are seconds on one monotonic clock, from the moment of the disruption. Survivors
are polled about once a second, each over its own persistent SSH connection and in its own
thread, because a manager's API hangs during an election: whichever answers first counts.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor, TimeoutError as FuturesTimeout, as_completed
from dataclasses import asdict, dataclass, field
from typing import Callable

import libvirt
from fabric import Connection

from . import swarm
from .config import Config
from .errors import NotFound, Refused, SwarmlabError
from .formation import open_connections
from .hypervisor import Hypervisor
from .lab import Lab, Node, find_lab, lab_lock
from .remote import RemoteError, run

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


# --- libvirt lifecycle events ---------------------------------------------------------------
_event_loop_started = False


def _start_event_loop() -> None:
    """libvirt delivers domain events only to a process that runs its event loop."""
    global _event_loop_started
    if _event_loop_started:
        return
    libvirt.virEventRegisterDefaultImpl()

    def loop():
        while True:
            libvirt.virEventRunDefaultImpl()

    threading.Thread(target=loop, name="libvirt-events", daemon=True).start()
    _event_loop_started = True


class LifecycleWatch:
    """Times of STOPPED/STARTED events for one domain, on the host's monotonic clock."""

    def __init__(self, uri: str, domain: str):
        _start_event_loop()
        self.times: dict[str, float] = {}
        self.conn = libvirt.open(uri)
        self.domain = domain

        def callback(_conn, dom, event, _detail, _opaque):
            if dom.name() != self.domain:
                return
            if event == libvirt.VIR_DOMAIN_EVENT_STOPPED:
                self.times.setdefault("stopped", time.monotonic())
            elif event == libvirt.VIR_DOMAIN_EVENT_STARTED:
                self.times.setdefault("started", time.monotonic())

        self.callback_id = self.conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, callback, None)

    def wait(self, kind: str, timeout: float = 5) -> float | None:
        deadline = time.monotonic() + timeout
        while kind not in self.times and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.times.get(kind)

    def close(self) -> None:
        try:
            self.conn.domainEventDeregisterAny(self.callback_id)
            self.conn.close()
        except libvirt.libvirtError:
            pass


# --- reading the swarm ----------------------------------------------------------------------
class Survivors:
    """One connection per manager; ask all at once, take the first answer."""

    def __init__(self, conns: dict[str, Connection]):
        self.conns = conns
        # Room for a few hung calls per manager while later polls go on.
        self.pool = ThreadPoolExecutor(max_workers=4 * max(1, len(conns)))

    def ask(self, command: str, exclude: set[str] = frozenset()) -> str | None:
        """The first answer from any manager not excluded, or None when none answers in time."""
        futures = [self.pool.submit(run, self.conns[n], command, API_TIMEOUT) for n in self.conns if n not in exclude]
        try:
            for future in as_completed(futures, timeout=API_TIMEOUT + 1):
                if future.exception() is None:
                    return future.result()
        except FuturesTimeout:
            pass
        return None

    def nodes(self, exclude: set[str] = frozenset()) -> list[swarm.SwarmNode] | None:
        out = self.ask(swarm.NODE_LS, exclude)
        return swarm.parse_node_ls(out) if out is not None else None

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def tasks_settled(survivors: Survivors, exclude: set[str], away_from: str | None) -> tuple[bool, str] | None:
    """(every service at its desired count with no running task on away_from, summary)."""
    out = survivors.ask(swarm.SERVICE_LS, exclude)
    if out is None:
        return None
    services = swarm.parse_service_ls(out)
    summary = []
    for service in services:
        ps = survivors.ask(swarm.service_ps(service.name) + " --filter desired-state=running", exclude)
        if ps is None:
            return None
        running = [t for t in swarm.parse_service_ps(ps) if t.state == "Running"]
        on_target = [t for t in running if t.node == away_from]
        summary.append(f"{service.name} {len(running)}/{service.desired}")
        if len(running) < service.desired or on_target:
            return False, ", ".join(summary)
    return True, ", ".join(summary) or "no services"


def snapshot(survivors: Survivors, exclude: set[str] = frozenset()) -> dict:
    nodes = survivors.nodes(exclude) or []
    tasks = []
    out = survivors.ask(swarm.SERVICE_LS, exclude)
    for service in swarm.parse_service_ls(out or ""):
        ps = survivors.ask(swarm.service_ps(service.name) + " --filter desired-state=running", exclude)
        tasks += [{"service": service.name, "task": t.name, "node": t.node, "state": t.state}
                  for t in swarm.parse_service_ps(ps or "")]
    return {"nodes": [{"node": n.hostname, "status": n.status, "availability": n.availability,
                       "manager": n.manager_status} for n in nodes], "tasks": tasks}


# --- exercises ------------------------------------------------------------------------------
@dataclass
class Session:
    config: Config
    lab: Lab
    hv: Hypervisor
    conns: dict[str, Connection]

    def node(self, name: str) -> Node:
        node = self.lab.node(name)
        if node is None:
            raise NotFound(f"lab {self.lab.name} has no node {name} (nodes: {', '.join(n.name for n in self.lab.nodes)})")
        return node

    def running(self, node: Node) -> bool:
        state = self.hv.domain_state(node.domain)
        return bool(state and state.running)


def _open(config: Config, lab_name: str) -> Session:
    hv = Hypervisor(config.uri)
    found = find_lab(config, hv, lab_name)
    if found is None:
        hv.close()
        raise NotFound(f"lab {lab_name} does not exist: `swarmlab ls` lists the labs")
    live = Lab(found.name, [n for n in found.nodes if (s := hv.domain_state(n.domain)) and s.running])
    conns: dict[str, Connection] = {}
    for node in live.nodes:
        try:
            conns.update(open_connections(config, Lab(found.name, [node])))
        except RemoteError:
            pass  # a node that does not answer is simply not asked
    return Session(config, found, hv, conns)


def _close(session: Session) -> None:
    for c in session.conns.values():
        c.close()
    session.hv.close()


def _managers(session: Session) -> tuple[Survivors, list[swarm.SwarmNode]]:
    managers = {}
    for name, conn in session.conns.items():
        try:
            if swarm.parse_swarm_info(run(conn, swarm.SWARM_INFO, timeout=10)).is_manager:
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
           progress: Progress, exclude: set[str]) -> None:
    """Polls until every wanted event happened or the deadline passes. API outages are
    recorded whenever they happen; they are not waited for."""
    api_down = False
    was_manager = any(n["node"] == target and n["manager"] for n in timeline.before.get("nodes", []))
    while time.monotonic() < deadline and not all(timeline.has(e) for e in want):
        round_started = time.monotonic()
        nodes = survivors.nodes(exclude)
        if nodes is None:
            if not api_down:
                timeline.mark("api-unavailable", "no surviving manager answered within "
                                                 f"{API_TIMEOUT:g} s", at=round_started)
                progress("api-unavailable")
            api_down = True
        else:
            if api_down and not timeline.has("api-back"):
                timeline.mark("api-back")
                progress("api-back")
            api_down = False
            leader = next((n.hostname for n in nodes if n.manager_status == "Leader"), None)
            if "new-leader" in want and not timeline.has("new-leader") and leader and leader != target:
                timeline.new_leader = leader
                timeline.mark("new-leader", leader)
                progress(f"new-leader {leader}")
            me = next((n for n in nodes if n.hostname == target), None)
            # A new leader reports its dead predecessor Unreachable at once (it is why it was
            # elected); the node turns Down only when its heartbeats are missed long enough.
            if me and me.manager_status == "Unreachable" and not timeline.has("node-unreachable") \
                    and "node-down" in want:
                timeline.mark("node-unreachable", target)
            if "node-down" in want and not timeline.has("node-down") and me and me.status == "Down":
                timeline.mark("node-down", f"{target} {me.status}/{me.manager_status or 'worker'}")
                progress(f"node-down {target}")
            if "tasks-rescheduled" in want and not timeline.has("tasks-rescheduled") and \
                    (timeline.has("node-down") or "node-down" not in want):
                settled = tasks_settled(survivors, exclude, target)
                if settled and settled[0]:
                    timeline.mark("tasks-rescheduled", settled[1])
                    progress(f"tasks-rescheduled ({settled[1]})")
            if "rejoined" in want and not timeline.has("rejoined") and me and me.status == "Ready" and \
                    (me.manager_status in ("Reachable", "Leader") or not was_manager):
                timeline.mark("rejoined", f"{target} {me.status}/{me.manager_status or 'worker'}")
                progress(f"rejoined {target}")
            if "drained" in want and not timeline.has("drained"):
                settled = tasks_settled(survivors, exclude, target)
                if settled and settled[0]:
                    timeline.mark("drained", settled[1])
                    progress(f"drained ({settled[1]})")
        time.sleep(max(0.0, POLL - (time.monotonic() - round_started)))
    timeline.missing = [e for e in want if not timeline.has(e)]


def _finish(timeline: Timeline, survivors: Survivors, exclude: set[str]) -> Timeline:
    nodes = survivors.nodes(exclude) or []
    timeline.final_leader = next((n.hostname for n in nodes if n.manager_status == "Leader"), None)
    timeline.after = snapshot(survivors, exclude)
    timeline.events.sort(key=lambda e: e.t)
    return timeline


def kill(config: Config, lab_name: str, target: str | None, restore: bool, timeout: float, force: bool,
         progress: Progress = lambda _m: None) -> Timeline:
    """Hard power-off of a node (the leader when target is None), then watch the swarm heal."""
    session = _open(config, lab_name)
    try:
        with lab_lock(config, lab_name):
            survivors, nodes = _managers(session)
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
                managers = [n for n in nodes if n.manager_status]
                reachable = [n for n in managers if n.manager_status in ("Leader", "Reachable")]
                if member and member.manager_status and len(reachable) - 1 <= len(managers) // 2 and not force:
                    raise Refused(f"killing manager {target} leaves {len(reachable) - 1} of {len(managers)} managers: "
                                  f"raft needs a majority ({len(managers) // 2 + 1}), so the swarm would stop "
                                  "accepting changes until it returns. Use 3 or more managers, or --force")
                exercise = "kill-leader" if target == leader else "kill"
                timeline = Timeline(exercise, lab_name, target, old_leader=leader)
                timeline.before = snapshot(survivors)
                exclude = {target}
                want = ["node-down", "tasks-rescheduled"]
                if target == leader:
                    want = ["new-leader", *want]
                watch = LifecycleWatch(config.uri, node.domain)
                try:
                    progress(f"killing {target} ({node.domain})" + (" - the leader" if target == leader else ""))
                    timeline.started = time.monotonic()
                    session.hv.destroy(node.domain)
                    stopped = watch.wait("stopped")
                    if stopped is not None:
                        timeline.started = min(timeline.started, stopped)
                    timeline.mark("killed", f"{target} powered off" + (" (libvirt event)" if stopped else ""),
                                  at=timeline.started)
                    _watch(timeline, survivors, target, timeline.started + timeout, want, progress, exclude)
                    if restore:
                        _restart(session, timeline, node, watch, survivors, timeout, progress)
                finally:
                    watch.close()
                return _finish(timeline, survivors, set())
            finally:
                survivors.close()
    finally:
        _close(session)


def _restart(session: Session, timeline: Timeline, node: Node, watch: LifecycleWatch,
             survivors: Survivors, timeout: float, progress: Progress) -> None:
    progress(f"starting {node.name} again")
    before = time.monotonic()
    session.hv.start(node.domain)
    started = watch.wait("started") if watch else None
    timeline.mark("restarted", f"{node.name} started" + (" (libvirt event)" if started else ""),
                  at=started or before)
    missing = timeline.missing
    _watch(timeline, survivors, node.name, time.monotonic() + timeout + 120, ["rejoined"], progress, {node.name})
    timeline.missing = missing + timeline.missing


def start(config: Config, lab_name: str, names: list[str] | None, timeout: float,
          progress: Progress = lambda _m: None) -> list[Timeline]:
    """Starts stopped nodes (all when names is None) and waits until each is back in the swarm."""
    hv = Hypervisor(config.uri)
    try:
        found = find_lab(config, hv, lab_name)
        if found is None:
            raise NotFound(f"lab {lab_name} does not exist: `swarmlab ls` lists the labs")
        targets = found.nodes if names is None else [found.node(n) or _unknown(found, n) for n in names]
        stopped = [n for n in targets if not ((s := hv.domain_state(n.domain)) and s.running)]
        if names and not stopped:
            raise ChaosError(f"{', '.join(names)} already running")
        timelines = []
        watch = {n.name: LifecycleWatch(config.uri, n.domain) for n in stopped}
        try:
            for node in stopped:
                timeline = Timeline("start", lab_name, node.name)
                progress(f"starting {node.name}")
                timeline.started = time.monotonic()
                hv.start(node.domain)
                at = watch[node.name].wait("started")
                timeline.mark("restarted", f"{node.name} started", at=at or timeline.started)
                timelines.append(timeline)
        finally:
            for w in watch.values():
                w.close()
    finally:
        hv.close()
    if not timelines:
        return []
    session = _open(config, lab_name)
    try:
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
    finally:
        _close(session)
    return timelines


def _unknown(lab: Lab, name: str):
    raise NotFound(f"lab {lab.name} has no node {name} (nodes: {', '.join(n.name for n in lab.nodes)})")


def availability(config: Config, lab_name: str, target: str, mode: str, timeout: float,
                 progress: Progress = lambda _m: None) -> Timeline:
    """drain or active, with the time until the tasks have moved."""
    session = _open(config, lab_name)
    try:
        session.node(target)
        survivors, nodes = _managers(session)
        try:
            if not any(n.hostname == target for n in nodes):
                raise ChaosError(f"{target} is not in the swarm of lab {lab_name}")
            timeline = Timeline("drain" if mode == "drain" else "activate", lab_name, target)
            timeline.before = snapshot(survivors)
            progress(f"setting {target} availability to {mode}")
            timeline.started = time.monotonic()
            if survivors.ask(f"docker node update --availability {mode} {target}") is None:
                raise ChaosError(f"no manager answered `docker node update` for {target}")
            if mode == "active":
                timeline.mark("activated", target)
            want = ["drained"] if mode == "drain" else []
            _watch(timeline, survivors, target, timeline.started + timeout, want, progress, set())
            return _finish(timeline, survivors, set())
        finally:
            survivors.close()
    finally:
        _close(session)


def demote_leader(config: Config, lab_name: str, timeout: float, progress: Progress = lambda _m: None) -> Timeline:
    """The graceful contrast: demote the leader, time the hand-over, promote it back."""
    session = _open(config, lab_name)
    try:
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
            if survivors.ask(f"docker node demote {leader}", exclude=set()) is None:
                raise ChaosError(f"no manager answered `docker node demote {leader}`")
            timeline.mark("demoted", leader)
            _watch(timeline, survivors, leader, timeline.started + timeout, ["new-leader"], progress, {leader})
            survivors.ask(f"docker node promote {leader}", exclude={leader})
            return _finish(timeline, survivors, set())
        finally:
            survivors.close()
    finally:
        _close(session)


def html_report(timeline: Timeline) -> str:
    """A self-contained page (inline SVG and CSS) an instructor can project."""
    from .render import render
    last = max([e.t for e in timeline.events] + [hi for e in timeline.events if e.expected for hi in e.expected[1:]]
               + [10.0])
    step = 5 if last <= 60 else 10 if last <= 150 else 30
    span = (int(last // step) + 1) * step
    return render("report.html.j2", t=timeline.as_dict(), span=span, ticks=list(range(0, span + 1, step)))
