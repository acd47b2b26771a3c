"""A domain's share of the host's CPU, as libvirt's cgroups hold it: a cap (quota and period,
live and in its definition), its CPU time, and its weight against the others (live only).
Mixed into Hypervisor."""

from __future__ import annotations

import libvirt

from swarmlab.adapters.libvirt_errors import HypervisorError, libvirt_errors_as_ours
from swarmlab.adapters.libvirt_xml import ownership
from swarmlab.errors import NotFound


class CpuCapsUnavailable(HypervisorError):
    """The host's libvirt manages no cgroups (no CPU controller where it runs)."""


@libvirt_errors_as_ours
class CpuMixin:
    """Needs `_owned` and `conn` of the Hypervisor it is mixed into."""

    def cap_cpu(self, name: str, quota_us: int | None, period_us: int) -> None:
        """Caps the whole domain (its vCPUs and QEMU's own threads) at quota/period of one host
        CPU, live and in its definition, so a snapshot taken afterwards carries it; None lifts
        it. CpuCapsUnavailable where libvirt has no cgroup CPU controller to set it with."""
        dom = self._owned(name)
        if dom is None:
            raise NotFound(f"domain {name} not found")
        params = {"global_period": period_us, "global_quota": quota_us or -1}
        try:  # libvirt takes live and config one at a time for these
            if dom.isActive():
                dom.setSchedulerParametersFlags(params, libvirt.VIR_DOMAIN_AFFECT_LIVE)
            dom.setSchedulerParametersFlags(params, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        except libvirt.libvirtError as e:
            if "cgroup" in (e.get_error_message() or ""):
                raise CpuCapsUnavailable(f"{self.uri}: {e.get_error_message()}") from None
            raise

    def cpu_seconds(self, name: str) -> float | None:
        """CPU time the running domain has used so far, or None when it does not run."""
        dom = self._owned(name)
        if dom is None or not dom.isActive():
            return None
        return dom.info()[4] / 1e9

    def node_cpu(self) -> dict[str, tuple[float, int]]:
        """Every running swarmlab node: (CPU seconds it has used, its live CPU weight). Nodes
        without a weight (no cgroup CPU controller) are left out."""
        out = {}
        for dom in self.conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            try:
                if (ownership(dom.XMLDesc(0)) or {}).get("role") != "node":
                    continue
                weight = dom.schedulerParametersFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE).get("cpu_shares")
                if weight:
                    out[dom.name()] = (dom.info()[4] / 1e9, weight)
            except libvirt.libvirtError:  # gone meanwhile, or no cgroup
                continue
        return out

    def set_cpu_weight(self, name: str, weight: int) -> None:
        """The running domain's CPU weight against the others (cgroup shares), live only: its
        definition, and so its snapshots, keep their own."""
        dom = self._owned(name)
        if dom is None or not dom.isActive():
            return
        try:
            dom.setSchedulerParametersFlags({"cpu_shares": weight}, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as e:
            raise HypervisorError(f"setting the CPU weight of {name} failed: {e.get_error_message()}") from None

    def cpu_cap(self, name: str) -> tuple[int, int] | None:
        """(quota, period) in microseconds that the running domain is held to, or None."""
        dom = self._owned(name)
        if dom is None or not dom.isActive():
            return None
        try:
            params = dom.schedulerParametersFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError:
            return None
        quota = params.get("global_quota", -1)
        return (quota, params.get("global_period", 0)) if quota > 0 else None
