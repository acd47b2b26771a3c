"""The built-in steps an exercise file may name (`action:`), beside commands run on a node:
the kill-leader drill, a node's cable cut and healed, the swarm left, its labels cleared."""

from __future__ import annotations

from typing import Callable

from fabric import Connection

from swarmlab.adapters.engine_api import EngineAPI
from swarmlab.adapters.remote import RemoteError, run
from swarmlab.config import Config
from swarmlab.core.command import Command
from swarmlab.lab import chaos, partition
from swarmlab.lab.model import Lab, each_node
from swarmlab.lab.session import connect_nodes
from swarmlab.teach.exercise_files import ExerciseError
from swarmlab.waiting import poll_until

Progress = Callable[[str], None]
HEALED_ANSWER_S = 60.0


def _leave_swarm(conns: dict[str, Connection], lab: Lab) -> None:
    each_node(lambda n: run(conns[n.name], Command("docker", "swarm", "leave", "--force"), check=False, timeout=120),
              [n for n in lab.nodes if n.name in conns])


def _clear_labels(conns: dict[str, Connection], lab: Lab) -> None:
    for node in [n for n in lab.nodes if n.name in conns]:
        try:
            with EngineAPI(conns[node.name]) as api:
                nodes = api.get("/nodes")
        except RemoteError:
            continue
        for n in nodes:
            for key in (n.get("Spec", {}).get("Labels") or {}):
                run(conns[node.name], Command("docker", "node", "update", "--label-rm", key, n["ID"]), timeout=60)
        return


def _kill_leader(config: Config, lab: Lab, conns: dict[str, Connection], step: dict, progress: Progress,
                 where: str) -> None:
    timeline = chaos.kill(config, lab.name, None, restore=True, timeout=step.get("timeout", 300),
                          force=False, progress=lambda m: progress(f"  {m}"))
    if timeline.missing:
        raise ExerciseError(f"{where}: the drill did not see {', '.join(timeline.missing)}")


def _partition(config: Config, lab: Lab, conns: dict[str, Connection], step: dict, progress: Progress,
               where: str) -> None:
    """The nodes cut off the lab network, for good as far as the student can tell (force: the
    exercise means to cost the swarm its majority)."""
    partition.partition(config, lab.name, step["nodes"], force=True, progress=lambda m: progress(f"  {m}"))
    for name in step["nodes"]:
        conn = conns.pop(name, None)
        if conn is not None:
            conn.close()


def _heal(config: Config, lab: Lab, conns: dict[str, Connection], step: dict, progress: Progress,
          where: str) -> None:
    """Every cut node back on the network, and logged in again for the steps that follow."""
    healed = partition.heal(config, lab.name, None, progress=lambda m: progress(f"  {m}"))
    waiting = Lab(lab.name, [n for n in lab.nodes if n.name in healed])

    def logged_in() -> bool:  # a guest may take a moment to bring its network back
        fresh, errors = connect_nodes(config, waiting, "answering")
        conns.update(fresh)
        waiting.nodes = [n for n in waiting.nodes if n.name in errors]
        return not waiting.nodes
    poll_until(logged_in, HEALED_ANSWER_S, 2, lambda: ExerciseError(
        f"{where}: {', '.join(n.name for n in waiting.nodes)} did not answer over SSH within "
        f"{HEALED_ANSWER_S:g} s of the heal"))


# The `action` steps an exercise file may use (the schema lists the same names).
ACTIONS: dict[str, Callable[..., None]] = {
    "kill-leader": _kill_leader,
    "partition": _partition,
    "heal": _heal,
    "leave-swarm": lambda config, lab, conns, *_: _leave_swarm(conns, lab),
    "clear-labels": lambda config, lab, conns, *_: _clear_labels(conns, lab),
}
