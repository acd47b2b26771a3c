"""Remote commands as data: every argument quoted, secrets masked wherever a command is shown.

Modelled on pyinfra's StringCommand / QuoteString / MaskString. Values that come from a guest
(hostnames, node IDs from docker output) or from a user never reach a root shell unquoted,
and a join token never reaches an error message or a log line. Pure: no I/O.
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

HIDDEN = "<hidden>"
_secrets: set[str] = set()


def register_secret(value: str) -> str:
    """From now on this value is blanked in every message and log record of the process."""
    if value and len(value) >= 6:
        _secrets.add(value)
    return value


def redact(text: str) -> str:
    for secret in _secrets:
        text = text.replace(secret, HIDDEN)
    return text


def redact_secrets(record: logging.LogRecord) -> bool:
    """A logging filter: blanks known secrets in the formatted message."""
    if _secrets:
        record.msg, record.args = redact(record.getMessage()), ()
    return True


class Raw(str):
    """Shell syntax taken as it is (`&&`, `||`, redirections). Only ever a literal in our code."""


@dataclass(frozen=True)
class Secret:
    """An argument that is quoted like any other but shown as <hidden>."""

    value: str

    def __post_init__(self):
        register_secret(self.value)

    def __repr__(self):
        return f"Secret({HIDDEN})"


Part = str | Raw | Secret


class Command:
    """A shell command built from parts: plain strings are quoted, Raw is syntax, Secret is masked."""

    def __init__(self, *parts: Part | "Command"):
        flat: list[Part] = []
        for part in parts:
            flat.extend(part.parts if isinstance(part, Command) else [part])
        self.parts = tuple(flat)

    def _render(self, show: bool) -> str:
        out = []
        for part in self.parts:
            if isinstance(part, Raw):
                out.append(str(part))
            elif isinstance(part, Secret):
                out.append(HIDDEN if show else shlex.quote(part.value))
            else:
                out.append(shlex.quote(str(part)))
        return " ".join(out)

    @property
    def shell(self) -> str:
        """What the remote shell runs."""
        return self._render(show=False)

    @property
    def shown(self) -> str:
        """What a message may show: secrets masked."""
        return self._render(show=True)

    @property
    def secrets(self) -> list[str]:
        return [p.value for p in self.parts if isinstance(p, Secret)]

    def __str__(self):
        return self.shown

    def __repr__(self):
        return f"Command({self.shown!r})"

    def __eq__(self, other):
        return isinstance(other, Command) and self.parts == other.parts

    def __hash__(self):
        return hash(self.parts)


def sh(script: str) -> Command:
    """A fixed script of ours, run by `sh -c`, quoted as one argument."""
    return Command("sh", "-c", script)


def or_true(command: Command) -> Command:
    return Command(command, Raw("|| true"))


def then(*commands: Command) -> Command:
    """c1 && c2 && ..."""
    parts: list = []
    for i, c in enumerate(commands):
        parts += ([Raw("&&")] if i else []) + [c]
    return Command(*parts)


T = TypeVar("T")


@dataclass(frozen=True)
class Fact(Generic[T]):
    """A command that reads state, paired with the parser of its output (pyinfra's facts)."""

    command: Command
    parse: Callable[[str], T]
