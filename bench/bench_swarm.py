#!/usr/bin/env python3
"""Benchmark: forming the swarm, `swarmlab swarm form` against the seed's serial manual sequence.

Prints figures; asserts nothing. Run as root with the lab host up and the template built:
    .venv/bin/python bench/bench_swarm.py

On one 3-node lab (booted once, --no-swarm), from "all nodes SSH-ready" to "all nodes Ready
in the swarm", for 3 managers and for 1 manager + 2 workers:
- swarmlab: `swarmlab swarm form --managers M` (engine check, firewall, images, init, joins);
- seed: one `ssh` per step, as typed by hand: init on swr1, read the token, join the others
  one after another, then `docker node ls` until every node is Ready.
The swarm is left (`docker swarm leave --force` on every node) between runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from swarmlab import config as configuration
from swarmlab.lab import model as labs
from swarmlab.host import hoststate  # noqa: E402

LAB = "bench-swarm"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "swarmlab", *args], cwd=ROOT, capture_output=True, text=True)


def ssh(config, node, command: str) -> str:
    argv = labs.ssh_command(config, LAB, node.name, [command])
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def leave_all(config, nodes) -> None:
    for node in nodes:
        ssh(config, node, "docker swarm leave --force >/dev/null 2>&1 || true")


def manual(config, nodes, managers: int) -> float:
    started = time.monotonic()
    first = nodes[0]
    ssh(config, first, f"docker swarm init --advertise-addr {first.ip}")
    for i, node in enumerate(nodes[1:], start=1):
        role = "manager" if i < managers else "worker"
        token = ssh(config, first, f"docker swarm join-token -q {role}").strip()
        ssh(config, node, f"docker swarm join --token {token} {first.ip}:2377")
    while True:
        listed = [json.loads(line) for line in ssh(config, first, "docker node ls --format '{{json .}}'").splitlines()]
        if len(listed) == len(nodes) and all(n["Status"] == "Ready" for n in listed):
            return time.monotonic() - started
        time.sleep(1)


def swarmlab_form(managers: int) -> float:
    started = time.monotonic()
    proc = cli("swarm", "form", "--lab", LAB, "--managers", str(managers), "--json")
    if proc.returncode != 0:
        sys.exit(f"swarm form failed: {proc.stderr.strip().splitlines()[-1]}")
    return time.monotonic() - started


def main() -> None:
    config = configuration.load()
    hoststate.enter_host(config)
    up = cli("up", "3", "--lab", LAB, "--no-swarm")
    if up.returncode != 0:
        sys.exit(f"up failed: {up.stderr.strip().splitlines()[-1]}")
    nodes = labs.load_journal(config, LAB).nodes
    results = {}
    try:
        for managers in (3, 1):
            leave_all(config, nodes)
            ours = swarmlab_form(managers)
            leave_all(config, nodes)
            seed = manual(config, nodes, managers)
            results[managers] = (ours, seed)
    finally:
        cli("down", "--lab", LAB, "--yes")
    for managers, (ours, seed) in results.items():
        shape = "3 managers" if managers == 3 else "1 manager + 2 workers"
        print(f"{shape:<22} swarmlab {ours:6.1f} s   seed serial {seed:6.1f} s   ratio {ours / seed:5.2f} (target <= 0.60)")


if __name__ == "__main__":
    main()
