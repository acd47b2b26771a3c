#!/usr/bin/env python3
"""Benchmark: `swarmlab up 3`, woken and booted, against the article's sequence and the floors.

Prints figures; asserts nothing. Run as root with the lab host up and the template built (with
its wake-up state, as `template build` saves it):
    .venv/bin/python bench/bench_up.py [--nodes 3] [--runs 3] [--template NAME]

Each run measures, one after another on the same idle host (medians over the runs):
- boot floor: linked clones of the template (qcow2 overlays, as swarmlab makes them) started
  together, until each answers on port 22. Nothing else: no DNS, no host keys, no login.
- wake floor: the same clones woken from the template's saved state, as `up` wakes them (a
  copy of the wake image, the state loaded, a fresh identity, then the NIC), until each
  answers on port 22.
- swarmlab: `swarmlab up N --lab bench --no-snapshot` to N Ready managers, with its own phase
  times (`up --json`): SSH-ready is the last node's `ready`, formation the rest. Once woken
  (the default), once booted (`[nodes] wake = false`).
- article: the article's steps scripted serially with the tools a person types: `virt-clone`
  (a full copy) per node, `virsh start`, `virsh net-dhcp-leases` until every node has one, a
  DNS record per node, `ssh` to each node in turn, `docker swarm init`, then each manager
  join one after another, until `docker node ls` shows every node Ready. Cold-booted, as the
  article does it.
Everything the bench makes is removed afterwards. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from swarmlab import config as configuration
from swarmlab.host import hoststate  # noqa: E402
from swarmlab.adapters.dns import PowerDNS  # noqa: E402
from swarmlab.adapters.hypervisor import Hypervisor  # noqa: E402
from swarmlab.adapters.libvirt_xml import clone_disks, derive_clone_xml, random_mac  # noqa: E402
from swarmlab.host.template_wake import wake_image_of  # noqa: E402
from swarmlab.lab import wake  # noqa: E402
from swarmlab.lab.model import Node  # noqa: E402

SEED = [f"bench-seed{i}" for i in range(1, 10)]
FLOOR = [f"bench-floor{i}" for i in range(1, 10)]
WOKEN = [f"bench-wake{i}" for i in range(1, 10)]


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "swarmlab", *args], cwd=ROOT, capture_output=True, text=True,
                          env=env)


def virsh(config, *args: str, check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(["virsh", "-q", "-c", config.uri, *args], capture_output=True, text=True, check=check)


def remove_domains(config, names: list[str]) -> None:
    """Only the bench's own domains, by their bench- names."""
    for name in names:
        if virsh(config, "domstate", name).returncode == 0:
            virsh(config, "destroy", name)
            virsh(config, "undefine", name, "--remove-all-storage")


def answers_ssh(ip: str) -> bool:
    try:
        with socket.create_connection((ip, 22), timeout=1) as s:
            return s.recv(4).startswith(b"SSH")
    except OSError:
        return False


def wait_leases(hv, config, names: list[str]) -> dict[str, str]:
    macs = {hv.mac_of(name): name for name in names}
    while True:
        ips = {macs[m]: ip for m, ip in hv.dhcp_leases(config.network).items() if m in macs}
        if len(ips) == len(names):
            return ips
        time.sleep(0.5)


def seconds_to_ssh(hv, config, names: list[str], started: float) -> float:
    """Seconds from `started` until every node has a lease and answers on port 22."""
    ips = wait_leases(hv, config, names)
    while not all(answers_ssh(ip) for ip in ips.values()):
        time.sleep(0.5)
    return time.monotonic() - started


def bench_floor(config, nodes: int) -> float:
    """Linked clones started together, until every one answers on port 22."""
    hv = Hypervisor(config.uri)
    names = FLOOR[:nodes]
    template_xml = hv.domain_xml(config.template)
    disk = next(d for d in clone_disks(template_xml) if d.action == "overlay")
    try:
        for name in names:
            volume = f"{name}.qcow2"
            hv.create_overlay(config.node_pool, volume, hv.source_path(disk.source))
            hv.define_domain(derive_clone_xml(template_xml, name, random_mac(), config.node_pool, {disk.target: volume},
                                              {"role": "bench"}, hostname=name))
        started = time.monotonic()
        for name in names:
            hv.start(name)
        return seconds_to_ssh(hv, config, names, started)
    finally:
        hv.close()
        remove_domains(config, names)


def bench_wake_floor(config, nodes: int) -> float:
    """Clones woken together as `up` wakes them, until every one answers on port 22. The clock
    starts before their disks are copied (a linked clone's overlay is made in no time)."""
    from concurrent.futures import ThreadPoolExecutor
    hv = Hypervisor(config.uri)
    names = WOKEN[:nodes]
    template_xml = hv.domain_xml(config.template)
    image = wake_image_of(config, hv, template_xml, hv.domain_state(config.template).owner)
    if image is None:
        sys.exit(f"template {config.template} has no wake-up state: run `swarmlab template build`")
    disk = next(d for d in clone_disks(template_xml) if d.action == "overlay")
    try:
        started = time.monotonic()
        interfaces = {}
        for name in names:  # as `up` lays nodes out: one after another
            node = Node(name, name, f"{name}.qcow2", random_mac(), "", "")
            xml = derive_clone_xml(template_xml, name, node.mac, config.node_pool, {disk.target: node.volume},
                                   {"role": "bench"}, hostname=name, tb_cache_mib=config.tb_cache_mib)
            interfaces[name] = (node, wake.lay_out(config, hv, node, xml, image))
        with ThreadPoolExecutor(len(names)) as pool:
            list(pool.map(lambda pair: wake.wake(hv, *pair), interfaces.values()))
        return seconds_to_ssh(hv, config, names, started)
    finally:
        hv.close()
        remove_domains(config, names)


def booting_config(path: str) -> dict:
    """The environment of a `swarmlab` whose config says `[nodes] wake = false`."""
    import tomlkit
    doc = tomlkit.parse(Path(path).read_text())
    doc.setdefault("nodes", tomlkit.table())["wake"] = False
    copy = Path(tempfile.mkdtemp()) / "swarmlab.toml"
    copy.write_text(tomlkit.dumps(doc))
    return {**os.environ, "SWARMLAB_CONFIG": str(copy)}


def bench_swarmlab(config, nodes: int, env: dict | None = None) -> dict[str, float]:
    started = time.monotonic()
    proc = cli("up", str(nodes), "--lab", "bench", "--no-snapshot", "--json", "--template", config.template, env=env)
    total = time.monotonic() - started
    cli("down", "--lab", "bench", "--yes", env=env)
    if proc.returncode != 0:
        sys.exit(f"swarmlab up failed: {proc.stderr.strip().splitlines()[-1]}")
    result = json.loads(proc.stdout)["nodes"]
    if any(n["start"] != ("boot" if env else "wake") for n in result):
        sys.exit(f"swarmlab up did not {'boot' if env else 'wake'} every node: {[n['start'] for n in result]}")
    phases = [n["phases"] for n in result]
    ready = max(p["ready"] for p in phases)
    return {"total": total, "ssh": ready, "formation": max(p["swarm"] for p in phases) - ready}


def ssh(config, known_hosts: Path, ip: str, command: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ssh", "-i", str(config.ssh_key_path), "-o", "BatchMode=yes", "-o",
                           f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=accept-new",
                           "-o", "ConnectTimeout=3", f"{config.ssh_user}@{ip}", command],
                          capture_output=True, text=True, check=check)


def bench_article(config, nodes: int) -> dict[str, float]:
    hv = Hypervisor(config.uri)
    pool_dir = Path(ET.fromstring(hv.pool(config.node_pool).XMLDesc()).findtext("target/path"))
    names = SEED[:nodes]
    marks: dict[str, float] = {}
    client = PowerDNS.from_config(config)
    records: dict[str, str] = {}
    started = time.monotonic()
    try:
        for name in names:
            subprocess.run(["virt-clone", "--connect", config.uri, "-o", config.template, "-n", name,
                            "-f", str(pool_dir / f"{name}.qcow2")], check=True, capture_output=True)
        for name in names:
            virsh(config, "start", name, check=True)
        ips = wait_leases(hv, config, names)
        records = {f"{name}.seed.{config.zone}": ip for name, ip in ips.items()}
        for fqdn, ip in records.items():  # pdnsutil add-record, one per node, then rectify
            client.replace_a(config.zone, {fqdn: ip}, config.ttl)
        client.rectify(config.zone)
        known_hosts = Path(tempfile.mkdtemp()) / "known_hosts"
        for name in names:  # ssh to each node in turn, retrying until sshd answers
            while ssh(config, known_hosts, ips[name], "hostname", check=False).returncode != 0:
                time.sleep(2)
        marks["ssh"] = time.monotonic() - started
        first = ips[names[0]]
        while ssh(config, known_hosts, first, "docker info >/dev/null", check=False).returncode != 0:
            time.sleep(1)  # a person would wait for the engine too
        ssh(config, known_hosts, first, f"docker swarm init --advertise-addr {first}")
        token = ssh(config, known_hosts, first, "docker swarm join-token -q manager").stdout.strip()
        for name in names[1:]:
            while ssh(config, known_hosts, ips[name], "docker info >/dev/null", check=False).returncode != 0:
                time.sleep(1)
            ssh(config, known_hosts, ips[name], f"docker swarm join --token {token} {first}:2377")
        while True:
            listed = ssh(config, known_hosts, first, "docker node ls --format '{{.Status}}'").stdout.split()
            if len(listed) == nodes and all(s == "Ready" for s in listed):
                break
            time.sleep(1)
        marks["total"] = time.monotonic() - started
        marks["formation"] = marks["total"] - marks["ssh"]
        return marks
    finally:
        if records:
            client.delete_a(config.zone, list(records))
        hv.close()
        remove_domains(config, names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--template", help="template domain (default: [libvirt] template), e.g. one built "
                                           "with `template build --suite trixie --name ...`")
    args = parser.parse_args()
    config = configuration.load()
    if args.template:
        config = dataclasses.replace(config, template=args.template)
    if not Path(config.source).is_file():
        sys.exit("the bench needs a swarmlab.toml (it runs `up` once with `[nodes] wake = false`)")
    booting = booting_config(config.source)
    hoststate.enter_host(config)
    cli("down", "--lab", "bench", "--yes")
    remove_domains(config, SEED + FLOOR + WOKEN)
    kinds = ("floor", "wake_floor", "swarmlab", "swarmlab_boot", "article")
    runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    try:
        for i in range(args.runs):
            runs["floor"].append({"total": bench_floor(config, args.nodes)})
            runs["wake_floor"].append({"total": bench_wake_floor(config, args.nodes)})
            runs["swarmlab"].append(bench_swarmlab(config, args.nodes))
            runs["swarmlab_boot"].append(bench_swarmlab(config, args.nodes, booting))
            runs["article"].append(bench_article(config, args.nodes))
            print(f"run {i + 1}: " + ", ".join(f"{kind} {runs[kind][-1]['total']:.1f} s" for kind in kinds), flush=True)
    finally:
        cli("down", "--lab", "bench", "--yes")
        remove_domains(config, SEED + FLOOR + WOKEN)

    def median(kind: str, key: str = "total") -> float:
        return statistics.median(r[key] for r in runs[kind])

    def spread(kind: str, key: str = "total") -> str:
        values = [r[key] for r in runs[kind]]
        return f"{min(values):.1f}-{max(values):.1f}"

    def ratios(a: str, b: str, key: str = "total") -> list[float]:
        return [x[key] / y[key] for x, y in zip(runs[a], runs[b])]

    def ratio(a: str, b: str, key: str = "total") -> str:
        """Median of the ratios of runs side by side, with their range."""
        values = ratios(a, b, key)
        return f"{statistics.median(values):5.2f}  ({min(values):.2f}-{max(values):.2f})"

    print(f"template {config.template}, nodes: {args.nodes} ({config.vcpus} vCPU, {config.memory_mib} MiB each), "
          f"medians of {args.runs} runs (range in brackets)")
    print(f"boot floor (clones to port 22):       {median('floor'):6.1f} s ({spread('floor')})")
    print(f"wake floor (woken clones to port 22): {median('wake_floor'):6.1f} s ({spread('wake_floor')})")
    for kind, how in (("swarmlab", "woken"), ("swarmlab_boot", "booted")):
        print(f"swarmlab up, {how:<6}, Ready managers: {median(kind):6.1f} s ({spread(kind)})   "
              f"SSH-ready {median(kind, 'ssh'):.1f} s, formation {median(kind, 'formation'):.1f} s")
    print(f"article's sequence, serial:           {median('article'):6.1f} s ({spread('article')})   "
          f"SSH-ready {median('article', 'ssh'):.1f} s, formation {median('article', 'formation'):.1f} s")
    print(f"wake floor / boot floor:              {ratio('wake_floor', 'floor')}   target <= 0.3")
    print(f"swarmlab (woken) / article:           {ratio('swarmlab', 'article')}   target <= 0.5")
    print(f"swarmlab (woken) / swarmlab (booted): {ratio('swarmlab', 'swarmlab_boot')}")
    print(json.dumps({"nodes": args.nodes, "runs": args.runs,
                      **{f"{kind}_s": round(median(kind), 1) for kind in kinds},
                      "wake_floor_ratio": round(statistics.median(ratios("wake_floor", "floor")), 2),
                      "up_article_ratio": round(statistics.median(ratios("swarmlab", "article")), 2),
                      "up_wake_boot_ratio": round(statistics.median(ratios("swarmlab", "swarmlab_boot")), 2)}))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
