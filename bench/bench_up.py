#!/usr/bin/env python3
"""Benchmark: `swarmlab up 3`, woken and booted, against the article's sequence and the floors.

Prints figures; asserts nothing. Run as root with the lab host up and the template built (with
its wake-up state, as `template build` saves it):
    .venv/bin/python bench/bench_up.py [--nodes 3] [--runs 3] [--template NAME] [--class-labs 2]
                                       [--only floor,wake_floor,...]

Each run measures, one after another on the same idle host (medians over the runs):
- boot floor: linked clones of the template (qcow2 overlays, as swarmlab makes them, with
  DHCP reservations as `up` gives them) started together, until each answers on port 22.
  Nothing else: no DNS, no host keys, no login.
- wake floor: the same clones woken from the template's saved state, as `up` wakes them (a
  copy of the wake image, the state loaded, a fresh identity, then the NIC), until each
  answers on port 22. Both print each phase of a node: for a boot, its start, lease and sshd;
  for a wake, the wait for its disk's copy (made one after another), the state's load, the
  guest agent, the clock, the identity, the NIC, the saved state dropped, the lease and sshd.
- swarmlab: `swarmlab up N --lab bench --no-snapshot` to N Ready managers, with its own phase
  times (`up --json`): SSH-ready is the last node's `ready`, formation the rest. Once woken
  (the default), once booted (`[nodes] wake = false`).
- article: the article's steps scripted serially with the tools a person types: `virt-clone`
  (a full copy) per node, `virsh start`, `virsh net-dhcp-leases` until every node has one, a
  DNS record per node, `ssh` to each node in turn, `docker swarm init`, then each manager
  join one after another, until `docker node ls` shows every node Ready. Cold-booted, as the
  article does it.
- class: `class up --students 2 --nodes N --no-snapshot` to formed swarms, woken and booted.
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
from swarmlab.core.addresses import assign_addresses  # noqa: E402
from swarmlab.host.template_wake import wake_image_of  # noqa: E402
from swarmlab.lab import wake  # noqa: E402
from swarmlab.lab.model import Node  # noqa: E402

KINDS = ("floor", "wake_floor", "swarmlab", "swarmlab_boot", "article", "class", "class_boot")
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


def reserve(hv, config, names_macs: list[tuple[str, str]]) -> None:
    """Each floor clone gets a DHCP reservation, as `up` gives its nodes: without one, dnsmasq
    pings an address for 3 s before it offers it, one client at a time."""
    ips = assign_addresses(config, names_macs, hv.dhcp_reservations(config.network), hv.dhcp_leases(config.network))
    for (name, mac), ip in zip(names_macs, ips):
        hv.add_reservation(config.network, mac, ip, name)


def unreserve(config, names: list[str]) -> None:
    """The bench's own reservations, by their bench- names (a killed run's too)."""
    xml = ET.fromstring(virsh(config, "net-dumpxml", config.network, check=True).stdout)
    with Hypervisor(config.uri) as hv:
        for host in xml.findall("ip/dhcp/host"):
            if host.get("name") in names:
                hv.remove_reservation(config.network, host.get("mac"))


def node_marks(hv, config, names: list[str], started: float, marks: dict[str, dict[str, float]]) -> float:
    """Records, per node, when its lease appeared and when port 22 answered (seconds from
    `started`); returns the seconds until the last node answered."""
    macs = {hv.mac_of(name): name for name in names}
    ips: dict[str, str] = {}
    while len(ips) < len(names) or any("ssh" not in marks[n] for n in names):
        for mac, ip in hv.dhcp_leases(config.network).items():
            if mac in macs and macs[mac] not in ips:
                ips[macs[mac]] = ip
                marks[macs[mac]]["lease"] = time.monotonic() - started
        for name, ip in ips.items():
            if "ssh" not in marks[name] and answers_ssh(ip):
                marks[name]["ssh"] = time.monotonic() - started
        time.sleep(0.2)
    return max(m["ssh"] for m in marks.values())


def phase_durations(marks: dict[str, dict[str, float]], order: list[str]) -> dict[str, float]:
    """Each phase's length, the mean over the nodes: marks are ends, seconds from the start."""
    out = {}
    for i, phase in enumerate(order):
        out[phase] = statistics.mean(m[phase] - (m[order[i - 1]] if i else 0) for m in marks.values())
    return out


BOOT_PHASES = ["start", "lease", "ssh"]
WAKE_PHASES = ["copy", "restore", "agent", "clock", "identity", "nic", "forget", "lease", "ssh"]


def bench_floor(config, nodes: int) -> dict[str, float]:
    """Linked clones started together, until every one answers on port 22."""
    hv = Hypervisor(config.uri)
    names = FLOOR[:nodes]
    template_xml = hv.domain_xml(config.template)
    disk = next(d for d in clone_disks(template_xml) if d.action == "overlay")
    marks: dict[str, dict[str, float]] = {name: {} for name in names}
    macs = [(name, random_mac()) for name in names]
    try:
        reserve(hv, config, macs)
        for name, mac in macs:
            volume = f"{name}.qcow2"
            hv.create_overlay(config.node_pool, volume, hv.source_path(disk.source))
            hv.define_domain(derive_clone_xml(template_xml, name, mac, config.node_pool, {disk.target: volume},
                                              {"role": "bench"}, hostname=name))
        started = time.monotonic()
        for name in names:
            hv.start(name)
            marks[name]["start"] = time.monotonic() - started
        total = node_marks(hv, config, names, started, marks)
        return {"total": total, **phase_durations(marks, BOOT_PHASES)}
    finally:
        hv.close()
        remove_domains(config, names)
        unreserve(config, names)


def bench_wake_floor(config, nodes: int) -> dict[str, float]:
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
    marks: dict[str, dict[str, float]] = {name: {} for name in names}
    macs = [(name, random_mac()) for name in names]
    try:
        reserve(hv, config, macs)
        started = time.monotonic()
        interfaces = {}
        for name, mac in macs:  # as `up` lays nodes out: one after another
            node = Node(name, name, f"{name}.qcow2", mac, "", "")
            xml = derive_clone_xml(template_xml, name, node.mac, config.node_pool, {disk.target: node.volume},
                                   {"role": "bench"}, hostname=name, tb_cache_mib=config.tb_cache_mib)
            interfaces[name] = (node, wake.lay_out(config, hv, node, xml, image))
            marks[name]["copy"] = time.monotonic() - started

        def wake_one(name: str) -> None:
            node, interface = interfaces[name]
            wake.wake(hv, node, interface, mark=lambda phase: marks[name].__setitem__(phase, time.monotonic() - started))
        with ThreadPoolExecutor(len(names)) as pool:
            list(pool.map(wake_one, names))
        total = node_marks(hv, config, names, started, marks)
        return {"total": total, **phase_durations(marks, WAKE_PHASES)}
    finally:
        hv.close()
        remove_domains(config, names)
        unreserve(config, names)


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


def bench_class(labs: int, nodes: int, env: dict | None = None) -> dict[str, float]:
    """`class up` of `labs` labs of `nodes` nodes each, to formed swarms, woken or booted."""
    started = time.monotonic()
    proc = cli("class", "up", "--students", str(labs), "--nodes", str(nodes), "--no-snapshot", env=env)
    total = time.monotonic() - started
    down = cli("class", "down", "--yes", env=env)
    if proc.returncode != 0:
        sys.exit(f"swarmlab class up failed: {proc.stderr.strip().splitlines()[-1:]}")
    if down.returncode != 0:  # a lab left behind would slow every later measurement
        sys.exit(f"swarmlab class down failed: {(down.stdout + down.stderr).strip().splitlines()[-3:]}")
    return {"total": total}


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
    parser.add_argument("--class-labs", type=int, default=2, help="labs in the measured `class up` (default 2)")
    parser.add_argument("--only", default=",".join(KINDS),
                        help=f"measure only these, comma-separated (default: all of {','.join(KINDS)})")
    args = parser.parse_args()
    chosen = [k for k in KINDS if k in args.only.split(",")]
    config = configuration.load()
    if args.template:
        config = dataclasses.replace(config, template=args.template)
    if not Path(config.source).is_file():
        sys.exit("the bench needs a swarmlab.toml (it runs `up` once with `[nodes] wake = false`)")
    booting = booting_config(config.source)
    hoststate.enter_host(config)
    if {"class", "class_boot"} & set(chosen) and cli("class", "status").returncode != 3:
        sys.exit("a class exists already: `swarmlab class down --yes` first (the bench makes its own)")
    cli("down", "--lab", "bench", "--yes")
    remove_domains(config, SEED + FLOOR + WOKEN)
    unreserve(config, FLOOR + WOKEN)
    runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in chosen}
    try:
        for i in range(args.runs):
            measures = {"floor": lambda: bench_floor(config, args.nodes),
                        "wake_floor": lambda: bench_wake_floor(config, args.nodes),
                        "swarmlab": lambda: bench_swarmlab(config, args.nodes),
                        "swarmlab_boot": lambda: bench_swarmlab(config, args.nodes, booting),
                        "article": lambda: bench_article(config, args.nodes),
                        "class": lambda: bench_class(args.class_labs, args.nodes),
                        "class_boot": lambda: bench_class(args.class_labs, args.nodes, booting)}
            for kind in chosen:
                runs[kind].append(measures[kind]())
            print(f"run {i + 1}: " + ", ".join(f"{kind} {runs[kind][-1]['total']:.1f} s" for kind in chosen), flush=True)
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
    labels = {"floor": "boot floor (clones to port 22)", "wake_floor": "wake floor (woken clones to port 22)",
              "swarmlab": "swarmlab up, woken, Ready managers", "swarmlab_boot": "swarmlab up, booted, Ready managers",
              "article": "article's sequence, serial", "class": "class up, woken, formed labs",
              "class_boot": "class up, booted, formed labs"}
    for kind in chosen:
        line = f"{labels[kind] + ':':<38}{median(kind):6.1f} s ({spread(kind)})"
        if kind in ("floor", "wake_floor"):
            phases = BOOT_PHASES if kind == "floor" else WAKE_PHASES
            line += "\n  a node's phases: " + ", ".join(f"{p} {median(kind, p):.1f} s" for p in phases)
        elif kind in ("swarmlab", "swarmlab_boot", "article"):
            line += f"   SSH-ready {median(kind, 'ssh'):.1f} s, formation {median(kind, 'formation'):.1f} s"
        print(line)
    targets = {"wake_floor_ratio": ("wake_floor", "floor", "wake floor / boot floor", "<= 0.3"),
               "up_article_ratio": ("swarmlab", "article", "swarmlab (woken) / article", "<= 0.5"),
               "up_wake_boot_ratio": ("swarmlab", "swarmlab_boot", "swarmlab (woken) / swarmlab (booted)", ""),
               "class_wake_boot_ratio": ("class", "class_boot", "class up (woken) / class up (booted)", "<= 0.5")}
    summary = {"nodes": args.nodes, "runs": args.runs, **{f"{kind}_s": round(median(kind), 1) for kind in chosen}}
    for key, (a, b, label, target) in targets.items():
        if a in runs and b in runs:
            print(f"{label + ':':<38}{ratio(a, b)}   {'target ' + target if target else ''}")
            summary[key] = round(statistics.median(ratios(a, b)), 2)
    print(json.dumps(summary))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
