"""A node woken from its template's wake image instead of booted: a copy of the image as its
disk, the saved state loaded under the node's own name and UUID, then a fresh identity given
through the guest agent (random pool, clock, hostname, machine-id, SSH host key, engine ID)
before its network interface is plugged in. Nothing identity-bearing reaches the network
first: the saved state has no NIC."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

from swarmlab.adapters.domain_xml import DomainXML
from swarmlab.adapters.hypervisor import Hypervisor
from swarmlab.adapters.libvirt_xml import WAKE_SNAPSHOT, split_interface, wake_snapshot_xml
from swarmlab.config import Config
from swarmlab.lab.model import LabError, Node

# $1 hostname, $2 machine-id; stdin: bytes from the host's random pool. The engine restarts in
# the background (its new ID is read at start); `up` waits for it before forming the swarm, so
# it restarts as soon as the hostname it reads is the node's, before the SSH host key is made.
# Its local network store goes too: a restart would restore the template's default bridge, then
# drop and remake it, ~30 iptables runs of ~0.15 s each under TCG; a fresh store makes it once.
# Its stop leaves the images unit be (ignore-dependencies): that unit only checks, with a
# docker CLI call of seconds under TCG, that the baked images are there, and they are.
FRESH_IDENTITY = (
    "set -e\n"
    "head -c 64 > /dev/urandom\n"
    # Every clone woke with the same kernel random state: mixing in is not enough, the
    # generator must rekey from the pool now (RNDRESEEDCRNG) before anything draws a key.
    """perl -e 'open(my $f, "<", "/dev/urandom") or die; ioctl($f, 0x5207, 0) or die "RNDRESEEDCRNG: $!\\n"'\n"""
    'echo "$1" > /etc/hostname\n'
    'hostname "$1"\n'
    'sed -i "s/^127\\.0\\.1\\.1[[:space:]].*/127.0.1.1 $1/" /etc/hosts\n'
    'echo "$2" > /etc/machine-id\n'
    "if [ -e /var/lib/docker ]; then\n"
    "  running=$(systemctl is-active docker || true)\n"
    '  if [ "$running" = active ]; then systemctl stop --job-mode=ignore-dependencies docker.socket docker; fi\n'
    "  rm -f /var/lib/docker/engine-id /etc/docker/key.json /var/lib/docker/network/files/local-kv.db\n"
    '  if [ "$running" = active ]; then systemctl --no-block start docker.socket docker; fi\n'
    "fi\n"
    "rm -f /etc/ssh/ssh_host_*\n"
    'ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key\n'
    "systemctl restart ssh\n"
)


def machine_id(domain_xml: str) -> str:
    """What systemd itself takes at a VM's first boot: the domain's UUID, as 32 hex digits."""
    return DomainXML(domain_xml).uuid.replace("-", "").lower()


def lay_out(config: Config, hv: Hypervisor, node: Node, clone_xml: str, wake_image: str) -> str:
    """The node's disk as a copy of the wake image, its domain defined without NIC and the
    saved state recorded as its snapshot. Returns the interface to plug in once it is awake."""
    hv.upload_volume(config.node_pool, node.volume, Path(wake_image))
    bare, interface = split_interface(clone_xml)
    hv.define_domain(bare)
    hv.redefine_snapshot(node.domain, wake_snapshot_xml(hv.domain_xml(node.domain), int(time.time())))
    return interface


def wake(hv: Hypervisor, node: Node, interface: str, timeout: float = 120,
         mark: Callable[[str], None] = lambda _phase: None) -> None:
    """Loads the saved state, gives the node its identity, then its NIC (DHCP follows).
    `mark` is told when each phase ends (the bench times them)."""
    hv.revert_snapshot(node.domain, WAKE_SNAPSHOT, running=True)
    mark("restore")
    hv.wait_for_agent(node.domain, timeout)
    mark("agent")
    hv.sync_clock(node.domain)
    mark("clock")
    code, output = hv.guest_exec(node.domain, ["/bin/sh", "-c", FRESH_IDENTITY, "sh", node.name,
                                               machine_id(hv.domain_xml(node.domain))],
                                 stdin=os.urandom(64), timeout=timeout)
    if code != 0:
        raise LabError(f"{node.name}: giving the woken clone its own identity failed: {output.strip()[-300:]}")
    mark("identity")
    hv.attach_device(node.domain, interface)
    mark("nic")
    hv.delete_snapshot(node.domain, WAKE_SNAPSHOT)
    mark("forget")


def cut_short(domain_xml: str, snapshots: list[str], running: bool) -> bool:
    """A wake that a killed `up` did not finish: the saved state is still recorded (it is
    dropped last), or the node was defined and stopped before it got its NIC. A running node
    whose NIC someone unplugged by hand is not one."""
    return WAKE_SNAPSHOT in snapshots or (not running and not DomainXML(domain_xml).interfaces)
