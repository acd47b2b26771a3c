"""A class's students, pure: roster names, or a count, as distinct lab names."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from swarmlab.config_values import is_dns_label
from swarmlab.errors import SwarmlabError

MAX_STUDENTS = 200


class RosterError(SwarmlabError):
    pass


@dataclass
class Student:
    name: str  # as the roster gives it
    lab: str  # a DNS label: the slug of the name, or s01...
    host: str = ""
    cidr: str = ""


def slug(name: str) -> str:
    """A roster name as a lab name: ASCII, lowercase, '-' between words, at most 40 characters."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    text = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:40].strip("-")
    return text


def students_from_count(count: int) -> list[Student]:
    if not 1 <= count <= MAX_STUDENTS:
        raise RosterError(f"--students {count} is out of range: use 1 to {MAX_STUDENTS}")
    width = max(2, len(str(count)))
    return [Student(f"s{i:0{width}d}", f"s{i:0{width}d}") for i in range(1, count + 1)]


def students_from_roster(text: str, source: str) -> list[Student]:
    """One student per line; blank lines and # comments are skipped. Names slug to lab names,
    which must be distinct."""
    out: list[Student] = []
    seen: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        lab = slug(name)
        if not lab or not is_dns_label(lab) or lab[0].isdigit():
            raise RosterError(f"{source}:{number}: {name!r} gives no lab name (it needs a letter first); "
                             "write the name with letters, e.g. 'Ann Lee'")
        if lab in seen:
            raise RosterError(f"{source}:{number}: {name!r} and {seen[lab]!r} both become lab {lab}: "
                             "tell them apart in the roster (e.g. add an initial)")
        seen[lab] = name
        out.append(Student(name, lab))
    if not out:
        raise RosterError(f"{source} names no students: one name per line")
    if len(out) > MAX_STUDENTS:
        raise RosterError(f"{source} names {len(out)} students; at most {MAX_STUDENTS}")
    return out
