"""A drill's timeline, pure: its events on one monotonic clock with the windows swarmkit's
defaults lead to expect, the detector that turns what the surviving managers answer into
those events, the quorum guard, and the report page an instructor projects."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from swarmlab.core import swarm
from swarmlab.render import render

API_TIMEOUT = 4.0  # a manager slower than this counts as unavailable (an Engine API read, not a CLI start)

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
    # losing the majority (core/quorum.py): the leader steps down one to two election timeouts
    # after it last heard from a majority (CheckQuorum); its API then waits on the lost leader
    # before it says there is none (12 s more, measured under TCG); once the links are back,
    # one election. A split's other half has the same timers.
    "partitioned": (0, 0),
    "leader-lost": (10, 21),
    "no-leader": (10, 41),
    "writes-refused": (10, 41),
    "split": (0, 0),
    "other-half-no-leader": (10, 41),
    "healed": (0, 0),
    "leader-back": (0, 31),
    "managers-reachable": (0, 60),
    "services-back": (0, 90),
}
AFTER_RESTORE = {"rejoined": "restarted", "leader-back": "healed", "managers-reachable": "healed",
                 "services-back": "healed"}


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
        restore = next((e.t for e in self.events if e.event == AFTER_RESTORE.get(event)), None)
        if window and restore is not None:
            window = (round(restore + window[0], 1), round(restore + window[1], 1))  # counted from the restore
        if event in ("restarted", "healed"):
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


def tasks_settled(tasks: dict[str, tuple[int, list[swarm.Task]]], away_from: str | None) -> tuple[bool, str]:
    """(every service at its desired count of Running tasks, none on away_from; a summary)."""
    summary, settled = [], True
    for name, (desired, ps) in tasks.items():
        running = [t for t in ps if t.state == "Running"]
        summary.append(f"{name} {len(running)}/{desired}")
        if len(running) < desired or any(t.node == away_from for t in running):
            settled = False
    return settled, ", ".join(summary) or "no services"


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


def html_report(timelines: list[Timeline]) -> str:
    """One self-contained page (inline SVG and CSS) an instructor can project, with a section
    per timeline."""
    sections = []
    for timeline in timelines:
        last = max([e.t for e in timeline.events]
                   + [hi for e in timeline.events if e.expected for hi in e.expected[1:]] + [10.0])
        step = 5 if last <= 60 else 10 if last <= 150 else 30
        span = (int(last // step) + 1) * step
        sections.append({"t": timeline.as_dict(), "span": span, "ticks": list(range(0, span + 1, step))})
    return render("report.html.j2", sections=sections)
