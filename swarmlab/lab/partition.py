"""Network chaos: nodes cut off the lab network by the hypervisor, healed again. `partition`
sets a node's link down, as pulling its cable would; `chaos split` (quorum_drills.py) plugs
half of the nodes into a network of their own, where they reach only one another.

A cut is the hypervisor's live state, not the guest's: root in the guest cannot undo it, and
it is gone when the node's QEMU restarts. `reset` heals every cut node of its lab first, and
says so.
"""

from __future__ import annotations

from typing import Callable

from swarmlab.adapters.hypervisor import Hypervisor
from swarmlab.config import Config
from swarmlab.core import quorum
from swarmlab.errors import Refused
from swarmlab.lab import chaos
from swarmlab.lab.model import Lab
from swarmlab.lab.session import open_lab

Progress = Callable[[str], None]


def cut_links(hv: Hypervisor, lab: Lab) -> list[str]:
    """The lab's running nodes cut off: their link down (`partition`), or moved onto a split
    network (`split`)."""
    return [n.name for n in lab.nodes if (cable := hv.cable(n.domain)) and cable.cut_off]


def heal_links(hv: Hypervisor, lab: Lab, names: list[str] | None = None) -> list[str]:
    """Every cut node of the lab (or of `names`) back: its link up, plugged into its own
    network again; the lab's split network gone once nothing is on it. The nodes healed."""
    targets = {n.name for n in (lab.nodes if names is None else [lab.require_node(n) for n in names])}
    healed, still_moved = [], False
    for node in lab.nodes:
        cable = hv.cable(node.domain)
        if cable is None or not cable.cut_off:
            continue
        if node.name not in targets:
            still_moved = still_moved or cable.moved
            continue
        moved = cable.moved and hv.plug_into(node.domain, None)
        if (not cable.up and hv.set_link(node.domain, True)) or moved:
            healed.append(node.name)
    if not still_moved:  # a split network of a killed drill goes too
        for network in hv.split_networks(lab.name):
            hv.remove_network(network)
    return healed


def partition(config: Config, lab_name: str, names: list[str], force: bool,
              progress: Progress = lambda _m: None) -> list[str]:
    """Cuts `names` off the lab network. Refused when that costs the swarm its majority,
    unless `force`: `chaos lose-quorum` is the drill for that."""
    with open_lab(config, lab_name, lock=True) as session:
        nodes = [session.node(n) for n in names]  # a wrong name is refused before anything changes
        if not force:
            session.connect("running")
            survivors, members = chaos.managers_of(session)
            survivors.close()
            managers = [m for m in members if m.manager_status]
            left = [m for m in managers if m.manager_status in ("Leader", "Reachable") and m.hostname not in names]
            if managers and len(left) < quorum.majority(len(managers)):
                raise Refused(f"cutting {', '.join(names)} off leaves {len(left)} of {len(managers)} managers in "
                              f"touch: the swarm would lose its majority. `swarmlab chaos lose-quorum` is that "
                              "drill, with a timeline; or pass --force")
        cut = []
        for node in nodes:
            if session.hv.set_link(node.domain, False):
                cut.append(node.name)
        progress(f"cut off the lab network: {', '.join(cut) or 'nothing new'}")
        return cut


def heal(config: Config, lab_name: str, names: list[str] | None, progress: Progress = lambda _m: None) -> list[str]:
    """The links of `names` (every cut node when None) up again."""
    with open_lab(config, lab_name, lock=True) as session:
        healed = heal_links(session.hv, session.lab, names)
        progress(f"healed: {', '.join(healed) or 'no link was cut'}")
        return healed
