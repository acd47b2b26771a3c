"""Each class node held to its share of its host's CPUs, so that one student whose nodes spin
(a `while true`, `--replicas 50`) cannot slow the others down.

A formation.Finish, as the student's account is: applied once the swarm has formed (a capped
node wakes and forms more slowly, and `class up` makes one lab at a time), kept in the domain's
definition, so the `formed` snapshot carries it through every revert, and applied again to a
rebuilt lab. The share is core/placement.node_cpu_percent of the class's nodes on the host.
"""

from __future__ import annotations

from swarmlab.adapters.hypervisor import CpuCapsUnavailable, Hypervisor
from swarmlab.classroom import class_file
from swarmlab.config import Config
from swarmlab.core.placement import CPU_PERIOD_US, node_cpu_percent
from swarmlab.errors import SwarmlabError
from swarmlab.lab.model import Lab


def class_nodes_on(config: Config, host: str, nodes_per_lab: int) -> int:
    """The class's nodes on one host, from its plan (every lab, made yet or not)."""
    room = class_file.load(config)
    if room is None:
        return nodes_per_lab
    return max(nodes_per_lab, sum(1 for s in room.students if s.host == host) * (room.nodes or nodes_per_lab))


def cap_class_nodes(config: Config, lab: Lab) -> list[str]:
    """What a class adds to each lab it makes (a formation.Finish): every node held to its share
    of the host's CPUs. Says so in words where the host cannot hold it."""
    with Hypervisor(config.uri) as hv:
        percent = node_cpu_percent(hv.cpus(), class_nodes_on(config, config.lab_host, len(lab.nodes)),
                                   config.vcpus, config.cpu_cap_percent)
        if percent is None:
            return []
        try:
            for node in lab.nodes:
                hv.cap_cpu(node.domain, percent * CPU_PERIOD_US // 100, CPU_PERIOD_US)
        except CpuCapsUnavailable:
            return ["CPU caps not applied: the host's libvirt manages no cgroups, so one student's spinning "
                    "nodes can slow the others (`swarmlab doctor` says how to fix it)"]
        except SwarmlabError as e:  # the lab works uncapped: say so, do not fail it
            return [f"CPU caps not applied: {str(e).splitlines()[0]}"]
    return [f"each node held to {percent} % of a host CPU"]
