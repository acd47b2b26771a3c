"""The class's record: one append-only JSON line per event (a start, a Check, a hint, a reset,
a command typed on a node), in <state_dir>/class-events.jsonl, 0600 (names and commands are
the students' own).

Every process of the class writes to it (the CLI, the portal, `class up`); each line is one
O_APPEND write under an exclusive lock, so lines never interleave. It survives portal
restarts and `class down`; the next class's `class up` moves it to
<state_dir>/classes/<ended>.jsonl. The board and the report are core/progress.py over it.
"""

from __future__ import annotations

import fcntl
import functools
import json
import math
import os
import threading
import time
from pathlib import Path

from swarmlab.config import Config
from swarmlab.core import progress
from swarmlab.core.roster import Student
from swarmlab.teach import exercise_files


def path(config: Config) -> Path:
    return config.state_dir / "class-events.jsonl"


def record(config: Config, lab: str, kind: str, **fields) -> dict:
    event = {"at": round(time.time(), 3), "lab": lab, "kind": kind, **fields}
    append(config, [event])
    return event


def append(config: Config, events: list[dict]) -> None:
    if not events:
        return
    target = path(config)
    target.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(e, ensure_ascii=False, separators=(",", ":")) + "\n" for e in events).encode()
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, data)
    finally:
        os.close(fd)


_parsed: dict[Path, tuple[int, int, list[dict]]] = {}  # path -> (inode, bytes parsed, events)
_parsed_lock = threading.Lock()


def read(config: Config) -> list[dict]:
    """Every event; a line cut short by a crash, or with no finite time, is skipped. The board
    reads it every few seconds: only what was appended since the last read is parsed."""
    target = path(config)
    with _parsed_lock:
        try:
            with open(target, "rb") as f:
                inode = os.fstat(f.fileno()).st_ino
                known_inode, offset, events = _parsed.get(target, (inode, 0, []))
                if known_inode != inode or os.fstat(f.fileno()).st_size < offset:
                    offset, events = 0, []  # a new record (`class up` moved the last one away)
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            _parsed.pop(target, None)
            return []
        whole = data[:data.rfind(b"\n") + 1]  # a line still being written waits for the next read
        events = events + _parse(whole.decode("utf-8", errors="replace"))
        _parsed[target] = (inode, offset + len(whole), events)
        return list(events)


def _parse(text: str) -> list[dict]:
    events = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and isinstance(event.get("lab"), str) and _finite_time(event.get("at")):
            events.append(event)
    return events


def _finite_time(at) -> bool:
    return isinstance(at, (int, float)) and not isinstance(at, bool) and math.isfinite(at)


def begin(config: Config, students: list[Student], new_class: bool) -> None:
    """`class up`: a new class's record starts empty (the last one's is kept in classes/);
    the roster is recorded so that a report names the students after `class down`."""
    current = path(config)
    if new_class and current.exists():
        archive = config.state_dir / "classes" / time.strftime("%Y%m%d-%H%M%S.jsonl",
                                                               time.localtime(current.stat().st_mtime))
        archive.parent.mkdir(mode=0o700, exist_ok=True)
        os.replace(current, archive)
    record(config, "", "class", students=[[s.name, s.lab] for s in students])


def names(events: list[dict]) -> dict[str, str]:
    """lab -> the student's name, for every student the record names."""
    return {lab: name for name, lab in roster(events)}


def roster(events: list[dict]) -> list[tuple[str, str]]:
    """(name, lab) of every student the record's `class up`s named, first seen first."""
    seen: dict[str, str] = {}
    for event in events:
        if event.get("kind") == "class":
            for name, lab in event.get("students", []):
                seen.setdefault(lab, name)
    return [(name, lab) for lab, name in seen.items()]


@functools.cache
def _teaching_order() -> tuple[str, ...]:
    """The exercises' ids in teaching order, read once per process (the board is read every few seconds)."""
    return tuple(x.id for x in exercise_files.load_all())


_boards: dict[Path, tuple[tuple[int, int], list[progress.Cell]]] = {}


def board(config: Config) -> tuple[list[dict], list[progress.Cell]]:
    """The events and the board, computed again only when the record has grown."""
    events = read(config)
    target = path(config)
    with _parsed_lock:
        seen = _parsed.get(target, (0, 0, None))[:2]
        cached = _boards.get(target)
    if cached is not None and cached[0] == seen:
        return events, cached[1]
    cells = progress.board(events, roster(events), list(_teaching_order()))
    with _parsed_lock:
        _boards[target] = (seen, cells)
    return events, cells
