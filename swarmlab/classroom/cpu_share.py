"""Each class node held to [class] cpu_cap_percent of a host CPU, when the instructor sets one.
By default no node is capped: every domain's cgroup has the same weight, so a student whose
nodes spin (a `while true`, `--replicas 50`) gets an equal share under contention and no more
(core/placement.node_cpu_percent says what a default quota cost).

A formation.Finish, as the student's account is: applied once the swarm has formed (a capped
node wakes and forms more slowly, and `class up` makes one lab at a time), kept in the domain's
definition, so the `formed` snapshot carries it through every revert, and applied again to a
rebuilt lab.
"""

from __future__ import annotations

from swarmlab.adapters.hypervisor import CpuCapsUnavailable, Hypervisor
from swarmlab.config import Config
from swarmlab.core.placement import CPU_PERIOD_US, node_cpu_percent
from swarmlab.errors import SwarmlabError
from swarmlab.lab.model import Lab


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
