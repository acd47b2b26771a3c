"""The class's progress board and report, and the masking of typed commands: pure, from
recorded events."""

import csv
import io

import pytest

from swarmlab.core import progress
from swarmlab.core.typed_commands import mask, parse_record

STUDENTS = [("Ann Lee", "ann-lee"), ("Bo", "bo")]
ORDER = ["cluster", "services", "failover"]


def ev(at, lab, kind, exercise=None, **fields):
    return {"at": at, "lab": lab, "kind": kind, **({"exercise": exercise} if exercise else {}), **fields}


EVENTS = [
    ev(100, "ann-lee", "start", "services", by="instructor"),
    ev(100, "bo", "start", "services", by="instructor"),
    ev(130, "ann-lee", "check", "services", by="student", ok=False, passed=1, of=3),
    ev(140, "ann-lee", "hint", "services", by="student", number=1),
    ev(150, "ann-lee", "hint", "services", by="student", number=2),
    ev(160, "ann-lee", "check", "services", by="student", ok=False, passed=2, of=3),
    ev(190, "ann-lee", "check", "services", by="student", ok=True, passed=3, of=3),
    ev(200, "ann-lee", "check", "services", by="instructor", ok=True, passed=3, of=3),
    ev(210, "bo", "reset", by="instructor"),
    ev(220, "bo", "command", by="student", node="node1", line="docker service ls"),
    ev(230, "zed", "check", "services", by="student", ok=True, passed=3, of=3),  # not in the class
    ev(300, "ann-lee", "start", "cluster", by="instructor"),
]


def test_the_board_counts_attempts_hints_and_the_first_pass_per_student_and_exercise():
    cells = progress.board(EVENTS, STUDENTS, ORDER)
    assert [(c.lab, c.exercise) for c in cells] == [("ann-lee", "cluster"), ("ann-lee", "services"),
                                                    ("bo", "cluster"), ("bo", "services")]
    ann = cells[1]
    assert (ann.started, ann.attempts, ann.hints, ann.first_pass, ann.seconds_to_pass) == (100, 3, 2, 190, 90)
    assert ann.last == {"ok": True, "passed": 3, "of": 3, "at": 200, "by": "instructor"}
    assert ann.state() == "passed" and len(ann.checks) == 4
    bo = cells[3]
    assert (bo.started, bo.attempts, bo.hints, bo.passed, bo.best, bo.state()) == (100, 0, 0, False, 0.0, "started")
    assert cells[0].state() == "started" and cells[2].state() == ""


def test_a_restart_restarts_the_clock_to_the_first_pass_and_a_partial_check_scores_its_share():
    events = [ev(0, "bo", "start", "services"), ev(50, "bo", "check", "services", by="student", passed=2, of=3),
              ev(100, "bo", "restart", "services", by="student"),
              ev(130, "bo", "check", "services", by="student", ok=True, passed=3, of=3)]
    cell = progress.board(events, [("Bo", "bo")], ORDER)[0]
    assert (cell.started, cell.seconds_to_pass, cell.attempts) == (100, 30, 2)
    rows = progress.report_rows(progress.board(events[:2], [("Bo", "bo")], ORDER))
    assert rows[0]["score"] == 0.667 and rows[0]["passed"] == "no" and rows[0]["last_result"] == "2/3"


def test_the_csv_has_a_row_per_student_and_exercise_as_a_gradebook_takes_it():
    text = progress.report_csv(progress.board(EVENTS, STUDENTS, ORDER))
    assert text.splitlines()[0] == ",".join(progress.REPORT_FIELDS)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["student"], r["exercise"]) for r in rows] == [("Ann Lee", "cluster"), ("Ann Lee", "services"),
                                                             ("Bo", "cluster"), ("Bo", "services")]
    ann = rows[1]
    assert (ann["attempts"], ann["hints"], ann["passed"], ann["seconds_to_pass"], ann["score"]) == \
        ("3", "2", "yes", "90.0", "1.0")
    assert ann["first_pass"].startswith("1970-01-01T") or ann["first_pass"].startswith("1969-12-31T")
    assert rows[3]["first_pass"] == "" and rows[3]["passed"] == "no"


def test_the_json_report_groups_by_student_with_the_check_history():
    data = progress.report_json(progress.board(EVENTS, STUDENTS, ORDER))
    assert data["exercises"] == ["cluster", "services"]
    ann = data["students"][0]
    assert (ann["student"], ann["lab"], ann["passed"]) == ("Ann Lee", "ann-lee", 1)
    services = ann["exercises"][1]
    assert services["exercise"] == "services" and services["passed"] is True
    assert [c["ok"] for c in services["checks"]] == [False, False, True, True]


def test_a_students_history_is_theirs_and_commands_belong_to_the_exercise_of_the_moment():
    assert [e["kind"] for e in progress.history(EVENTS, "bo")] == ["start", "reset", "command"]
    assert [e["kind"] for e in progress.history(EVENTS, "bo", "services")] == ["start", "command"]
    assert progress.history(EVENTS, "bo", "cluster") == []


@pytest.mark.parametrize("typed, shown", [
    ("echo s3cr3t | docker secret create db_pass -", "echo <hidden> | docker secret create db_pass -"),
    ("echo -n 's3 cr3t' | docker secret create db_pass -", "echo -n <hidden> | docker secret create db_pass -"),
    ('printf %s "s3cr3t" | sudo docker secret create db_pass -',
     "printf %s <hidden> | sudo docker secret create db_pass -"),
    ("printf s3cr3t|docker secret create x -", "printf <hidden>|docker secret create x -"),
    ("docker secret create x - <<< s3cr3t", "docker secret create x - <<< <hidden>"),
    ("docker swarm join --token SWMTKN-1-abc123-def456 10.0.0.1:2377",
     "docker swarm join --token <hidden> 10.0.0.1:2377"),
    ("docker login -u me --password=hunter2 reg", "docker login -u me --password=<hidden> reg"),
    ("cat token; echo SWMTKN-1-0a9z-1b2y", "cat token; echo <hidden>"),
    # what is no secret stays as typed
    ("echo hello | docker service create --name x busybox", "echo hello | docker service create --name x busybox"),
    ("docker secret create db_pass ./pass.txt && echo done", "docker secret create db_pass ./pass.txt && echo done"),
    ("echo 'two\nlines' | docker secret create x -", "echo <hidden> | docker secret create x -"),
])
def test_secrets_typed_on_the_command_line_are_masked(typed, shown):
    assert mask(typed) == shown


def test_the_nodes_record_becomes_masked_command_events_and_junk_is_dropped():
    text = ("1764590000\tdocker node ls\n"
            "garbage written by the student\n"
            "1764590005\techo pw123456 | docker secret create p -\n"
            "1764590009\t   \n")
    events = parse_record(text, "node1", "bo", now=1764599999.0)
    assert events == [
        {"at": 1764590000.0, "lab": "bo", "kind": "command", "by": "student", "node": "node1",
         "line": "docker node ls"},
        {"at": 1764590005.0, "lab": "bo", "kind": "command", "by": "student", "node": "node1",
         "line": "echo <hidden> | docker secret create p -"}]


def test_a_cell_in_brief_says_pass_time_or_last_result_with_attempts_and_hints():
    cells = progress.board(EVENTS, STUDENTS, ORDER)
    assert [progress.brief(c) for c in cells] == ["started", "✓ 1:30 3a 2h", "·", "started"]
    exercises, rows = progress.grid(cells)
    assert exercises == ["cluster", "services"]
    assert [(name, lab, [c.exercise for c in row]) for name, lab, row in rows] == [
        ("Ann Lee", "ann-lee", ["cluster", "services"]), ("Bo", "bo", ["cluster", "services"])]
    trying = progress.board(EVENTS[:3], STUDENTS, ORDER)[0]
    assert progress.brief(trying) == "✗ 1/3 1a"


def test_class_report_prints_the_grid_and_writes_csv_json_and_html_0600(tmp_path):
    import json
    import os
    from swarmlab import config as configuration
    from swarmlab.classroom import class_log
    from swarmlab.core.roster import Student
    from tests.conftest import swarmlab, write_config
    path = write_config(tmp_path / "swarmlab.toml", tmp_path / "state")
    empty = swarmlab("class", "report", config=path)
    assert empty.returncode == 3 and "no class record" in empty.stderr and "class up" in empty.stderr
    config = configuration.load(path)
    class_log.begin(config, [Student(name, lab) for name, lab in STUDENTS], new_class=True)
    class_log.append(config, [e for e in EVENTS if e["lab"] != "zed"])
    assert os.stat(class_log.path(config)).st_mode & 0o777 == 0o600
    human = swarmlab("class", "report", config=path)
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    assert lines[0].split() == ["STUDENT", "LAB", "cluster", "services"]
    assert lines[1].split() == ["Ann", "Lee", "ann-lee", "started", "✓", "1:30", "3a", "2h"]
    out = tmp_path / "grades.csv"
    page = tmp_path / "report.html"
    as_json = swarmlab("class", "report", "--json", "--csv", str(out), "--html", str(page), config=path)
    assert [s["lab"] for s in json.loads(as_json.stdout)["students"]] == ["ann-lee", "bo"]
    assert out.read_text() == swarmlab("class", "report", "--csv", "-", config=path).stdout
    assert len(out.read_text().splitlines()) == 1 + 2 * 2
    assert os.stat(out).st_mode & 0o777 == 0o600 and os.stat(page).st_mode & 0o777 == 0o600
    assert "Ann Lee" in page.read_text() and "✓ 1:30 3a 2h" in page.read_text()
    # the next class starts its own record; the last one is kept
    class_log.begin(config, [Student("Cy", "cy")], new_class=True)
    assert class_log.roster(class_log.read(config)) == [("Cy", "cy")]
    assert len(list((tmp_path / "state" / "classes").iterdir())) == 1


def test_a_history_line_says_what_happened():
    assert [progress.describe(e) for e in progress.history(EVENTS, "ann-lee", "services")] == [
        "start services (instructor)", "check ✗ 1/3", "hint 1", "hint 2", "check ✗ 2/3", "check ✓ 3/3",
        "check ✓ 3/3 (instructor)"]
    assert progress.describe(EVENTS[9]) == "node1$ docker service ls"


def test_commands_read_again_from_a_node_are_not_recorded_twice():
    from swarmlab.classroom.typed_history import new_commands
    a = {"kind": "command", "node": "n1", "at": 5.0, "line": "ls"}
    b = {"kind": "command", "node": "n2", "at": 5.0, "line": "ls"}
    assert new_commands([], [a, a, b]) == [a, a, b]
    assert new_commands([a], [a, a, b]) == [a, b]  # the same command twice in a second: two commands
    assert new_commands([a, a, b, {"kind": "check"}], [a, a, b]) == []
