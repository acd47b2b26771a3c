"""`class chaos`: one drill on every student's lab at once, a timeline each, for the
instructor to show side by side (chaos.py and quorum_drills.py run each one)."""

from __future__ import annotations

from pathlib import Path

from swarmlab.classroom import room as classroom
from swarmlab.classroom.room import LabResult
from swarmlab.config import Config
from swarmlab.core.roster import Student
from swarmlab.core.timeline import Timeline, html_report
from swarmlab.errors import NotFound
from swarmlab.lab import chaos, quorum_drills

DRILLS = ("lose-quorum", "split", "kill-leader")


def class_chaos(config: Config, drill: str, restore: bool, timeout: float, only: list[str] | None = None,
                progress=lambda lab, message: None) -> tuple[list[LabResult], list[Timeline]]:
    """The drill on every lab (or those in `only`) at the same time; each lab's outcome, and
    the timelines of those that ran."""
    if drill not in DRILLS:
        raise NotFound(f"no class drill {drill} (drills: {', '.join(DRILLS)})")
    room = classroom.require(config)
    unknown = sorted(set(only or ()) - {s.lab for s in room.students})
    if unknown:
        raise NotFound(f"the class has no lab {unknown[0]} (labs: {', '.join(s.lab for s in room.students)}); "
                       "see `swarmlab class status`")
    timelines: dict[str, Timeline] = {}

    def run(scoped: Config, student: Student) -> dict:
        def said(message: str) -> None:
            progress(student.lab, message)
        if drill == "lose-quorum":
            timeline = quorum_drills.lose_quorum(scoped, student.lab, restore, timeout, said)
        elif drill == "split":
            timeline = quorum_drills.split(scoped, student.lab, restore, timeout, said)
        else:
            timeline = chaos.kill(scoped, student.lab, None, restore, timeout, False, None, said)
        timelines[student.lab] = timeline
        return {"missing": timeline.missing}

    students = [s for s in room.students if only is None or s.lab in only]
    results = classroom.each_lab(config, students, run, reading=True)  # side by side: the point of the drill
    ran = [timelines[r.lab] for r in results if r.lab in timelines]
    if ran:
        page = report_path(config)
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(html_report(ran))
    return results, ran


def report_path(config: Config) -> Path:
    """The last class drill's page, which the instructor's portal page links to."""
    return config.state_dir / "class" / "last-drill.html"


def last_report(config: Config) -> str | None:
    try:
        return report_path(config).read_text()
    except OSError:
        return None
