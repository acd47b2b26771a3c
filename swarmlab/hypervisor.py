"""libvirt adapter: networks, storage pools and volumes, domains, ownership metadata.

Ownership: every network and domain swarmlab creates carries
<swarmlab:resource xmlns:swarmlab=NS_URI role=... lab=...> in its <metadata>, and every
destructive call here checks it first. Volumes belong to swarmlab's own pool.
"""

from __future__ import annotations

import ipaddress
import random
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import libvirt

from .errors import NotFound, Refused, SwarmlabError

NS_URI = "https://swarmlab.dev/xmlns/resource/1"
NS_PREFIX = "swarmlab"
ET.register_namespace(NS_PREFIX, NS_URI)
ET.register_namespace("dnsmasq", "http://libvirt.org/schemas/network/dnsmasq/1.0")

STATE_NAMES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate", libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked", libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutting-down", libvirt.VIR_DOMAIN_SHUTOFF: "shut-off",
    libvirt.VIR_DOMAIN_CRASHED: "crashed", libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}

# libvirt prints every error to stderr by default; we report our own one-line errors.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


class HypervisorError(SwarmlabError):
    pass


def _ownership(xml: str) -> dict[str, str] | None:
    """The swarmlab metadata attributes of a domain or network XML, or None if not ours."""
    element = ET.fromstring(xml).find(f"metadata/{{{NS_URI}}}resource")
    return dict(element.attrib) if element is not None else None


def random_mac() -> str:
    # 52:54:00 is the prefix qemu/libvirt use for guests.
    return "52:54:00:" + ":".join(f"{random.randint(0, 255):02x}" for _ in range(3))


@dataclass
class NetworkState:
    name: str
    exists: bool = False
    active: bool = False
    owner: dict | None = None
    dhcp_ranges: list[tuple[str, str]] = field(default_factory=list)
    bridge: str | None = None
    gateway: str | None = None


@dataclass
class DomainState:
    name: str
    state: str
    owner: dict | None

    @property
    def running(self) -> bool:
        return self.state in ("running", "blocked", "paused")


def derive_clone_xml(template_xml: str, name: str, mac: str, pool: str, volume: str,
                     owner: dict[str, str], hostname: str | None = None) -> str:
    """A node's domain XML from its template's: new name, no UUID, new MAC, its own disk
    volume and swarmlab ownership metadata. With direct kernel boot the hostname rides on
    the kernel command line, so the guest has it from its first second."""
    root = ET.fromstring(template_xml)
    root.find("name").text = name
    for tag in ("uuid", "title", "description"):
        for el in root.findall(tag):
            root.remove(el)
    metadata = root.find("metadata")
    if metadata is None:
        metadata = ET.SubElement(root, "metadata")
    for el in metadata.findall(f"{{{NS_URI}}}resource"):
        metadata.remove(el)
    ET.SubElement(metadata, f"{{{NS_URI}}}resource", {k: str(v) for k, v in owner.items()})
    interfaces = root.findall("devices/interface")
    if len(interfaces) != 1:
        raise HypervisorError(f"template has {len(interfaces)} network interfaces; swarmlab needs exactly one")
    for el in interfaces[0].findall("mac"):
        interfaces[0].remove(el)
    ET.SubElement(interfaces[0], "mac", {"address": mac})
    disks = [d for d in root.findall("devices/disk") if d.get("device", "disk") == "disk"]
    if not disks:
        raise HypervisorError("template has no disk")
    disk = disks[0]
    disk.set("type", "volume")
    for el in disk.findall("source") + disk.findall("backingStore"):
        disk.remove(el)
    source = ET.Element("source", {"pool": pool, "volume": volume})
    disk.insert(1, source)
    driver = disk.find("driver")
    if driver is None:
        driver = ET.SubElement(disk, "driver", {"name": "qemu"})
    driver.set("type", "qcow2")
    cmdline = root.find("os/cmdline")
    if hostname and cmdline is not None:
        words = [w for w in (cmdline.text or "").split() if not w.startswith("systemd.hostname=")]
        cmdline.text = " ".join(words + [f"systemd.hostname={hostname}"])
    return ET.tostring(root, encoding="unicode")


def overlay_volume_xml(name: str, backing_path: str, capacity: int) -> str:
    return (f"<volume><name>{name}</name><capacity unit='bytes'>{capacity}</capacity>"
            "<target><format type='qcow2'/></target>"
            f"<backingStore><path>{backing_path}</path><format type='qcow2'/></backingStore></volume>")


class Hypervisor:
    def __init__(self, uri: str):
        self.uri = uri
        self._conn: libvirt.virConnect | None = None

    @property
    def conn(self) -> libvirt.virConnect:
        if self._conn is None:
            try:
                self._conn = libvirt.open(self.uri)
            except libvirt.libvirtError as e:
                raise HypervisorError(f"libvirt at {self.uri} is not reachable ({e.get_error_message()}): "
                                      "start it with `swarmlab host up`, or fix [libvirt] uri") from None
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except libvirt.libvirtError:
                pass
            self._conn = None

    def version(self) -> str:
        v = self.conn.getLibVersion()
        return f"{v // 1000000}.{v // 1000 % 1000}.{v % 1000}"

    # --- networks -------------------------------------------------------------------------
    def _network(self, name: str):
        try:
            return self.conn.networkLookupByName(name)
        except libvirt.libvirtError:
            return None

    def network_state(self, name: str) -> NetworkState:
        net = self._network(name)
        if net is None:
            return NetworkState(name)
        root = ET.fromstring(net.XMLDesc())
        ip = root.find("ip")
        bridge = root.find("bridge")
        return NetworkState(
            name, exists=True, active=bool(net.isActive()), owner=_ownership(net.XMLDesc()),
            dhcp_ranges=[(r.get("start"), r.get("end")) for r in root.findall("ip/dhcp/range")],
            bridge=bridge.get("name") if bridge is not None else None,
            gateway=ip.get("address") if ip is not None else None)

    def ensure_network(self, name: str, xml: str) -> list[str]:
        """Defines, starts and autostarts a swarmlab network. Returns what changed."""
        changes = []
        net = self._network(name)
        if net is None:
            try:
                net = self.conn.networkDefineXML(xml)
            except libvirt.libvirtError as e:
                raise HypervisorError(f"defining network {name} failed: {e.get_error_message()}") from None
            changes.append(f"defined network {name}")
        elif _ownership(net.XMLDesc()) is None:
            raise Refused(f"network {name} exists and was not created by swarmlab: "
                          "choose another [libvirt] network name, or point swarmlab at it without `host up`")
        if not net.isActive():
            try:
                net.create()
            except libvirt.libvirtError as e:
                raise HypervisorError(f"starting network {name} failed: {e.get_error_message()}") from None
            changes.append(f"started network {name}")
        if not net.autostart():
            net.setAutostart(True)
        return changes

    def remove_network(self, name: str) -> list[str]:
        net = self._network(name)
        if net is None:
            return []
        if _ownership(net.XMLDesc()) is None:
            raise Refused(f"network {name} was not created by swarmlab; leaving it alone")
        changes = []
        if net.isActive():
            net.destroy()
            changes.append(f"stopped network {name}")
        net.undefine()
        changes.append(f"undefined network {name}")
        return changes

    def dhcp_leases(self, network: str) -> dict[str, str]:
        """MAC -> IPv4 from the network's current DHCP leases."""
        net = self._network(network)
        if net is None or not net.isActive():
            return {}
        return {lease["mac"].lower(): lease["ipaddr"] for lease in net.DHCPLeases()
                if lease.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4}

    def dhcp_reservations(self, network: str) -> dict[str, str]:
        """MAC -> IP of the network's <dhcp><host> entries."""
        net = self._network(network)
        if net is None:
            return {}
        root = ET.fromstring(net.XMLDesc())
        return {h.get("mac").lower(): h.get("ip") for h in root.findall("ip/dhcp/host") if h.get("mac")}

    def _update_dhcp_host(self, network: str, command: int, host_xml: str) -> None:
        net = self._network(network)
        if net is None:
            raise NotFound(f"network {network} not found")
        if _ownership(net.XMLDesc()) is None:
            raise Refused(f"network {network} was not created by swarmlab; not changing its DHCP hosts")
        flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
        if net.isActive():
            flags |= libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
        try:
            net.update(command, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, host_xml, flags)
        except libvirt.libvirtError as e:
            raise HypervisorError(f"updating DHCP hosts of {network} failed: {e.get_error_message()}") from None

    def add_reservation(self, network: str, mac: str, ip: str, name: str) -> None:
        """A fixed MAC -> IP, so a node keeps its address across destroy/start."""
        if self.dhcp_reservations(network).get(mac.lower()) == ip:
            return
        self._update_dhcp_host(network, libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
                               f"<host mac='{mac}' name='{name}' ip='{ip}'/>")

    def remove_reservation(self, network: str, mac: str) -> bool:
        ip = self.dhcp_reservations(network).get(mac.lower())
        if ip is None:
            return False
        self._update_dhcp_host(network, libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE,
                               f"<host mac='{mac}' ip='{ip}'/>")
        return True

    # --- storage ----------------------------------------------------------------------------
    def ensure_pool(self, name: str, path: Path) -> list[str]:
        """A directory pool swarmlab owns (pools carry no metadata; the name and path say it)."""
        changes = []
        try:
            pool = self.conn.storagePoolLookupByName(name)
        except libvirt.libvirtError:
            path.mkdir(parents=True, exist_ok=True)
            try:
                pool = self.conn.storagePoolDefineXML(
                    f"<pool type='dir'><name>{name}</name><target><path>{path}</path></target></pool>")
            except libvirt.libvirtError as e:
                raise HypervisorError(f"defining storage pool {name} at {path} failed: {e.get_error_message()}; "
                                      "another libvirt pool may use that directory (`virsh pool-list --all`)") from None
            changes.append(f"defined storage pool {name} at {path}")
        target = ET.fromstring(pool.XMLDesc()).findtext("target/path")
        if Path(target) != path:
            raise Refused(f"storage pool {name} points at {target}, not {path}: "
                          f"remove it (`virsh pool-undefine {name}`) or change [host] cache_dir")
        if not pool.isActive():
            pool.create()
            changes.append(f"started storage pool {name}")
        if not pool.autostart():
            pool.setAutostart(True)
        pool.refresh()
        return changes

    def remove_pool(self, name: str) -> list[str]:
        """Forgets the pool; its files (cached images, volumes) stay on disk."""
        try:
            pool = self.conn.storagePoolLookupByName(name)
        except libvirt.libvirtError:
            return []
        if pool.isActive():
            pool.destroy()
        pool.undefine()
        return [f"undefined storage pool {name} (files kept)"]

    def pool(self, name: str):
        try:
            pool = self.conn.storagePoolLookupByName(name)
        except libvirt.libvirtError:
            raise NotFound(f"storage pool {name} not found: run `swarmlab template build`") from None
        if not pool.isActive():
            pool.create()
        return pool

    def volume_path(self, pool: str, volume: str) -> str:
        try:
            return self.pool(pool).storageVolLookupByName(volume).path()
        except libvirt.libvirtError:
            raise NotFound(f"volume {volume} not found in pool {pool}") from None

    def create_overlay(self, pool: str, name: str, backing_path: str) -> str:
        """A qcow2 volume backed by backing_path (a linked clone). Returns its path."""
        p = self.pool(pool)
        info = subprocess.run(["qemu-img", "info", "--output=json", "-U", backing_path],
                              capture_output=True, text=True)
        import json
        capacity = json.loads(info.stdout)["virtual-size"] if info.returncode == 0 else 8 << 30
        try:
            return p.createXML(overlay_volume_xml(name, backing_path, capacity), 0).path()
        except libvirt.libvirtError as e:
            raise HypervisorError(f"creating volume {name} in pool {pool} failed: {e.get_error_message()}") from None

    def delete_volume(self, pool: str, name: str) -> bool:
        try:
            vol = self.pool(pool).storageVolLookupByName(name)
        except (libvirt.libvirtError, NotFound):
            return False
        vol.delete(0)
        return True

    # --- domains ----------------------------------------------------------------------------
    def _domain(self, name: str):
        try:
            return self.conn.lookupByName(name)
        except libvirt.libvirtError:
            return None

    def domain_state(self, name: str) -> DomainState | None:
        dom = self._domain(name)
        if dom is None:
            return None
        state = STATE_NAMES.get(dom.state()[0], "unknown")
        return DomainState(name, state, _ownership(dom.XMLDesc(0)))

    def domain_xml(self, name: str) -> str:
        dom = self._domain(name)
        if dom is None:
            raise NotFound(f"domain {name} not found")
        return dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)

    def disk_path(self, name: str) -> str | None:
        """The first disk's file, or None when its volume or file is gone."""
        disk = ET.fromstring(self.domain_xml(name)).find("devices/disk[@device='disk']/source")
        if disk is None:
            return None
        if disk.get("pool"):
            try:
                return self.volume_path(disk.get("pool"), disk.get("volume"))
            except SwarmlabError:
                return None
        path = disk.get("file") or disk.get("dev")
        return path if path and Path(path).exists() else None

    def owned_domains(self) -> list[DomainState]:
        out = []
        for dom in self.conn.listAllDomains():
            owner = _ownership(dom.XMLDesc(0))
            if owner is not None:
                out.append(DomainState(dom.name(), STATE_NAMES.get(dom.state()[0], "unknown"), owner))
        return sorted(out, key=lambda d: d.name)

    def define_domain(self, xml: str) -> None:
        if _ownership(xml) is None:
            raise HypervisorError("refusing to define a domain without swarmlab ownership metadata")
        root = ET.fromstring(xml)
        name = root.findtext("name")
        existing = self._domain(name)
        if existing is not None:
            if _ownership(existing.XMLDesc(0)) is None:
                raise Refused(f"domain {name} exists and was not created by swarmlab; pick another name")
            if root.find("uuid") is None:  # redefining keeps the domain's identity
                ET.SubElement(root, "uuid").text = existing.UUIDString()
                xml = ET.tostring(root, encoding="unicode")
        try:
            self.conn.defineXML(xml)
        except libvirt.libvirtError as e:
            raise HypervisorError(f"defining domain {name} failed: {e.get_error_message()}") from None

    def _owned(self, name: str):
        dom = self._domain(name)
        if dom is None:
            return None
        if _ownership(dom.XMLDesc(0)) is None:
            raise Refused(f"domain {name} was not created by swarmlab; leaving it alone")
        return dom

    def start(self, name: str) -> None:
        dom = self._owned(name)
        if dom is None:
            raise NotFound(f"domain {name} not found")
        if not dom.isActive():
            try:
                dom.create()
            except libvirt.libvirtError as e:
                raise HypervisorError(f"starting {name} failed: {e.get_error_message()}") from None

    def destroy(self, name: str) -> bool:
        """Hard power-off. Returns False when it was not running."""
        dom = self._owned(name)
        if dom is None or not dom.isActive():
            return False
        dom.destroy()
        return True

    def undefine(self, name: str) -> bool:
        dom = self._owned(name)
        if dom is None:
            return False
        if dom.isActive():
            dom.destroy()
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                          | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
        return True

    def mac_of(self, name: str) -> str:
        mac = ET.fromstring(self.domain_xml(name)).find("devices/interface/mac")
        return mac.get("address").lower()


def kvm_works(kernel: Path, timeout: float = 20) -> bool:
    """True when a guest really runs under KVM here. /dev/kvm can exist while guests hang
    (nested setups), so boot the template kernel with no root: it panics and, with
    panic=-1 and -no-reboot, qemu exits. A hang means KVM is not usable."""
    if not Path("/dev/kvm").exists():
        return False
    with tempfile.TemporaryDirectory() as tmp:
        console = Path(tmp) / "console"
        proc = subprocess.Popen(
            ["qemu-system-x86_64", "-accel", "kvm", "-m", "256", "-display", "none", "-no-reboot",
             "-serial", f"file:{console}", "-kernel", str(kernel),
             "-append", "console=ttyS0 panic=-1 root=/dev/null"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            # A qemu stuck inside KVM can take a minute to die; do not wait for it.
            proc.kill()
            return False
        return proc.returncode == 0 and "Kernel panic" in console.read_text(errors="replace")


def netmask(cidr: ipaddress.IPv4Network) -> str:
    return str(cidr.netmask)
