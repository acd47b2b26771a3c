"""The libvirt hosts a class uses: the room each has (read from libvirt), and adding or
removing one in swarmlab.toml (`host add/ls/rm`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from swarmlab.adapters.hypervisor import Hypervisor
from swarmlab.config import LOCAL_HOST, Config, HostSpec
from swarmlab.config_edit import with_host_added, with_host_removed
from swarmlab.core.placement import (HostRoom, PoolRoom, free_nodes, node_cost_mib, node_cpu_percent,
                                     node_disk_bytes, remote_problem, room_bound)
from swarmlab.core.roster import slug
from swarmlab.errors import Refused, SwarmlabError

DEFAULT_DISK_BYTES = 8 << 30  # host/template.py's DISK_SIZE


def survey(config: Config) -> list[HostRoom]:
    """Every host's free room, read from libvirt; a host that cannot be reached, or lacks the
    template, takes nothing and says why. A host on another machine gets the template at
    `class up`."""
    cost = node_cost_mib(config.node_mib, config.tb_cache_mib)
    disk = template_disk_bytes(config)
    rooms = []
    for spec in config.lab_hosts:
        problem = remote_problem(config, spec)
        if problem:
            rooms.append(HostRoom(spec.name, 0, problem))
            continue
        try:
            with Hypervisor(spec.uri) as hv:
                if spec.local and hv.domain_state(config.template) is None:
                    rooms.append(HostRoom(spec.name, 0, f"has no template {config.template} "
                                                        "(`swarmlab template build` on it)"))
                    continue
                host_mib, cpus, pool = hv.memory_mib(), emulated_cpus(hv), pool_room(config, hv, disk)
                free = free_nodes(spec, host_mib, hv.node_count(), cost, cpus, pool)
                rooms.append(HostRoom(spec.name, free, bound_by=room_bound(spec, host_mib, cost, cpus, pool)))
        except SwarmlabError as e:
            rooms.append(HostRoom(spec.name, 0, f"unreachable at {spec.uri} ({e})"))
    return rooms


def template_disk_bytes(config: Config) -> int:
    """The size of the template's disk, which each node's may grow to: read on this machine's
    libvirt; DEFAULT_DISK_BYTES when it has no template to read."""
    try:
        with Hypervisor(config.uri) as hv:
            path = hv.disk_path(config.template)
            return hv.backing_info(path)[1] if path else DEFAULT_DISK_BYTES
    except SwarmlabError:
        return DEFAULT_DISK_BYTES


def pool_room(config: Config, hv: Hypervisor, disk_bytes: int) -> PoolRoom | None:
    """The host's node pool as placement counts it; None while it has none (`class up` makes it)."""
    try:
        directory, free = hv.pool_space(config.node_pool)
        if not hv.remote and hv.uri.startswith("qemu"):  # libvirt counts root's reserved blocks; QEMU writes as its user
            try:
                st = os.statvfs(directory)
                free = min(free, st.f_bavail * st.f_frsize)
            except OSError:
                pass
        per_node = config.node_disk_gib << 30 or node_disk_bytes(disk_bytes, config.memory_mib)
        return PoolRoom(free, hv.pool_held_bytes(config.node_pool), per_node)
    except SwarmlabError:
        return None


def emulated_cpus(hv: Hypervisor) -> int:
    """The host's CPU count when its guests' CPUs are emulated (no KVM), else 0."""
    return 0 if hv.offers_kvm() else hv.cpus()


def _config_file(config: Config) -> Path:
    return Path("/etc/swarmlab/swarmlab.toml") if config.source == "built-in defaults" else Path(config.source)


def _write_config(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(mode & ~0o022)  # never writable by others: root acts on what it says
    tmp.replace(path)


def default_host_name(uri: str) -> str:
    from urllib.parse import urlsplit
    host = urlsplit(uri).hostname
    return slug(host) if host else LOCAL_HOST


def host_add(config: Config, spec: HostSpec) -> dict:
    """Checks that libvirt answers at the URI, then records the host in the config file."""
    with Hypervisor(spec.uri) as hv:
        version = hv.version()
    path = _config_file(config)
    text = path.read_text() if path.exists() else ""
    _write_config(path, with_host_added(text, spec, str(path), config))
    return {"host": spec.name, "uri": spec.uri, "libvirt": version, "config": str(path)}


def labs_on(config: Config, host: str) -> list[str]:
    """Labs the journals place on `host`."""
    root = config.state_dir / "labs"
    out = []
    for journal in sorted(root.glob("*/lab.json")) if root.is_dir() else []:
        try:
            placement = json.loads(journal.read_text()).get("placement") or {}
        except ValueError:
            continue
        if placement.get("host") == host:
            out.append(journal.parent.name)
    return out


def host_rm(config: Config, name: str) -> dict:
    config.host(name)  # names the hosts when it is not one
    placed = labs_on(config, name)
    if placed:
        raise Refused(f"host {name} still has labs {', '.join(placed)}: `swarmlab class down --yes` or "
                      f"`swarmlab down --lab LAB` first")
    path = _config_file(config)
    _write_config(path, with_host_removed(path.read_text(), name, str(path)))
    return {"host": name, "config": str(path)}


def cpu_cap_words(config: Config) -> str:
    """What a class node on any host is held to, in words for `host ls`."""
    percent = node_cpu_percent(config.cpu_cap_percent)
    if percent:
        return f"{percent} % of a CPU per node ([class] cpu_cap_percent)"
    return "equal shares under contention, spinning nodes weigh less while the portal runs, no cap"


def host_ls(config: Config) -> list[dict]:
    rooms = {r.name: r for r in survey(config)}
    return [{"host": h.name, "uri": h.uri, "lab_range": str(h.lab_range),
             "capacity": f"{h.nodes} nodes" if h.nodes else f"{h.memory_mib} MiB" if h.memory_mib else "memory",
             "cpu_cap": cpu_cap_words(config),
             "bound_by": rooms[h.name].bound_by,
             "free_nodes": rooms[h.name].free_nodes, "problem": rooms[h.name].problem, "labs": labs_on(config, h.name)}
            for h in config.lab_hosts]
