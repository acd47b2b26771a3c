"""`up N`: the plan (names, MACs, addresses) written to the journal before anything is made,
then each node cloned, booted, leased, named in DNS and reached over SSH. Rerunning converges:
every step checks what a killed earlier run may already have done."""

from __future__ import annotations

import logging
import os
import time
from typing import Callable

import paramiko

from swarmlab.adapters.dns import DnsError, PowerDNS, dns_answers
from swarmlab.adapters.hypervisor import Hypervisor
from swarmlab.adapters.libvirt_xml import clone_disks, derive_clone_xml, network_xml, sets_hostname_at_boot
from swarmlab.adapters.remote import HostKeyMismatch, port_open, record_host_key, run, wait_for_ssh
from swarmlab.config import Config
from swarmlab.core.addresses import assign_addresses, stable_mac
from swarmlab.core.command import Command
from swarmlab.errors import NotFound, Refused, SwarmlabError
from swarmlab.host.template_wake import wake_image_of
from swarmlab.lab import wake
from swarmlab.lab.model import (Lab, LabError, Node, NodeProgress, address_lock, check_count, check_names, dns_lock,
                                each_node, find_lab, fqdn, lab_config, lab_lock, load_journal, placement_of,
                                save_journal, ssh_target)
from swarmlab.waiting import poll_until

log = logging.getLogger(__name__)
PHASES = ("clone", "boot", "lease", "dns", "ssh", "ready", "engine", "images", "init", "join", "swarm")
MIN_FREE_PER_NODE = 512 << 20  # an overlay is ~10 MB after boot; leave room for images and logs


def preflight(config: Config, hv: Hypervisor, new_nodes: int) -> str | None:
    """Everything `up` needs, checked before any VM exists. Returns the wake image its new
    nodes start from, or None when they boot."""
    template = hv.domain_state(config.template)
    if template is None:
        raise NotFound(f"template {config.template} not found: run `swarmlab template build` "
                       "or set [libvirt] template")
    if template.running:
        raise Refused(f"template {config.template} is {template.state}: shut it down first "
                      f"(`virsh shutdown {config.template}`); clones need an unchanging backing disk")
    if hv.disk_path(config.template) is None:
        raise NotFound(f"the disk of template {config.template} is missing: run `swarmlab template build`")
    template_xml = hv.domain_xml(config.template)
    clone_disks(template_xml)  # refuses a template with a disk it cannot clone safely
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
    wake_image = wake_image_of(config, hv, template_xml, template.owner)
    if new_nodes:
        # a woken node's disk starts as a copy of the wake image, its saved memory included
        per_node = MIN_FREE_PER_NODE + (os.path.getsize(wake_image) if wake_image else 0)
        pool_dir, free = hv.pool_space(config.node_pool)  # as its host sees it, on this machine or another
        if free < new_nodes * per_node:
            raise LabError(f"not enough free disk in {pool_dir} on {config.lab_host or 'this host'}: {free >> 20} MiB free, "
                           f"{new_nodes * per_node >> 20} MiB needed for {new_nodes} "
                           + (f"nodes woken from copies of {wake_image}" if wake_image else "overlays"))
    return wake_image


def _volumes(node: Node, template_xml: str) -> dict[str, str]:
    """target -> overlay volume: the first writable disk is node.volume, others get their own."""
    targets = [d.target for d in clone_disks(template_xml) if d.action == "overlay"]
    if len(node.extra_volumes) != len(targets) - 1:
        node.extra_volumes = [f"{node.domain}-{t}.qcow2" for t in targets[1:]]
    return dict(zip(targets, [node.volume, *node.extra_volumes]))


def _create_node(config: Config, hv: Hypervisor, lab: str, node: Node, template_xml: str,
                 wake_image: str | None = None) -> str | None:
    """Idempotent: each step checks what a killed earlier run may already have done. With a
    wake image, a new node is laid out to wake: returns the NIC to plug in once it is awake."""
    state = hv.domain_state(node.domain)
    if state is not None and wake.cut_short(hv.domain_xml(node.domain), hv.snapshot_names(node.domain), state.running):
        hv.undefine(node.domain)  # a killed `up` left it half woken: lay it out again
        hv.delete_volume(config.node_pool, node.volume)
        state = None
    volumes = _volumes(node, template_xml)
    owner = {"role": "node", "lab": lab, "node": node.name, "volume": node.volume, "mac": node.mac,
             "ip": node.ip, "template": config.template}
    if node.extra_volumes:
        owner["extra_volumes"] = " ".join(node.extra_volumes)
    clone_xml = derive_clone_xml(template_xml, node.domain, node.mac, config.node_pool, volumes, owner,
                                 hostname=node.name, network=config.network if config.lab_host else None,
                                 tb_cache_mib=config.tb_cache_mib)
    interface = None
    if state is None and wake_image:
        interface = wake.lay_out(config, hv, node, clone_xml, wake_image)
    backing = {d.target: hv.source_path(d.source) for d in clone_disks(template_xml)}
    for target, volume in volumes.items() if state is None or not state.running else ():
        try:  # also under a defined, stopped domain whose disk went (a wiped pool)
            hv.volume_path(config.node_pool, volume)
        except NotFound:
            if backing[target] is None:
                raise NotFound(f"disk {target} of template {config.template} is missing") from None
            hv.create_overlay(config.node_pool, volume, backing[target])
    if state is None and interface is None:
        hv.define_domain(clone_xml)
    if hv.network_state(config.network).owner is not None:
        # dnsmasq matches host entries by name too: the domain name is unique on the host.
        hv.add_reservation(config.network, node.mac, node.ip, node.domain)
    return interface


def _boot_cold(config: Config, hv: Hypervisor, lab: str, node: Node, template_xml: str) -> None:
    """A node that could not be woken, made again the ordinary way."""
    hv.undefine(node.domain)
    hv.delete_volume(config.node_pool, node.volume)
    _create_node(config, hv, lab, node, template_xml)
    hv.start(node.domain)


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
        wake_image = preflight(config, hv, count - len(have))
        template_xml = hv.domain_xml(config.template)
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
        interfaces = {}
        for node in plan.nodes:
            progress(node.name, "clone", node.domain)
            interfaces[node.name] = _create_node(config, hv, lab, node, template_xml, wake_image)

        def boot(node: Node) -> None:
            if interfaces[node.name] is None:
                progress(node.name, "boot", "")
                was_running = hv.domain_state(node.domain).running
                hv.start(node.domain)
                node.start = node.start if was_running and node.start else "boot"
            else:
                progress(node.name, "boot", "waking from the template's saved state")
                try:
                    wake.wake(hv, node, interfaces[node.name])
                    node.start = "wake"
                except SwarmlabError as e:
                    log.warning("%s could not be woken (%s): booting it", node.name, e)
                    progress(node.name, "boot", f"could not be woken ({e}): booting")
                    _boot_cold(config, hv, lab, node, template_xml)
                    node.start = "boot"
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
