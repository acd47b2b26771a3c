"""Networks through libvirt: swarmlab's own NAT networks, their DHCP leases and fixed
reservations. Mixed into Hypervisor."""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import libvirt

from swarmlab.adapters.libvirt_errors import HypervisorError, libvirt_errors_as_ours, only_missing
from swarmlab.adapters.libvirt_xml import dhcp_host_xml, dns_forwarder, ownership, runs_stp, split_network_xml
from swarmlab.errors import NotFound, Refused


@dataclass
class NetworkState:
    name: str
    exists: bool = False
    active: bool = False
    owner: dict | None = None
    dhcp_ranges: list[tuple[str, str]] = field(default_factory=list)
    bridge: str | None = None
    gateway: str | None = None


def _nodes_attached(net) -> bool:
    return bool(net.isActive() and int(ET.fromstring(net.XMLDesc()).get("connections", "0")))


@libvirt_errors_as_ours
class NetworkMixin:
    """Needs `conn` of the Hypervisor it is mixed into."""

    def network_ranges(self) -> list[ipaddress.IPv4Network]:
        """The IPv4 ranges of every network on the host, swarmlab's or not."""
        out = []
        for net in self.conn.listAllNetworks():
            for ip in ET.fromstring(net.XMLDesc()).findall("ip"):
                if ip.get("address") and ip.get("netmask") and ":" not in ip.get("address"):
                    out.append(ipaddress.IPv4Network(f"{ip.get('address')}/{ip.get('netmask')}", strict=False))
        return out

    def _network(self, name: str):
        try:
            return self.conn.networkLookupByName(name)
        except libvirt.libvirtError as e:
            only_missing(e)
            return None

    def network_state(self, name: str) -> NetworkState:
        net = self._network(name)
        if net is None:
            return NetworkState(name)
        root = ET.fromstring(net.XMLDesc())
        ip = root.find("ip")
        bridge = root.find("bridge")
        return NetworkState(
            name, exists=True, active=bool(net.isActive()), owner=ownership(net.XMLDesc()),
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
        elif ownership(net.XMLDesc()) is None:
            raise Refused(f"network {name} exists and was not created by swarmlab: "
                          "choose another [libvirt] network name, or point swarmlab at it without `host up`")
        elif dns_forwarder(net.XMLDesc()) not in (None, dns_forwarder(xml)):
            net = self._redefine_network(name, net, xml, changes, "the lab zone goes to "
                                         f"{dns_forwarder(xml)}, no longer {dns_forwarder(net.XMLDesc())}")
        elif runs_stp(net.XMLDesc()) and not _nodes_attached(net):  # else at the next `host up` that finds none
            net = self._redefine_network(name, net, xml, changes,
                                         "its bridge forwards a new node's frames at once (no STP)")
        if not net.isActive():
            try:
                net.create()
            except libvirt.libvirtError as e:
                raise HypervisorError(f"starting network {name} failed: {e.get_error_message()}") from None
            changes.append(f"started network {name}")
        if not net.autostart():
            net.setAutostart(True)
        return changes

    def _redefine_network(self, name: str, net, xml: str, changes: list[str], why: str):
        """A network of ours whose DNS forwarder is not the config's (a changed [host] dns_port,
        or one left by a host that was killed), or whose bridge still runs STP: made again, its
        DHCP reservations kept, when no node is attached to it. libvirt cannot change either
        on a running network."""
        current = ET.fromstring(net.XMLDesc())
        was, wanted = dns_forwarder(net.XMLDesc()), dns_forwarder(xml)
        if _nodes_attached(net):
            raise Refused(f"network {name} forwards the lab zone to {was}, not to {wanted} as the config says, and "
                          f"nodes are attached to it: bring its labs down (`swarmlab down`), then `swarmlab host up`")
        desired = ET.fromstring(xml)
        dhcp = desired.find("ip/dhcp")
        for host in current.findall("ip/dhcp/host"):
            dhcp.append(host)
        try:
            if net.isActive():
                net.destroy()
            net.undefine()
            net = self.conn.networkDefineXML(ET.tostring(desired, encoding="unicode"))
        except libvirt.libvirtError as e:
            raise HypervisorError(f"redefining network {name} failed: {e.get_error_message()}") from None
        changes.append(f"redefined network {name}: {why}")
        return net

    def remove_network(self, name: str) -> list[str]:
        net = self._network(name)
        if net is None:
            return []
        if ownership(net.XMLDesc()) is None:
            raise Refused(f"network {name} was not created by swarmlab; leaving it alone")
        changes = []
        persistent = net.isPersistent()
        if net.isActive():
            net.destroy()
            changes.append(f"stopped network {name}")
        if persistent:
            net.undefine()
            changes.append(f"undefined network {name}")
        return changes

    # --- a lab's split network (`chaos split`) ----------------------------------------------
    def open_split_network(self, name: str, lab: str) -> None:
        """The lab's split network, started: transient, so nothing of it outlives the host's
        libvirtd. One of another owner by that name is refused."""
        net = self._network(name)
        if net is not None:
            owner = ownership(net.XMLDesc())
            if owner is None or owner.get("role") != "split" or owner.get("lab") != lab:
                raise Refused(f"network {name} exists and is not lab {lab}'s split network; leaving it alone")
            if not net.isActive():
                net.create()
            return
        try:
            self.conn.networkCreateXML(split_network_xml(name, lab))
        except libvirt.libvirtError as e:
            raise HypervisorError(f"starting network {name} failed: {e.get_error_message()}") from None

    def split_networks(self, lab: str) -> list[str]:
        """The names of the lab's split networks on this host (one at most, unless a run was killed)."""
        return [net.name() for net in self.conn.listAllNetworks()
                if (owner := ownership(net.XMLDesc())) and owner.get("role") == "split" and owner.get("lab") == lab]

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
        if ownership(net.XMLDesc()) is None:
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
                               dhcp_host_xml(mac, ip, name))

    def remove_reservation(self, network: str, mac: str) -> bool:
        ip = self.dhcp_reservations(network).get(mac.lower())
        if ip is None:
            return False
        self._update_dhcp_host(network, libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE,
                               dhcp_host_xml(mac, ip))
        return True
