"""Labs: `up N`, `status`, `down`, `ls`. Orchestrates hypervisor, dns and remote.

A lab is plain data: a name and its nodes (domain, volume, MAC, IP, DNS name). Before any
resource is made, the plan is written to a journal (<state_dir>/labs/<lab>/lab.json), so a
run killed at any point leaves only resources that the journal or libvirt's ownership
metadata names: a rerun of `up` finishes them and `down` removes them.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import ipaddress
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import dns.message
import paramiko
import dns.query
import dns.rdatatype

from .command import Command
from .config import Config, HostSpec, is_dns_label
from .dns import PowerDNS, DnsError, canonical
from .errors import NotFound, Refused, SwarmlabError
from .hypervisor import Hypervisor
from .libvirt_xml import clone_disks, derive_clone_xml, network_xml, sets_hostname_at_boot
from .remote import HostKeyMismatch, Jump, SshTarget, port_open, record_host_key, run, wait_for_ssh
from .waiting import poll_until, run_together

PHASES = ("clone", "boot", "lease", "dns", "ssh", "ready", "engine", "images", "init", "join", "swarm")
MIN_FREE_PER_NODE = 512 << 20  # an overlay is ~10 MB after boot; leave room for images and logs

# progress(node, phase, detail)
NodeProgress = Callable[[str, str, str], None]


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


def preflight(config: Config, hv: Hypervisor, new_nodes: int) -> str:
    """Everything `up` needs, checked before any VM exists. Returns the template's disk path."""
    template = hv.domain_state(config.template)
    if template is None:
        raise NotFound(f"template {config.template} not found: run `swarmlab template build` "
                       "or set [libvirt] template")
    if template.running:
        raise Refused(f"template {config.template} is {template.state}: shut it down first "
                      f"(`virsh shutdown {config.template}`); clones need an unchanging backing disk")
    disk = hv.disk_path(config.template)
    if disk is None:
        raise NotFound(f"the disk of template {config.template} is missing: run `swarmlab template build`")
    net = hv.network_state(config.network)
    if not net.active:
        raise LabError(f"network {config.network} is {'inactive' if net.exists else 'missing'}: "
                       "run `swarmlab host up`")
    if not net.dhcp_ranges:
        raise LabError(f"network {config.network} has no DHCP range: nodes could not get addresses")
    try:
        client = PowerDNS.from_config(config)
        if not client.zone_exists(config.zone):
            raise LabError(f"zone {config.zone} is missing in PowerDNS: run `swarmlab host up`")
    except DnsError as e:
        raise LabError(f"{e} (checked before creating any VM)") from None
    if new_nodes:
        pool_dir, free = hv.pool_space(config.node_pool)  # as its host sees it, on this machine or another
        if free < new_nodes * MIN_FREE_PER_NODE:
            raise LabError(f"not enough free disk in {pool_dir} on {config.lab_host or 'this host'}: {free >> 20} MiB free, "
                           f"{new_nodes * MIN_FREE_PER_NODE >> 20} MiB needed for {new_nodes} overlays")
    return disk


def _static_range(config: Config) -> list[str]:
    """Reserved addresses come from below the DHCP range, so they never meet a dynamic lease."""
    start = ipaddress.IPv4Address(str(config.gateway)) + 9
    end = ipaddress.IPv4Address(str(config.dhcp_range[0]))
    return [str(ip) for ip in config.cidr.hosts() if start <= ip < end]


def stable_mac(taken: set[str], *identity: str) -> str:
    """The same MAC for the same network/lab/node every time. dnsmasq keeps a lease for an
    hour after its VM is gone and will not hand that address to another MAC; a recreated
    node with its old MAC gets its old address back (and a class sees the same IPs)."""
    for attempt in range(1000):
        digest = hashlib.sha256("/".join([*identity, str(attempt)]).encode()).digest()
        mac = "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])
        if mac not in taken:
            return mac
    raise LabError("no free MAC address found")  # 1000 collisions in 2^24: not in practice


def assign_addresses(config: Config, nodes: list[tuple[str, str]], reserved: dict[str, str],
                     leases: dict[str, str]) -> list[str]:
    """An IP per (name, mac): the one a lingering lease of that MAC holds if it is free,
    else the lowest address that is neither reserved nor leased to another MAC."""
    static = _static_range(config)
    busy = set(reserved.values()) | set(leases.values())
    out = []
    for _name, mac in nodes:
        ip = leases.get(mac)
        if ip not in static or ip in reserved.values() or ip in out:
            ip = next((a for a in static if a not in busy and a not in out), None)
        if ip is None:
            raise LabError(f"network {config.network} has no address left for reservations "
                           f"({len(static)} in {static[0]}-{static[-1]}, all reserved or leased)")
        out.append(ip)
    return out


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


# --- up -------------------------------------------------------------------------------------
def zone_served_at(config: Config, address: str) -> bool:
    """Whether the zone's SOA is answered at address:[host] dns_port (where lab hosts on other
    machines forward the zone)."""
    try:
        reply = dns.query.udp(dns.message.make_query(config.zone, "SOA"), address, port=config.dns_port, timeout=3)
    except Exception:  # timeouts and socket errors
        return False
    return any(rrset.rdtype == dns.rdatatype.SOA for rrset in reply.answer)


def dns_answers(config: Config, name: str) -> set[str]:
    host, port = config.dns_server
    try:
        reply = dns.query.udp(dns.message.make_query(name, "A"), host, port=port, timeout=3)
    except Exception:  # timeouts and socket errors: treated as "not yet"
        return set()
    return {rr.address for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A for rr in rrset}


def _volumes(node: Node, template_xml: str) -> dict[str, str]:
    """target -> overlay volume: the first writable disk is node.volume, others get their own."""
    targets = [d.target for d in clone_disks(template_xml) if d.action == "overlay"]
    if len(node.extra_volumes) != len(targets) - 1:
        node.extra_volumes = [f"{node.domain}-{t}.qcow2" for t in targets[1:]]
    return dict(zip(targets, [node.volume, *node.extra_volumes]))


def _create_node(config: Config, hv: Hypervisor, lab: str, node: Node, template_xml: str) -> None:
    """Idempotent: each step checks what a killed earlier run may already have done."""
    state = hv.domain_state(node.domain)
    volumes = _volumes(node, template_xml)
    backing = {d.target: hv.source_path(d.source) for d in clone_disks(template_xml)}
    for target, volume in volumes.items() if state is None or not state.running else ():
        try:  # also under a defined, stopped domain whose disk went (a wiped pool)
            hv.volume_path(config.node_pool, volume)
        except NotFound:
            if backing[target] is None:
                raise NotFound(f"disk {target} of template {config.template} is missing") from None
            hv.create_overlay(config.node_pool, volume, backing[target])
    if state is None:
        owner = {"role": "node", "lab": lab, "node": node.name, "volume": node.volume, "mac": node.mac,
                 "ip": node.ip, "template": config.template}
        if node.extra_volumes:
            owner["extra_volumes"] = " ".join(node.extra_volumes)
        hv.define_domain(derive_clone_xml(template_xml, node.domain, node.mac, config.node_pool, volumes,
                                          owner, hostname=node.name,
                                          network=config.network if config.lab_host else None,
                                          tb_cache_mib=config.tb_cache_mib))
    if hv.network_state(config.network).owner is not None:
        # dnsmasq matches host entries by name too: the domain name is unique on the host.
        hv.add_reservation(config.network, node.mac, node.ip, node.domain)


def _wait_lease(config: Config, hv: Hypervisor, node: Node) -> str:
    def lease() -> str | None:
        ip = hv.dhcp_leases(config.network).get(node.mac)
        if not ip and not hv.domain_state(node.domain).running:
            raise LabError(f"{node.name} ({node.domain}) stopped while booting: see `virsh console {node.domain}`")
        return ip
    return poll_until(lease, config.boot_timeout, 1, lambda: LabError(
        f"{node.name} got no DHCP lease within {config.boot_timeout} s (MAC {node.mac}, network "
        f"{config.network}): check `virsh console {node.domain}` and `virsh net-dhcp-leases {config.network}`"))


SET_HOSTNAME = (
    'hostnamectl set-hostname "$1" 2>/dev/null || { echo "$1" > /etc/hostname && hostname "$1"; }; '
    'sed -i "s/^127\\.0\\.1\\.1[[:space:]].*/127.0.1.1 $1/" /etc/hosts; '
    # the engine reads the hostname once, at start, and the swarm knows a node by it
    'systemctl try-restart docker 2>/dev/null || true')


def check_planned_domains(hv: Hypervisor, lab: str, nodes: list[Node]) -> None:
    """Refuses before anything is written when a planned domain name is taken by a domain that
    is not this lab's."""
    for node in nodes:
        state = hv.domain_state(node.domain)
        if state is not None and (state.owner is None or state.owner.get("lab") != lab):
            whose = "was not created by swarmlab" if state.owner is None else \
                f"belongs to lab {state.owner.get('lab', '?')}"
            raise Refused(f"domain {node.domain} already exists and {whose}: rename or remove it, "
                          f"or choose another --lab than {lab}")


def up(config: Config, count: int, lab: str, prefix: str, progress: NodeProgress = lambda *_: None,
       validate: Callable[[list[str]], None] = lambda _names: None,
       connections: dict | None = None, on_ready: Callable[[Lab, Node, object], None] | None = None,
       on_failed: Callable[[Lab, Node], None] | None = None) -> Lab:
    """Brings the lab to `count` running, SSH-ready nodes. `validate(node names)` runs after
    planning and before anything is created; SSH connections are kept in `connections` when
    given (the caller closes them), so that later steps reuse them. `on_ready(lab, node,
    connection)` runs in the node's own thread as soon as that node is ready (with
    `connections` only), so that work on it need not wait for the slowest node;
    `on_failed(lab, node)` when the node does not come up, so that nobody waits for it."""
    check_names(config, lab, prefix)
    check_count(config, count)
    config = lab_config(config, lab)
    with Hypervisor(config.uri) as hv, lab_lock(config, lab):
        existing = find_lab(config, hv, lab)
        have = existing.nodes if existing else []
        if len(have) > count:
            raise Refused(f"lab {lab} has {len(have)} nodes; `up {count}` would have to remove some: "
                          f"run `swarmlab down --lab {lab}` first, or `up {len(have)}` or more")
        if have and any(not n.name.startswith(prefix) for n in have):
            raise Refused(f"lab {lab} already uses prefix {have[0].name.rstrip('0123456789')}; "
                          "a lab has one prefix")
        if config.lab_host:  # a class lab's own network, before preflight checks it
            ensure_lab_network(config, hv, existing or Lab(lab, placement=placement_of(config)))
        preflight(config, hv, count - len(have))
        template_xml = hv.domain_xml(config.template)
        clone_disks(template_xml)  # refuses a template with a disk it cannot clone safely
        names = _new_names(prefix, have, count)
        validate([n.name for n in have] + names)
        check_planned_domains(hv, lab, [Node(name, f"{lab}-{name}", "", "", "", "") for name in names])

        with address_lock(config):
            reserved = hv.dhcp_reservations(config.network)
            reserved.update({n.mac: n.ip for n in have})
            taken_macs = set(reserved) | {d.owner.get("mac") for d in hv.owned_domains()}
            new = []
            for name in names:
                mac = stable_mac(taken_macs, config.network, lab, name)
                taken_macs.add(mac)
                new.append((name, mac))
            ips = assign_addresses(config, new, reserved, hv.dhcp_leases(config.network))
            plan = Lab(lab, list(have) + [Node(name, f"{lab}-{name}", f"{lab}-{name}.qcow2", mac, ip,
                                               fqdn(config, lab, name)) for (name, mac), ip in zip(new, ips)],
                       existing.managers if existing else None, existing.labels if existing else [],
                       placement_of(config))
            for node in plan.nodes:
                _volumes(node, template_xml)
            save_journal(config, plan)  # from here on, `down` knows every resource we may make
            if hv.network_state(config.network).owner is not None:
                for node in plan.nodes:  # dnsmasq matches host entries by name too: use the unique domain name
                    hv.add_reservation(config.network, node.mac, node.ip, node.domain)
        for node in plan.nodes:
            progress(node.name, "clone", node.domain)
            _create_node(config, hv, lab, node, template_xml)

        def boot(node: Node) -> None:
            progress(node.name, "boot", "")
            hv.start(node.domain)
            progress(node.name, "lease", node.mac)
            ip = _wait_lease(config, hv, node)
            if ip != node.ip:
                node.ip = ip  # a network swarmlab does not own hands out its own addresses
            progress(node.name, "lease", ip)

        each_node(boot, plan.nodes)
        save_journal(config, plan)

        for node in plan.nodes:
            progress(node.name, "dns", node.fqdn)
        client = PowerDNS.from_config(config)
        with dns_lock(config):
            client.replace_a(config.zone, {n.fqdn: n.ip for n in plan.nodes}, config.ttl)
            client.rectify(config.zone)
        pending = {n.fqdn: n.ip for n in plan.nodes}

        def answered() -> bool:
            for name, ip in list(pending.items()):
                if dns_answers(config, name) == {ip}:
                    del pending[name]
            return not pending
        host, port = config.dns_server
        poll_until(answered, 30, 0.5, lambda: LabError(
            f"{host}:{port} does not answer {', '.join(pending)} with the registered addresses: "
            "check [dns] nameserver and PowerDNS"))
        hostname_at_boot = sets_hostname_at_boot(template_xml)

        def reach(node: Node) -> None:
            try:
                reach_one(node)
            except BaseException:
                if on_failed is not None:
                    on_failed(plan, node)
                raise

        def reach_one(node: Node) -> None:
            progress(node.name, "ssh", node.ip)
            target = ssh_target(config, lab, node)
            poll_until(lambda: port_open(node.ip, jump=target.jump), config.boot_timeout, 1, lambda: LabError(
                f"sshd on {node.name} ({node.ip}) did not answer within {config.boot_timeout} s: "
                f"check `virsh console {node.domain}`"))
            # The host key, read inside the guest through its agent, is recorded before the first
            # contact, which is then verified rather than trusted. Without an agent: trust on first use.
            line = None
            for _ in range(10):  # the agent answers a moment after sshd
                line = hv.read_guest_file(node.domain, "/etc/ssh/ssh_host_ed25519_key.pub")
                if line:
                    break
                time.sleep(0.5)
            try:
                node.host_key_source = "guest agent" if line and record_host_key(target.known_hosts, node.ip, line) \
                    else "first contact"
            except paramiko.BadHostKeyException:
                raise HostKeyMismatch(f"{node.name} ({node.ip}) has a different host key than recorded in "
                                      f"{target.known_hosts}") from None
            conn = wait_for_ssh(target, config.boot_timeout)
            try:
                hostname = run(conn, Command("hostname"), timeout=30).strip()
                if hostname != node.name and not hostname_at_boot:
                    # A template that boots from its own disk has no kernel command line to carry it.
                    run(conn, Command("sh", "-c", SET_HOSTNAME, "sh", node.name), timeout=120)
                    hostname = run(conn, Command("hostname"), timeout=30).strip()
            finally:
                if connections is None:
                    conn.close()
                else:
                    connections[node.name] = conn
            if hostname != node.name:
                raise LabError(f"{node.name} at {node.ip} calls itself {hostname!r}: the template must take "
                               "its hostname from the kernel command line (systemd.hostname=) or from "
                               "/etc/hostname, which swarmlab sets over SSH")
            progress(node.name, "ready", node.ip)
            if on_ready is not None and connections is not None:
                on_ready(plan, node, connections[node.name])

        each_node(reach, plan.nodes)
        return plan


def ensure_lab_network(config: Config, hv: Hypervisor, lab: Lab) -> list[str]:
    """A class lab's own network (scoped config): recorded in the journal before it is made, so
    that `down` finds it even after a kill, and owned by the lab in libvirt's metadata."""
    if load_journal(config, lab.name) is None:
        save_journal(config, lab)
    return hv.ensure_network(config.network, network_xml(config, lab.name))


def _new_names(prefix: str, have: list[Node], count: int) -> list[str]:
    """The lowest free prefix<i> names that bring the lab to count nodes."""
    taken = {n.name for n in have}
    return [f"{prefix}{i}" for i in range(1, count + len(have) + 1) if f"{prefix}{i}" not in taken][:count - len(have)]


def ssh_command(config: Config, lab: str, node_name: str, command: list[str]) -> list[str]:
    """argv for OpenSSH to a node with the lab's key and known_hosts (strict checking)."""
    config = lab_config(config, lab)
    with Hypervisor(config.uri) as hv:
        found = require_lab(config, hv, lab)
    node = found.require_node(node_name)
    tty = ["-t"] if not command else []
    via = jump(config)
    hop = ["-o", f"ProxyCommand={via.proxy_command()}"] if via else []
    return ["ssh", *tty, "-i", str(config.ssh_key_path), "-o", f"UserKnownHostsFile={known_hosts(config, lab)}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", *hop,
            f"{config.ssh_user}@{node.ip}", *command]


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


# --- status / ls ----------------------------------------------------------------------------
def status(config: Config, lab: str) -> dict:
    config = lab_config(config, lab)
    with Hypervisor(config.uri) as hv:
        found = require_lab(config, hv, lab)
        leases = hv.dhcp_leases(config.network)
        try:
            records = {r.name: r.ip for r in PowerDNS.from_config(config).list_a(config.zone)}
            dns_error = None
        except SwarmlabError as e:
            records, dns_error = {}, str(e)
        rows = []
        for node in found.nodes:
            state = hv.domain_state(node.domain)
            running = bool(state and state.running)
            ip = leases.get(node.mac) or node.ip
            rows.append({"node": node.name, "domain": node.domain, "state": state.state if state else "missing",
                         "ip": ip if running else node.ip, "lease": bool(leases.get(node.mac)),
                         "dns": node.fqdn, "dns_ip": records.get(node.fqdn),
                         "ssh": running and port_open(ip, 22, timeout=1.5, jump=jump(config))})
    result = {"lab": lab, "nodes": rows}
    if dns_error:
        result["dns_error"] = dns_error
    return result


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


# --- down -----------------------------------------------------------------------------------
def down(config: Config, lab: str, progress: Callable[[str], None] = lambda _m: None) -> list[str]:
    """Removes exactly what the journal and the ownership metadata say belongs to the lab.
    Every domain's ownership is checked before anything is removed."""
    if not is_dns_label(lab):
        raise LabError(f"lab name {lab!r} is not a DNS label")
    config = lab_config(config, lab)
    removed: list[str] = []
    with Hypervisor(config.uri) as hv, lab_lock(config, lab):
        found = find_lab(config, hv, lab)
        if found is None:
            return []
        for node in found.nodes:
            state = hv.domain_state(node.domain)
            if state is not None and (state.owner is None or state.owner.get("lab") != lab):
                raise Refused(f"domain {node.domain} does not belong to lab {lab}; leaving the whole lab alone: "
                              f"remove {node.domain} from {lab_dir(config, lab) / 'lab.json'} if it is not yours")
        network_owned = hv.network_state(config.network).owner is not None
        for node in found.nodes:
            if hv.domain_state(node.domain) is not None:
                progress(f"removing {node.domain}")
                hv.undefine(node.domain)
                removed.append(f"domain {node.domain}")
            for volume in (node.volume, *node.extra_volumes):
                if hv.delete_volume(config.node_pool, volume):
                    removed.append(f"volume {volume}")
            if network_owned and not config.lab_host and node.mac and hv.remove_reservation(config.network, node.mac):
                removed.append(f"reservation {node.mac} -> {node.ip}")
        names = [n.fqdn for n in found.nodes]
        if names:
            client = PowerDNS.from_config(config)
            present = {r.name for r in client.list_a(config.zone)}
            ours = [n for n in names if n in present]
            if ours:
                with dns_lock(config):
                    client.delete_a(config.zone, ours)
                    client.rectify(config.zone)
                removed += [f"record {n}" for n in ours]
        own = hv.network_state(config.network).owner if config.lab_host else None
        if own is not None and own.get("lab") == lab:  # the lab's own network, never the shared one
            removed += hv.remove_network(config.network)
        directory = lab_dir(config, lab)
        if (directory / "known_hosts").exists():
            removed.append(f"known_hosts of {lab}")
        shutil.rmtree(directory, ignore_errors=True)
    return removed
