#!/usr/bin/env python3
"""Benchmark: how fast a lab comes back, on new labs, as an instructor meets it.

Each run makes a new 3-node lab (`up 3`), starts a service `web` of 3 replicas and saves the
snapshot `exercise` a reset returns to. Then, without `--level` (reset chooses, with no history
on the first):
- the first reset after the students' changes (`web` removed, a service added, swr3 drained,
  a label added to swr2), once the nodes are quiet again, as when a class resets minutes later;
- the second reset after the same changes;
- a reset right after the same changes, while the guests still stop and move tasks (mid-change);
- a reset after `chaos kill-leader`.
Each reset's own JSON says where its seconds went (level, gate, clocks, swarm).
Then, once, the largest class placement allows here (`--students`, `--nodes`): one lab's reset
and `class reset` of all, each --runs times, each lab's last node powered off before.

Prints medians, spreads and each figure as a ratio of `up 3` in the same run, the targets beside
them, and a last JSON line; asserts nothing. Run as root with the lab host up and the template
built, and no class:
    .venv/bin/python bench/bench_reset.py [--runs 3] [--students 4 --nodes 2]
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
LAB = "bench-reset"
TARGETS = {"first": "<= 10 s and <= 0.15x up", "second": "", "after kill-leader": "<= 10 s",
           "class reset": "<= 2x one lab's"}


def cli(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "swarmlab", *args], cwd=ROOT, capture_output=True, text=True,
                          input=stdin)
    if check and proc.returncode != 0:
        sys.exit(f"swarmlab {' '.join(args)} failed: {(proc.stderr or proc.stdout).strip()[-400:]}")
    return proc


def timed(*args: str) -> tuple[float, dict | list]:
    started = time.monotonic()
    proc = cli(*args, "--json", check=False)  # a reset that ends unhealthy still prints its JSON
    seconds = time.monotonic() - started
    try:
        return seconds, json.loads(proc.stdout)
    except ValueError:
        sys.exit(f"swarmlab {' '.join(args)} printed no JSON: {proc.stderr.strip()[-400:]}")


def docker(*args: str) -> subprocess.CompletedProcess:
    return cli("docker", "swr1", "--lab", LAB, "--", *args)


def wait_running(service: str, replicas: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = docker("service", "ls", "--filter", f"name={service}", "--format", "{{.Replicas}}").stdout.strip()
        if shown == f"{replicas}/{replicas}":
            return
        time.sleep(2)
    sys.exit(f"service {service} did not reach {replicas}/{replicas} within {timeout:.0f} s")


def students_changes() -> None:
    """What a class does to a lab in an exercise: the tasks of `web` are the dear part."""
    docker("service", "rm", "web")
    docker("service", "create", "--detach", "--name", f"student{time.monotonic_ns()}", "--no-resolve-image",
           "swarmlab/busybox:latest", "sleep", "1d")
    docker("node", "update", "--availability", "drain", "swr3")
    docker("node", "update", "--label-add", "broken=yes", "swr2")


def level_and_parts(data: dict) -> str:
    """e.g. "snapshot (snapshot 3.1, gate 4.0, clocks 1.2, swarm 3.9)": where the seconds went."""
    parts = ", ".join(f"{k.removesuffix('_s')} {v}" for k, v in data.get("timings", {}).items())
    return "+".join(data["levels"]) + ("" if data["ok"] else " (unhealthy)") + (f" ({parts})" if parts else "")


def one_lab_run() -> dict[str, float | str]:
    cli("down", "--lab", LAB, "--yes")
    out: dict[str, float | str] = {}
    out["up"], _ = timed("up", "3", "--lab", LAB)
    docker("service", "create", "--detach", "--name", "web", "--replicas", "3", "--no-resolve-image",
           "swarmlab/busybox:latest", "sleep", "1d")
    wait_running("web", 3)
    cli("snapshot", "save", "exercise", "--lab", LAB)
    for name in ("first", "second", "mid-change"):
        students_changes()
        if name != "mid-change":  # a class resets minutes after its changes, not while they run
            wait_quiet(LAB)
        out[name], data = timed("reset", "--lab", LAB, "--to", "exercise")
        out[f"{name} level"] = level_and_parts(data)
    cli("chaos", "kill-leader", "--lab", LAB, "--json", check=False)
    out["after kill-leader"], data = timed("reset", "--lab", LAB, "--to", "exercise")
    out["after kill-leader level"] = level_and_parts(data)
    cli("down", "--lab", LAB, "--yes")
    return out


def wait_quiet(lab: str) -> None:
    """Until the lab's nodes are quiet again (swarmlab's own measure, at most 60 s)."""
    sys.path.insert(0, str(ROOT))
    from swarmlab import config as configuration
    from swarmlab.adapters.hypervisor import Hypervisor
    from swarmlab.lab.model import lab_config, require_lab
    from swarmlab.lab.settle import wait_quiet as settle
    config = lab_config(configuration.load(), lab)
    with Hypervisor(config.uri) as hv:
        settle(hv, require_lab(config, hv, lab), within=60)


def power_off_last_nodes(labs: list[str], nodes: int) -> None:
    """Each lab's last node (a worker) powered off, as a student's `poweroff` does."""
    sys.path.insert(0, str(ROOT))
    from swarmlab import config as configuration
    uri = configuration.load().uri
    for lab in labs:
        subprocess.run(["virsh", "-c", uri, "destroy", f"{lab}-swr{nodes}"], capture_output=True)


def class_runs(students: int, nodes: int, runs: int) -> dict[str, list[float]]:
    cli("class", "up", "--students", str(students), "--nodes", str(nodes))
    labs = [f"s{i:02d}" for i in range(1, students + 1)]
    out: dict[str, list[float]] = {"one lab": [], "class reset": []}
    try:
        for _ in range(runs):
            power_off_last_nodes(labs[:1], nodes)
            seconds, _ = timed("class", "reset", "--lab", labs[0])
            out["one lab"].append(seconds)
            power_off_last_nodes(labs, nodes)
            seconds, results = timed("class", "reset")
            out["class reset"].append(seconds)
            print("class reset:", ", ".join(f"{r['lab']} {r['detail'].get('levels')} {r['seconds']} s"
                                            for r in results), flush=True)
    finally:
        cli("class", "down", "--yes", check=False)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--students", type=int, default=4, help="the largest class placement allows here")
    parser.add_argument("--nodes", type=int, default=2)
    args = parser.parse_args()
    runs = []
    try:
        for i in range(args.runs):
            runs.append(one_lab_run())
            print(f"run {i + 1}: " + ", ".join(f"{k} {v:.1f} s" if isinstance(v, float) else f"{k} {v}"
                                              for k, v in runs[-1].items()), flush=True)
    finally:
        cli("down", "--lab", LAB, "--yes", check=False)
    classes = class_runs(args.students, args.nodes, args.runs) if args.students else {}
    up = statistics.median(r["up"] for r in runs)
    figures = {name: [float(r[name]) for r in runs] for name in ("up", "first", "second", "mid-change",
                                                                 "after kill-leader")}
    figures.update(classes)
    print(f"\n{'':<20} {'median':>7} {'min':>7} {'max':>7} {'x up 3':>7}   target (2 cores, TCG)")
    for name, values in figures.items():
        print(f"{name:<20} {statistics.median(values):>7.1f} {min(values):>7.1f} {max(values):>7.1f} "
              f"{statistics.median(values) / up:>7.2f}   {TARGETS.get(name, '')}")
    for name in ("first", "second", "mid-change", "after kill-leader"):
        print(f"{name} levels: {', '.join(str(r[f'{name} level']) for r in runs)}")
    summary = {name: round(statistics.median(values), 1) for name, values in figures.items()}
    summary.update({f"{name}_x_up": round(statistics.median(values) / up, 2) for name, values in figures.items()})
    if classes:
        summary["class_x_one_lab"] = round(statistics.median(classes["class reset"])
                                           / statistics.median(classes["one lab"]), 2)
        print(f"class reset / one lab's: {summary['class_x_one_lab']:.2f} ({args.students} labs of {args.nodes})")
    print(json.dumps({"runs": args.runs, "students": args.students, "nodes": args.nodes, **summary}))


if __name__ == "__main__":
    main()
