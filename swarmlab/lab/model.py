"""Labs: the model, its journal and locks, finding a lab, `status`, `ls` and `down`.
`up` is in lab_up.py.

A lab is plain data: a name and its nodes (domain, volume, MAC, IP, DNS name). Before any
resource is made, the plan is written to a journal (<state_dir>/labs/<lab>/lab.json), so a
run killed at any point leaves only resources that the journal or libvirt's ownership
metadata names: a rerun of `up` finishes them and `down` removes them.
"""

from __future__ import annotations

import dataclasses
import fcntl
import ipaddress
import json
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from swarmlab.adapters.dns import canonical
from swarmlab.adapters.hypervisor import Hypervisor
from swarmlab.adapters.remote import Jump, SshTarget
from swarmlab.config import Config, HostSpec
from swarmlab.config_values import is_dns_label
from swarmlab.errors import NotFound, Refused, SwarmlabError
from swarmlab.waiting import poll_until, run_together

# progress(node, phase, detail)
NodeProgress = Callable[[str, str, str], None]
SSH_ANSWERS_WITHIN = 5.0  # seconds a node's sshd has to say hello before `status` calls it down


class LabError(SwarmlabError):
    pass


class LabNotFound(NotFound):
    def __init__(self, lab: str):
        super().__init__(f"lab {lab} does not exist: `swarmlab ls` lists the labs, `swarmlab up N --lab {lab}` makes it")


class NodeErrors(SwarmlabError):
    """Several nodes failed at once: one line per node."""

    def __init__(self, errors: list[BaseException]):
        self.errors = errors
        super().__init__(f"{len(errors)} nodes failed: " + "; ".join(str(e) for e in errors))
        self.exit_code = max(getattr(e, "exit_code", 1) for e in errors)


@dataclass
class Node:
    name: str  # the guest's hostname: swr1
    domain: str  # libvirt domain: <lab>-swr1
    volume: str
    mac: str
    ip: str
    fqdn: str  # swr1.<lab>.<zone>
    extra_volumes: list[str] = field(default_factory=list)  # overlays of a template's further disks
    host_key_source: str = ""  # "guest agent" (verified at first contact) or "first contact" (trusted)
    start: str = ""  # how it last came up in `up`: "wake" (the template's saved state) or "boot"


@dataclass
class Lab:
    name: str
    nodes: list[Node] = field(default_factory=list)
    managers: int | None = None  # as `up` was asked, for a rebuild without a snapshot
    labels: list[str] = field(default_factory=list)
    # A class lab's host and network of its own: {host, uri, network, cidr}; empty: the shared network.
    placement: dict = field(default_factory=dict)

    def node(self, name: str) -> Node | None:
        return next((n for n in self.nodes if n.name == name), None)

    def require_node(self, name: str) -> Node:
        node = self.node(name)
        if node is None:
            raise NotFound(f"lab {self.name} has no node {name} (nodes: {', '.join(n.name for n in self.nodes)})")
        return node


def fqdn(config: Config, lab: str, node: str) -> str:
    return canonical(f"{node}.{lab}.{config.zone}")


def lab_dir(config: Config, lab: str) -> Path:
    return config.state_dir / "labs" / lab


def known_hosts(config: Config, lab: str) -> Path:
    return lab_dir(config, lab) / "known_hosts"


# --- journal and locks ----------------------------------------------------------------------
def load_journal(config: Config, lab: str) -> Lab | None:
    try:
        data = json.loads((lab_dir(config, lab) / "lab.json").read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        raise LabError(f"{lab_dir(config, lab) / 'lab.json'} is corrupt: run `swarmlab down --lab {lab} --yes`") from None
    return Lab(data["name"], [Node(**n) for n in data["nodes"]], data.get("managers"), data.get("labels", []),
               data.get("placement", {}))


def scoped(config: Config, host: HostSpec, network: str, cidr: ipaddress.IPv4Network) -> Config:
    """The config of one lab on its own network on `host`: every command on the lab reads its
    network, addresses and libvirt URI from here, while pools and the registry stay the host's."""
    return dataclasses.replace(config, uri=host.uri, network=network, cidr=cidr, lab_host=host.name,
                               shared_network=config.network, shared_cidr=config.cidr, host_remote=not host.local,
                               host_jump=host.jump or "", host_jump_key=host.ssh_key)


def placement_of(config: Config) -> dict:
    if not config.lab_host:
        return {}
    return {"host": config.lab_host, "uri": config.uri, "network": config.network, "cidr": str(config.cidr)}


def lab_config(config: Config, lab: str) -> Config:
    """The config for commands on `lab`: scoped to its host and network when the journal places it."""
    if config.lab_host:
        return config  # scoped already
    try:
        placement = json.loads((lab_dir(config, lab) / "lab.json").read_text()).get("placement") or {}
    except (FileNotFoundError, ValueError):
        return config
    if not placement:
        return config  # on the host's shared network
    host = next((h for h in config.lab_hosts if h.name == placement["host"]), None)
    # A host taken out of swarmlab.toml still has its labs: reach them at the URI they were made on.
    return scoped(config, host or HostSpec(placement["host"], placement["uri"]), placement["network"],
                  ipaddress.IPv4Network(placement["cidr"]))


def save_journal(config: Config, lab: Lab) -> None:
    path = lab_dir(config, lab.name) / "lab.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(lab), indent=2) + "\n")
    tmp.replace(path)  # atomic, so a kill never leaves half a journal


@contextmanager
def _flock(path: Path, what: str, wait: float = 0) -> Iterator[None]:
    """An exclusive lock; waits up to `wait` seconds for another holder, then refuses."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        def take() -> bool:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False

        def busy() -> SwarmlabError:
            f.seek(0)
            holder = f.read().strip() or "?"
            return Refused(f"{what} is busy: another swarmlab command (pid {holder}) works on it; "
                           "wait for it to finish")
        poll_until(take, wait, 0.1, busy)
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield  # the kernel drops the lock when the process dies, even on SIGKILL


def lab_lock(config: Config, lab: str):
    """One command per lab at a time: a second one is refused at once."""
    return _flock(config.state_dir / "locks" / f"lab-{lab}.lock", f"lab {lab}")


def dns_lock(config: Config):
    """Host-wide, around each change of the zone: PowerDNS's sqlite3 backend takes one writer at
    a time and answered parallel PATCHes from parallel `up`s with 500."""
    return _flock(config.state_dir / "locks" / "dns.lock", "DNS updates", wait=60)


def address_lock(config: Config):
    """Host-wide, held only while addresses are chosen and reserved; other labs' commands wait
    for it (bounded) instead of being refused."""
    return _flock(config.state_dir / "locks" / "addresses.lock", "address allocation", wait=60)


# --- validation -----------------------------------------------------------------------------
def check_names(config: Config, lab: str, prefix: str) -> None:
    if not is_dns_label(lab) or len(lab) > 40:
        raise LabError(f"lab name {lab!r} is not a DNS label: use lowercase letters, digits and '-', "
                       "at most 40 characters (e.g. --lab group1)")
    if not is_dns_label(prefix) or len(prefix) > 20 or prefix[-1].isdigit():
        raise LabError(f"prefix {prefix!r} is not a DNS label that can take a number: use lowercase letters, "
                       "digits and '-', not ending in a digit (e.g. --prefix swr)")


def check_count(config: Config, count: int) -> None:
    if not 1 <= count <= config.max_nodes:
        raise LabError(f"node count {count} is out of range: use 1 to {config.max_nodes} "
                       "(raise [nodes] max in swarmlab.toml for more)")


# --- discovery ------------------------------------------------------------------------------
def owned_nodes(hv: Hypervisor, lab: str) -> list:
    return [d for d in hv.owned_domains() if d.owner.get("role") == "node" and d.owner.get("lab") == lab]


def find_lab(config: Config, hv: Hypervisor, lab: str) -> Lab | None:
    """The lab from its journal, completed by what libvirt's metadata says belongs to it."""
    journal = load_journal(config, lab)
    domains = owned_nodes(hv, lab)
    if journal is None and not domains:
        return None
    found = journal or Lab(lab)
    for d in domains:
        if not any(n.domain == d.name for n in found.nodes):
            o = d.owner
            found.nodes.append(Node(o.get("node", d.name), d.name, o.get("volume", f"{d.name}.qcow2"),
                                    o.get("mac", ""), o.get("ip", ""), fqdn(config, lab, o.get("node", d.name)),
                                    o.get("extra_volumes", "").split()))
    found.nodes.sort(key=lambda n: (len(n.name), n.name))
    return found


def require_lab(config: Config, hv: Hypervisor, lab: str) -> Lab:
    found = find_lab(config, hv, lab)
    if found is None:
        raise LabNotFound(lab)
    return found


def all_labs(config: Config, hv: Hypervisor) -> list[str]:
    names = {d.owner["lab"] for d in hv.owned_domains() if d.owner.get("role") == "node" and "lab" in d.owner}
    labs_root = config.state_dir / "labs"
    if labs_root.is_dir():
        names |= {p.name for p in labs_root.iterdir() if (p / "lab.json").exists()}
    return sorted(names)


def each_node(work: Callable[[Node], object], nodes: list[Node]) -> list:
    """Runs work per node at once (one shared libvirt connection: libvirt's is thread-safe).
    Returns the results in node order. After all have finished, raises the failure when one
    failed, or NodeErrors naming every failure when several did."""
    futures = run_together(work, nodes)
    errors = [f.exception() for f in futures if f.exception()]
    if len(errors) == 1 or any(not isinstance(e, SwarmlabError) for e in errors):
        raise next(e for e in errors if not isinstance(e, SwarmlabError)) if len(errors) > 1 else errors[0]
    if errors:
        raise NodeErrors(errors)
    return [f.result() for f in futures]


def jump(config: Config) -> Jump | None:
    """The hop to a lab host on another machine (its sshd), for a config scoped to a lab there."""
    if not config.host_remote:
        return None
    if not config.host_jump:
        raise LabError(f"host {config.lab_host} is on another machine and has no SSH way in to its nodes: "
                       f"set ssh = \"root@HOST\" in its [[hosts]] entry (or use a qemu+ssh:// URI)")
    return Jump.parse(config.host_jump, config.host_jump_key, config.state_dir / "known_hosts_lab_hosts")


def ssh_target(config: Config, lab: str, node: Node) -> SshTarget:
    return SshTarget(node.ip, config.ssh_user, config.ssh_key_path, known_hosts(config, lab), jump(config))


# --- ls -------------------------------------------------------------------------------------
def list_labs(config: Config) -> list[dict]:
    with Hypervisor(config.uri) as hv:
        out = []
        for name in all_labs(config, hv):
            found = find_lab(config, hv, name)
            states = [(hv.domain_state(n.domain) or None) for n in found.nodes]
            out.append({"lab": name, "host": found.placement.get("host", "local"),
                        "network": found.placement.get("network", config.network), "nodes": len(found.nodes),
                        "running": sum(1 for s in states if s and s.running),
                        "states": sorted({s.state if s else "missing" for s in states})})
        return out
