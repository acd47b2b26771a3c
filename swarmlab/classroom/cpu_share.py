"""Each class node's share of the host's CPU.

- Held to [class] cpu_cap_percent of a host CPU, when the instructor sets one. By default no
  node is capped (core/placement.node_cpu_percent says what a default quota cost).
- While the portal runs, a node that keeps a CPU busy (a `while true`, `--replicas 50`) weighs
  less than one that answers a student (CpuGovernor, core/cpu_weights), so one student's
  spinning nodes barely slow the others.

The cap is a formation.Finish, as the student's account is: applied once the swarm has
formed (a capped node wakes and forms more slowly, and `class up` makes one lab at a time), kept
in the domain's definition, so the `formed` snapshot carries it through every revert, and
applied again to a rebuilt lab.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from swarmlab.adapters.hypervisor import CpuCapsUnavailable, Hypervisor
from swarmlab.adapters.keys import write_private
from swarmlab.config import Config
from swarmlab.core.cpu_weights import NodeCpu, next_readings, weights_to_set
from swarmlab.core.placement import CPU_PERIOD_US, node_cpu_percent, remote_problem
from swarmlab.errors import SwarmlabError
from swarmlab.lab.model import Lab

log = logging.getLogger(__name__)
GOVERN_EVERY_S = 5.0  # a spin is weighed down within about 10 s


def cap_class_nodes(config: Config, lab: Lab) -> list[str]:
    """What a class adds to each lab it makes (a formation.Finish): every node held to [class]
    cpu_cap_percent, when set. Says so in words where the host cannot hold it."""
    percent = node_cpu_percent(config.cpu_cap_percent)
    if percent is None:
        return []
    with Hypervisor(config.uri) as hv:
        try:
            for node in lab.nodes:
                hv.cap_cpu(node.domain, percent * CPU_PERIOD_US // 100, CPU_PERIOD_US)
        except CpuCapsUnavailable:
            return ["CPU caps not applied: the host's libvirt manages no cgroups, so one student's spinning "
                    "nodes can slow the others (`swarmlab doctor` says how to fix it)"]
        except SwarmlabError as e:  # the lab works uncapped: say so, do not fail it
            return [f"CPU caps not applied: {str(e).splitlines()[0]}"]
    return [f"each node held to {percent} % of a host CPU"]


class CpuGovernor:
    """Keeps core/cpu_weights' rule on every lab host while the portal runs: each look reads
    every running node's CPU time, and lowers or gives back weights. The weights it lowered are
    on record (state_dir/cpu-weights.json) with each node's own, so a portal stopped by kill -9
    gives them back when it starts again; a clean stop gives them back at once."""

    def __init__(self, config: Config, clock=time.monotonic):
        self.config, self.clock = config, clock
        self.nodes: dict[str, dict[str, NodeCpu]] = {}  # host -> domain -> what is known of it
        self.record = config.state_dir / "cpu-weights.json"
        self.written = None if self.record.exists() else "{}"

    def look(self) -> list[str]:
        """One reading of every host; says which weights changed. A host that does not answer
        keeps what it has until the next look."""
        own = self._recorded()
        changed = []
        for spec in self.config.lab_hosts:
            if remote_problem(self.config, spec):
                continue
            try:
                with Hypervisor(spec.uri) as hv:
                    live = hv.node_cpu()
                    readings = {name: (cpu_s, own.get(spec.name, {}).get(name, weight))
                                for name, (cpu_s, weight) in live.items()}
                    nodes = next_readings(self.nodes.get(spec.name, {}), readings, self.clock())
                    self.nodes[spec.name] = nodes
                    for name, weight in weights_to_set(nodes, {n: w for n, (_, w) in live.items()}).items():
                        hv.set_cpu_weight(name, weight)
                        changed.append(f"{spec.name}/{name}: CPU weight {weight}")
            except SwarmlabError as e:
                log.warning("CPU weights on %s: %s", spec.name, str(e).splitlines()[0])
        self._write_record(carried=own)
        return changed

    def give_back(self) -> None:
        """Every lowered weight back to the node's own (the portal stops)."""
        for spec in self.config.lab_hosts:
            low = {name: node.own_weight for name, node in self.nodes.get(spec.name, {}).items() if node.low}
            if not low:
                continue
            try:
                with Hypervisor(spec.uri) as hv:
                    for name, weight in low.items():
                        hv.set_cpu_weight(name, weight)
            except SwarmlabError as e:
                log.warning("CPU weights on %s not given back: %s", spec.name, str(e).splitlines()[0])
        self.nodes.clear()
        self._write_record()

    def _recorded(self) -> dict[str, dict[str, int]]:
        try:
            found = json.loads(self.record.read_text())
            return {h: {n: int(w) for n, w in nodes.items()} for h, nodes in found.items()}
        except (OSError, ValueError, AttributeError, TypeError):
            return {}

    def _write_record(self, carried: dict[str, dict[str, int]] | None = None) -> None:
        """The lowered weights, and what was on record for a host not read since this portal
        started (it may be unreachable now, its nodes still low)."""
        low = {host: nodes for host, nodes in (carried or {}).items() if host not in self.nodes}
        low.update({host: {name: node.own_weight for name, node in nodes.items() if node.low}
                    for host, nodes in self.nodes.items()})
        text = json.dumps({host: nodes for host, nodes in low.items() if nodes}, sort_keys=True)
        if text != self.written:
            write_private(self.record, text)
            self.written = text


async def govern(governor: CpuGovernor) -> None:
    """The governor's looks, every GOVERN_EVERY_S, for as long as the portal runs."""
    while True:
        try:
            for line in await asyncio.to_thread(governor.look):
                log.info(line)
        except Exception:  # a broken look must not end the governing: the next one may work
            log.exception("CPU weights: a look failed")
        await asyncio.sleep(GOVERN_EVERY_S)
