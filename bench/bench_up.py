#!/usr/bin/env python3
"""Benchmark: `swarmlab up 3` against the seed's manual sequence, on the current lab host.

Prints figures; asserts nothing. Run as root with the lab host up and the template built:
    .venv/bin/python bench/bench_up.py [--nodes 3]

- swarmlab: `swarmlab up N --lab bench` from template-ready to every node SSH-ready.
- seed: the article's steps, one after another: `virt-clone` (a full copy) per node, `virsh
  start`, poll `net-dhcp-leases` until every node has one, one DNS record per node, then ssh
  to each node in turn.
Both runs are torn down afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from swarmlab.dns import PowerDNS
from swarmlab import config as configuration, lab as labs, labhost  # noqa: E402
from swarmlab.hypervisor import Hypervisor  # noqa: E402


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "swarmlab", *args], cwd=ROOT, capture_output=True, text=True)


def allocated_mib(path: str) -> float:
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", path],
                                     capture_output=True, text=True, check=True).stdout)
    return info["actual-size"] / 2**20


def bench_swarmlab(config, nodes: int) -> tuple[float, list[float]]:
    started = time.monotonic()
    proc = cli("up", str(nodes), "--lab", "bench", "--no-swarm", "--json")
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"swarmlab up failed: {proc.stderr.strip().splitlines()[-1]}")
    hv = Hypervisor(config.uri)
    sizes = [allocated_mib(hv.volume_path(config.node_pool, n.volume))
             for n in labs.load_journal(config, "bench").nodes]
    hv.close()
    return elapsed, sizes


SEED = [f"bench-seed{i}" for i in range(1, 10)]


def remove_seed_domains(config) -> None:
    """The seed run's virt-clone copies: the bench made them, the bench removes them."""
    for name in SEED:
        if subprocess.run(["virsh", "-q", "-c", config.uri, "domstate", name], capture_output=True).returncode == 0:
            subprocess.run(["virsh", "-q", "-c", config.uri, "destroy", name], capture_output=True)
            subprocess.run(["virsh", "-q", "-c", config.uri, "undefine", name, "--remove-all-storage"],
                           capture_output=True)


def bench_seed(config, nodes: int) -> dict[str, float]:
    """The article's procedure, scripted serially with the tools a person types:
    virt-clone, virsh start, virsh net-dhcp-leases, a DNS record per node, ssh."""
    hv = Hypervisor(config.uri)
    pool_dir = Path(ET.fromstring(hv.pool(config.node_pool).XMLDesc()).findtext("target/path"))
    names = SEED[:nodes]
    marks: dict[str, float] = {}
    started = time.monotonic()
    for name in names:
        subprocess.run(["virt-clone", "--connect", config.uri, "-o", config.template, "-n", name,
                        "-f", str(pool_dir / f"{name}.qcow2")], check=True, capture_output=True)
    marks["clone"] = time.monotonic() - started
    for name in names:
        subprocess.run(["virsh", "-q", "-c", config.uri, "start", name], check=True, capture_output=True)
    macs = {hv.mac_of(name): name for name in names}
    ips: dict[str, str] = {}
    while len(ips) < nodes:  # `virsh net-dhcp-leases` until every node shows up
        ips = {macs[m]: ip for m, ip in hv.dhcp_leases(config.network).items() if m in macs}
        time.sleep(1)
    marks["leases"] = time.monotonic() - started
    client = PowerDNS.from_config(config)
    records = {f"{name}.seed.{config.zone}": ip for name, ip in ips.items()}
    for name, ip in records.items():  # pdnsutil add-record, one per node, then rectify
        client.replace_a(config.zone, {name: ip}, config.ttl)
    client.rectify(config.zone)
    known_hosts = Path(tempfile.mkdtemp()) / "known_hosts"
    for name in names:  # ssh to each node in turn, retrying until sshd answers
        while subprocess.run(["ssh", "-i", str(config.ssh_key_path), "-o", "BatchMode=yes", "-o",
                              f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=accept-new",
                              "-o", "ConnectTimeout=3", f"{config.ssh_user}@{ips[name]}", "hostname"],
                             capture_output=True).returncode != 0:
            time.sleep(2)
    marks["ssh"] = time.monotonic() - started
    client.delete_a(config.zone, list(records))
    hv.close()
    return marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    args = parser.parse_args()
    config = configuration.load()
    labhost.enter_host(config)
    cli("down", "--lab", "bench", "--yes")
    remove_seed_domains(config)
    try:
        up_seconds, sizes = bench_swarmlab(config, args.nodes)
        cli("down", "--lab", "bench", "--yes")  # the same idle CPU for both runs
        seed = bench_seed(config, args.nodes)
    finally:
        cli("down", "--lab", "bench", "--yes")
        remove_seed_domains(config)
    print(f"nodes:                          {args.nodes} ({config.vcpus} vCPU, {config.memory_mib} MiB each)")
    print(f"swarmlab up (to all SSH-ready): {up_seconds:7.1f} s")
    print(f"seed sequence, serial:          {seed['ssh']:7.1f} s "
          f"(clones {seed['clone']:.1f} s, leases at {seed['leases']:.1f} s)")
    print(f"ratio swarmlab / seed:          {up_seconds / seed['ssh']:7.2f}  (target <= 0.40)")
    print(f"disk per node after boot:       {max(sizes):7.1f} MiB max, {sum(sizes) / len(sizes):.1f} MiB mean "
          "(target <= 100 MiB)")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
