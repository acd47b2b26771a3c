"""What formed nodes cost the host while nobody uses them: each node's QEMU process's CPU time,
sampled at intervals, as a share of one host core. Used by bench_capacity.py --cpu."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def qemu_pid(domain: str) -> int | None:
    try:
        return int(Path(f"/run/libvirt/qemu/{domain}.pid").read_text())
    except (OSError, ValueError):
        return None


def cpu_seconds(pid: int) -> float:
    """User and system time of the whole process (every vCPU and I/O thread)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def sample(domains: list[str], seconds: float, interval: float = 10.0,
           progress=lambda _line: None) -> dict:
    """Per node, the share of a host core its QEMU used in each interval over `seconds`: the mean
    of every node's mean, the p95 of all intervals, and each node's mean. Nodes whose QEMU is
    gone are left out."""
    pids = {d: pid for d in domains if (pid := qemu_pid(d))}
    last = {d: cpu_seconds(pid) for d, pid in pids.items()}
    at = time.monotonic()
    shares: dict[str, list[float]] = {d: [] for d in pids}
    ends = at + seconds
    while time.monotonic() < ends:
        time.sleep(min(interval, max(0.1, ends - time.monotonic())))
        now = time.monotonic()
        for d, pid in list(pids.items()):
            try:
                used = cpu_seconds(pid)
            except OSError:
                del pids[d]
                continue
            shares[d].append((used - last[d]) / (now - at))
            last[d] = used
        at = now
        done = [x for values in shares.values() for x in values[-1:]]
        if done:
            progress(f"  {statistics.mean(done) * 100:5.1f} % of a core per node over the last {interval:g} s")
    per_node = {d: statistics.mean(v) for d, v in shares.items() if v}
    every = [x for v in shares.values() for x in v]
    return {"nodes": len(per_node), "seconds": round(seconds),
            "mean_percent": round(100 * statistics.mean(per_node.values()), 2) if per_node else None,
            "p95_percent": round(100 * p95(every), 2) if every else None,
            "per_node_percent": {d: round(100 * v, 2) for d, v in per_node.items()},
            "host_load": [round(x, 2) for x in os.getloadavg()]}
