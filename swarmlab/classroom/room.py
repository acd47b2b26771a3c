"""A class: one lab per student, each whole on one libvirt host, on a network of its own.

`class up` plans first (students, placement, subnets), records the plan in
<state_dir>/class.json and only then makes labs, several at once per host. Each lab is an
ordinary lab scoped to its host and network (`lab.scoped`), so every other command
(`status`, `ssh`, `reset`, `exercise ...`) finds it from its journal. Labs on different
libvirt networks cannot reach each other (libvirt's own forward rules reject traffic between
two NAT networks); the node filter (firewall.py) keeps every lab off the hosts' own ports.

The decisions are pure and live beside it: names (roster.py), room and placement
(placement.py); where the hosts stand (lab_hosts.py) and the students' cards (cards.py) too.
One student's lab, made or brought back by a rerun, is student_lab.py.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from swarmlab.adapters import firewall, remote
from swarmlab.adapters.hypervisor import Hypervisor
from swarmlab.classroom import access, class_log, typed_history
from swarmlab.classroom import class_file
from swarmlab.classroom.class_file import ClassError, Classroom, load, require, save  # noqa: F401 (the class's API)
from swarmlab.classroom.student_lab import CLASS_FINISH, LabProgress, make_student_lab
from swarmlab.config import Config, HostSpec
from swarmlab.core.placement import HostRoom, next_subnet, place
from swarmlab.core.roster import Student
from swarmlab.errors import Refused, SwarmlabError
from swarmlab.host import labhost, template_build
from swarmlab.host.lab_hosts import survey
from swarmlab.lab import lab_down, model as labs, reset as resets, swarm_status
from swarmlab.teach import exercises
from swarmlab.waiting import cancelled, run_together


def lab_network(config: Config, lab: str) -> str:
    return f"{config.network}-{lab}"


def student_config(config: Config, student: Student) -> Config:
    """The student's lab on its host and network."""
    host = next((h for h in config.lab_hosts if h.name == student.host), None)
    if host is None:
        return labs.lab_config(config, student.lab)  # the journal still knows a host taken out of the config
    return labs.scoped(config, host, lab_network(config, student.lab), ipaddress.IPv4Network(student.cidr))


# --- class up -------------------------------------------------------------------------------
@dataclass
class LabResult:
    student: str
    lab: str
    host: str
    ok: bool = False
    seconds: float = 0.0
    error: str | None = None
    detail: dict = field(default_factory=dict)


def plan(config: Config, wanted: list[Student], nodes: int, rooms: list[HostRoom] | None = None) -> Classroom:
    """The class after `class up`: students already in the class keep their host and subnet;
    new ones are placed and get a /24 of their host's range. Nothing is made here."""
    current = load(config)
    if current and current.nodes != nodes:
        raise Refused(f"the class has {current.nodes} nodes per lab; `class up --nodes {nodes}` would change "
                      f"every lab: keep --nodes {current.nodes}, or `swarmlab class down --yes` first")
    room = current or Classroom(nodes)
    new = [s for s in wanted if room.student(s.lab) is None]
    if not new:
        return room
    with Hypervisor(config.uri) as hv:
        existing_labs = set(labs.all_labs(config, hv))
    for s in new:
        if s.lab in existing_labs:
            raise Refused(f"lab {s.lab} already exists outside the class: `swarmlab down --lab {s.lab}` first, "
                          "or rename the student")
    rooms = rooms if rooms is not None else survey(config)
    _hold_planned_room(config, room, rooms)
    placement = place([s.lab for s in new], nodes, rooms)
    # A /24 is unique across the whole class, not only on its host: hosts share the default
    # range, and a name in the zone should point at one node only.
    in_class = [ipaddress.IPv4Network(s.cidr) for s in room.students if s.cidr]
    taken: dict[str, list[ipaddress.IPv4Network]] = {}
    for host in {placement[s.lab] for s in new}:
        with Hypervisor(config.host(host).uri) as hv:
            taken[host] = hv.network_ranges() + [config.cidr]
    for s in new:
        subnet = next_subnet(config.host(placement[s.lab]).lab_range, taken[placement[s.lab]] + in_class)
        in_class.append(subnet)
        room.students.append(Student(s.name, s.lab, placement[s.lab], str(subnet)))
    return room


def _hold_planned_room(config: Config, room: Classroom, rooms: list[HostRoom]) -> None:
    """Labs of the class that are planned but not (fully) made yet keep their room: the survey
    counts only nodes that exist."""
    for r in rooms:
        labs_there = {s.lab for s in room.students if s.host == r.name}
        if not labs_there or r.problem:
            continue
        with Hypervisor(config.host(r.name).uri) as hv:
            made = sum(1 for d in hv.owned_domains()
                       if d.owner.get("role") == "node" and d.owner.get("lab") in labs_there)
        r.free_nodes = max(0, r.free_nodes - (len(labs_there) * room.nodes - made))


def class_up(config: Config, wanted: list[Student], nodes: int, progress: LabProgress = lambda *_: None,
             snapshot: bool = True, ends: float | None = None, teardown: bool = False,
             language: str | None = None) -> list[LabResult]:
    """Makes (or finishes) every student's lab; a failed lab does not stop the others. The plan
    is recorded before anything is made, so `class down` always knows every lab. `ends` sets
    the class's clock (None keeps it)."""
    new_class = load(config) is None
    room = plan(config, wanted, nodes)
    if ends is not None:
        room.ends, room.teardown = ends, teardown
    if language:
        room.language = language
    save(config, room)
    class_log.begin(config, room.students, new_class)
    if new_class:  # a new class: the last class's instructor link stops working
        access.new_instructor_token(config)
    wanted_labs = {s.lab for s in wanted}
    students = [s for s in room.students if s.lab in wanted_labs]
    pushed = _push_templates(config, {s.host for s in students}, progress)

    def make(scoped: Config, student: Student) -> dict:
        if pushed.get(student.host):
            raise ClassError(f"host {student.host}: {pushed[student.host]}")
        return make_student_lab(scoped, student, nodes, progress, snapshot)
    return each_lab(config, students, make)


def _push_templates(config: Config, hosts: set[str], progress: LabProgress) -> dict[str, str]:
    """The template onto every host on another machine that takes labs, to all at once;
    host -> why it failed."""
    failed = {}

    def push(name: str) -> None:
        try:
            for change in template_build.push_template(config, config.host(name),
                                                        lambda m: progress(name, "template", m)):
                progress(name, "template", change)
            guard_host(config, name)
        except SwarmlabError as e:
            failed[name] = str(e)
    if any(config.host(h).local for h in hosts):
        labhost.guard_nodes(config)  # the class's hosts may have changed since `host up`
    remote = sorted(h for h in hosts if not config.host(h).local)
    for name, done in zip(remote, run_together(push, remote)):
        if done.exception() is not None and name not in failed:  # an OSError here, say: still that host's
            failed[name] = f"copying the template failed: {done.exception()}"
    return failed


def _jump_to(config: Config, name: str):
    spec = config.host(name)
    if not spec.jump:
        raise ClassError(f"host {name} is on another machine and has no SSH way in: set ssh = \"root@HOST\" in its "
                         "[[hosts]] entry")
    return remote.jump_connection(remote.Jump.parse(spec.jump, spec.ssh_key, config.state_dir / "known_hosts_lab_hosts"))


def guard_host(config: Config, name: str) -> None:
    """The node filter on a host on another machine, over its sshd."""
    remote.run(_jump_to(config, name), firewall.apply_command(labhost.node_filter(config)), timeout=30)


def _unguard_host(config: Config, name: str) -> None:
    try:
        remote.run(_jump_to(config, name), firewall.remove_command(), timeout=30)
    except SwarmlabError:
        pass  # a host that is gone keeps nothing of ours that matters


def labs_at_once(config: Config, host: HostSpec) -> int:
    """[class] parallel, or one lab per 4 host CPUs: under TCG, 2 labs of 3 nodes made at once
    on 2 cores took 365-374 s, more than two `up 3` one after another."""
    if config.parallel:
        return config.parallel
    try:
        with Hypervisor(host.uri) as hv:
            return max(1, hv.cpus() // 4)
    except SwarmlabError:
        return 1


def resets_at_once(config: Config, host: HostSpec) -> int:
    """Labs a host resets side by side: one per host CPU, at least 2. A revert is mostly its
    memory image read back, then seconds of guest CPU that the cgroup weights share out; a lab
    a reset has to rebuild waits for a making slot (labs_at_once) all the same."""
    try:
        with Hypervisor(host.uri) as hv:
            return max(2, hv.cpus())
    except SwarmlabError:
        return 2


def each_lab(config: Config, students: list[Student], work: Callable[[Config, Student], dict],
             reading: bool = False, at_once: Callable[[Config, HostSpec], int] = labs_at_once) -> list[LabResult]:
    """work(scoped config, student) for every student at once, at most `at_once` per host
    ([class] parallel unless told) unless the work is only `reading` (a status: no emulated CPU
    to share out); every lab's outcome is returned, failed or not."""
    gates = {h.name: threading.Semaphore(len(students) if reading else at_once(config, h))
             for h in config.lab_hosts if any(s.host == h.name for s in students)}
    results = [LabResult(s.name, s.lab, s.host) for s in students]

    def one(index: int) -> None:
        student, result = students[index], results[index]
        gate = gates.get(student.host) or threading.Semaphore(1)
        with gate:
            if cancelled.is_set():
                result.error = "interrupted"
                return
            began = time.monotonic()
            try:
                result.detail = work(student_config(config, student), student) or {}
                result.ok = True
            except SwarmlabError as e:
                result.error = _on_host(config, student.host, str(e))
            result.seconds = round(time.monotonic() - began, 1)

    futures = run_together(one, range(len(students)))
    for f, result in zip(futures, results):
        if f.exception() is not None and result.error is None:
            result.error = f"{type(f.exception()).__name__}: {f.exception()}"
    return results


def _on_host(config: Config, host: str, error: str) -> str:
    """An error of a lab on another machine names that host, whatever step failed (a libvirtd
    that goes away mid-call only says "End of file")."""
    try:
        spec = config.host(host)
    except SwarmlabError:
        return error
    if spec.local or spec.uri in error:
        return error
    return f"host {host} ({spec.uri}): {error}"


# --- status, reset, down (an exercise across the class: class_exercises.py) ----------------
def class_status(config: Config, kept: dict | None = None) -> list[dict]:
    """A row per student. `kept` (lab -> swarm_status.KeptSwarmView), held by a caller that reads
    again and again, keeps one manager session per lab between reads."""
    room = require(config)
    if kept is not None:
        for lab in set(kept) - {s.lab for s in room.students}:
            kept.pop(lab).close()

    def read(scoped: Config, student: Student) -> dict:
        view = kept.setdefault(student.lab, swarm_status.KeptSwarmView()) if kept is not None else None
        data = swarm_status.status_with_swarm(scoped, student.lab, view)
        rows = data["nodes"]
        state = exercises.load_state(scoped, student.lab)
        ready = sum(1 for r in rows if r.get("state") == "running" and r.get("ssh"))
        swarm_ok = bool(rows) and all(r.get("node_status") == "Ready" for r in rows) and \
            any(r.get("manager_status") == "Leader" for r in rows)
        # which nodes, so that the instructor knows what to bring back: off, no SSH, or not Ready
        down = [r["node"] for r in rows
                if not (r.get("state") == "running" and r.get("ssh")) or r.get("node_status") not in ("Ready", None)]
        return {"nodes": len(rows), "ready": ready, "swarm": "healthy" if swarm_ok else "unhealthy", "down": down,
                "exercise": state.get("exercise"), "last_check": state.get("last_check")}

    out = []
    for result in each_lab(config, room.students, read, reading=True):
        row = {"student": result.student, "lab": result.lab, "host": result.host, **result.detail}
        if not result.ok:
            row.update({"nodes": 0, "ready": 0, "swarm": "unknown", "down": [], "error": result.error})
        out.append(row)
    return out


def class_reset(config: Config, level: str | None = None, only: list[str] | None = None,
                progress: LabProgress = lambda *_: None) -> list[LabResult]:
    """Every lab (or those named in `only`) back to its formed swarm, side by side as each
    host's CPUs allow (resets_at_once); a lab that must be rebuilt waits for a making slot."""
    room = require(config)
    making = {h.name: threading.Semaphore(labs_at_once(config, h)) for h in config.lab_hosts}

    def reset(scoped: Config, student: Student) -> dict:
        typed_history.collect_quietly(config, student.lab)
        result = resets.reset(scoped, student.lab, level=level, progress=lambda m: progress(student.lab, "reset", m),
                              finish=CLASS_FINISH, rebuild_slot=making.get(student.host))
        if not result.ok:
            raise ClassError((result.problems or [result.error or "reset failed"])[0])
        class_log.record(config, student.lab, "reset", by="instructor")
        return {"levels": result.levels, "reasons": result.reasons, "seconds": result.seconds}
    return each_lab(config, [s for s in room.students if only is None or s.lab in only], reset,
                    at_once=resets_at_once)


def class_down(config: Config) -> list[LabResult]:
    """Every student's lab removed; the class record goes once every lab is gone."""
    room = load(config)
    if room is None:
        return []

    def remove(scoped: Config, student: Student) -> dict:
        typed_history.collect_quietly(config, student.lab)
        removed = lab_down.down(scoped, student.lab)
        access.revoke(config, student.lab)  # the key and the portal token stop working now
        return {"removed": removed}
    results = each_lab(config, room.students, remove)
    left = [s for s, r in zip(room.students, results) if not r.ok]
    if left:
        room.students = left
        save(config, room)
    else:
        class_file.remove(config)
        access.new_instructor_token(config)  # the class is over: so is the instructor's link
        for name in sorted({s.host for s in room.students}):
            if name in {h.name for h in config.lab_hosts} and not config.host(name).local:
                _unguard_host(config, name)
    return results
