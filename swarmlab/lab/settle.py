"""A lab's nodes waited for until they are quiet, before a snapshot (core/settling says why),
measured from the CPU time libvirt counts for each."""

from __future__ import annotations

import time

from swarmlab.adapters.hypervisor import Hypervisor
from swarmlab.core.settling import SAMPLE_S, SETTLE_WITHIN, busy_nodes
from swarmlab.lab.model import Lab, NodeProgress


def wait_quiet(hv: Hypervisor, lab: Lab, progress: NodeProgress = lambda *_: None,
               within: float = SETTLE_WITHIN) -> list[str]:
    """Until every node used less than its quiet share of a CPU over one second, or `within`
    seconds passed; returns the nodes still busy then."""
    def used() -> dict[str, float | None]:
        return {n.name: hv.cpu_seconds(n.domain) for n in lab.nodes}
    deadline = time.monotonic() + within
    shown: list[str] = []
    before, at = used(), time.monotonic()
    while True:
        time.sleep(SAMPLE_S)
        now, now_at = used(), time.monotonic()
        spent = {name: None if now[name] is None or before[name] is None else now[name] - before[name]
                 for name in now}
        busy = busy_nodes(spent, now_at - at)
        if not busy or now_at > deadline:
            return busy
        for name in sorted(set(busy) - set(shown)):
            progress(name, "settle", f"{100 * spent[name] / (now_at - at):.0f} % of a CPU")
        shown, before, at = busy, now, now_at
