"""swarmlab.toml: validated settings. The defaults describe the embedded lab host.

Lookup order: --config, $SWARMLAB_CONFIG, ./swarmlab.toml, /etc/swarmlab/swarmlab.toml, defaults.
Every error names the key, what was wrong and what is allowed, in one line.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import stat
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from typing import Any

from swarmlab.config_schema import HOST_KEYS, SCHEMA
from swarmlab.errors import SwarmlabError

API_KEY_ENV = "SWARMLAB_PDNS_API_KEY"
CONFIG_ENV = "SWARMLAB_CONFIG"


class ConfigError(SwarmlabError):
    exit_code = 2


REMOTE_POOL_DIR = PurePosixPath("/var/lib/libvirt/swarmlab")


def is_local_uri(uri: str) -> bool:
    """A libvirt URI of this machine: no transport (`qemu+ssh`) and no host name."""
    scheme, _, rest = uri.partition(":")
    return "+" not in scheme and rest.startswith("//") and rest[2:3] in ("/", "")


@dataclass(frozen=True)
class HostSpec:
    """A libvirt host that class labs are placed on ([[hosts]])."""

    name: str
    uri: str
    nodes: int | None = None  # capacity in nodes, or
    memory_mib: int | None = None  # capacity in host memory; neither: the host's memory as libvirt reports it
    lab_range: ipaddress.IPv4Network | None = None  # the /24s of its labs' networks; default [class] lab_range
    ssh: str | None = None  # user@host[:port] of its sshd, the jump to its nodes; default: a qemu+ssh URI's
    ssh_key: Path | None = None  # the key for that jump; default: root's own keys and agent
    pool_dir: PurePosixPath | None = None  # its template and node pools, on that machine

    @property
    def pools_at(self) -> PurePosixPath:
        return self.pool_dir or REMOTE_POOL_DIR

    @property
    def local(self) -> bool:
        """On the controller itself: the embedded host, or a host in the same namespace."""
        return is_local_uri(self.uri)

    @property
    def jump(self) -> str | None:
        """user@host:port that SSH to this host's nodes goes through; None for a local host."""
        if self.local:
            return None
        if self.ssh:
            return self.ssh if ":" in self.ssh.split("@")[-1] else self.ssh + ":22"
        from urllib.parse import urlsplit
        parts = urlsplit(self.uri)
        if not parts.scheme.endswith("+ssh") or not parts.hostname:
            return None
        return f"{parts.username or 'root'}@{parts.hostname}:{parts.port or 22}"


LOCAL_HOST = "local"


@dataclass(frozen=True)
class Config:
    # [libvirt]
    uri: str = "qemu:///system"
    network: str = "swarmlab"
    cidr: ipaddress.IPv4Network = ipaddress.IPv4Network("10.77.0.0/24")
    template: str = "debian13"
    domain_type: str = "auto"
    # [dns]
    zone: str = "lab.swarmlab.test."
    api_url: str = "http://127.0.0.1:8081"
    api_key_file: Path | None = None
    ttl: int = 600
    nameserver: str | None = None  # host:port that answers for the zone; default: the embedded one
    # [ssh]
    ssh_user: str = "root"
    ssh_key: Path | None = None
    # [nodes]
    vcpus: int = 1
    memory_mib: int = 512  # the smallest guest that passes every exercise, as fast (bench_capacity)
    tb_cache_mib: int = 256  # TCG's translation cache per node, all of it held (0: QEMU's 1 GiB); see README
    wake: bool = True  # nodes wake from the template's saved state (when it has one) instead of booting
    max_nodes: int = 9
    lab: str = "demo"
    boot_timeout: int = 300
    prefix: str = "swr"
    labels: tuple[str, ...] = ()  # NODE:KEY=VALUE, applied when the swarm forms
    # [engine]
    engine_install: str = "bundle"
    engine_package: str = "docker.io"
    engine_images: tuple[Path, ...] = ()
    # [host]: the embedded lab host that `swarmlab host up` runs
    namespace: str = "swarmlab"
    state_dir: Path = Path("/var/lib/swarmlab")
    cache_dir: Path = Path("/var/cache/swarmlab")
    dns_port: int = 5300
    services_address: str = ""  # also serve DNS here, for lab hosts on other machines
    ksm: bool = True  # host up turns on the kernel's same-page merging: clones share their pages
    # [class] and [[hosts]]
    lab_range: ipaddress.IPv4Network = ipaddress.IPv4Network("10.80.0.0/16")
    parallel: int = 0  # labs made at once on one host; 0: one per 4 host CPUs, at least one
    node_mib: int = 0  # host memory one node takes, for placement; 0: estimated from tb_cache_mib
    node_disk_gib: int = 0  # the most disk one node may fill, for placement; 0: its template's disk and a memory state
    cpu_cap_percent: int = 0  # of one host CPU, per class node; 0: none, equal cgroup weights (core/placement.py)
    class_ends: str = ""  # HH:MM: `class up`'s default --ends
    class_language: str = "en"  # the exercises' and the student pages' language (teach/exercise_files.LANGUAGES)
    hosts: tuple[HostSpec, ...] = ()
    # [portal]: where students come in (the web portal and the SSH gateway)
    portal_listen: str = "0.0.0.0"
    portal_address: str = ""  # the name or address students reach the lab host at; default: services_address
    gateway_port: int = 2222
    portal_port: int = 8443
    # per student, so that one student cannot stall the others
    max_channels: int = 12  # SSH connections through the gateway at once
    max_terminals: int = 8  # browser terminals at once
    checks_at_once: int = 1
    hints_per_minute: int = 6
    self_service_every: int = 300  # seconds between two restarts or resets a student asks for
    self_service_at_once: int = 1  # restarts and resets students asked for, run at once in the whole class
    max_request_kib: int = 64  # a request body or a terminal message
    # per client address (a school's NAT puts a whole class behind one)
    max_connections_per_address: int = 256  # to the gateway and the portal, each
    guesses_per_minute: int = 60  # requests with no valid token, before the address waits
    source: str = "built-in defaults"
    # Set only in a config scoped to one lab on a network of its own (lab.lab_config): the lab's
    # host, and the host's shared network, which keeps the pools and the registry mirror.
    lab_host: str = ""
    shared_network: str = ""
    shared_cidr: ipaddress.IPv4Network | None = None
    host_remote: bool = False  # the lab's host is another machine: its nodes are reached through host_jump
    host_jump: str = ""
    host_jump_key: Path | None = None

    @property
    def lab_hosts(self) -> tuple[HostSpec, ...]:
        """The hosts class labs go to: [[hosts]], else this host alone."""
        hosts = self.hosts or (HostSpec(LOCAL_HOST, self.uri),)
        return tuple(h if h.lab_range else dataclasses.replace(h, lab_range=self.lab_range) for h in hosts)

    def host(self, name: str) -> HostSpec:
        for h in self.lab_hosts:
            if h.name == name:
                return h
        raise ConfigError(f"host {name} is not in swarmlab.toml (hosts: {', '.join(h.name for h in self.lab_hosts)}): "
                          f"add it with `swarmlab host add URI --name {name}`")

    @property
    def api_key_path(self) -> Path:
        return self.api_key_file or self.state_dir / "pdns-api-key"

    @property
    def ssh_key_path(self) -> Path:
        return self.ssh_key or self.state_dir / "id_ed25519"

    @property
    def dns_server(self) -> tuple[str, int]:
        host, port = (self.nameserver or f"127.0.0.1:{self.dns_port}").rsplit(":", 1)
        return host, int(port)

    @property
    def template_pool(self) -> str:
        return f"{self.shared_network or self.network}-templates"

    @property
    def node_pool(self) -> str:
        return f"{self.shared_network or self.network}-nodes"

    @property
    def host_gateway(self) -> ipaddress.IPv4Address:
        """The shared network's gateway, where the lab host's registry mirror listens."""
        return next((self.shared_cidr or self.cidr).hosts())

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return next(self.cidr.hosts())

    @property
    def dhcp_range(self) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
        hosts = list(self.cidr.hosts())
        return hosts[len(hosts) // 2], hosts[-1]

    @property
    def api_port(self) -> int:
        from urllib.parse import urlsplit
        return urlsplit(self.api_url).port or 80

    @property
    def student_address(self) -> str:
        """Where students reach the lab host: [portal] address, else [host] services_address."""
        return self.portal_address or self.services_address or "127.0.0.1"

    def api_key(self) -> str:
        """The PowerDNS API key: $SWARMLAB_PDNS_API_KEY, else the 0600 key file."""
        key = os.environ.get(API_KEY_ENV, "").strip()
        if key:
            return key
        path = self.api_key_path
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise ConfigError(f"PowerDNS API key file {path} is missing: run `swarmlab host up`, "
                              f"or set {API_KEY_ENV}, or name the file in [dns] api_key_file") from None
        if stat.S_IMODE(mode) & 0o077:
            raise ConfigError(f"PowerDNS API key file {path} is readable by others "
                              f"(mode {stat.S_IMODE(mode):o}): chmod 600 {path}")
        key = path.read_text().strip()
        if not key:
            raise ConfigError(f"PowerDNS API key file {path} is empty")
        return key

    def as_dict(self) -> dict:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SCOPED_FIELDS and not value:
                continue
            if f.name == "hosts":
                value = [{k: str(v) if isinstance(v, ipaddress.IPv4Network) else v for k, v in h.__dict__.items()}
                         for h in value]
            elif isinstance(value, tuple):
                value = [str(v) for v in value]
            out[f.name] = str(value) if isinstance(value, (Path, ipaddress.IPv4Network)) else value
        out["api_key_file"] = str(self.api_key_path)
        out["ssh_key"] = str(self.ssh_key_path)
        return out


SCOPED_FIELDS = ("lab_host", "shared_network", "shared_cidr", "host_remote", "host_jump", "host_jump_key")


def parse_hosts(value, source: str) -> tuple[HostSpec, ...]:
    if not isinstance(value, list) or not all(isinstance(h, dict) for h in value):
        raise ConfigError(f'{source}: hosts must be a list of tables: [[hosts]] with name = "h2" and uri = "..."')
    out: list[HostSpec] = []
    for i, entry in enumerate(value, 1):
        where = f"{source}: [[hosts]] #{i}"
        for key in entry:
            if key not in HOST_KEYS:
                raise ConfigError(f"{where}: unknown key {key}; allowed: {', '.join(HOST_KEYS)}")
        for key in ("name", "uri"):
            if key not in entry:
                raise ConfigError(f"{where} has no {key}: every host needs name and uri")
        values = {}
        for key, check in HOST_KEYS.items():
            if key in entry:
                try:
                    values[key] = check(entry[key])
                except ValueError as e:
                    raise ConfigError(f"{where}: {key} = {entry[key]!r} is invalid; expected {e}") from None
        host = HostSpec(**values)
        for other in out:
            if other.name == host.name or other.uri == host.uri:
                raise ConfigError(f"{where}: {host.name} ({host.uri}) repeats host {other.name}; "
                                  "each host once, with a name of its own")
            if host.lab_range and other.lab_range and host.lab_range.overlaps(other.lab_range):
                raise ConfigError(f"{where}: lab_range {host.lab_range} overlaps {other.name}'s "
                                  f"{other.lab_range}: give each host its own range")
        out.append(host)
    return tuple(out)


def parse(data: dict, source: str) -> Config:
    values: dict[str, Any] = {}
    for section, content in data.items():
        if section == "hosts":
            values["hosts"] = parse_hosts(content, source)
            continue
        if section not in SCHEMA:
            raise ConfigError(f"{source}: unknown section [{section}]; allowed: "
                              + ", ".join(f"[{s}]" for s in SCHEMA) + ", [[hosts]]")
        if not isinstance(content, dict):
            raise ConfigError(f"{source}: [{section}] must be a table")
        for key, value in content.items():
            if section == "dns" and key == "api_key":
                raise ConfigError(f"{source}: [dns] api_key is not allowed inline; put the key in a "
                                  f"0600 file named by [dns] api_key_file, or set {API_KEY_ENV}")
            if section == "class" and key == "overhead_mib":
                raise ConfigError(f"{source}: [class] overhead_mib is gone: a node no longer holds all of its guest "
                                  "memory; remove it, or set [class] node_mib to the host memory one node takes "
                                  "in all (bench/bench_capacity.py measures it)")
            if key not in SCHEMA[section]:
                raise ConfigError(f"{source}: unknown key [{section}] {key}; allowed: "
                                  + ", ".join(SCHEMA[section]))
            name, check = SCHEMA[section][key]
            try:
                values[name] = check(value)
            except ValueError as e:
                raise ConfigError(f"{source}: [{section}] {key} = {value!r} is invalid; expected {e}") from None
    config = Config(**values, source=source)
    for host in config.lab_hosts:
        if host.lab_range.overlaps(config.cidr):
            raise ConfigError(f"{source}: the lab range {host.lab_range} of host {host.name} overlaps [libvirt] cidr "
                              f"{config.cidr}: set [class] lab_range (or the host's lab_range) to another range")
    return config


def check_file_safety(path: Path) -> None:
    """swarmlab runs as root and copies files the config names ([engine] images) into VMs, and it
    may read ./swarmlab.toml from any directory: only its owner (root or the caller) may write it."""
    try:
        st = path.stat()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise ConfigError(f"config file {path} is writable by group or others (mode {mode:o}): anyone who can "
                          f"write it controls what root copies into the VMs; chmod go-w {path}")
    if st.st_uid not in (0, os.geteuid()):
        raise ConfigError(f"config file {path} belongs to uid {st.st_uid}, not to root or you: its owner controls "
                          f"what swarmlab does as root; chown root {path}, or pass a config file of your own")


def load(path: str | Path | None = None) -> Config:
    explicit = path or os.environ.get(CONFIG_ENV)
    if explicit:
        candidate = Path(explicit).expanduser()
        if not candidate.is_file():
            raise ConfigError(f"config file {candidate} not found (from "
                              f"{'--config' if path else CONFIG_ENV}); fix the path or unset it")
    else:
        candidate = next((p for p in (Path("swarmlab.toml"), Path("/etc/swarmlab/swarmlab.toml"))
                          if p.is_file()), None)
        if candidate is None:
            return Config()
    check_file_safety(candidate)
    try:
        data = tomllib.loads(candidate.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{candidate}: not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"{candidate}: cannot read: {e.strerror}") from None
    return parse(data, str(candidate))
