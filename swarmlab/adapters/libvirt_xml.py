"""libvirt XML as swarmlab writes and reads it, pure: the ownership metadata, a clone derived
from its template, volumes, pools, DHCP hosts and the lab networks. No libvirt connection here:
tested on strings, in milliseconds."""

from __future__ import annotations

import hashlib
import ipaddress
import random
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from swarmlab.adapters.domain_xml import NS_PREFIX, NS_URI, DomainXML, TemplateError, owner_of  # noqa: F401 (the names callers use)
from swarmlab.config import Config, ConfigError
from swarmlab.errors import SwarmlabError
from swarmlab.render import render

ET.register_namespace("dnsmasq", "http://libvirt.org/schemas/network/dnsmasq/1.0")


def ownership(xml: str) -> dict[str, str] | None:
    """The swarmlab metadata attributes of a domain or network XML, or None if not ours."""
    return owner_of(ET.fromstring(xml))


def random_mac() -> str:
    # 52:54:00 is the prefix qemu/libvirt use for guests.
    return "52:54:00:" + ":".join(f"{random.randint(0, 255):02x}" for _ in range(3))


@dataclass(frozen=True)
class CloneDisk:
    """What a clone does with one disk of its template."""

    target: str  # vda, vdb, ...
    source: dict[str, str]  # the template's <source> attributes (file, dev, or pool + volume)
    action: str  # "overlay": a qcow2 of the clone's own; "share": read-only or shareable, used as is


def clone_disks(template_xml: str) -> list[CloneDisk]:
    """How each disk of a template is cloned. Writable disks get an overlay each (a disk left
    shared read-write between clones would be corrupted by them); read-only media and disks
    marked shareable are used as they are. Disks swarmlab cannot overlay are refused."""
    out = []
    for disk in DomainXML(template_xml).disks:
        target = DomainXML.target(disk)
        source = dict(disk.find("source").attrib) if disk.find("source") is not None else {}
        if disk.get("device", "disk") in ("cdrom", "floppy") or disk.find("readonly") is not None \
                or disk.find("shareable") is not None:
            out.append(CloneDisk(target, source, "share"))
        elif disk.get("type") not in ("file", "block", "volume"):
            raise TemplateError(f"template disk {target} is a {disk.get('type')} disk: swarmlab can give clones "
                                  "their own copy only of file, block and volume disks; make it read-only, "
                                  "shareable or remove it from the template")
        elif not source:
            raise TemplateError(f"template disk {target} has no source: give it one or remove it")
        else:
            out.append(CloneDisk(target, source, "overlay"))
    if not any(d.action == "overlay" for d in out):
        raise TemplateError("template has no writable disk to clone")
    return out


def derive_clone_xml(template_xml: str, name: str, mac: str, pool: str, volumes: dict[str, str],
                     owner: dict[str, str], hostname: str | None = None, network: str | None = None,
                     tb_cache_mib: int = 0) -> str:
    """A node's domain XML from its template's: new name, no UUID, new MAC, an overlay volume
    per writable disk (`volumes`: target -> volume in `pool`), its own NVRAM, no fixed
    graphics port or agent socket path, and swarmlab ownership metadata. With direct kernel
    boot the hostname rides on the kernel command line, so the guest has it from its first
    second; otherwise `up` sets it over SSH. `network` puts the node on that libvirt network
    instead of the template's (a class lab's own); `tb_cache_mib` sizes TCG's translation cache
    (QEMU's default is 1 GiB of host memory per guest)."""
    domain = DomainXML(template_xml)
    domain.name = name
    domain.forget_identity()
    domain.owner = owner
    if len(domain.interfaces) != 1:
        raise TemplateError(f"template has {len(domain.interfaces)} network interfaces; swarmlab needs exactly one")
    domain.give_interface(mac, network)
    if tb_cache_mib and domain.domain_type == "qemu":
        domain.set_tcg_cache(tb_cache_mib)
    planned = {d.target: d for d in clone_disks(template_xml)}
    for disk in domain.disks:
        target = DomainXML.target(disk)
        if planned[target].action != "overlay":
            continue
        if target not in volumes:
            raise TemplateError(f"template disk {target} is writable and has no overlay for {name}")
        domain.put_on_volume(disk, pool, volumes[target])
    domain.own_nvram()
    domain.forget_fixed_endpoints()
    if hostname and domain.boots_given_kernel:
        domain.kernel_args = [w for w in domain.kernel_args if not w.startswith("systemd.hostname=")] + \
            [f"systemd.hostname={hostname}"]
    return str(domain)


def sets_hostname_at_boot(template_xml: str) -> bool:
    """True when clones of this template boot a kernel libvirt hands them (direct kernel boot),
    so that derive_clone_xml can put the hostname on its command line."""
    return DomainXML(template_xml).boots_given_kernel


def overlay_volume_xml(name: str, backing_path: str, backing_format: str, capacity: int) -> str:
    volume = ET.Element("volume")
    ET.SubElement(volume, "name").text = name
    ET.SubElement(volume, "capacity", {"unit": "bytes"}).text = str(capacity)
    ET.SubElement(ET.SubElement(volume, "target"), "format", {"type": "qcow2"})
    backing = ET.SubElement(volume, "backingStore")
    ET.SubElement(backing, "path").text = backing_path
    ET.SubElement(backing, "format", {"type": backing_format})
    return ET.tostring(volume, encoding="unicode")


def dir_pool_xml(name: str, path: Path) -> str:
    pool = ET.Element("pool", {"type": "dir"})
    ET.SubElement(pool, "name").text = name
    ET.SubElement(ET.SubElement(pool, "target"), "path").text = str(path)
    return ET.tostring(pool, encoding="unicode")


def dhcp_host_xml(mac: str, ip: str, name: str | None = None) -> str:
    attrs = {"mac": mac, "ip": ip} if name is None else {"mac": mac, "name": name, "ip": ip}
    return ET.tostring(ET.Element("host", attrs), encoding="unicode")


def netmask(cidr: ipaddress.IPv4Network) -> str:
    return str(cidr.netmask)


def bridge_name(network: str) -> str:
    name = "sl-" + network
    # Linux caps interface names at 15 characters: a long name gets a digest, never a cut that collides.
    return name if len(name) <= 15 else "sl-" + hashlib.sha256(network.encode()).hexdigest()[:12]


def network_xml(config: Config, lab: str | None = None) -> str:
    """The lab host's shared network, or (with `lab`) a lab's own network, owned by that lab."""
    start, end = config.dhcp_range
    # A host on another machine forwards the zone to the controller's PowerDNS ([host] services_address).
    dns_server = config.services_address if config.host_remote else "127.0.0.1"
    if not dns_server:
        raise ConfigError(f"host {config.lab_host} is on another machine, and its labs' DNS needs the controller's "
                        "PowerDNS: set [host] services_address to the address it reaches this machine at, "
                        "then `swarmlab host up`")
    return render("network.xml.j2", name=config.network, ns_uri=NS_URI, bridge=bridge_name(config.network),
                  gateway=config.gateway, netmask=config.cidr.netmask, dhcp_start=start, dhcp_end=end,
                  zone=config.zone.rstrip("."), dns_server=dns_server, dns_port=config.dns_port, lab=lab)


DNSMASQ_NS = "http://libvirt.org/schemas/network/dnsmasq/1.0"


def runs_stp(network_xml: str) -> bool:
    """Whether a network's bridge runs STP (networks made before swarmlab turned it off)."""
    bridge = ET.fromstring(network_xml).find("bridge")
    return bridge is not None and bridge.get("stp", "on") == "on"


def dns_forwarder(network_xml: str) -> str | None:
    """Where a network's dnsmasq sends the lab zone (`address#port`), or None when its XML does
    not say (a network not made from network.xml.j2, or a libvirt that drops dnsmasq options)."""
    for option in ET.fromstring(network_xml).iterfind(f"{{{DNSMASQ_NS}}}options/{{{DNSMASQ_NS}}}option"):
        value = option.get("value", "")
        if value.startswith("server=/"):
            return value.rsplit("/", 1)[1]
    return None


WAKE_SNAPSHOT = "wake"


def split_interface(domain_xml: str) -> tuple[str, str]:
    """(the domain without its one network interface, that interface). A woken clone's state
    was saved without a NIC: it gets its own, with its own MAC, once its identity is fresh."""
    domain = DomainXML(domain_xml)
    if len(domain.interfaces) != 1:
        raise TemplateError(f"domain has {len(domain.interfaces)} network interfaces; a woken clone needs exactly one")
    interface = domain.take_interface()
    return str(domain), ET.tostring(interface, encoding="unicode")


def with_kernel_args(domain_xml: str, *words: str) -> str:
    """The domain with words added to its kernel command line (direct kernel boot only)."""
    domain = DomainXML(domain_xml)
    if not domain.boots_given_kernel:
        raise TemplateError("the template boots from its own disk: its kernel command line is not libvirt's to change")
    domain.kernel_args = domain.kernel_args + [w for w in words if w not in domain.kernel_args]
    return str(domain)


def wake_snapshot_xml(domain_xml: str, created: int) -> str:
    """The template's wake snapshot, redefined for one clone: a running state, memory and disk
    internal to the clone's copy of the wake image, and the clone's own domain (name, UUID,
    disk), which libvirt starts with `-loadvm`."""
    root = ET.Element("domainsnapshot")
    ET.SubElement(root, "name").text = WAKE_SNAPSHOT
    ET.SubElement(root, "state").text = "running"
    ET.SubElement(root, "creationTime").text = str(created)
    ET.SubElement(root, "memory", {"snapshot": "internal"})
    disks = ET.SubElement(root, "disks")
    domain = DomainXML(domain_xml)
    for disk in domain.disks:
        if disk.get("device", "disk") == "disk" and disk.find("target") is not None:
            ET.SubElement(disks, "disk", {"name": DomainXML.target(disk), "snapshot": "internal"})
    root.append(domain.root)
    return ET.tostring(root, encoding="unicode")


def interface_link(domain_xml: str) -> tuple[str, bool]:
    """The domain's first network interface with its link set (the device XML that
    updateDeviceFlags takes, as it is now), and whether its link is up."""
    interfaces = DomainXML(domain_xml).interfaces
    if not interfaces:
        raise SwarmlabError("the domain has no network interface")
    interface = interfaces[0]
    link = interface.find("link")
    return ET.tostring(interface, encoding="unicode"), link is None or link.get("state", "up") == "up"


def interface_network(interface_xml: str) -> str | None:
    """The libvirt network an interface's device XML is on (None: a bridge or other type)."""
    source = ET.fromstring(interface_xml).find("source")
    return source.get("network") if source is not None else None


def on_network(interface_xml: str, network: str) -> str:
    """The interface's device XML moved to another libvirt network, everything else (MAC, tap,
    PCI address, link) as it was: updateDeviceFlags then moves its tap to that network's bridge.
    The live port and bridge are the old network's, so they go."""
    interface = ET.fromstring(interface_xml)
    if interface.get("type") != "network" or interface.find("source") is None:
        raise SwarmlabError("the node's interface is not on a libvirt network: it cannot be moved to another")
    interface.find("source").attrib.clear()
    interface.find("source").set("network", network)
    return ET.tostring(interface, encoding="unicode")


def split_network_xml(name: str, lab: str) -> str:
    """A lab's split network: a bridge of its own with no address, DHCP or route, so the
    nodes moved onto it reach one another and nothing else (`chaos split`)."""
    root = ET.Element("network")
    ET.SubElement(root, "name").text = name
    metadata = ET.SubElement(root, "metadata")
    ET.SubElement(metadata, f"{{{NS_URI}}}resource", {"role": "split", "lab": lab})
    ET.SubElement(root, "bridge", {"name": bridge_name(name), "stp": "off", "delay": "0"})
    return ET.tostring(root, encoding="unicode")


def with_link(interface_xml: str, up: bool) -> str:
    """The interface's device XML with its link up or down, everything else as it was."""
    interface = ET.fromstring(interface_xml)
    link = interface.find("link")
    if link is None:
        link = ET.SubElement(interface, "link")
    link.set("state", "up" if up else "down")
    return ET.tostring(interface, encoding="unicode")
