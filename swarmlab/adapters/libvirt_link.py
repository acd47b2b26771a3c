"""A node's cable, as the hypervisor holds it: the link state of its network interface,
changed live (`virsh domif-setlink`). The guest sees its NIC lose carrier, and nothing inside
it can bring the link back. Mixed into Hypervisor."""

from __future__ import annotations

import libvirt

from swarmlab.adapters.libvirt_errors import HypervisorError, libvirt_errors_as_ours
from swarmlab.adapters.libvirt_xml import interface_link, with_link
from swarmlab.errors import NotFound


@libvirt_errors_as_ours
class LinkMixin:
    """Needs `_owned` of the Hypervisor it is mixed into."""

    def link_up(self, name: str) -> bool | None:
        """Whether the running domain's link is up; None when it does not run."""
        dom = self._owned(name)
        if dom is None or not dom.isActive():
            return None
        return interface_link(dom.XMLDesc(0))[1]

    def set_link(self, name: str, up: bool) -> bool:
        """The running domain's link up or down, live only: its definition and snapshots keep
        theirs. True when it changed."""
        dom = self._owned(name)
        if dom is None or not dom.isActive():
            raise NotFound(f"domain {name} is not running")
        interface, was_up = interface_link(dom.XMLDesc(0))
        if was_up == up:
            return False
        try:
            dom.updateDeviceFlags(with_link(interface, up), libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as e:
            raise HypervisorError(f"setting the link of {name} {'up' if up else 'down'} failed: "
                                  f"{e.get_error_message()}") from None
        return True
