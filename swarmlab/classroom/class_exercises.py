"""An exercise across the whole class: started in every lab at once, checked in every lab, and
the grades as JUnit XML. Each lab's own start and check are teach/exercises.py's."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from swarmlab.classroom import class_log, typed_history
from swarmlab.classroom.room import LabResult, each_lab, require
from swarmlab.classroom.student_lab import CLASS_FINISH, LabProgress
from swarmlab.config import Config
from swarmlab.core import checks
from swarmlab.core.roster import Student
from swarmlab.teach import exercise_files, exercises


def class_start(config: Config, exercise: exercise_files.Exercise,
                progress: LabProgress = lambda *_: None) -> list[LabResult]:
    """The exercise's starting point in every lab at once (reset, then its setup)."""
    room = require(config)

    def start(scoped: Config, student: Student) -> dict:
        typed_history.collect_quietly(config, student.lab)  # the reset to come reverts the nodes' records
        started = exercises.start(scoped, student.lab, exercise, progress=lambda m: progress(student.lab, "start", m),
                                  finish=CLASS_FINISH)
        class_log.record(config, student.lab, "start", exercise=exercise.id, by="instructor")
        return started
    return each_lab(config, room.students, start)


def class_check(config: Config, exercise: exercise_files.Exercise, wait: bool = False) -> list[LabResult]:
    room = require(config)

    def check(scoped: Config, student: Student) -> dict:
        verdicts = exercises.check(scoped, student.lab, exercise, wait=wait)
        class_log.record(config, student.lab, "check", exercise=exercise.id, by="instructor",
                         **checks.tally(verdicts))
        return {"verdicts": [v.as_dict() for v in verdicts], "passed": all(v.ok for v in verdicts)}

    results = each_lab(config, room.students, check)
    for r in results:
        r.ok = r.ok and r.detail.get("passed", False)
    return results


def junit(exercise_id: str, results: list[LabResult]) -> str:
    """One testsuite per student: a gradebook imports the checks as test cases."""
    suites = ET.Element("testsuites", name=f"swarmlab.{exercise_id}")
    for r in results:
        verdicts = r.detail.get("verdicts", [])
        suite = ET.SubElement(suites, "testsuite", name=r.student, tests=str(max(1, len(verdicts))),
                              failures=str(sum(not v["ok"] for v in verdicts)), errors="1" if r.error else "0",
                              time=f"{r.seconds:.1f}")
        if r.error:
            case = ET.SubElement(suite, "testcase", classname=f"{r.lab}.{exercise_id}", name="lab reachable")
            ET.SubElement(case, "error", message=r.error)
        for v in verdicts:
            case = ET.SubElement(suite, "testcase", classname=f"{r.lab}.{exercise_id}", name=v["check"])
            if not v["ok"]:
                ET.SubElement(case, "failure", message=f"expected {v['expected']}; found {v['found']}")
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"
