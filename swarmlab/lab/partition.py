"""Network chaos: nodes cut off the lab network by the hypervisor (their link set down, as
pulling the cable would), healed again, and the drill that cuts a majority of the managers off
and times the swarm losing its leader and getting it back (core/quorum.py: which managers, and
the events).

The cut is the hypervisor's live state, not the guest's: root in the guest cannot undo it, and
it is gone when the node's QEMU restarts. `reset` heals every cut link of its lab first, and
says so.
"""

from __future__ import annotations

import json
import time
from typing import Callable
from urllib.parse import quote

from swarmlab.adapters.engine_api import EngineAPIBroken
from swarmlab.adapters.hypervisor import Hypervisor
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
from swarmlab.lab.model import Lab
from swarmlab.lab.session import open_lab
from swarmlab.lab.survivors import ManagerAPI, Survivors
from swarmlab.waiting import rounds

Progress = Callable[[str], None]
PROBE_SERVICE = "swarmlab-quorum-probe"
WRITE_TIMEOUT = 10.0  # a write the swarm would take answers in well under this


def cut_links(hv: Hypervisor, lab: Lab) -> list[str]:
    """The lab's running nodes whose link is down."""
    return [n.name for n in lab.nodes if hv.link_up(n.domain) is False]


def heal_links(hv: Hypervisor, lab: Lab, names: list[str] | None = None) -> list[str]:
    """Every cut link of the lab (or of `names`) up again; the nodes healed."""
    targets = lab.nodes if names is None else [lab.require_node(n) for n in names]
    return [n.name for n in targets if hv.link_up(n.domain) is False and hv.set_link(n.domain, True)]


def partition(config: Config, lab_name: str, names: list[str], force: bool,
              progress: Progress = lambda _m: None) -> list[str]:
    """Cuts `names` off the lab network. Refused when that costs the swarm its majority,
    unless `force`: `chaos lose-quorum` is the drill for that."""
    with open_lab(config, lab_name, lock=True) as session:
        nodes = [session.node(n) for n in names]  # a wrong name is refused before anything changes
        if not force:
            session.connect("running")
            survivors, members = chaos.managers_of(session)
            survivors.close()
            managers = [m for m in members if m.manager_status]
            left = [m for m in managers if m.manager_status in ("Leader", "Reachable") and m.hostname not in names]
            if managers and len(left) < quorum.majority(len(managers)):
                raise Refused(f"cutting {', '.join(names)} off leaves {len(left)} of {len(managers)} managers in "
                              f"touch: the swarm would lose its majority. `swarmlab chaos lose-quorum` is that "
                              "drill, with a timeline; or pass --force")
        cut = []
        for node in nodes:
            if session.hv.set_link(node.domain, False):
                cut.append(node.name)
        progress(f"cut off the lab network: {', '.join(cut) or 'nothing new'}")
        return cut


def heal(config: Config, lab_name: str, names: list[str] | None, progress: Progress = lambda _m: None) -> list[str]:
    """The links of `names` (every cut node when None) up again."""
    with open_lab(config, lab_name, lock=True) as session:
        healed = heal_links(session.hv, session.lab, names)
        progress(f"healed: {', '.join(healed) or 'no link was cut'}")
        return healed


# --- the drill ------------------------------------------------------------------------------
def lose_quorum(config: Config, lab_name: str, restore: bool, timeout: float,
                progress: Progress = lambda _m: None) -> Timeline:
    """Cuts a majority of the managers off (never the leader), then times, from the leader
    left in sight: the leader stepping down, a write refused, the tasks going on running. With
    `restore`, heals the links and times the leader and the managers coming back; without it,
    the lab is left without a majority for the exercise (`chaos heal --all` or `reset` ends it)."""
    with open_lab(config, lab_name, "running", lock=True) as session:
        survivors, nodes = chaos.managers_of(session)
        drill, cut = False, []
        try:
            if cut_links(session.hv, session.lab):
                raise Refused(f"lab {lab_name} has nodes cut off already: `swarmlab chaos heal --all --lab {lab_name}` "
                              "first")
            cut, leader = quorum.lose_quorum_cut(nodes, lab_name)
            managers = sorted(n.hostname for n in nodes if n.manager_status)
            listed = survivors.services(timeout=chaos.STEADY_TIMEOUT)
            if listed is None:
                raise chaos.ChaosError(f"no manager of lab {lab_name} answers `docker service ls`")
            if not listed:
                chaos.drill_service(survivors, max(2, len(nodes)), timeout, progress)
                drill = True
            seen = survivors.managers.get(leader)
            if seen is None:
                raise chaos.ChaosError(f"the leader {leader} of lab {lab_name} does not answer over SSH")
            timeline = Timeline("lose-quorum", lab_name, ", ".join(cut), old_leader=leader)
            timeline.before = chaos.snapshot(survivors)
            before = quorum.running_counts(survivors.tasks(None, set(), timeout=chaos.STEADY_TIMEOUT) or {})
            running = _running_tasks(seen)
            progress(f"cutting {', '.join(cut)} off the lab network: {len(managers) - len(cut)} of {len(managers)} "
                     f"managers left in touch, a majority needs {quorum.majority(len(managers))}")
            timeline.started = time.monotonic()
            for name in cut:
                session.hv.set_link(session.node(name).domain, False)
            timeline.mark("partitioned", f"{', '.join(cut)} cut off; {leader} in sight", at=timeline.started)
            detector = QuorumDetector(managers)
            _watch(timeline, detector, seen, timeline.started + timeout, ["leader-lost", "no-leader"], progress)
            if timeline.has("no-leader"):
                _try_a_write(timeline, seen, progress)
                still = _running_tasks(seen)
                timeline.mark("tasks-running", f"{still} of {running} service tasks on {leader} still running")
            if restore:
                missing = timeline.missing
                progress(f"healing {', '.join(cut)}")
                heal_links(session.hv, session.lab, cut)
                timeline.mark("healed", ", ".join(cut))
                cut, detector.healed = [], True
                deadline = time.monotonic() + timeout
                _watch(timeline, detector, seen, deadline, ["leader-back", "managers-reachable"], progress)
                if timeline.has("leader-back"):
                    _wait_services_back(timeline, survivors, before, deadline, progress)
                timeline.missing = missing + timeline.missing
            return chaos.finish(timeline, survivors, set(cut))
        except BaseException:
            if restore and cut:  # a drill that was to heal leaves nothing cut, however it ended
                heal_links(session.hv, session.lab, cut)
            raise
        finally:
            if drill and restore:
                survivors.ask(Command("docker", "service", "rm", chaos.DRILL_SERVICE), timeout=chaos.STEADY_TIMEOUT)
            elif drill:
                progress(f"{chaos.DRILL_SERVICE} stays: removing a service needs a leader")
            survivors.close()


def _watch(timeline: Timeline, detector: QuorumDetector, seen: ManagerAPI, deadline: float, want: list[str],
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


def _wait_services_back(timeline: Timeline, survivors: Survivors, before: dict[str, int], deadline: float,
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


def _try_a_write(timeline: Timeline, seen: ManagerAPI, progress: Progress) -> None:
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


def _running_tasks(seen: ManagerAPI) -> int:
    """Service tasks running on the node in sight (its own engine knows, with or without a leader)."""
    filters = quote(json.dumps({"label": ["com.docker.swarm.service.name"], "status": ["running"]}))
    try:
        return len(seen.get(f"/containers/json?filters={filters}", API_TIMEOUT) or [])
    except SwarmlabError:
        return 0
