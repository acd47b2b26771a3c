"""Which nodes get a low CPU weight: those that have kept a host CPU busy for a while.

Every node's cgroup has the same weight, so under contention a spinning node takes as much CPU
as a node that answers a student's keystroke. Under TCG a login or a `docker` command is seconds
of emulated CPU, and it stretches by a third beside two spinning nodes. A node whose recent use
(a moving average over about AVERAGE_S) reaches BUSY of a CPU gets its weight divided by
WEIGHT_DIVISOR until it falls below CALM: a node that wakes to answer then runs almost at
once. The weight is no cap: a busy node still gets every cycle nobody else wants, and when every
node spins, all weigh the same again.

Measured with two 1-node labs spinning on 2 TCG cores: a third lab's SSH login took 1.57 s
calm, 1.9-2.2 s (p50) beside them at equal weights, 1.65-1.7 s with theirs divided by 16.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

AVERAGE_S = 10.0  # how long a burst counts: a 2 s login adds 0.18, a spin reaches BUSY in 7 s
BUSY = 0.5  # share of one host CPU
CALM = 0.25
WEIGHT_DIVISOR = 16


@dataclass(frozen=True)
class NodeCpu:
    """What the governor knows of one running node: its CPU time when last read, its moving
    average use (share of one host CPU), whether it is held low, and its own weight before."""
    cpu_s: float
    at: float
    use: float
    low: bool
    own_weight: int

    @property
    def weight(self) -> int:
        return max(1, self.own_weight // WEIGHT_DIVISOR) if self.low else self.own_weight


def next_reading(before: NodeCpu | None, cpu_s: float, at: float, weight_now: int) -> NodeCpu:
    """The node after one more reading of its CPU time. A node seen for the first time (or
    restarted, its CPU time gone back) starts calm, with the weight libvirt gave it as its own."""
    if before is None or cpu_s < before.cpu_s or at <= before.at:
        return NodeCpu(cpu_s, at, 0.0, False, weight_now)
    elapsed = at - before.at
    recent = min(1.0, (cpu_s - before.cpu_s) / elapsed)  # one vCPU's thread is about one CPU
    keep = math.exp(-elapsed / AVERAGE_S)
    use = before.use * keep + recent * (1 - keep)
    low = use >= CALM if before.low else use >= BUSY
    return NodeCpu(cpu_s, at, use, low, before.own_weight)


def next_readings(before: dict[str, NodeCpu], readings: dict[str, tuple[float, int]],
                  at: float) -> dict[str, NodeCpu]:
    """Every running node after a reading: name -> (CPU seconds, live weight). Nodes that no
    longer run are forgotten."""
    return {name: next_reading(before.get(name), cpu_s, at, weight) for name, (cpu_s, weight) in readings.items()}


def weights_to_set(nodes: dict[str, NodeCpu], live: dict[str, int]) -> dict[str, int]:
    """The weights that differ from what libvirt holds now."""
    return {name: node.weight for name, node in nodes.items() if live.get(name) != node.weight}
