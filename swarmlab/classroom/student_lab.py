"""One student's lab, made by `class up` or brought back by running it again.

After the instructor's machine restarted (`host down`, `host up`: the nodes are shut off), a
rerun starts each node from its own disk, so the lab comes back as the student left it. When
its swarm cannot be brought back, the lab returns to its `formed` snapshot instead. Either way
the student's key, token and account stay, and the result says what was done. A rerun never
saves `formed` again over a lab that has one: that would keep the student's work in it.
"""

from __future__ import annotations

from typing import Callable

from swarmlab.classroom import access, cpu_share, node_account
from swarmlab.config import Config
from swarmlab.core.roster import Student
from swarmlab.core.swarm import FormReport
from swarmlab.errors import Refused, SwarmlabError
from swarmlab.lab import formation, model as labs, node_status, reset as resets, snapshots
from swarmlab.waiting import Cancelled

# progress(lab, phase, detail)
LabProgress = Callable[[str, str, str], None]
# what a class adds to every lab it makes, rebuilt or not
CLASS_FINISH = (node_account.student_account, cpu_share.cap_class_nodes)


class StudentLabError(SwarmlabError):
    pass


def what_was_done(before: dict[str, str], report: FormReport | None) -> str:
    """What a rerun did to a lab, from each node's state before it ({} for a new lab)."""
    if not before:
        return "made"
    off = [node for node, state in before.items() if state not in ("running", "idle")]
    disks = "its own disk" if len(off) == 1 else "their own disks"
    started = f"started {', '.join(off)} from {disks}" if off else "already running"
    if report is None or not report.changed:
        return f"{started}; the swarm is as it was"
    steps = [f"init on {report.initialized}"] if report.initialized else []
    steps += [f"{verb} {', '.join(nodes)}" for verb, nodes in
              (("joined", report.joined), ("promoted", report.promoted), ("demoted", report.demoted)) if nodes]
    return f"{started}; the swarm was repaired" + (f": {'; '.join(steps)}" if steps else "")


def make_student_lab(config: Config, student: Student, nodes: int, progress: LabProgress,
                     snapshot: bool) -> dict:
    def node_progress(node: str, phase: str, detail: str) -> None:
        progress(student.lab, phase, f"{node} {detail}".strip())
    progress(student.lab, "start", f"on {student.host} ({student.cidr})")
    access.ensure_credentials(config, student.lab)  # the key first: the account is made with the lab
    before = _states_before(config, student.lab)
    has_formed = snapshots.load_snapshot(config, student.lab, snapshots.DEFAULT_SNAPSHOT) is not None
    try:
        lab, report, added = formation.make_lab(config, nodes, student.lab, config.prefix, None, [], True,
                                                node_progress, CLASS_FINISH, read_baseline=snapshot and not has_formed)
    except (Cancelled, Refused):
        raise  # Ctrl-C, or refused before anything was done: nothing to go back from
    except SwarmlabError as e:
        if not (before and has_formed):
            raise
        return _back_to_formed(config, student, progress, str(e).splitlines()[0])
    for change in added:
        progress(student.lab, "finish", change)
    if snapshot and report and not has_formed:  # the baseline resets return to has the student's account
        snapshots.keep_formed(config, student.lab, True, baseline=report.baseline)
    did = what_was_done(before, report)
    progress(student.lab, "done", f"{len(lab.nodes)} nodes: {did}")
    return {"did": did, "nodes": [{"node": n.name, "ip": n.ip, "dns": n.fqdn, "start": n.start} for n in lab.nodes]}


def _states_before(config: Config, lab: str) -> dict[str, str]:
    """Each node's state as libvirt says it, {} for a lab that was never made."""
    if labs.load_journal(labs.lab_config(config, lab), lab) is None:
        return {}
    try:
        return {row["node"]: row["state"] for row in node_status.node_states(config, lab)}
    except labs.LabNotFound:
        return {}


def _back_to_formed(config: Config, student: Student, progress: LabProgress, why: str) -> dict:
    progress(student.lab, "reset", f"its swarm did not come back ({why}): back to `formed`")
    result = resets.reset(config, student.lab, level="snapshot", finish=CLASS_FINISH,
                          progress=lambda m: progress(student.lab, "reset", m))
    if not result.ok:
        raise StudentLabError(f"its swarm did not come back ({why}), nor did the revert to `formed`: "
                              f"{(result.problems or [result.error or 'reset failed'])[0]}")
    lab = labs.load_journal(labs.lab_config(config, student.lab), student.lab)
    did = f"back to `formed`: its swarm did not come back ({why})"
    progress(student.lab, "done", did)
    return {"did": did, "nodes": [{"node": n.name, "ip": n.ip, "dns": n.fqdn, "start": "snapshot"}
                                  for n in (lab.nodes if lab else [])]}
