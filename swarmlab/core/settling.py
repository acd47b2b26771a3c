"""When a lab is quiet enough to snapshot. A swarm is "formed" seconds before its nodes are
done with it: each engine then builds the ingress network (dozens of iptables runs), ~10 s of
a busy vCPU per node under TCG; a service just started is as busy. A snapshot taken then keeps
that work in its memory image, and every revert replays it while the reset's health gate waits:
9 s of gate after a 3 s revert, where a quiet snapshot's took 3 s."""

from __future__ import annotations

QUIET_SHARE = 0.3  # of one host CPU: an idle formed node takes 0.12-0.17 under TCG, far less under KVM
SETTLE_WITHIN = 20.0  # seconds at most: a node still busy then is snapshotted as it is
SAMPLE_S = 1.0


def busy_nodes(used_s: dict[str, float | None], seconds: float, most_share: float = QUIET_SHARE) -> list[str]:
    """The nodes that used more than `most_share` of a host CPU over the last `seconds`
    (a node that does not run is not waited for)."""
    return sorted(name for name, used in used_s.items() if used is not None and used / seconds > most_share)
