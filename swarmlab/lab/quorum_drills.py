"""The drills about the raft majority, each with a timeline read from the leader left in sight
(core/quorum.py: which nodes are cut, and the events):

- `lose-quorum` cuts a majority of the managers off the lab network (their links down);
- `split` plugs half of an even number of managers, and half of the workers, into a network
  of their own (partition.py), so that neither half has a majority. The half out of sight is
  read through its guest agent, which needs no network.

Without `restore` the lab is left without a leader for the student to recover; `chaos heal
--all` or `reset` ends it.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import quote

from swarmlab.adapters.engine_api import EngineAPIBroken
from swarmlab.adapters.remote import RemoteError
from swarmlab.config import Config
from swarmlab.core import quorum
from swarmlab.core.command import Command
from swarmlab.core.quorum import QuorumDetector
from swarmlab.core.swarm import parse_api_nodes
from swarmlab.core.timeline import API_TIMEOUT, Timeline
from swarmlab.errors import Refused, SwarmlabError
from swarmlab.host.images import BAKED_IMAGE
from swarmlab.lab import chaos
from swarmlab.lab.partition import cut_links, heal_links
from swarmlab.lab.session import LabSession, open_lab
from swarmlab.lab.survivors import ManagerAPI, Survivors
from swarmlab.waiting import Cancelled, rounds

Progress = Callable[[str], None]
PROBE_SERVICE = "swarmlab-quorum-probe"
WRITE_TIMEOUT = 10.0  # a write the swarm would take answers in well under this
OTHER_HALF_ASKS = ["/usr/bin/timeout", "8", "/usr/bin/docker", "node", "ls", "--format",
                   "{{.Hostname}} {{.ManagerStatus}}"]


def split_network_name(lab: str) -> str:
    return f"swarmlab-split-{lab}"


@dataclass
class _Cut:
    """What a drill cuts: the nodes that go out of sight, the leader that stays in sight, the
    words for the progress line and the first event, and the hypervisor's act."""
    nodes: list[str]
    leader: str
    announce: str
    detail: str
    apply: Callable[[], None]
    other_half: str | None = None  # a manager out of sight, read through its guest agent


def lose_quorum(config: Config, lab_name: str, restore: bool, timeout: float,
                progress: Progress = lambda _m: None) -> Timeline:
    """Cuts a majority of the managers off (never the leader), then times, from the leader
    left in sight: the leader stepping down, a write refused, the tasks going on running. With
    `restore`, heals the links and times the leader and the managers coming back."""
    def plan(session: LabSession, nodes) -> _Cut:
        cut, leader = quorum.lose_quorum_cut(nodes, lab_name)
        managers = [n for n in nodes if n.manager_status]

        def apply() -> None:
            for name in cut:
                session.hv.set_link(session.node(name).domain, False)
        return _Cut(cut, leader, f"cutting {', '.join(cut)} off the lab network: {len(managers) - len(cut)} of "
                                 f"{len(managers)} managers left in touch, a majority needs "
                                 f"{quorum.majority(len(managers))}",
                    f"{', '.join(cut)} cut off; {leader} in sight", apply)
    return _drill("lose-quorum", "partitioned", plan, config, lab_name, restore, timeout, progress)


def split(config: Config, lab_name: str, restore: bool, timeout: float,
          progress: Progress = lambda _m: None) -> Timeline:
    """Splits the lab into two halves with as many managers each, then times the leader's
    half losing its leader, the other half saying it has none, a write refused and the tasks
    going on running. With `restore`, joins the halves and times the leader coming back."""
    def plan(session: LabSession, nodes) -> _Cut:
        sight, away, leader = quorum.split_halves(nodes, lab_name)
        network = split_network_name(lab_name)
        each = sum(1 for n in nodes if n.manager_status) // 2

        def apply() -> None:
            session.hv.open_split_network(network, lab_name)
            for name in away:
                session.hv.plug_into(session.node(name).domain, network)
        other = next(n.hostname for n in nodes if n.manager_status and n.hostname in away)
        return _Cut(away, leader, f"splitting lab {lab_name}: {', '.join(sight)} | {', '.join(away)}, {each} managers "
                                  f"each side, a majority needs {quorum.majority(2 * each)}",
                    f"{', '.join(away)} on a network of their own; {', '.join(sight)} in sight", apply,
                    other_half=session.node(other).domain)
    return _drill("split", "split", plan, config, lab_name, restore, timeout, progress)


def _drill(exercise: str, first_event: str, plan: Callable[[LabSession, list], _Cut], config: Config, lab_name: str,
           restore: bool, timeout: float, progress: Progress) -> Timeline:
    with open_lab(config, lab_name, "running", lock=True) as session:
        survivors, nodes = chaos.managers_of(session)
        drill, cut, other_half = False, [], None
        try:
            if cut_links(session.hv, session.lab):
                raise Refused(f"lab {lab_name} has nodes cut off already: `swarmlab chaos heal --all --lab {lab_name}` "
                              "first")
            the_cut = plan(session, nodes)
            managers = sorted(n.hostname for n in nodes if n.manager_status)
            listed = survivors.services(timeout=chaos.STEADY_TIMEOUT)
            if listed is None:
                raise chaos.ChaosError(f"no manager of lab {lab_name} answers `docker service ls`")
            if not listed:
                chaos.drill_service(survivors, max(2, len(nodes)), timeout, progress)
                drill = True
            leader = the_cut.leader
            seen = survivors.managers.get(leader)
            if seen is None:
                raise chaos.ChaosError(f"the leader {leader} of lab {lab_name} does not answer over SSH")
            timeline = Timeline(exercise, lab_name, ", ".join(the_cut.nodes), old_leader=leader)
            timeline.before = chaos.snapshot(survivors)
            before = quorum.running_counts(survivors.tasks(None, set(), timeout=chaos.STEADY_TIMEOUT) or {})
            running = running_tasks(seen)
            progress(the_cut.announce)
            timeline.started = time.monotonic()
            cut = the_cut.nodes
            try:
                the_cut.apply()
            except BaseException:  # half a cut is no drill: whatever was cut is healed, restore or not
                heal_links(session.hv, session.lab, cut)
                cut = []
                raise
            timeline.mark(first_event, the_cut.detail, at=timeline.started)
            if the_cut.other_half:
                other_half = OtherHalf(session, the_cut.other_half, timeline.started + timeout)
            detector = QuorumDetector(managers)
            watch_leader(timeline, detector, seen, timeline.started + timeout, ["leader-lost", "no-leader"], progress)
            if timeline.has("no-leader"):
                try_a_write(timeline, seen, progress)
                still = running_tasks(seen)
                timeline.mark("tasks-running", f"{still} of {running} service tasks on {leader} still running")
            if other_half:
                other_half.record(timeline, progress)
            if restore:
                missing = timeline.missing
                progress(f"healing {', '.join(cut)}")
                heal_links(session.hv, session.lab, cut)
                timeline.mark("healed", ", ".join(cut))
                cut, detector.healed = [], True
                deadline = time.monotonic() + timeout
                watch_leader(timeline, detector, seen, deadline, ["leader-back", "managers-reachable"], progress)
                if timeline.has("leader-back"):
                    wait_services_back(timeline, survivors, before, deadline, progress)
                timeline.missing = missing + timeline.missing
            return chaos.finish(timeline, survivors, set(cut))
        except BaseException:
            if restore and cut:  # a drill that was to heal leaves nothing cut, however it ended
                heal_links(session.hv, session.lab, cut)
            raise
        finally:
            if other_half:
                other_half.stop()
            if drill and restore:
                survivors.ask(Command("docker", "service", "rm", chaos.DRILL_SERVICE), timeout=chaos.STEADY_TIMEOUT)
            elif drill:
                progress(f"{chaos.DRILL_SERVICE} stays: removing a service needs a leader")
            survivors.close()


class OtherHalf:
    """A manager of the half out of sight, asked `docker node ls` through its guest agent in a
    thread of its own, from the cut until it says the swarm has no leader."""

    def __init__(self, session: LabSession, domain: str, deadline: float):
        self.hv, self.domain, self.deadline = session.hv, domain, deadline
        self.said: tuple[str, float] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"other-half {domain}", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        try:
            for began in rounds(self.deadline, chaos.POLL):
                if self._stop.is_set():
                    return
                try:
                    _code, output = self.hv.guest_exec(self.domain, OTHER_HALF_ASKS, timeout=15)
                except SwarmlabError:
                    output = ""
                if quorum.other_half_says(output) == "no-leader":
                    self.said = ("the manager out of sight answers: the swarm does not have a leader", began)
                    return
        except Cancelled:  # Ctrl-C: the drill's own thread stops it too
            return

    def record(self, timeline: Timeline, progress: Progress) -> None:
        """Its event on the timeline, once it has one or the deadline passed."""
        self._thread.join(max(0.0, self.deadline - time.monotonic()))
        if self.said:
            timeline.mark("other-half-no-leader", self.said[0], at=self.said[1])
            progress(f"other-half-no-leader {self.said[0]}")
        else:
            timeline.missing.append("other-half-no-leader")

    def stop(self) -> None:
        self._stop.set()


def watch_leader(timeline: Timeline, detector: QuorumDetector, seen: ManagerAPI, deadline: float, want: list[str],
                 progress: Progress) -> None:
    """Reads the manager in sight about once a second until every wanted event happened."""
    for began in rounds(deadline, chaos.POLL):  # Ctrl-C in a class drill ends it: the main thread waits for it
        if set(want) <= detector.seen:
            break
        nodes, error = None, None
        try:
            answer = seen.get("/nodes", API_TIMEOUT)
            nodes = parse_api_nodes(answer) if isinstance(answer, list) else None
        except SwarmlabError as e:
            error = str(e)
        for event, detail, at in detector.feed(began, nodes, error):
            timeline.mark(event, detail, at=at)
            if event == "leader-back":
                timeline.new_leader = detail
            progress(f"{event} {detail}")
    timeline.missing = [e for e in want if not timeline.has(e)]


def wait_services_back(timeline: Timeline, survivors: Survivors, before: dict[str, int], deadline: float,
                       progress: Progress) -> None:
    """Every service running as many tasks as before the cut: a new leader first counts the
    nodes it has not heard from as Unknown, and a task starting when the links went down starts again."""
    summary = ""
    for began in rounds(deadline, chaos.POLL):
        tasks = survivors.tasks(None, set())
        if tasks is not None:
            back, summary = quorum.services_back(before, tasks)
            if back:
                timeline.mark("services-back", summary, at=began)
                progress(f"services-back {summary}")
                return
    timeline.missing.append("services-back")
    progress(f"services not back in time: {summary or 'no manager answered'}")


def try_a_write(timeline: Timeline, seen: ManagerAPI, progress: Progress) -> None:
    """A service created on the manager in sight: a swarm without a leader refuses it."""
    spec = {"Name": PROBE_SERVICE, "Mode": {"Replicated": {"Replicas": 0}},
            "TaskTemplate": {"ContainerSpec": {"Image": BAKED_IMAGE, "Command": ["sleep", "1d"]}}}
    began = time.monotonic()
    try:
        created = seen.request("POST", "/services/create", spec, timeout=WRITE_TIMEOUT)
    except RemoteError as e:
        refusal = f"no answer within {WRITE_TIMEOUT:g} s" if isinstance(e, EngineAPIBroken) else str(e).rsplit(": ", 1)[-1]
        timeline.mark("writes-refused", f"service create: {refusal}", at=began)
        progress(f"writes-refused {refusal}")
        return
    timeline.missing.append("writes-refused")  # taken: the swarm had a majority after all
    if isinstance(created, dict) and created.get("ID"):
        seen.request("DELETE", f"/services/{created['ID']}", timeout=WRITE_TIMEOUT)


def running_tasks(seen: ManagerAPI) -> int:
    """Service tasks running on the node in sight (its own engine knows, with or without a leader)."""
    filters = quote(json.dumps({"label": ["com.docker.swarm.service.name"], "status": ["running"]}))
    try:
        return len(seen.get(f"/containers/json?filters={filters}", API_TIMEOUT) or [])
    except SwarmlabError:
        return 0
