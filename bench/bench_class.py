#!/usr/bin/env python3
"""Benchmark: `class up` of L labs x N nodes against L `up N` runs one after another.

Prints figures; asserts nothing. Run as root with the lab host up and the template built:
    .venv/bin/python bench/bench_class.py [--labs 2] [--nodes 3] [--runs 1] [--parallel 1,2]

Per run, on the same idle host: the serial sequence (`up N --lab benchsK --no-snapshot` for
each lab in turn, each to Ready managers), then `class up --students L --nodes N
--no-snapshot` (labs on networks of their own) once per `--parallel` value ([class] parallel:
labs made at once on the host). Also the cost of a
lab's own network (define and start, one dnsmasq) and the host memory each node's qemu holds
once the class has formed. Everything the bench makes is removed afterwards.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from swarmlab import config as configuration
from swarmlab.host import hoststate
from swarmlab.adapters import libvirt_xml  # noqa: E402
from swarmlab.adapters.hypervisor import Hypervisor  # noqa: E402


def cli(*args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "swarmlab", *args], cwd=ROOT, capture_output=True, text=True,
                          env=env)
    if check and proc.returncode != 0:
        sys.exit(f"swarmlab {' '.join(args)} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return proc


def timed(*args: str, env: dict | None = None) -> float:
    began = time.monotonic()
    cli(*args, env=env)
    return time.monotonic() - began


def config_with_parallel(config, parallel: int, directory: Path) -> dict:
    """The environment for a swarmlab whose config is ours with [class] parallel set."""
    import tomlkit
    source = Path(config.source) if config.source != "built-in defaults" else None
    doc = tomlkit.parse(source.read_text() if source else "")
    doc.setdefault("class", tomlkit.table())["parallel"] = parallel
    path = directory / f"parallel{parallel}.toml"
    path.write_text(tomlkit.dumps(doc))
    path.chmod(0o600)
    return {**os.environ, "SWARMLAB_CONFIG": str(path)}


def qemu_rss_mib() -> list[int]:
    out = subprocess.run(["ps", "-C", "qemu-system-x86_64", "-o", "rss="], capture_output=True, text=True).stdout
    return sorted(int(v) // 1024 for v in out.split())


def dnsmasq_rss_kib(config) -> list[int]:
    """RSS of the dnsmasq of each class lab network (libvirt names its config after the network)."""
    out = subprocess.run(["ps", "-C", "dnsmasq", "-o", "rss=,args="], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if f"/{config.network}-s" in line]


def network_cost(config) -> float:
    """Seconds to define and start one lab network, as `class up` does, and remove it again."""
    from swarmlab.lab import model as labs
    import ipaddress
    scoped = labs.scoped(config, config.lab_hosts[0], f"{config.network}-benchnet",
                         ipaddress.IPv4Network("10.80.250.0/24"))
    with Hypervisor(config.uri) as hv:
        began = time.monotonic()
        hv.ensure_network(scoped.network, libvirt_xml.network_xml(scoped, "benchnet"))
        seconds = time.monotonic() - began
        hv.remove_network(scoped.network)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labs", type=int, default=2)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--parallel", default="2", help="comma-separated [class] parallel values to compare")
    args = parser.parse_args()
    parallels = [int(v) for v in args.parallel.split(",")]
    config = configuration.load()
    hoststate.enter_host(config)
    if cli("class", "status", check=False).returncode != 3:
        sys.exit("a class exists already: `swarmlab class down --yes` first (the bench makes its own)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-class-"))
    serial: list[float] = []
    together: dict[int, list[float]] = {p: [] for p in parallels}
    rss: list[int] = []
    dnsmasq: list[int] = []
    for run in range(1, args.runs + 1):
        names = [f"benchs{i}" for i in range(1, args.labs + 1)]
        try:
            serial.append(sum(timed("up", str(args.nodes), "--lab", name, "--no-snapshot") for name in names))
        finally:
            for name in names:
                cli("down", "--lab", name, "--yes", check=False)
        line = f"run {run}: {args.labs} x `up {args.nodes}` one after another {serial[-1]:.1f} s"
        for parallel in parallels:
            env = config_with_parallel(config, parallel, tmp)
            try:
                together[parallel].append(timed("class", "up", "--students", str(args.labs), "--nodes",
                                                str(args.nodes), "--no-snapshot", env=env))
                rss += qemu_rss_mib()
                dnsmasq += dnsmasq_rss_kib(config)
            finally:
                down = cli("class", "down", "--yes", check=False, env=env)
                if down.returncode != 0:  # what is left would skew the next measurement
                    print(f"class down failed (exit {down.returncode}): {down.stdout.strip()} "
                          f"{down.stderr.strip()}", flush=True)
            line += f", `class up` (parallel {parallel}) {together[parallel][-1]:.1f} s"
        print(line, flush=True)
    print(f"\n{args.labs} labs x {args.nodes} nodes, median of {args.runs}:")
    print(f"  serial `up`s:  {statistics.median(serial):6.1f} s ({min(serial):.1f}-{max(serial):.1f})")
    for parallel, times in together.items():
        ratio = [t / s for t, s in zip(times, serial)]
        print(f"  `class up`, parallel {parallel}: {statistics.median(times):6.1f} s "
              f"({min(times):.1f}-{max(times):.1f}); class / serial {statistics.median(ratio):.2f} "
              f"({min(ratio):.2f}-{max(ratio):.2f})")
    print(f"  a lab's own network: {network_cost(config):.2f} s to define and start; its dnsmasq holds "
          f"{statistics.median(dnsmasq) / 1024 if dnsmasq else 0:.1f} MiB")
    if rss:
        print(f"  qemu RSS per node once formed: median {statistics.median(rss)} MiB ({min(rss)}-{max(rss)})")


if __name__ == "__main__":
    main()
