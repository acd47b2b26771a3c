"""Losing the raft majority as a drill, pure: which managers a lose-quorum drill cuts off, and
what the one left in sight says, turned into timeline events.

Raft commits a change only when a majority of the managers (3 of 5, 2 of 3) agree. Cut off
enough of them and the leader steps down once an election timeout passes without hearing from
a majority (swarmkit runs raft with CheckQuorum); every manager then answers "The swarm does not
have a leader", writes are refused, and the tasks already running go on running.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from swarmlab.core.swarm import SwarmNode, Task
from swarmlab.errors import Refused

NO_LEADER = "does not have a leader"  # the Engine API's 503 while the swarm has none


def majority(managers: int) -> int:
    return managers // 2 + 1


def lose_quorum_cut(nodes: list[SwarmNode], lab: str) -> tuple[list[str], str]:
    """(the managers to cut off, the leader that stays in sight): as few managers as leave the
    reachable ones short of a majority, never the leader, so the drill watches it step down."""
    managers = [n for n in nodes if n.manager_status]
    reachable = sorted(n.hostname for n in managers if n.manager_status in ("Leader", "Reachable")
                       and n.status == "Ready")
    leader = next((n.hostname for n in managers if n.manager_status == "Leader"), None)
    if len(managers) < 3:
        raise Refused(f"lab {lab} has {len(managers)} manager{'s' if len(managers) != 1 else ''}: losing the "
                      "majority needs 3 or more (`swarmlab up 3` makes them)")
    if leader is None:
        raise Refused(f"lab {lab} has no leader right now: its swarm has lost its majority already")
    keep = majority(len(managers)) - 1  # in sight, the leader among them
    if len(reachable) <= keep:
        raise Refused(f"lab {lab} has {len(reachable)} of {len(managers)} managers reachable: its swarm is "
                      "short of a majority already")
    others = [name for name in reachable if name != leader]
    return others[:len(reachable) - keep], leader


def split_halves(nodes: list[SwarmNode], lab: str) -> tuple[list[str], list[str], str]:
    """(the half that stays on the lab network, with the leader; the half moved onto a network
    of its own; the leader) for a split of an even number of managers into equal halves, so
    that neither half has a majority. Workers are shared out as evenly."""
    managers = sorted(n.hostname for n in nodes if n.manager_status)
    reachable = [n for n in nodes if n.manager_status in ("Leader", "Reachable") and n.status == "Ready"]
    leader = next((n.hostname for n in nodes if n.manager_status == "Leader"), None)
    if len(managers) < 4 or len(managers) % 2:
        raise Refused(f"lab {lab} has {len(managers)} manager{'s' if len(managers) != 1 else ''}: a split that leaves "
                      "neither half a majority needs an even number, 4 or more (`swarmlab up 4 --managers 4`, or "
                      "`swarmlab swarm form --managers 4` on a lab of 4 nodes)")
    if leader is None:
        raise Refused(f"lab {lab} has no leader right now: its swarm has lost its majority already")
    if len(reachable) < len(managers):
        down = sorted(set(managers) - {n.hostname for n in reachable})
        raise Refused(f"lab {lab} has managers that are not reachable ({', '.join(down)}): "
                      f"`swarmlab chaos heal --all --lab {lab}` or `swarmlab reset --lab {lab}` first")
    others = [name for name in managers if name != leader]
    half = len(managers) // 2
    sight, away = [leader] + others[:half - 1], others[half - 1:]
    workers = sorted(n.hostname for n in nodes if not n.manager_status)
    sight += workers[::2]
    away += workers[1::2]
    return sorted(sight), sorted(away), leader


def other_half_says(output: str) -> str | None:
    """What a manager of the half out of sight answered to `docker node ls` (read through its
    guest agent): "no-leader" when it says the swarm has none, the leader's name when one of its
    lines shows one, None when it said neither (no answer yet)."""
    if NO_LEADER in output:
        return "no-leader"
    for line in output.splitlines():
        words = line.split()
        if len(words) == 2 and words[1] == "Leader":
            return words[0]
    return None


@dataclass
class QuorumDetector:
    """Events from what the managers in sight answer, once a round at `at`: `nodes` their node
    list (None when none answered in time), `error` the refusal one of them gave instead.

    Cut off from a majority, the leader goes on answering as leader for an election timeout or
    two, then steps down; its API then hangs (it waits on the lost leader) and at last answers
    "The swarm does not have a leader". `leader-lost` is the start of that run of failed reads
    (a read slow for a moment under load, followed by a leader again, is no event), `no-leader`
    the refusal."""

    managers: list[str]
    healed: bool = False
    seen: set[str] = field(default_factory=set)
    failing_since: float | None = None

    def feed(self, at: float, nodes: list[SwarmNode] | None, error: str | None = None) -> list[tuple[str, str, float]]:
        out: list[tuple[str, str, float]] = []

        def event(name: str, detail: str, when: float = at) -> None:
            if name not in self.seen:
                self.seen.add(name)
                out.append((name, detail, when))

        leader = next((n.hostname for n in nodes or [] if n.manager_status == "Leader"), None)
        if not self.healed:
            if leader is not None:
                self.failing_since = None  # answered as before: a slow read was only slow
                return out
            if self.failing_since is None:
                self.failing_since = at
            if nodes is not None:
                event("leader-lost", "no manager is Leader", self.failing_since)
            if error and NO_LEADER in error:
                event("leader-lost", "the leader stopped answering as leader", self.failing_since)
                event("no-leader", "the manager in sight answers: the swarm does not have a leader")
            return out
        if leader:
            event("leader-back", leader)
            members = {n.hostname: n for n in nodes}
            if all(name in members and members[name].status == "Ready"
                   and members[name].manager_status in ("Leader", "Reachable") for name in self.managers):
                event("managers-reachable", ", ".join(sorted(self.managers)))
        return out


ServiceTasks = dict[str, tuple[int, list[Task]]]  # a service's desired replicas, its tasks


def running_counts(tasks: ServiceTasks) -> dict[str, int]:
    return {name: sum(t.state == "Running" for t in ps) for name, (_desired, ps) in tasks.items()}


def services_back(before: dict[str, int], tasks: ServiceTasks) -> tuple[bool, str]:
    """(every service running as many tasks as before the cut, a summary). A service that was
    short before (an image that never pulled, say) is not waited for beyond what it had, nor one
    removed since, nor the tasks scaled away."""
    now = running_counts(tasks)
    summary = ", ".join(f"{name} {now[name]}/{desired}" for name, (desired, _ps) in tasks.items()) or "no services"
    return all(now[name] >= min(count, tasks[name][0]) for name, count in before.items() if name in tasks), summary
