"""The end of a class by its clock (`class up --ends`), as the portal carries it out: the
students' terminals close; Check still works, for grading. With --teardown, every lab's
current exercise is checked once more (recorded, by "clock"), what the students typed is
collected, and the labs are removed."""

from __future__ import annotations

import time

from swarmlab.classroom import class_log, room as classroom
from swarmlab.config import Config
from swarmlab.core import checks, class_clock
from swarmlab.errors import SwarmlabError
from swarmlab.teach import exercise_files, exercises
from swarmlab.waiting import run_together


def class_ends(config: Config) -> float | None:
    room = classroom.load(config)
    return room.ends if room else None


def is_over(config: Config, now: float | None = None) -> bool:
    return class_clock.over(class_ends(config), time.time() if now is None else now)


def ended_message(config: Config) -> str:
    return f"the class {class_clock.say_left(class_ends(config), time.time())}: terminals are closed; Check still works"


def grade_and_remove(config: Config) -> list[classroom.LabResult]:
    """--teardown at the end: each lab's current exercise checked once and recorded, then
    `class down` (which collects the typed commands first)."""
    room = classroom.require(config)

    def grade(student) -> None:
        scoped = classroom.student_config(config, student)
        current = exercises.load_state(scoped, student.lab).get("exercise")
        if not current:
            return
        try:
            verdicts = exercises.check(scoped, student.lab, exercise_files.find(current), wait=False)
        except SwarmlabError:
            return  # the lab does not answer: its last check stands
        class_log.record(config, student.lab, "check", exercise=current, by="clock", **checks.tally(verdicts))
    run_together(grade, room.students)
    return classroom.class_down(config)
