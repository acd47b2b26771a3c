"""Commands a student typed, pure: parsing the node's record and masking the secrets in them.

The student's shell appends a line per command to a file on the node (access.HISTORY_HOOK):
    <epoch seconds> TAB <the command line as typed>
swarmlab reads it and keeps the lines with their node, masked first: a value given to
`docker secret create` on the command line (`echo VALUE | docker secret create NAME -`,
`printf %s VALUE | ...`, `... - <<< VALUE`), a join token, and `docker login`'s password never
reach the class's record.
"""

from __future__ import annotations

import re

from swarmlab.core import untrusted
from swarmlab.core.command import HIDDEN

MAX_LINE = 2000  # a pasted script is kept to this many characters
# Commands kept from one read of a node's record: a student types a few hundred in a day; a
# megabyte of short lines would be ~88k events for the board to go over every few seconds.
MOST_COMMANDS = 2000

# A word of shell: quoted parts, escapes and plain characters up to a blank or an operator.
_WORD = r"""(?:'[^']*'?|"(?:[^"\\]|\\.)*"?|\\.|[^\s|&;<>()'"\\])+"""
_TOKEN = re.compile(rf"(?P<op>\|\||&&|<<<|[|;&\n()]|[0-9]*[<>]+&?)|(?P<word>{_WORD})|(?P<space>\s+)", re.S)


def _tokens(line: str) -> list[tuple[str, int, int, str]]:
    """(kind, start, end, text) for each operator and word; blanks dropped."""
    out = []
    position = 0
    while position < len(line):
        m = _TOKEN.match(line, position)
        if m is None:  # a lone character no rule takes: a word of its own
            out.append(("word", position, position + 1, line[position]))
            position += 1
            continue
        if m.lastgroup != "space":
            out.append((m.lastgroup, m.start(), m.end(), m.group()))
        position = m.end()
    return out


def _unquoted(word: str) -> str:
    return re.sub(r"""['"\\]""", "", word)


def _stages(tokens):
    """Pipelines as lists of stages, each stage a list of tokens."""
    pipelines, stages, stage = [], [], []
    for token in tokens:
        kind, _, _, text = token
        if kind == "op" and text == "|":
            stages.append(stage)
            stage = []
        elif kind == "op" and text in ("||", "&&", ";", "&", "\n", "(", ")"):
            stages.append(stage)
            pipelines.append(stages)
            stages, stage = [], []
        else:
            stage.append(token)
    stages.append(stage)
    pipelines.append(stages)
    return pipelines


def _words(stage) -> list[str]:
    return [_unquoted(t[3]) for t in stage if t[0] == "word"]


def _is(stage, *command: str) -> bool:
    words = [w for w in _words(stage) if w != "sudo"]
    return words[:len(command)] == list(command)


def _secret_spans(line: str) -> list[tuple[int, int]]:
    spans = []
    for stages in _stages(_tokens(line)):
        creates = any(_is(s, "docker", "secret", "create") for s in stages)
        for stage in stages:
            words = [t for t in stage if t[0] == "word"]
            names = [_unquoted(t[3]) for t in words]
            if creates and names[:1] in (["echo"], ["printf"]):
                args = words[1:]
                if names[0] == "echo":
                    args = [t for t in args if not re.fullmatch(r"-[neE]+", _unquoted(t[3]))]
                elif len(args) > 1:
                    args = args[1:]  # printf FORMAT VALUE...: the format is no secret
                spans += [(t[1], t[2]) for t in args]
            if _is(stage, "docker", "secret", "create"):
                for i, token in enumerate(stage[:-1]):  # a here-string: ... - <<< VALUE
                    if token[0] == "op" and token[3] == "<<<" and stage[i + 1][0] == "word":
                        spans.append(stage[i + 1][1:3])
            if _is(stage, "docker", "swarm", "join") or _is(stage, "docker", "login"):
                for i, token in enumerate(words):
                    value = _unquoted(token[3])
                    flag, eq, rest = value.partition("=")
                    if flag in ("--token", "--password", "-p") and eq and rest:
                        spans.append((token[1] + token[3].index("=") + 1, token[2]))
                    elif value in ("--token", "--password", "-p") and i + 1 < len(words):
                        spans.append(words[i + 1][1:3])
    return spans


def mask(line: str) -> str:
    """The command line with each secret value replaced by <hidden>."""
    line = line[:MAX_LINE]
    for start, end in sorted(set(_secret_spans(line)), reverse=True):
        line = line[:start] + HIDDEN + line[end:]
    return re.sub(r"SWMTKN-1-[0-9a-z]+-[0-9a-z]+", HIDDEN, line)  # a token, wherever it is pasted


def parse_record(text: str, node: str, lab: str, now: float, most: int = MOST_COMMANDS) -> list[dict]:
    """The node's record as command events, masked: its last `most` commands. The file is the
    student's to write: lines that are not `epoch TAB command` are dropped, a time after `now`
    is taken as `now`, and control characters are replaced."""
    events = []
    for raw in text.splitlines():
        when, tab, command = raw.partition("\t")
        at = untrusted.epoch(when, now) if tab else None
        if at is None or not command.strip():
            continue
        events.append({"at": at, "lab": lab, "kind": "command", "by": "student", "node": node,
                       "line": untrusted.printable(mask(command.strip()))})
    return events[-most:]
