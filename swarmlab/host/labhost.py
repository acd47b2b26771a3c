"""The embedded lab host: network namespace, libvirtd, the lab network, PowerDNS, pools.

`host up` makes it, `host status` reads it, `host down` removes it. What `host up` started
is recorded in <state_dir>/host.json so that later commands (in any shell) enter the same
namespace and `host down` stops exactly that.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from swarmlab.adapters import dns, firewall, ksm
from swarmlab.adapters.daemons import (REGISTRY_PORT, PdnsServer, Progress, RegistryServer, _stop_pid, ensure_libvirtd,
                                       find_process, fix_kvm_device, pdns_server, push_registry_server, registry_server,
                                       services_registry_server)
from swarmlab.adapters.dns import PowerDNS
from swarmlab.adapters.hypervisor import Hypervisor
from swarmlab.adapters.keys import ensure_api_key, ensure_ssh_key
from swarmlab.adapters.libvirt_xml import network_xml
from swarmlab.adapters.netns import enter_netns, in_netns, netns_exists
from swarmlab.adapters.netns import machine_networks as netns_machine_networks
from swarmlab.config import Config
from swarmlab.errors import Refused, SwarmlabError
from swarmlab.host import images
from swarmlab.host.hoststate import HostError, HostState, machine_networks


# --- host up / status / down ----------------------------------------------------------------
def _check_embedded_api_url(config: Config) -> None:
    host = urlsplit(config.api_url).hostname
    if host not in ("127.0.0.1", "localhost"):
        raise HostError(f"[dns] api_url {config.api_url} is not on 127.0.0.1: the embedded PowerDNS "
                        "listens on loopback only; use http://127.0.0.1:PORT or skip `host up`")


def host_up(config: Config, isolated: bool, progress: Progress = lambda _m: None) -> list[str]:
    """Brings the embedded lab host up. Returns the list of changes (empty: nothing to do)."""
    _check_embedded_api_url(config)
    state = HostState.load(config) or HostState()
    if state.namespace and state.isolated != isolated:
        mode = "isolated" if state.isolated else "not isolated"
        raise Refused(f"the lab host is already up ({mode}): run `swarmlab host down` first to switch")
    changes: list[str] = []
    namespace = config.namespace if isolated else None
    running = find_process("libvirtd")
    if namespace and running and not in_netns(namespace, running):
        # Refuse before creating anything, so a refusal leaves no namespace behind.
        raise Refused(f"libvirtd (pid {running}) already runs outside namespace {namespace}, so lab "
                      "networks would leak into the host network: stop it first (`swarmlab host down` "
                      "for another lab host), or use `host up` without --isolated")
    if namespace and not netns_exists(namespace):
        progress(f"creating network namespace {namespace}")
        subprocess.run(["ip", "netns", "add", namespace], check=True, capture_output=True)
        subprocess.run(["ip", "-n", namespace, "link", "set", "lo", "up"], check=True, capture_output=True)
        changes.append(f"created network namespace {namespace}")
    state.isolated, state.namespace = isolated, namespace
    live = netns_machine_networks(config.namespace)  # for a later command started inside the namespace
    if live is not None:
        state.machine_addresses = [str(i) for i in live]
    state.save(config)  # from here on, `host down` can undo whatever follows
    if namespace:
        enter_netns(namespace)

    if fix_kvm_device():
        changes.append("set /dev/kvm to root:kvm 0660, as Debian's udev rule does (no udev runs here)")
    started = ensure_libvirtd(config, namespace, progress)
    state.started = sorted(set(state.started) | set(started))
    changes += [f"started {d}" for d in started]
    state.save(config)

    for created in (ensure_ssh_key(config) and f"created SSH key {config.ssh_key_path}",):
        if created:
            changes.append(created)

    server = pdns_server(config)
    key, new_key = ensure_api_key(config)
    if new_key:
        changes.append(f"created PowerDNS API key file {config.api_key_path} (0600)")
    client = dns.PowerDNS(config.api_url, key)
    if server.running(state.pdns_pid) and server.settings_changed(key):
        progress("restarting PowerDNS with new settings ([host] services_address)")
        PdnsServer.stop(state.pdns_pid)
        state.pdns_pid = None
        changes.append("stopped PowerDNS to apply new settings")
    if not server.running(state.pdns_pid):
        progress(f"starting PowerDNS (API 127.0.0.1:{config.api_port}, DNS {', '.join(['127.0.0.1', *server.also_on])}"
                 f":{config.dns_port})")
        server.prepare(key)
        proc = server.start(namespace)
        state.pdns_pid = proc.pid
        state.save(config)
        server.wait_ready(client, proc)
        changes.append(f"started PowerDNS (pid {state.pdns_pid})")
    if client.ensure_zone(config.zone):
        changes.append(f"created zone {config.zone}")

    with Hypervisor(config.uri) as hv:
        progress(f"ensuring lab network {config.network} ({config.cidr})")
        changes += hv.ensure_network(config.network, network_xml(config))
        changes += hv.ensure_pool(config.template_pool, config.cache_dir / "images", image_cache=True)
        changes += hv.ensure_pool(config.node_pool, config.state_dir / "volumes")

    registry = registry_server(config)  # binds the lab network's gateway: after the network
    changes += _ensure_registry(registry, state, "registry_pid", namespace, config, progress)
    services_registry = services_registry_server(config)
    changes += _stop_services_registry(config, state, keep=services_registry.address if services_registry else None)
    if services_registry:  # the same mirror for hosts on other machines
        changes += _ensure_registry(services_registry, state, "services_registry_pid", namespace, config, progress)
    if guard_nodes(config):
        changes.append("installed the node filter (nftables table inet swarmlab): nodes reach DNS, DHCP and the "
                       "registry mirror on this host, not its management ports")
    pushed = _push_stand_ins(config, namespace)
    if pushed:
        changes.append(f"pushed the offline stand-ins into the registry: {', '.join(pushed)}")
    changes += _ensure_ksm(config, state)
    return changes


def _ensure_ksm(config: Config, state: HostState) -> list[str]:
    """Same-page merging on (or back as it was, when [host] ksm = false), with the settings
    found first kept in host.json for `host down`."""
    if not config.ksm:
        restored = _restore_ksm(state)
        state.save(config)
        return restored
    before = ksm.turn_on()
    if before is None:
        return []
    if state.ksm_before is None:
        state.ksm_before = before
        state.save(config)
    rate = ksm.LAB_RATE
    return [f"turned on same-page merging (KSM, {rate['pages_to_scan']} pages every {rate['sleep_millisecs']} ms): "
            "clones of the template share their identical memory"]


def _restore_ksm(state: HostState) -> list[str]:
    if not state.ksm_before or not ksm.available():
        return []
    ksm.apply(state.ksm_before)
    was = "off" if not state.ksm_before.get("run") else "as it was"
    state.ksm_before = None
    return [f"same-page merging (KSM) back {was}"]


def protected_addresses(config: Config, machine: list[str] | None = None) -> list[str]:
    """The class's other hosts, the services address and every other address of this machine
    (the controller: its sshd, the portal): nodes reach only DNS and the mirror there."""
    if machine is None:
        machine = [str(i.ip) for i in machine_networks(config)]
    names = [config.services_address, *machine]
    for host in config.lab_hosts:
        if not host.local:
            names += [urlsplit(host.uri).hostname or "", (host.jump or "").rpartition("@")[2].rsplit(":", 1)[0]]
    return firewall.addresses(names)


def node_filter(config: Config) -> str:
    return firewall.ruleset(protected_addresses(config), REGISTRY_PORT)


def guard_nodes(config: Config) -> bool:
    """The node filter on this host (in the namespace this process is in); True if it changed."""
    wanted = node_filter(config)
    before = firewall.installed_here()
    firewall.apply_here(wanted)
    return firewall.installed_here() != before


def _push_stand_ins(config: Config, namespace: str | None) -> list[str]:
    """The stand-ins into the mirror's storage through a read-write instance on loopback, stopped
    right after: what the nodes reach never takes a push."""
    server = push_registry_server(config, _free_loopback_port())
    proc = server.start(namespace)
    try:
        server.wait_ready(proc)
        return images.push(server.address)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _free_loopback_port() -> int:
    """A free port on loopback (in the namespace this process is in: the lab host's)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ensure_registry(server: RegistryServer, state: HostState, pid_field: str, namespace: str | None,
                     config: Config, progress: Progress) -> list[str]:
    changes = []
    pid = getattr(state, pid_field)
    if server.running(pid):
        if not server.settings_changed():
            return []
        progress(f"restarting the registry mirror on {server.address} read-only")
        _stop_pid(pid, "docker-registry")
        changes.append(f"stopped the registry mirror {server.address} to restart it read-only")
    progress(f"starting the registry mirror on {server.address}")
    proc = server.start(namespace)
    setattr(state, pid_field, proc.pid)
    state.save(config)
    server.wait_ready(proc)
    return changes + [f"started the registry mirror {server.address} (pid {proc.pid}, read-only)"]


def _stop_services_registry(config: Config, state: HostState, keep: str | None = None) -> list[str]:
    """Stops the mirror on the services address, unless it serves `keep` (the address in the
    config now); whatever the config says, since services_address may have changed."""
    server = RegistryServer(config.state_dir / "registry-services", keep or "")
    if not server.running(state.services_registry_pid):
        return []
    try:
        serving = (server.directory / "config.yml").read_text()
    except OSError:
        serving = ""
    if keep and f"addr: {keep}\n" in serving:
        return []
    _stop_pid(state.services_registry_pid, "docker-registry")
    state.services_registry_pid = None
    return ["stopped the registry mirror on the old services address"]


def host_status(config: Config) -> dict:
    state = HostState.load(config)
    status: dict = {"up": False, "isolated": bool(state and state.isolated),
                    "namespace": state.namespace if state else None}
    if state is None:
        return status
    if state.namespace:
        status["namespace_exists"] = netns_exists(state.namespace)
    libvirtd = find_process("libvirtd")
    status["libvirtd_pid"] = libvirtd
    if state.namespace and libvirtd:
        status["libvirtd_in_namespace"] = in_netns(state.namespace, libvirtd)
    with Hypervisor(config.uri) as hv:
        try:
            net = hv.network_state(config.network) if libvirtd else None
        except SwarmlabError:
            net = None
    status["network"] = {"name": config.network, "active": bool(net and net.active),
                         "bridge": net.bridge if net else None, "gateway": net.gateway if net else None,
                         "dhcp": bool(net and net.dhcp_ranges)}
    server = pdns_server(config)
    status["pdns"] = {"pid": state.pdns_pid if server.running(state.pdns_pid) else None,
                      "api_url": config.api_url, "dns": f"127.0.0.1:{config.dns_port}"}
    try:
        status["pdns"]["zone"] = PowerDNS.from_config(config).zone_exists(config.zone)
    except SwarmlabError as e:
        status["pdns"]["error"] = str(e)
    registry = registry_server(config)
    status["registry"] = {"pid": state.registry_pid if registry.running(state.registry_pid) else None,
                          "address": registry.address}
    if (merging := ksm.reading()) is not None:
        status["ksm"] = merging
    status["up"] = bool(libvirtd and status["network"]["active"] and status["pdns"]["pid"]
                        and status["pdns"].get("zone") and status["registry"]["pid"]
                        and (not state.namespace or status.get("libvirtd_in_namespace")))
    return status


def host_down(config: Config, progress: Progress = lambda _m: None) -> list[str]:
    state = HostState.load(config)
    if state is None:
        return []
    changes: list[str] = []
    namespace = state.namespace if state.namespace and netns_exists(state.namespace) else None
    if namespace:
        enter_netns(namespace)
    libvirtd = find_process("libvirtd")
    ours = libvirtd and (not state.namespace or (namespace and in_netns(namespace, libvirtd)))
    if ours:
        with Hypervisor(config.uri) as hv:
            if "libvirtd" in state.started:
                foreign = hv.running_foreign_domains()
                if foreign:
                    raise Refused(f"domains not created by swarmlab are running ({', '.join(foreign)}): "
                                  "stop them first; swarmlab will not power them off")
                for dom in hv.owned_domains():
                    if dom.running and hv.destroy(dom.name):
                        changes.append(f"powered off {dom.name}")
            progress(f"removing network {config.network}")
            changes += hv.remove_network(config.network)
            for pool in (config.template_pool, config.node_pool):
                changes += hv.remove_pool(pool)
    if registry_server(config).running(state.registry_pid):
        progress("stopping the registry mirror")
        _stop_pid(state.registry_pid, "docker-registry")
        changes.append("stopped the registry mirror")
    changes += _stop_services_registry(config, state)
    if firewall.remove_here():
        changes.append("removed the node filter (nftables table inet swarmlab)")
    changes += _restore_ksm(state)
    if state.pdns_pid and pdns_server(config).running(state.pdns_pid):
        progress("stopping PowerDNS")
        PdnsServer.stop(state.pdns_pid)
        changes.append("stopped PowerDNS")
    for daemon in ("libvirtd", "virtlogd"):
        pid = find_process(daemon)
        if daemon in state.started and pid:
            progress(f"stopping {daemon}")
            _stop_pid(pid, daemon, timeout=20)
            changes.append(f"stopped {daemon}")
    if namespace:
        # Only what libvirt and host up run in there; a shell someone opened inside is theirs.
        ours = {"qemu-system-x86", "dnsmasq", "libvirtd", "virtlogd", "pdns_server", "docker-registry"}
        leftovers = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True).stdout.split()
        for pid in map(int, leftovers):
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if comm in ours:
                _stop_pid(pid, comm, timeout=5)
        subprocess.run(["ip", "netns", "del", namespace], check=True, capture_output=True)
        changes.append(f"removed network namespace {namespace}")
    HostState.path(config).unlink(missing_ok=True)
    return changes


