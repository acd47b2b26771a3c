"""`swarmlab doctor`: one check per part of the lab host, each with a fix when it fails."""

from __future__ import annotations

from swarmlab.adapters import daemons, ksm
from swarmlab.adapters.dns import PowerDNS
from swarmlab.adapters.hypervisor import Hypervisor
from swarmlab.config import Config, HostSpec, is_local_uri
from swarmlab.errors import SwarmlabError
from swarmlab.host.hoststate import machine_networks
from swarmlab.host.lab_hosts import pool_room, template_disk_bytes
from swarmlab.host.template_wake import machine_shape, wake_image_of


KSM_FIX = ("`swarmlab host up` turns it on for the lab host (unless [host] ksm = false); on a class host "
           "elsewhere, as root: `echo 1 > /sys/kernel/mm/ksm/run`")


def ksm_verdict(run: str | None, saved_mib: int | None = None, wanted: bool = True) -> tuple[bool, str]:
    """Whether a host merges its clones' identical pages, from /sys/kernel/mm/ksm/run. Off is
    fine when [host] ksm = false says so."""
    if run is None:
        return not wanted, "this kernel has no same-page merging (KSM): each node holds all of its memory"
    if run.strip() != "1":
        return not wanted, ("same-page merging (KSM) is off" + (": clones of the template do not share their pages"
                                                                if wanted else ", as [host] ksm = false asks"))
    return True, "same-page merging (KSM) on" + (f", {saved_mib} MiB shared" if saved_mib is not None else "")


def _local_ksm() -> tuple[str | None, int | None]:
    merging = ksm.reading()
    if merging is None:
        return None, None
    return ("1", merging["saved_mib"]) if merging["on"] else ("0", None)


def run_checks(config: Config) -> list[dict]:
    """One entry per check: {check, ok, detail, fix}."""
    checks: list[dict] = []

    def add(check: str, ok: bool, detail: str, fix: str = "") -> bool:
        checks.append({"check": check, "ok": ok, "detail": detail, "fix": "" if ok else fix})
        return ok

    with Hypervisor(config.uri) as hv:
        try:
            version = hv.version()
            libvirt_ok = add("libvirt", True, f"{config.uri} answers (libvirt {version})")
        except SwarmlabError as e:
            libvirt_ok = add("libvirt", False, str(e), "run `swarmlab host up` or fix [libvirt] uri")
        if libvirt_ok:
            net = hv.network_state(config.network)
            if not net.exists:
                add("network", False, f"network {config.network} is not defined", "run `swarmlab host up`")
            elif not net.active:
                add("network", False, f"network {config.network} is inactive",
                    f"run `swarmlab host up` or `virsh net-start {config.network}`")
            elif not net.dhcp_ranges:
                add("network", False, f"network {config.network} has no DHCP range",
                    "add a <dhcp><range> to the network, or let `swarmlab host up` manage it")
            else:
                add("network", True, f"{config.network} active, gateway {net.gateway}, DHCP "
                    + ", ".join(f"{a}-{b}" for a, b in net.dhcp_ranges))
            tmpl = hv.domain_state(config.template)
            if tmpl is None:
                add("template", False, f"domain {config.template} not found",
                    f"run `swarmlab template build --name {config.template}` or set [libvirt] template")
            elif tmpl.running:
                add("template", False, f"{config.template} is {tmpl.state}",
                    f"shut it down: `virsh shutdown {config.template}`")
            elif hv.disk_path(config.template) is None:
                add("template", False, f"{config.template}'s disk is missing",
                    f"run `swarmlab template build --name {config.template}`" if tmpl.owner
                    else "restore the template's disk image")
            elif tmpl.owner and tmpl.owner.get("recipe") and \
                    tmpl.owner.get("shape") != (shape := machine_shape(config.memory_mib, config.vcpus)):
                add("template", False, f"{config.template} was built for {tmpl.owner.get('shape') or 'other'} (MiB, vCPUs)"
                    f"; [nodes] asks {shape}, and clones copy the template",
                    f"run `swarmlab template build --name {config.template}`")
            else:
                woken = wake_image_of(config, hv, hv.domain_xml(config.template), tmpl.owner)
                add("template", True, f"{config.template} is {tmpl.state}"
                    + (f", recipe {tmpl.owner.get('recipe')}" if tmpl.owner else " (your own template)")
                    + ("; clones wake from its saved state" if woken else
                       "; no wake-up state: clones boot (`swarmlab template build` saves one)" if tmpl.owner
                       else "; clones boot"))
        else:
            add("network", False, "not checked: libvirt unreachable", "fix libvirt first")
            add("template", False, "not checked: libvirt unreachable", "fix libvirt first")

    try:
        client = PowerDNS.from_config(config)
        info = client.server_info()
        if client.zone_exists(config.zone):
            add("powerdns", True, f"{config.api_url} answers (PowerDNS {info.get('version', '?')}), "
                f"key accepted, zone {config.zone} present")
        else:
            add("powerdns", False, f"{config.api_url} answers, key accepted, but zone {config.zone} is missing",
                "run `swarmlab host up` (it creates the zone)")
    except SwarmlabError as e:
        add("powerdns", False, str(e), "run `swarmlab host up`, or fix [dns] api_url and the API key")

    key = config.ssh_key_path
    try:
        mode = key.stat().st_mode & 0o777
        add("ssh-key", mode == 0o600, f"{key} mode {mode:o}", f"chmod 600 {key}")
    except FileNotFoundError:
        add("ssh-key", False, f"{key} is missing", "run `swarmlab host up` (it creates the key) or set [ssh] key")
    add("ksm", *ksm_verdict(*_local_ksm(), wanted=config.ksm), KSM_FIX)
    local_qemu = config.uri.startswith("qemu:") and is_local_uri(config.uri)  # the libvirtd whose view we can read
    capped = cpu_caps_verdict(daemons.libvirtd_sees_cpu_cgroup(), config.cpu_cap_percent) if local_qemu else None
    if capped is not None:
        add("cpu caps", *capped, CPU_CAPS_FIX)
    return checks


CPU_CAPS_FIX = ("restart the lab host so that libvirtd starts with the cgroup hierarchies mounted: "
                "`swarmlab host down`, then `swarmlab host up --isolated`")


def cpu_caps_verdict(sees_cgroup: bool | None, setting: int) -> tuple[bool, str] | None:
    """Whether the lab host's libvirt can hold each class node to its CPU share; None when no
    libvirtd runs here to ask."""
    if sees_cgroup is None:
        return None
    if not sees_cgroup:
        return False, ("libvirtd sees no cgroup CPU controller: nodes share no CPU by cgroup, so one student's "
                       "spinning nodes slow the others")
    share = f"and held to {setting} % of a CPU each ([class] cpu_cap_percent)" if setting else \
        "(no cap: [class] cpu_cap_percent sets one)"
    return True, ("libvirtd sees the cgroup CPU controller: nodes get equal shares under contention, and while the "
                  f"portal runs a node that keeps a CPU busy weighs 1/16 {share}")


def libvirt_tcp_verdict(uri: str, networks: list) -> tuple[bool, str] | None:
    """Whether a host's libvirt, reached over plain TCP (no TLS, no login), sits on a network
    this machine shares with the class: whoever reaches it there owns the host. None for other
    transports."""
    from ipaddress import ip_address
    from urllib.parse import urlsplit
    parts = urlsplit(uri)
    if not parts.scheme.endswith("+tcp"):
        return None
    port = parts.port or 16509
    try:
        address = ip_address(parts.hostname or "")
    except ValueError:
        return False, f"libvirt on {parts.hostname}:{port} takes plain TCP; check that students cannot reach it"
    shared = [str(n.network) for n in networks if address in n.network]
    if shared:
        return False, (f"libvirt on {address}:{port} takes plain TCP on {shared[0]}, a network this machine's "
                       "students may be on: whoever reaches it controls the host")
    return True, f"libvirt on {address}:{port} takes plain TCP, on a network this machine shares with no class"


def run_host_checks(config: Config, spec: HostSpec) -> list[dict]:
    """A class host: libvirt, pools, template, room for labs and a free /24, and whether SSH and
    DNS reach its labs."""
    from swarmlab.core import placement
    checks: list[dict] = []

    def add(check: str, ok: bool, detail: str, fix: str = "") -> None:
        checks.append({"check": check, "ok": ok, "detail": detail, "fix": "" if ok else fix})

    try:
        with Hypervisor(spec.uri) as hv:
            add("libvirt", True, f"{spec.uri} answers (libvirt {hv.version()})")
            if spec.local:
                for pool in (config.template_pool, config.node_pool):
                    try:
                        hv.pool(pool)
                        add("pool", True, f"pool {pool} present")
                    except SwarmlabError:
                        add("pool", False, f"pool {pool} is missing", "run `swarmlab host up` on that host")
            tmpl = hv.domain_state(config.template)
            if spec.local or (tmpl and tmpl.running):
                add("template", tmpl is not None and not tmpl.running,
                    f"{config.template} is {tmpl.state}" if tmpl else f"domain {config.template} not found",
                    f"run `swarmlab template build` on that host, or shut {config.template} down")
            else:  # `class up` copies it there
                add("template", True, f"{config.template} present (recipe {tmpl.owner.get('recipe')})" if tmpl
                    else f"{config.template} is copied there at `class up`")
            used_nodes, cpus = hv.node_count(), 0 if hv.offers_kvm() else hv.cpus()
            cost = placement.node_cost_mib(config.node_mib, config.tb_cache_mib)
            pool = pool_room(config, hv, template_disk_bytes(config))
            free = placement.free_nodes(spec, hv.memory_mib(), used_nodes, cost, cpus, pool)
            bound = placement.room_bound(spec, hv.memory_mib(), cost, cpus, pool)
            add("room", free > 0, f"{free} more nodes ({used_nodes} there now; bound by {bound})",
                "free the host, or raise its capacity in [[hosts]]")
            try:
                subnet = placement.next_subnet(spec.lab_range, hv.network_ranges() + [config.cidr])
                add("lab range", True, f"next lab network {subnet} (from {spec.lab_range})")
            except SwarmlabError as e:
                add("lab range", False, str(e), "give the host a wider lab_range")
    except SwarmlabError as e:
        add("libvirt", False, str(e), "start libvirtd there, or fix the URI")
    exposed = libvirt_tcp_verdict(spec.uri, machine_networks(config))
    if exposed is not None:
        add("libvirt tcp", *exposed, "make that libvirtd listen only where students cannot reach it (a private "
            "link to this machine), or use qemu+ssh:// or qemu+tls://")
    problem = placement.remote_problem(config, spec)
    if problem:
        add("reach", False, f"{spec.name} {problem}", "see the detail")
    elif not spec.local:
        from swarmlab.adapters.dns import zone_served_at
        from swarmlab.adapters import remote
        from swarmlab.adapters.remote import jump_connection
        from swarmlab.core.command import sh
        from swarmlab.lab.model import jump, scoped
        try:
            via = jump(scoped(config, spec, config.network, config.cidr))
            conn = jump_connection(via)
            add("ssh", True, f"{via.user}@{via.host}:{via.port} answers: SSH to its nodes goes through it")
            run = remote.run(conn, sh("cat /sys/kernel/mm/ksm/run 2>/dev/null || true")).strip() or None
            add("ksm", *ksm_verdict(run, wanted=config.ksm), KSM_FIX)
        except SwarmlabError as e:
            add("ssh", False, str(e), "check that sshd runs there and takes the key ([[hosts]] ssh, ssh_key)")
        answered = zone_served_at(config, config.services_address)
        add("dns", answered, f"PowerDNS {'answers' if answered else 'does not answer'} on "
            f"{config.services_address}:{config.dns_port}, "
            "where the host's lab networks forward the zone", "run `swarmlab host up` after setting "
            "[host] services_address")
    else:
        add("reach", True, "SSH and DNS reach its labs from here")
        add("ksm", *ksm_verdict(*_local_ksm(), wanted=config.ksm), KSM_FIX)
    return checks
