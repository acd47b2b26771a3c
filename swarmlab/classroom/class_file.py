"""The class's plan on disk: <state_dir>/class.json, 0600 (names and hosts are not for others),
written by `class up` before anything is made, so that `class down` always knows every lab."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from swarmlab.adapters.keys import write_private
from swarmlab.config import Config
from swarmlab.core.roster import Student
from swarmlab.errors import NotFound, SwarmlabError


class ClassError(SwarmlabError):
    pass


@dataclass
class Classroom:
    nodes: int
    students: list[Student] = field(default_factory=list)
    ends: float | None = None  # epoch seconds: the class's clock (core/class_clock.py)
    teardown: bool = False  # at the end, the portal grades the current exercise and removes the labs
    language: str = ""  # `class up --lang`; empty: [class] language

    def student(self, lab: str) -> Student | None:
        return next((s for s in self.students if s.lab == lab), None)


def path(config: Config) -> Path:
    return config.state_dir / "class.json"


def load(config: Config) -> Classroom | None:
    try:
        data = json.loads(path(config).read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        raise ClassError(f"{path(config)} is corrupt: fix it, or remove it and run `class down` per lab") from None
    return Classroom(data["nodes"], [Student(**s) for s in data["students"]], data.get("ends"),
                     data.get("teardown", False), data.get("language", ""))


def require(config: Config) -> Classroom:
    room = load(config)
    if room is None or not room.students:
        raise NotFound("there is no class: `swarmlab class up --students N` (or --roster FILE) makes one")
    return room


def save(config: Config, room: Classroom) -> None:
    write_private(path(config), json.dumps(asdict(room), indent=2) + "\n")  # names and hosts: not for others


def remove(config: Config) -> None:
    path(config).unlink(missing_ok=True)
