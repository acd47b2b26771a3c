"""A node's cable, as the hypervisor holds it: the link state of its network interface and the
network it is plugged into, changed live (`virsh domif-setlink`, `virsh update-device`). The
guest sees its NIC lose carrier, or its neighbours change, and nothing inside it can undo
either. Mixed into Hypervisor."""

from __future__ import annotations

from dataclasses import dataclass

import libvirt

from swarmlab.adapters.libvirt_errors import HypervisorError, libvirt_errors_as_ours
from swarmlab.adapters.libvirt_xml import interface_link, interface_network, on_network, with_link
from swarmlab.errors import NotFound


@dataclass(frozen=True)
class Cable:
    """A running node's interface: whether its link is up, the network it is plugged into now,
    and the network its definition names (where a heal plugs it back)."""
    up: bool
    network: str | None
    own_network: str | None

    @property
    def moved(self) -> bool:
        return self.network != self.own_network

    @property
    def cut_off(self) -> bool:
        return not self.up or self.moved


@libvirt_errors_as_ours
class LinkMixin:
    """Needs `_owned` of the Hypervisor it is mixed into."""

    def cable(self, name: str) -> Cable | None:
        """The running domain's cable; None when it does not run."""
        dom = self._owned(name)
        if dom is None or not dom.isActive():
            return None
        live, up = interface_link(dom.XMLDesc(0))
        defined, _ = interface_link(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        return Cable(up, interface_network(live), interface_network(defined))

    def link_up(self, name: str) -> bool | None:
        """Whether the running domain's link is up; None when it does not run."""
        cable = self.cable(name)
        return cable.up if cable else None

    def set_link(self, name: str, up: bool) -> bool:
        """The running domain's link up or down, live only: its definition and snapshots keep
        theirs. True when it changed."""
        dom, interface = self._live_interface(name)
        was_up = interface_link(dom.XMLDesc(0))[1]
        if was_up == up:
            return False
        self._update_live(dom, name, with_link(interface, up), f"setting the link {'up' if up else 'down'}")
        return True

    def plug_into(self, name: str, network: str | None) -> bool:
        """The running domain's interface moved to `network` (None: back to the one its
        definition names), live only. True when it moved."""
        dom, interface = self._live_interface(name)
        if network is None:
            network = interface_network(interface_link(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))[0])
        if network is None or interface_network(interface) == network:
            return False
        self._update_live(dom, name, on_network(interface, network), f"moving the interface to network {network}")
        return True

    def _live_interface(self, name: str):
        dom = self._owned(name)
        if dom is None or not dom.isActive():
            raise NotFound(f"domain {name} is not running")
        return dom, interface_link(dom.XMLDesc(0))[0]

    @staticmethod
    def _update_live(dom, name: str, device_xml: str, what: str) -> None:
        try:
            dom.updateDeviceFlags(device_xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as e:
            raise HypervisorError(f"{what} of {name} failed: {e.get_error_message()}") from None
