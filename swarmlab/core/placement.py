"""Where a class's labs go, as pure arithmetic over what the hosts report: a host's free room
in nodes, each lab whole on the host with the most room, a /24 of its own. No I/O: `classroom`
reads the hosts and carries the plan out, `doctor` shows the same figures."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from swarmlab.config import Config, HostSpec
from swarmlab.errors import Refused

HOST_MEMORY_SHARE = 0.9  # of a host's memory, when [[hosts]] gives no capacity: the rest is the host's
QEMU_TB_CACHE_MIB = 1024  # TCG's translation cache when tb_cache_mib is 0 (QEMU's default)
# What a node holds beyond its translation cache, with same-page merging and free page
# reporting (bench/bench_capacity.py, PSS after all nine exercises): the guest's own pages
# 197-231 MiB and QEMU's 70 MiB. The largest (302 MiB) and some room.
BEYOND_TB_CACHE_MIB = 320
# What a formed node takes of a host CPU while nobody uses it, under TCG: 7.9 % (6.8-9.9, the
# leader most), bench_capacity.py --cpu's sampling over 90 s of an idle 3-node lab. Almost all of
# it is swarm mode itself: raft's heartbeats, the gossip of the overlay network, Go's GC.
TCG_IDLE_NODE_CPU_PERCENT = 7.9
# The share of a CPU that idle nodes may take, leaving the rest to the nodes students work on
# and to waking the next lab: `class up` of 12 three-node labs on 2 cores made 6 labs; from the
# 7th on (idle nodes wanting 1.4 of 2 CPUs), no woken node's sshd answered within 300 s.
IDLE_SHARE_OF_A_CPU = 0.7


def nodes_per_emulated_cpu(idle_node_percent: float = TCG_IDLE_NODE_CPU_PERCENT,
                           idle_share: float = IDLE_SHARE_OF_A_CPU) -> int:
    """Formed nodes one host CPU carries when it emulates them (TCG, no KVM): as many as leave
    idle_share of it taken while they idle. 9 on today's measure; a cheaper idle node, more."""
    return max(1, round(100 * idle_share / idle_node_percent))


TCG_NODES_PER_CPU = nodes_per_emulated_cpu()


# The least share of a host CPU a node may be capped at: an idle formed node takes 7-10 % of a
# core under TCG, more while it wakes, and a cap near that would starve its raft heartbeats.
MIN_NODE_CPU_PERCENT = 25
CPU_PERIOD_US = 100_000  # the CFS period caps are set in; the quota is a share of it


class CapacityShort(Refused):
    pass


@dataclass
class HostRoom:
    """What a host can still take, in nodes; `problem` when it cannot take any."""

    name: str
    free_nodes: int
    problem: str = ""
    bound_by: str = ""  # what limits the room, when it is not what [[hosts]] says: see room_bound


def node_cost_mib(node_mib: int, tb_cache_mib: int) -> int:
    """Host memory one node takes: [class] node_mib, else its translation cache (QEMU fills it
    before it flushes, and keeps the pages) and what the bench measured beyond it. Guest memory
    is not counted whole: pages the guest frees go back to the host, and clones share the rest."""
    return node_mib or (tb_cache_mib or QEMU_TB_CACHE_MIB) + BEYOND_TB_CACHE_MIB


@dataclass(frozen=True)
class PoolRoom:
    """The node pool of a host: its free bytes, what its volumes hold now, and the most one
    node can come to hold (node_disk_bytes)."""

    free: int
    held: int
    per_node: int

    def nodes(self) -> int:
        """Nodes the pool holds with every one of them full: a student who fills their disk
        then fills only their own share, never the pool that every guest writes to."""
        return (self.free + self.held) // self.per_node if self.per_node > 0 else 1 << 30


def node_disk_bytes(disk_virtual_bytes: int, memory_mib: int) -> int:
    """The most one node's volume can hold: its whole disk written (it starts as an overlay on
    the template's, but root on the node can fill it) and a snapshot's memory state."""
    return disk_virtual_bytes + (memory_mib << 20)


def free_nodes(spec: HostSpec, host_mib: int, used_nodes: int, cost_mib: int, emulated_cpus: int = 0,
               pool: PoolRoom | None = None) -> int:
    """Nodes a host can still take: from [[hosts]] nodes, else from its memory ([[hosts]]
    memory_mib, else 90 % of what libvirt reports), each node (there now, or to come) costing
    `cost_mib`; on a host that emulates its guests' CPUs (`emulated_cpus`: its CPU count when
    libvirt offers no KVM), at most TCG_NODES_PER_CPU nodes a CPU as well; and at most what its
    node pool holds with every node full."""
    if spec.nodes:
        return max(0, spec.nodes - used_nodes)
    return max(0, min(_bounds(spec, host_mib, cost_mib, emulated_cpus, pool).values()) - used_nodes)


def _bounds(spec: HostSpec, host_mib: int, cost_mib: int, emulated_cpus: int, pool: PoolRoom | None) -> dict[str, int]:
    """Nodes in all (there now, or to come) by each limit, in words."""
    bounds = {"memory": (spec.memory_mib or int(host_mib * HOST_MEMORY_SHARE)) // cost_mib}
    if emulated_cpus:
        bounds[f"{emulated_cpus} CPUs without KVM ({TCG_NODES_PER_CPU} nodes a CPU)"] = emulated_cpus * TCG_NODES_PER_CPU
    if pool is not None:
        bounds[f"disk (each node may fill {pool.per_node / (1 << 30):.1f} GiB of the node pool)"] = pool.nodes()
    return bounds


def room_bound(spec: HostSpec, host_mib: int, cost_mib: int, emulated_cpus: int = 0,
               pool: PoolRoom | None = None) -> str:
    """What limits a host's room, in words for `host ls` and a refusal."""
    if spec.nodes:
        return "[[hosts]] nodes"
    bounds = _bounds(spec, host_mib, cost_mib, emulated_cpus, pool)
    return min(bounds, key=lambda k: (bounds[k], k != "memory"))


def place(labs_to_place: list[str], nodes_per_lab: int, rooms: list[HostRoom]) -> dict[str, str]:
    """Each lab whole on the host with the most free nodes (the first such host on a tie).
    Raises CapacityShort, naming what is missing, before anything is made."""
    free = {r.name: r.free_nodes for r in rooms if not r.problem}
    out: dict[str, str] = {}
    for lab in labs_to_place:
        best = max(free, key=lambda h: free[h], default=None)
        if best is None or free[best] < nodes_per_lab:
            unplaced = len(labs_to_place) - len(out)
            have = ", ".join(f"{r.name} {r.free_nodes} free" + (f", bound by {r.bound_by}" if r.bound_by else "")
                             if not r.problem else f"{r.name}: {r.problem}" for r in rooms)
            fits = sum(n // nodes_per_lab for n in free.values())
            missing = unplaced - fits
            raise CapacityShort(
                f"not enough room: {_labs(len(labs_to_place))} of {nodes_per_lab} nodes need "
                f"{len(labs_to_place) * nodes_per_lab} nodes, the hosts take {_labs(fits + len(out))} "
                f"({have}); {_labs(missing)} ({missing * nodes_per_lab} nodes) "
                f"{'is' if missing == 1 else 'are'} missing: "
                "add a host ([[hosts]] in swarmlab.toml), free one, or ask for fewer students")
        out[lab] = best
        free[best] -= nodes_per_lab
    return out


def _labs(count: int) -> str:
    return f"{count} lab" + ("" if count == 1 else "s")


def next_subnet(lab_range: ipaddress.IPv4Network, taken: list[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    """The first /24 of the host's lab range that overlaps no network already there."""
    for subnet in lab_range.subnets(new_prefix=24):
        if not any(subnet.overlaps(t) for t in taken):
            return subnet
    raise CapacityShort(f"lab range {lab_range} has no free /24 left: widen [class] lab_range")


def remote_problem(config: Config, spec: HostSpec) -> str | None:
    """What keeps a host on another machine from taking labs, before libvirt is asked."""
    if spec.local:
        return None
    if not spec.jump:
        return ("has no SSH way in to its nodes: set ssh = \"root@HOST\" in its [[hosts]] entry "
                "(or use a qemu+ssh:// URI)")
    if not config.services_address:
        return ("is on another machine, and its labs' DNS needs this controller's PowerDNS: set [host] "
                "services_address to the address it reaches this machine at, then `swarmlab host up`")
    return None


def node_cpu_percent(setting: int) -> int | None:
    """The share of one host CPU (percent) each of a class's nodes may use at most, all its
    threads together: [class] cpu_cap_percent, at least MIN_NODE_CPU_PERCENT; None (the
    default) for no cap. Fairness needs none: each domain has a cgroup of its own with the same
    weight, so under contention every node that wants CPU gets an equal share, and an idle
    host's CPU goes to whoever needs it. A fair-share quota (25 % a node, 4 labs of 2 on 2
    CPUs) made every login 3-4x slower, even with no one spinning: a calm student's echo over
    SSH took 5.0-7.9 s, against 1.6-2.0 s uncapped and 2.4-4.0 s uncapped beside a lab
    spinning both its nodes; their lab's reset 18.6 s against 7.8 s and 10.5 s."""
    return max(MIN_NODE_CPU_PERCENT, setting) if setting else None
