"""swarmlab.toml: validated settings. The defaults describe the embedded lab host.

Lookup order: --config, $SWARMLAB_CONFIG, ./swarmlab.toml, /etc/swarmlab/swarmlab.toml, defaults.
Every error names the key, what was wrong and what is allowed, in one line.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import stat
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from .errors import SwarmlabError

API_KEY_ENV = "SWARMLAB_PDNS_API_KEY"
CONFIG_ENV = "SWARMLAB_CONFIG"
DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
DEBIAN_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")  # Debian policy 5.6.1


class ConfigError(SwarmlabError):
    exit_code = 2


def is_dns_label(text: str) -> bool:
    return bool(DNS_LABEL.match(text))


# Validators take the raw TOML value and return the typed one, or raise ValueError(allowed).
def _text(value):
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a non-empty string")
    return value


def _label(value):
    if not isinstance(value, str) or not is_dns_label(value):
        raise ValueError("a DNS label: lowercase letters, digits and '-', 1-63 characters")
    return value


def _int_range(low: int, high: int) -> Callable[[Any], int]:
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"an integer from {low} to {high}")
        return value
    return check


def _choice(*allowed: str) -> Callable[[Any], str]:
    def check(value):
        if value not in allowed:
            raise ValueError("one of " + ", ".join(allowed))
        return value
    return check


def _zone(value):
    if not isinstance(value, str):
        raise ValueError("a DNS name such as lab.swarmlab.test.")
    name = value.lower().rstrip(".")
    if not name or not all(is_dns_label(part) for part in name.split(".")):
        raise ValueError("a DNS name such as lab.swarmlab.test.")
    return name + "."


def _url(value):
    if not isinstance(value, str) or not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
        raise ValueError("an http:// or https:// URL such as http://127.0.0.1:8081")
    return value.rstrip("/")


def _cidr(value):
    try:
        net = ipaddress.IPv4Network(value, strict=True)
    except (ValueError, TypeError):
        raise ValueError("an IPv4 network in CIDR form such as 10.77.0.0/24") from None
    if not 16 <= net.prefixlen <= 28:
        raise ValueError("an IPv4 network with a prefix from /16 to /28")
    return net


def _lab_range(value):
    try:
        net = ipaddress.IPv4Network(value, strict=True)
    except (ValueError, TypeError):
        net = None
    if net is None or not 16 <= net.prefixlen <= 23:
        raise ValueError("an IPv4 range from /16 to /23 that labs get their own /24 from, such as 10.80.0.0/16")
    return net


def _host_port(value):
    # An IP address, not a host name: a name would be resolved through the very DNS being
    # verified, and an unresolvable one ended in a 30 s timeout instead of an error.
    host, _, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    try:
        ipaddress.ip_address(host.strip("[]"))
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError
    except ValueError:
        raise ValueError("IP:PORT of the server that answers for the zone, such as 127.0.0.1:5300 "
                         "(an IP address, not a host name)") from None
    return value


def _optional_text(value):
    return "" if value == "" else _text(value)


def _address(value):
    try:
        return "" if value == "" else str(ipaddress.IPv4Address(_text(value)))
    except ipaddress.AddressValueError:
        raise ValueError("an IPv4 address such as 192.168.10.5") from None


def _user_host_port(value):
    text = _text(value)
    user, _, host = text.rpartition("@")
    name, _, port = host.partition(":")
    if not user or not name or (port and not port.isdigit()):
        raise ValueError("user@host or user@host:port, such as root@h2")
    return text


def _package(value):
    if not isinstance(value, str) or not DEBIAN_PACKAGE.match(value):
        raise ValueError("a Debian package name such as docker.io or docker-ce")
    return value


def _label_list(value):
    from .swarm import parse_label  # one label grammar for the config file and the command line
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError('a list of "NODE:KEY=VALUE" strings such as ["swr1:env=prod"]')
    for spec in value:
        try:
            parse_label(spec)
        except SwarmlabError as e:
            raise ValueError(f'a list of "NODE:KEY=VALUE" strings; {e}') from None
    return tuple(value)


def _path_list(value):
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError('a list of paths to image tarballs (docker save format)')
    return tuple(Path(v).expanduser() for v in value)


def _path(value):
    if not isinstance(value, str) or not value:
        raise ValueError("a file system path")
    return Path(value).expanduser()


def _optional_path(value):
    return None if value in ("", None) else _path(value)


def _remote_dir(value):
    """A directory on another machine: absolute, nothing relative to this one."""
    if not isinstance(value, str) or not value.startswith("/") or ".." in PurePosixPath(value).parts:
        raise ValueError("an absolute directory on that host, like /var/lib/libvirt/swarmlab")
    return PurePosixPath(value)


# A host on another machine keeps its pools under libvirt's own directory, unless [[hosts]]
# pool_dir says otherwise: the controller's state and cache paths mean nothing there.
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
    memory_mib: int = 1024
    tb_cache_mib: int = 0  # TCG's translation cache per node; 0: QEMU's default (1 GiB)
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
    # [class] and [[hosts]]
    lab_range: ipaddress.IPv4Network = ipaddress.IPv4Network("10.80.0.0/16")
    parallel: int = 0  # labs made at once on one host; 0: one per 4 host CPUs, at least one
    overhead_mib: int = 700  # host memory a node takes beyond its guest memory (QEMU, TCG's code cache)
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
    max_request_kib: int = 64  # a request body or a terminal message
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

# TOML section -> {toml key: (Config field, validator)}
SCHEMA: dict[str, dict[str, tuple[str, Callable[[Any], Any]]]] = {
    "libvirt": {
        "uri": ("uri", _text),
        "network": ("network", _label),
        "cidr": ("cidr", _cidr),
        "template": ("template", _label),
        "domain_type": ("domain_type", _choice("auto", "kvm", "qemu")),
    },
    "dns": {
        "zone": ("zone", _zone),
        "api_url": ("api_url", _url),
        "api_key_file": ("api_key_file", _optional_path),
        "ttl": ("ttl", _int_range(1, 86400)),
        "nameserver": ("nameserver", _host_port),
    },
    "ssh": {
        "user": ("ssh_user", _label),
        "key": ("ssh_key", _optional_path),
    },
    "nodes": {
        "vcpus": ("vcpus", _int_range(1, 64)),
        "memory_mib": ("memory_mib", _int_range(256, 262144)),
        "tb_cache_mib": ("tb_cache_mib", _int_range(0, 4096)),
        "max": ("max_nodes", _int_range(1, 64)),
        "lab": ("lab", _label),
        "boot_timeout": ("boot_timeout", _int_range(10, 3600)),
        "prefix": ("prefix", _label),
        "labels": ("labels", _label_list),
    },
    "engine": {
        "install": ("engine_install", _choice("bundle", "apt")),
        "package": ("engine_package", _package),
        "images": ("engine_images", _path_list),
    },
    "host": {
        "namespace": ("namespace", _label),
        "state_dir": ("state_dir", _path),
        "cache_dir": ("cache_dir", _path),
        "dns_port": ("dns_port", _int_range(1, 65535)),
        "services_address": ("services_address", _address),
    },
    "class": {
        "lab_range": ("lab_range", _lab_range),
        "parallel": ("parallel", _int_range(0, 32)),
        "overhead_mib": ("overhead_mib", _int_range(0, 65536)),
    },
    "portal": {
        "listen": ("portal_listen", _address),
        "address": ("portal_address", _optional_text),
        "ssh_port": ("gateway_port", _int_range(1, 65535)),
        "https_port": ("portal_port", _int_range(1, 65535)),
        "max_channels": ("max_channels", _int_range(1, 1000)),
        "max_terminals": ("max_terminals", _int_range(1, 1000)),
        "checks_at_once": ("checks_at_once", _int_range(1, 100)),
        "hints_per_minute": ("hints_per_minute", _int_range(1, 1000)),
        "max_request_kib": ("max_request_kib", _int_range(1, 65536)),
    },
}
HOST_KEYS: dict[str, Callable[[Any], Any]] = {
    "name": _label, "uri": _text, "nodes": _int_range(1, 4096), "memory_mib": _int_range(1024, 1 << 24),
    "lab_range": _lab_range, "ssh": _user_host_port, "ssh_key": _optional_path, "pool_dir": _remote_dir,
}


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


# --- [[hosts]] edits: the instructor's file keeps its comments and layout (tomlkit) ----------
def with_host_added(text: str, host: HostSpec, source: str, current: Config) -> str:
    """The config text with one more [[hosts]] entry; validated as a whole before it is returned.
    The first added host brings this host along as `local`, so that it keeps taking labs."""
    import tomlkit
    doc = tomlkit.parse(text)
    hosts = doc.get("hosts")
    if hosts is None:
        hosts = tomlkit.aot()
        doc["hosts"] = hosts
        if host.name != LOCAL_HOST and host.uri != current.uri:
            hosts.append(_host_table(HostSpec(LOCAL_HOST, current.uri)))
    hosts.append(_host_table(host))
    out = tomlkit.dumps(doc)
    parse(tomllib.loads(out), source)  # one clear line for a repeated name, URI or overlapping range
    return out


def with_host_removed(text: str, name: str, source: str) -> str:
    import tomlkit
    doc = tomlkit.parse(text)
    hosts = doc.get("hosts") or []
    kept = [h for h in hosts if h.get("name") != name]
    if len(kept) == len(hosts):
        raise ConfigError(f"{source} has no host {name}: `swarmlab host ls` lists the hosts")
    if kept:
        table = tomlkit.aot()
        for h in kept:
            table.append(h)
        doc["hosts"] = table
    else:
        del doc["hosts"]
    out = tomlkit.dumps(doc)
    parse(tomllib.loads(out), source)
    return out


def _host_table(host: HostSpec):
    import tomlkit
    table = tomlkit.table()
    table["name"] = host.name
    table["uri"] = host.uri
    if host.nodes:
        table["nodes"] = host.nodes
    if host.memory_mib:
        table["memory_mib"] = host.memory_mib
    if host.lab_range:
        table["lab_range"] = str(host.lab_range)
    if host.ssh:
        table["ssh"] = host.ssh
    if host.ssh_key:
        table["ssh_key"] = str(host.ssh_key)
    if host.pool_dir:
        table["pool_dir"] = str(host.pool_dir)
    return table
