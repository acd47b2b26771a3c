#!/usr/bin/env python3
"""Benchmark: on one 3-node lab, `up 3` (with the swarm) next to `reset` at each level, 3 runs
each (median and spread), and the disk cost of a snapshot.

Before each state and snapshot reset the lab is disturbed the way a class does (a service
added, a node drained; for the snapshot level a leader killed), so that each level has work.
Prints figures; asserts nothing. Run as root with the lab host up and the template built:
    .venv/bin/python bench/bench_reset.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from swarmlab import config as configuration
from swarmlab.host import hoststate  # noqa: E402

LAB = "bench-reset"
TARGETS = {"state": "<= 5 s", "snapshot": "<= 15 s (<= 0.15x up)", "rebuild": "<= up"}


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "swarmlab", *args], cwd=ROOT, capture_output=True, text=True)
    if check and proc.returncode != 0:
        sys.exit(f"swarmlab {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def timed(*args: str) -> tuple[float, dict]:
    started = time.monotonic()
    proc = cli(*args, "--json", check=args[0] != "reset")  # a reset that ends unhealthy still prints its JSON
    return time.monotonic() - started, json.loads(proc.stdout)


def disturb(level: str) -> None:
    docker = ("docker", "swr1", "--lab", LAB, "--")
    cli(*docker, "service", "create", "--detach", "--name", f"student{time.monotonic_ns()}",
        "--no-resolve-image", "swarmlab/busybox:latest", "sleep", "1d")
    cli(*docker, "node", "update", "--availability", "drain", "swr3")
    if level == "snapshot":
        cli("chaos", "kill-leader", "--lab", LAB, "--json", check=False)


def row(name: str, values: list[float], target: str = "") -> None:
    print(f"{name:<10} {statistics.median(values):>8.1f} {min(values):>7.1f} {max(values):>7.1f}   {target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    config = configuration.load()
    hoststate.enter_host(config)
    cli("down", "--lab", LAB, "--yes")
    times: dict[str, list[float]] = {"up": [], "state": [], "snapshot": [], "rebuild": []}
    snapshot_mib = []
    try:
        for _ in range(args.runs):
            seconds, data = timed("up", "3", "--lab", LAB)
            times["up"].append(seconds)
            snapshot_mib.append(data["snapshot"]["bytes"] / 2**20)
            for level in ("state", "snapshot"):
                disturb(level)
                seconds, data = timed("reset", "--lab", LAB, "--level", level)
                times[level].append(seconds)
                if not data["ok"]:
                    print(f"reset --level {level} not healthy: {data['problems']}")
            seconds, data = timed("reset", "--lab", LAB, "--level", "rebuild")
            times["rebuild"].append(seconds)
            if not data["ok"]:
                print(f"reset --level rebuild not healthy: {data['problems']}")
            cli("down", "--lab", LAB, "--yes")
    finally:
        cli("down", "--lab", LAB, "--yes", check=False)
    print(f"{'':<10} {'median':>8} {'min':>7} {'max':>7}   target (2 cores, TCG)")
    for name, values in times.items():
        row(name, values, TARGETS.get(name, ""))
    up = statistics.median(times["up"])
    print(f"snapshot / up: {statistics.median(times['snapshot']) / up:.2f}; "
          f"rebuild / up: {statistics.median(times['rebuild']) / up:.2f}")
    print(f"disk per `formed` snapshot (3 nodes, memory and disk): {statistics.median(snapshot_mib):.0f} MiB")


if __name__ == "__main__":
    main()
