"""libvirt adapter: the connection and domains, with networks, storage and the guest agent
mixed in from their own modules; ownership metadata.

Ownership: every network and domain swarmlab creates carries
<swarmlab:resource xmlns:swarmlab=NS_URI role=... lab=...> in its <metadata>, and every
destructive call here checks it first. Volumes belong to swarmlab's own pool.
"""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import libvirt

from swarmlab.adapters.guest_agent import GuestAgentMixin
from swarmlab.adapters.libvirt_errors import HypervisorError, libvirt_errors_as_ours, only_missing
from swarmlab.adapters.libvirt_events import start_event_loop
from swarmlab.adapters.libvirt_cpu import CpuCapsUnavailable, CpuMixin  # noqa: F401 (callers import it here)
from swarmlab.adapters.libvirt_link import LinkMixin
from swarmlab.adapters.libvirt_network import NetworkMixin
from swarmlab.adapters.libvirt_storage import StorageMixin
from swarmlab.adapters.domain_xml import DomainXML
from swarmlab.adapters.libvirt_xml import ownership
from swarmlab.config import is_local_uri
from swarmlab.errors import NotFound, Refused, SwarmlabError

STATE_NAMES = {  # as `virsh domstate` says them
    libvirt.VIR_DOMAIN_NOSTATE: "no state", libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "idle", libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "in shutdown", libvirt.VIR_DOMAIN_SHUTOFF: "shut off",
    libvirt.VIR_DOMAIN_CRASHED: "crashed", libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}

# libvirt prints every error to stderr by default; we report our own one-line errors.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


@dataclass
class DomainState:
    name: str
    state: str
    owner: dict | None

    @property
    def running(self) -> bool:
        return self.state in ("running", "idle", "paused")


# One long-lived connection per remote host for the whole process, with keepalive, and
# opened again when keepalive finds it dead: a class command talks to each host hundreds of
# times from many threads (libvirt connections are thread-safe).
_remote_conns: dict[str, libvirt.virConnect] = {}
_remote_conns_lock = threading.Lock()
KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 5, 3  # a host that stops answering is dropped after ~20 s


def _remote_conn(uri: str) -> libvirt.virConnect:
    with _remote_conns_lock:
        conn = _remote_conns.get(uri)
        if conn is not None and conn.isAlive():
            return conn
        if conn is not None:
            try:
                conn.close()
            except libvirt.libvirtError:
                pass
            del _remote_conns[uri]
        start_event_loop()  # keepalive runs on libvirt's event loop
        conn = libvirt.open(uri)
        conn.setKeepAlive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT)
        _remote_conns[uri] = conn
        return conn


@libvirt_errors_as_ours
class Hypervisor(NetworkMixin, StorageMixin, GuestAgentMixin, LinkMixin, CpuMixin):
    def __init__(self, uri: str, conn: libvirt.virConnect | None = None):
        """`conn`: an open connection to use, as the test:/// driver needs (its state lives
        per connection)."""
        self.uri = uri
        self.remote = not is_local_uri(uri)
        self._conn = conn

    @property
    def conn(self) -> libvirt.virConnect:
        if self._conn is None or (self.remote and not self._conn.isAlive()):
            try:
                self._conn = _remote_conn(self.uri) if self.remote else libvirt.open(self.uri)
            except libvirt.libvirtError as e:
                fix = ("check that its libvirtd runs and listens, and `swarmlab doctor --host " + self.uri + "`"
                       if self.remote else "start it with `swarmlab host up`, or fix [libvirt] uri")
                raise HypervisorError(f"libvirt at {self.uri} is not reachable ({e.get_error_message()}): "
                                      + fix) from None
        return self._conn

    def __enter__(self) -> "Hypervisor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None and self.remote:
            self._conn = None  # the shared connection stays open for the next user
        if self._conn is not None:
            try:
                self._conn.close()
            except libvirt.libvirtError:
                pass
            self._conn = None

    def version(self) -> str:
        v = self.conn.getLibVersion()
        return f"{v // 1000000}.{v // 1000 % 1000}.{v % 1000}"

    # --- capacity -------------------------------------------------------------------------
    def memory_mib(self) -> int:
        return int(self.conn.getInfo()[1])

    def cpus(self) -> int:
        return int(self.conn.getInfo()[2])

    def node_count(self) -> int:
        """Nodes swarmlab made on this host, in any state: what class placement counts as
        taken (a shut-off lab comes back)."""
        return sum(1 for dom in self.conn.listAllDomains()
                   if (owner := ownership(dom.XMLDesc(0))) is not None and owner.get("role") == "node")

    # --- domains ----------------------------------------------------------------------------
    def _domain(self, name: str):
        try:
            return self.conn.lookupByName(name)
        except libvirt.libvirtError as e:
            only_missing(e)
            return None

    def domain_state(self, name: str) -> DomainState | None:
        dom = self._domain(name)
        if dom is None:
            return None
        state = STATE_NAMES.get(dom.state()[0], "unknown")
        return DomainState(name, state, ownership(dom.XMLDesc(0)))

    def domain_xml(self, name: str) -> str:
        dom = self._domain(name)
        if dom is None:
            raise NotFound(f"domain {name} not found")
        return dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)

    def source_path(self, source: dict[str, str]) -> str | None:
        """The file or device behind a disk's <source>, or None when it is gone."""
        if source.get("pool"):
            try:
                return self.volume_path(source["pool"], source.get("volume", ""))
            except SwarmlabError:
                return None
        path = source.get("file") or source.get("dev")
        return path if path and Path(path).exists() else None

    def disk_path(self, name: str) -> str | None:
        """The first disk's file, or None when its volume or file is gone."""
        source = DomainXML(self.domain_xml(name)).first_disk_source
        return None if source is None else self.source_path(source)

    def ping(self) -> None:
        """Raises HypervisorError when libvirt does not answer."""
        self.conn.getLibVersion()

    def offers_kvm(self) -> bool:
        """Whether this host's libvirt lists KVM for x86_64 guests (its capabilities)."""
        caps = ET.fromstring(self.conn.getCapabilities())
        return any(d.get("type") == "kvm" for arch in caps.iterfind("guest/arch[@name='x86_64']")
                   for d in arch.iterfind("domain"))

    def running_foreign_domains(self) -> list[str]:
        """Running domains that swarmlab did not create."""
        return sorted(d.name() for d in self.conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
                      if ownership(d.XMLDesc(0)) is None)

    def owned_domains(self) -> list[DomainState]:
        out = []
        for dom in self.conn.listAllDomains():
            owner = ownership(dom.XMLDesc(0))
            if owner is not None:
                out.append(DomainState(dom.name(), STATE_NAMES.get(dom.state()[0], "unknown"), owner))
        return sorted(out, key=lambda d: d.name)

    def define_domain(self, xml: str) -> None:
        if ownership(xml) is None:
            raise HypervisorError("refusing to define a domain without swarmlab ownership metadata")
        domain = DomainXML(xml)
        name = domain.name
        existing = self._domain(name)
        if existing is not None:
            if ownership(existing.XMLDesc(0)) is None:
                raise Refused(f"domain {name} exists and was not created by swarmlab; pick another name")
            if domain.uuid is None:  # redefining keeps the domain's identity
                domain.uuid = existing.UUIDString()
                xml = str(domain)
        try:
            self.conn.defineXML(xml)
        except libvirt.libvirtError as e:
            raise HypervisorError(f"defining domain {name} failed: {e.get_error_message()}") from None

    def _owned(self, name: str):
        dom = self._domain(name)
        if dom is None:
            return None
        if ownership(dom.XMLDesc(0)) is None:
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
        flags = libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        if DomainXML(dom.XMLDesc(0)).has_nvram:
            flags |= libvirt.VIR_DOMAIN_UNDEFINE_NVRAM  # the clone's own copy, made from the template's
        dom.undefineFlags(flags)
        return True

    # --- snapshots, pause and guest clocks --------------------------------------------------
    def suspend(self, name: str) -> bool:
        dom = self._owned(name)
        if dom is None or dom.state()[0] != libvirt.VIR_DOMAIN_RUNNING:
            return False
        dom.suspend()
        return True

    def resume(self, name: str) -> bool:
        dom = self._owned(name)
        if dom is None or dom.state()[0] != libvirt.VIR_DOMAIN_PAUSED:
            return False
        dom.resume()
        return True

    def snapshot_names(self, name: str) -> list[str]:
        dom = self._domain(name)
        return sorted(dom.snapshotListNames()) if dom is not None else []

    def create_snapshot(self, name: str, snapshot: str, description: str = "") -> None:
        """An internal snapshot of disk and memory (the domain should be paused, so that all
        nodes of a lab are caught at one moment)."""
        dom = self._owned(name)
        if dom is None:
            raise NotFound(f"domain {name} not found")
        root = ET.Element("domainsnapshot")
        ET.SubElement(root, "name").text = snapshot
        ET.SubElement(root, "description").text = description
        try:
            dom.snapshotCreateXML(ET.tostring(root, encoding="unicode"), 0)
        except libvirt.libvirtError as e:
            raise HypervisorError(f"snapshot {snapshot} of {name} failed: {e.get_error_message()}") from None

    def revert_snapshot(self, name: str, snapshot: str, running: bool = False) -> None:
        """Back to the snapshot, left paused (the caller resumes every node of the lab at once)
        unless `running`."""
        dom = self._owned(name)
        if dom is None:
            raise NotFound(f"domain {name} not found")
        flags = libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING if running else libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED
        try:
            dom.revertToSnapshot(dom.snapshotLookupByName(snapshot), flags)
        except libvirt.libvirtError as e:
            raise HypervisorError(f"reverting {name} to {snapshot} failed: {e.get_error_message()}") from None

    def redefine_snapshot(self, name: str, snapshot_xml: str) -> None:
        """Snapshot metadata for state that is already in the domain's disk image (a copy of
        the template's wake image)."""
        dom = self._owned(name)
        if dom is None:
            raise NotFound(f"domain {name} not found")
        try:
            dom.snapshotCreateXML(snapshot_xml, libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE)
        except libvirt.libvirtError as e:
            raise HypervisorError(f"recording the saved state of {name} failed: {e.get_error_message()}") from None

    def attach_device(self, name: str, device_xml: str) -> None:
        """A device plugged into the running domain and kept in its definition."""
        dom = self._owned(name)
        if dom is None:
            raise NotFound(f"domain {name} not found")
        try:
            dom.attachDeviceFlags(device_xml, libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        except libvirt.libvirtError as e:
            raise HypervisorError(f"plugging a device into {name} failed: {e.get_error_message()}") from None

    def delete_snapshot(self, name: str, snapshot: str) -> bool:
        dom = self._owned(name)
        if dom is None or snapshot not in dom.snapshotListNames():
            return False
        dom.snapshotLookupByName(snapshot).delete(0)
        return True

    def mac_of(self, name: str) -> str:
        return DomainXML(self.domain_xml(name)).mac
