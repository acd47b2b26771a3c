#!/usr/bin/env python3
"""Benchmark: `swarmlab chaos kill-leader --restore`, 3 runs on one lab, against swarmkit's
expected windows and the seed's hand-timed figures. Also chaos's own peak memory.

Prints figures; asserts nothing. Run as root with the lab host up and the template built:
    .venv/bin/python bench/bench_chaos.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from swarmlab.lab import chaos
from swarmlab import config as configuration
from swarmlab.host import hoststate
from swarmlab.core import timeline  # noqa: E402

LAB = "bench-chaos"
SEED = {"new-leader": "<= 31", "node-down": "~52", "tasks-rescheduled": "~58", "rejoined": "~75 after the start"}


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "swarmlab", *args], cwd=ROOT, capture_output=True, text=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    config = configuration.load()
    hoststate.enter_host(config)
    if cli("up", "3", "--lab", LAB).returncode != 0:
        sys.exit("up failed")
    cli("docker", "swr1", "--lab", LAB, "--", "service", "create", "--name", "web", "--replicas", "5",
        "--no-resolve-image", "swarmlab/busybox:latest", "sleep", "1d")
    runs, rss = [], []
    try:
        for _ in range(args.runs):
            proc = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-m", "swarmlab", "chaos",
                                   "kill-leader", "--lab", LAB, "--restore", "--json"],
                                  cwd=ROOT, capture_output=True, text=True)
            rss.append(int(proc.stderr.strip().splitlines()[-1]) / 1024)
            data = json.loads(proc.stdout)
            first: dict[str, float] = {}
            for e in data["events"]:
                first.setdefault(e["event"], e["t"])  # an outage can happen twice; the first counts
            runs.append(first)
            if data["missing"]:
                print(f"run {len(runs)}: missing {', '.join(data['missing'])}")
    finally:
        cli("down", "--lab", LAB, "--yes")
    print(f"{'event':<18} {'median':>7} {'min':>6} {'max':>6}   {'swarmkit window':<16} seed by hand")
    for event in ("killed", "api-unavailable", "new-leader", "api-back", "node-down", "tasks-rescheduled",
                  "restarted", "rejoined"):
        values = [r[event] for r in runs if event in r]
        if not values:
            print(f"{event:<18} {'-':>7}")
            continue
        window = timeline.EXPECTED.get(event)
        print(f"{event:<18} {statistics.median(values):7.1f} {min(values):6.1f} {max(values):6.1f}   "
              f"{f'{window[0]}-{window[1]} s' if window else '':<16} {SEED.get(event, '')}")
    print(f"detection lag: <= {chaos.POLL:g} s poll interval (+ one answer from the fastest survivor)")
    print(f"chaos peak RSS: {max(rss):.0f} MB (target < 100 MB)")


if __name__ == "__main__":
    main()
