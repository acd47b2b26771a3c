"""A class's progress, pure: the board (students × exercises) and the report's rows, from the
class's recorded events.

An event is a dict, one JSON line in the class's record:
    {"at": 1764590000.0, "lab": "s01", "kind": "start", "exercise": "services", "by": "instructor"}
kinds: start, restart, check (ok, passed, of), hint (number), reset, command (node, line).
`by` is "student" (the portal, the student's own shell) or "instructor" (the CLI, the
instructor's page). Only a student's own Checks count as attempts; any passing check, the
instructor's `class check` included, is a pass.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import asdict, dataclass, field

KINDS = ("start", "restart", "check", "hint", "reset", "command")
STARTS = ("start", "restart")  # an exercise's clock starts again at either


@dataclass
class Cell:
    """One student's progress on one exercise."""

    student: str
    lab: str
    exercise: str
    started: float | None = None  # the last start or restart
    attempts: int = 0  # the student's Checks
    hints: int = 0  # the most hints seen at once
    first_pass: float | None = None
    seconds_to_pass: float | None = None  # from the start before the first pass
    best: float = 0.0  # the largest share of checks passed at once, 0 to 1
    last: dict | None = None  # the last check: ok, passed, of, at, by
    checks: list[dict] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.first_pass is not None

    def state(self) -> str:
        """What the grid shows: passed, trying (checked, not passed), started, or nothing."""
        return "passed" if self.passed else "trying" if self.checks else "started" if self.started else ""


def exercises_seen(events: list[dict], order: list[str]) -> list[str]:
    """The exercises the class has met, in teaching order (unknown ones after, as first met)."""
    seen = list(dict.fromkeys(e["exercise"] for e in events if e.get("exercise") and e.get("kind") in KINDS))
    return [x for x in order if x in seen] + [x for x in seen if x not in order]


def board(events: list[dict], students: list[tuple[str, str]], order: list[str]) -> list[Cell]:
    """A cell per (student, exercise met), students as given ((name, lab) pairs), exercises in
    `order`. Events of labs outside the class are left out."""
    columns = exercises_seen(events, order)
    cells = {(lab, x): Cell(name, lab, x) for name, lab in students for x in columns}
    for event in sorted(events, key=lambda e: e.get("at", 0)):
        cell = cells.get((event.get("lab"), event.get("exercise")))
        if cell is None:  # another class's lab, or an event of no exercise (a reset, a command)
            continue
        kind, at = event.get("kind"), float(event.get("at", 0))
        if kind in STARTS:
            cell.started = at
        elif kind == "hint":
            cell.hints = max(cell.hints, int(event.get("number", 0)))
        elif kind == "check":
            result = {k: event.get(k) for k in ("ok", "passed", "of", "at", "by")}
            cell.checks.append(result)
            cell.last = result
            if event.get("by") == "student":
                cell.attempts += 1
            if event.get("of"):
                cell.best = max(cell.best, round(int(event.get("passed", 0)) / int(event["of"]), 3))
            if event.get("ok") and cell.first_pass is None:
                cell.first_pass = at
                cell.seconds_to_pass = round(at - cell.started, 1) if cell.started is not None else None
    return [cells[(lab, x)] for _name, lab in students for x in columns]


def brief(cell: Cell) -> str:
    """A cell in a few characters: ✓ and the time to pass, or ✗ and the last result; then
    attempts (a) and hints (h)."""
    counts = " ".join(x for x in (f"{cell.attempts}a" if cell.attempts else "", f"{cell.hints}h" if cell.hints else "")
                      if x)
    if cell.passed:
        took = cell.seconds_to_pass
        head = "✓" + (f" {int(took // 60)}:{int(took % 60):02d}" if took is not None else "")
    elif cell.last:
        head = f"✗ {cell.last.get('passed', 0)}/{cell.last.get('of', 0)}"
    else:
        head = "started" if cell.started else "·"
    return f"{head} {counts}".strip()


def grid(cells: list[Cell]) -> tuple[list[str], list[tuple[str, str, list[Cell]]]]:
    """(exercises, rows of (student, lab, cells in exercise order)) for a page or a table."""
    exercises = list(dict.fromkeys(c.exercise for c in cells))
    rows: dict[str, tuple[str, str, list[Cell]]] = {}
    for c in cells:
        rows.setdefault(c.lab, (c.student, c.lab, []))[2].append(c)
    return exercises, list(rows.values())


def history(events: list[dict], lab: str, exercise: str | None = None) -> list[dict]:
    """One student's events in time order: everything, or one exercise's (its commands are those
    typed while it was the lab's current exercise)."""
    mine = sorted((e for e in events if e.get("lab") == lab), key=lambda e: e.get("at", 0))
    if exercise is None:
        return mine
    out, current = [], None
    for event in mine:
        if event.get("kind") in STARTS:
            current = event.get("exercise")
        if event.get("exercise", current if event.get("kind") == "command" else None) == exercise:
            out.append(event)
    return out


def describe(event: dict) -> str:
    """An event in a line, as a history shows it."""
    by = " (instructor)" if event.get("by") == "instructor" else ""
    kind = event.get("kind")
    if kind == "check":
        return f"check {'✓' if event.get('ok') else '✗'} {event.get('passed')}/{event.get('of')}{by}"
    if kind == "hint":
        return f"hint {event.get('number')}"
    if kind == "command":
        return f"{event.get('node')}$ {event.get('line')}"
    return f"{kind}{' ' + event['exercise'] if event.get('exercise') else ''}{by}"


def _when(at: float | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(at)) if at is not None else ""


REPORT_FIELDS = ("student", "lab", "exercise", "started", "attempts", "hints", "passed", "first_pass",
                 "seconds_to_pass", "score", "last_result", "last_check")


def report_rows(cells: list[Cell]) -> list[dict]:
    """A row per student and exercise, as a gradebook imports it: times in ISO 8601 with the
    offset, `score` the best share of checks passed at once (1.0 once passed)."""
    return [{"student": c.student, "lab": c.lab, "exercise": c.exercise, "started": _when(c.started),
             "attempts": c.attempts, "hints": c.hints, "passed": "yes" if c.passed else "no",
             "first_pass": _when(c.first_pass),
             "seconds_to_pass": "" if c.seconds_to_pass is None else c.seconds_to_pass,
             "score": 1.0 if c.passed else c.best,
             "last_result": f"{c.last['passed']}/{c.last['of']}" if c.last and c.last.get("of") else "",
             "last_check": _when(c.last.get("at")) if c.last else ""} for c in cells]


def report_csv(cells: list[Cell]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=REPORT_FIELDS, lineterminator="\r\n")  # RFC 4180
    writer.writeheader()
    writer.writerows(report_rows(cells))
    return out.getvalue()


def report_json(cells: list[Cell]) -> dict:
    """Students, each with their exercises (the check history included)."""
    students: dict[str, dict] = {}
    for c in cells:
        entry = students.setdefault(c.lab, {"student": c.student, "lab": c.lab, "passed": 0, "exercises": []})
        entry["passed"] += c.passed
        entry["exercises"].append({k: v for k, v in asdict(c).items() if k not in ("student", "lab")}
                                  | {"passed": c.passed})
    return {"exercises": list(dict.fromkeys(c.exercise for c in cells)), "students": list(students.values())}
