"""What students typed: each node's ~student/.swarmlab-history (node_account.py's hook) read
over SSH as root, masked (core/typed_commands.py), and appended to the class's record.

Collected when the instructor opens a student's history, by `class history` and `class
report`, and before anything reverts the nodes' disks (a reset, the start of an exercise,
`class down`): the record on a node goes back with its disk. A plain `swarmlab reset --lab`
knows nothing of a class, so what was typed since the last collection goes with it.
"""

from __future__ import annotations

import collections
import fcntl
import logging
import os
import time

from swarmlab.adapters.remote import RemoteError, run
from swarmlab.classroom import access, class_log
from swarmlab.classroom.node_account import HISTORY_RECORD
from swarmlab.config import Config
from swarmlab.core.command import sh
from swarmlab.core.typed_commands import parse_record
from swarmlab.errors import SwarmlabError
from swarmlab.lab.session import open_lab

log = logging.getLogger(__name__)
MOST_BYTES = 1 << 20  # a student can write anything into their own record: read its last MiB only


def new_commands(recorded: list[dict], read: list[dict]) -> list[dict]:
    """The commands read from the nodes that the record does not hold yet. A node's file is
    read whole every time, so what was read before is counted off (the same command twice in a
    second on one node is two commands)."""
    key = ("node", "at", "line")
    held = collections.Counter(tuple(e.get(k) for k in key) for e in recorded if e.get("kind") == "command")
    out = []
    for event in read:
        k = tuple(event.get(x) for x in key)
        if held[k]:
            held[k] -= 1
        else:
            out.append(event)
    return out


def collect(config: Config, lab: str) -> int:
    """Reads the lab's nodes (those that answer) and records what is new; returns how many."""
    scoped = access.lab_config_of(config, lab)
    read: list[dict] = []
    with open_lab(scoped, lab, "answering") as session:
        for node, conn in session.conns.items():
            try:  # the cap is ours: `tail` on the node is the student's to replace
                text = run(conn, sh(f"tail -c {MOST_BYTES} {HISTORY_RECORD} 2>/dev/null; true"), timeout=30,
                           most_bytes=MOST_BYTES + 4096)
            except RemoteError as e:
                log.warning("%s's history on %s not read: %s", lab, node, e)
                continue
            read += parse_record(text, node, lab, now=time.time())
    lock = class_log.path(config).with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # two collections at once would both add the same lines
        new = new_commands([e for e in class_log.read(config) if e.get("lab") == lab], read)
        class_log.append(config, new)
    finally:
        os.close(fd)
    return len(new)


def collect_quietly(config: Config, lab: str) -> None:
    """Before a reset or `class down`: a lab whose nodes do not answer, or whose records hold
    anything at all, is reset or removed all the same."""
    try:
        collect(config, lab)
    except Exception as e:  # noqa: BLE001 (node data is untrusted: nothing in it may stop a class operation)
        log.warning("%s's history not collected: %s", lab, e if isinstance(e, SwarmlabError) else type(e).__name__)
