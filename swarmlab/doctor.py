"""`swarmlab doctor`: one check per part of the lab host, each with a fix when it fails."""

from __future__ import annotations

from .config import Config
from .dns import PowerDNS
from .errors import SwarmlabError
from .hypervisor import Hypervisor


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
            else:
                add("template", True, f"{config.template} is {tmpl.state}"
                    + (f", recipe {tmpl.owner.get('recipe')}" if tmpl.owner else " (your own template)"))
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
    return checks
