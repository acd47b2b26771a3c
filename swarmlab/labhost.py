"""The embedded lab host: network namespace, libvirtd, the lab network, PowerDNS, pools.

`host up` makes it, `host status` reads it, `host down` removes it. What `host up` started
is recorded in <state_dir>/host.json so that later commands (in any shell) enter the same
namespace and `host down` stops exactly that.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from . import dns
from .config import Config
from .errors import Refused, SwarmlabError
from .hypervisor import NS_URI, Hypervisor
from .render import render

CLONE_NEWNET = 0x40000000
PDNS_SCHEMA = Path("/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql")

Progress = Callable[[str], None]


class HostError(SwarmlabError):
    pass


# --- network namespace ----------------------------------------------------------------------
def netns_path(name: str) -> Path:
    return Path("/run/netns") / name


def netns_exists(name: str) -> bool:
    return netns_path(name).exists()


def _inode(path: str | Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def in_netns(name: str, pid: int | str = "self") -> bool:
    target = _inode(netns_path(name))
    return target is not None and _inode(f"/proc/{pid}/ns/net") == target


_host_netns_fd: int | None = None  # the namespace we came from, for commands that need the internet


def enter_netns(name: str) -> None:
    """Moves this process into the namespace. Call before any thread starts: setns applies
    to the calling thread, and threads started afterwards inherit it."""
    global _host_netns_fd
    if in_netns(name):
        return
    if _host_netns_fd is None:
        _host_netns_fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    fd = os.open(netns_path(name), os.O_RDONLY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise HostError(f"cannot enter network namespace {name}: {os.strerror(err)} (swarmlab needs root)")
    finally:
        os.close(fd)


def run_in_host_netns(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """Runs a command in the network namespace swarmlab started in (apt needs the mirror,
    which the lab namespace cannot reach)."""
    if _host_netns_fd is not None:
        cmd = ["nsenter", f"--net=/proc/self/fd/{_host_netns_fd}", *cmd]
        kw["pass_fds"] = (_host_netns_fd,)
    return subprocess.run(cmd, **kw)


def _netns_cmd(namespace: str | None, cmd: list[str]) -> list[str]:
    # `ip netns exec` also remounts /sys for the namespace, which libvirtd's bridge code reads.
    return ["ip", "netns", "exec", namespace, *cmd] if namespace else cmd


# --- processes ------------------------------------------------------------------------------
def _pid_alive(pid: int | None, comm: str) -> bool:
    if not pid:
        return False
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == comm
    except OSError:
        return False


def find_process(comm: str) -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _pid_alive(int(entry.name), comm):
            return int(entry.name)
    return None


def _stop_pid(pid: int, comm: str, timeout: float = 10) -> None:
    if not _pid_alive(pid, comm):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(pid, comm):
        _reap(pid)
        time.sleep(0.1)
    if _pid_alive(pid, comm):
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    _reap(pid)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _systemd_runs() -> bool:
    return Path("/run/systemd/system").is_dir()


# --- host state -----------------------------------------------------------------------------
@dataclass
class HostState:
    isolated: bool = False
    namespace: str | None = None
    started: list[str] = field(default_factory=list)  # daemons host up started: libvirtd, virtlogd
    pdns_pid: int | None = None

    @staticmethod
    def path(config: Config) -> Path:
        return config.state_dir / "host.json"

    @classmethod
    def load(cls, config: Config) -> "HostState | None":
        try:
            data = json.loads(cls.path(config).read_text())
            known = {f for f in cls.__dataclass_fields__}
            return cls(**{k: v for k, v in data.items() if k in known})
        except FileNotFoundError:
            return None
        except (ValueError, TypeError):
            raise HostError(f"{cls.path(config)} is corrupt: run `swarmlab host down` then `host up`") from None

    def save(self, config: Config) -> None:
        path = self.path(config)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)


def enter_host(config: Config) -> HostState | None:
    """Every command starts here: inside the isolated host's namespace when there is one."""
    state = HostState.load(config)
    if state and state.isolated and state.namespace:
        if not netns_exists(state.namespace):
            raise HostError(f"the isolated lab host's namespace {state.namespace} is gone: "
                            "run `swarmlab host down`, then `swarmlab host up --isolated`")
        enter_netns(state.namespace)
    return state


# --- files with secrets ---------------------------------------------------------------------
def write_private(path: Path, content: str) -> None:
    """Writes a file that is 0600 from its first byte."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(content)
    tmp.replace(path)


def ensure_api_key(config: Config) -> tuple[str, bool]:
    try:
        return config.api_key(), False
    except SwarmlabError:
        if config.api_key_path.exists():
            raise
    key = secrets.token_urlsafe(32)
    write_private(config.api_key_path, key + "\n")
    return key, True


def ensure_ssh_key(config: Config) -> bool:
    path = config.ssh_key_path
    if path.exists() and path.with_suffix(".pub").exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    for p in (path, path.with_suffix(".pub")):
        p.unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "swarmlab", "-f", str(path)],
                   check=True, capture_output=True)
    path.chmod(0o600)
    return True


# --- PowerDNS server ------------------------------------------------------------------------
@dataclass
class PdnsServer:
    """A pdns_server with the sqlite3 backend, API and DNS on 127.0.0.1 only."""

    directory: Path
    api_port: int
    dns_port: int
    zone: str

    @property
    def database(self) -> Path:
        return self.directory / "pdns.sqlite3"

    @property
    def log(self) -> Path:
        return self.directory / "pdns.log"

    def prepare(self, api_key: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        if not self.database.exists():
            if not PDNS_SCHEMA.exists():
                raise HostError(f"{PDNS_SCHEMA} is missing: apt install pdns-backend-sqlite3 "
                                "(scripts/install-host does)")
            tmp = self.database.with_suffix(".tmp")
            tmp.unlink(missing_ok=True)
            with sqlite3.connect(tmp) as db:
                db.executescript(PDNS_SCHEMA.read_text())
            tmp.replace(self.database)
        (self.directory / "run").mkdir(exist_ok=True)
        write_private(self.directory / "pdns.conf", render(
            "pdns.conf.j2", database=self.database, dns_port=self.dns_port, api_key=api_key,
            api_port=self.api_port, zone=self.zone, socket_dir=self.directory / "run"))

    def start(self, namespace: str | None = None) -> subprocess.Popen:
        if not shutil.which("pdns_server"):
            raise HostError("pdns_server not found: apt install pdns-server pdns-backend-sqlite3 "
                            "(scripts/install-host does)")
        with open(self.log, "ab") as log:
            proc = subprocess.Popen(
                _netns_cmd(namespace, ["pdns_server", f"--config-dir={self.directory}",
                                       "--daemon=no", "--guardian=no", "--write-pid=no"]),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        return proc

    def wait_ready(self, client: dns.PowerDNS, proc: subprocess.Popen, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.server_info()
                return
            except dns.DnsError as e:
                if "rejected the API key" in str(e):
                    raise
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = self.log.read_text(errors="replace").strip().splitlines()[-3:] if self.log.exists() else []
                    raise HostError(f"PowerDNS did not start on 127.0.0.1:{self.api_port}: "
                                    + (" | ".join(tail) or "no log") + f" (log: {self.log})") from None
            time.sleep(0.2)

    def running(self, pid: int | None) -> bool:
        if not _pid_alive(pid, "pdns_server"):
            return False
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        return str(self.directory) in cmdline

    @staticmethod
    def stop(pid: int | None) -> None:
        if pid:
            _stop_pid(pid, "pdns_server")


def pdns_server(config: Config) -> PdnsServer:
    return PdnsServer(config.state_dir / "pdns", config.api_port, config.dns_port, config.zone)


def pdns_client(config: Config) -> dns.PowerDNS:
    return dns.PowerDNS(config.api_url, config.api_key())


# --- libvirtd -------------------------------------------------------------------------------
def _libvirt_socket_ready(uri: str) -> bool:
    hv = Hypervisor(uri)
    try:
        hv.conn
        return True
    except SwarmlabError:
        return False
    finally:
        hv.close()


def fix_kvm_device() -> bool:
    """Gives /dev/kvm the owner and mode Debian's udev rule gives it (root:kvm 0660) where
    no udev runs. Otherwise libvirt's capability cache sees KVM in qemu's probe but not for
    the qemu user, calls itself outdated on every call and re-probes: ~60 s per define."""
    import grp
    kvm = Path("/dev/kvm")
    try:
        gid = grp.getgrnam("kvm").gr_gid
        st = kvm.stat()
    except (KeyError, FileNotFoundError):
        return False
    if st.st_gid == gid and st.st_mode & 0o060 == 0o060:
        return False
    os.chown(kvm, 0, gid)
    kvm.chmod(0o660)
    return True


def ensure_libvirtd(config: Config, namespace: str | None, progress: Progress) -> list[str]:
    started = []
    running = find_process("libvirtd")
    if running and namespace and not in_netns(namespace, running):
        raise Refused(f"libvirtd (pid {running}) already runs outside namespace {namespace}, so lab "
                      "networks would leak into the host network: stop it first, or use `host up` "
                      "without --isolated")
    if running is None:
        if namespace is None and _systemd_runs():
            progress("starting libvirtd with systemctl")
            subprocess.run(["systemctl", "start", "libvirtd"], check=True, capture_output=True)
        else:
            if not shutil.which("libvirtd"):
                raise HostError("libvirtd not found: run scripts/install-host (apt install libvirt-daemon-system)")
            for daemon in ("virtlogd", "libvirtd"):
                if find_process(daemon) is None:
                    progress(f"starting {daemon}" + (f" in namespace {namespace}" if namespace else ""))
                    subprocess.run(_netns_cmd(namespace, [daemon, "-d"]), check=True, capture_output=True)
                    started.append(daemon)
    deadline = time.monotonic() + 20
    while not _libvirt_socket_ready(config.uri):
        if time.monotonic() > deadline:
            raise HostError(f"libvirtd did not answer on {config.uri} within 20 s")
        time.sleep(0.2)
    return started


# --- host up / status / down ----------------------------------------------------------------
def _bridge_name(network: str) -> str:
    return ("sl-" + network)[:15]


def network_xml(config: Config) -> str:
    start, end = config.dhcp_range
    return render("network.xml.j2", name=config.network, ns_uri=NS_URI, bridge=_bridge_name(config.network),
                  gateway=config.gateway, netmask=config.cidr.netmask, dhcp_start=start, dhcp_end=end,
                  zone=config.zone.rstrip("."), dns_server="127.0.0.1", dns_port=config.dns_port)


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
    if not server.running(state.pdns_pid):
        progress(f"starting PowerDNS (API 127.0.0.1:{config.api_port}, DNS 127.0.0.1:{config.dns_port})")
        server.prepare(key)
        proc = server.start(namespace)
        state.pdns_pid = proc.pid
        state.save(config)
        server.wait_ready(client, proc)
        changes.append(f"started PowerDNS (pid {state.pdns_pid})")
    if client.ensure_zone(config.zone):
        changes.append(f"created zone {config.zone}")

    hv = Hypervisor(config.uri)
    try:
        progress(f"ensuring lab network {config.network} ({config.cidr})")
        changes += hv.ensure_network(config.network, network_xml(config))
        changes += hv.ensure_pool(config.template_pool, config.cache_dir / "images")
        changes += hv.ensure_pool(config.node_pool, config.state_dir / "volumes")
    finally:
        hv.close()
    return changes


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
    hv = Hypervisor(config.uri)
    try:
        net = hv.network_state(config.network) if libvirtd else None
    except SwarmlabError:
        net = None
    finally:
        hv.close()
    status["network"] = {"name": config.network, "active": bool(net and net.active),
                         "bridge": net.bridge if net else None, "gateway": net.gateway if net else None,
                         "dhcp": bool(net and net.dhcp_ranges)}
    server = pdns_server(config)
    status["pdns"] = {"pid": state.pdns_pid if server.running(state.pdns_pid) else None,
                      "api_url": config.api_url, "dns": f"127.0.0.1:{config.dns_port}"}
    try:
        status["pdns"]["zone"] = pdns_client(config).zone_exists(config.zone)
    except SwarmlabError as e:
        status["pdns"]["error"] = str(e)
    status["up"] = bool(libvirtd and status["network"]["active"] and status["pdns"]["pid"]
                        and status["pdns"].get("zone")
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
        hv = Hypervisor(config.uri)
        try:
            if "libvirtd" in state.started:
                foreign = [d.name() for d in hv.conn.listAllDomains(1)  # 1 = active only
                           if d.name() not in {o.name for o in hv.owned_domains()}]
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
        finally:
            hv.close()
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
        ours = {"qemu-system-x86", "dnsmasq", "libvirtd", "virtlogd", "pdns_server"}
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


# --- template -------------------------------------------------------------------------------
def resolve_domain_type(config: Config, kernel: Path, progress: Progress) -> str:
    """kvm where guests really run under it, else qemu (TCG). The probe's answer is cached
    per host kernel, since `host down` must not make the next `template build` probe again."""
    if config.domain_type != "auto":
        return config.domain_type
    from .hypervisor import kvm_works
    cache = config.cache_dir / "kvm-probe.json"
    release = os.uname().release
    try:
        known = json.loads(cache.read_text())
        if known.get("host_kernel") == release:
            return known["domain_type"]
    except (OSError, ValueError, KeyError):
        pass
    progress("probing whether KVM runs guests here (up to 10 s)")
    domain_type = "kvm" if kvm_works(kernel, timeout=10) else "qemu"
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"host_kernel": release, "domain_type": domain_type}) + "\n")
    return domain_type


def template_build(config: Config, name: str, with_engine: bool = True,
                   progress: Progress = lambda _m: None) -> dict:
    """Builds (or finds in the cache) the template image and defines its shut-off domain."""
    from . import template

    hv = Hypervisor(config.uri)
    try:
        hv.conn  # fail before a 3-minute build when libvirt is not there
        existing = hv.domain_state(name)
        if existing and existing.owner is None:
            raise Refused(f"domain {name} exists and was not created by swarmlab: use it as your template "
                          f"([libvirt] template = \"{name}\") or build under another --name")
        if existing and existing.running:
            raise Refused(f"template {name} is running: shut it down first (`virsh shutdown {name}`); "
                          "clones need an unchanging backing disk")
        ensure_ssh_key(config)
        recipe = template.Recipe(name=name, with_engine=with_engine,
                                 ssh_public_key=config.ssh_key_path.with_suffix(".pub").read_text())
        started = time.monotonic()
        image, built = template.build(recipe, config.cache_dir, progress)
        hv.ensure_pool(config.template_pool, config.cache_dir / "images")
        volume = f"{name}-{image.key}.qcow2"
        pooled = config.cache_dir / "images" / volume
        if not pooled.exists():
            os.link(image.disk, pooled)  # same file system: instant, no second copy
            hv.pool(config.template_pool).refresh()
        domain_type = resolve_domain_type(config, image.kernel, progress)
        unchanged = bool(existing and existing.owner.get("recipe") == image.key
                         and existing.owner.get("domain_type") == domain_type)
        if not unchanged:
            xml = render("domain.xml.j2", domain_type=domain_type, name=name, ns_uri=NS_URI, role="template",
                         attrs={"recipe": image.key, "domain_type": domain_type},
                         memory_mib=config.memory_mib, vcpus=config.vcpus, kernel=image.kernel,
                         initrd=image.initrd, cmdline=f"root=/dev/vda rw console=ttyS0 quiet systemd.hostname={name}",
                         pool=config.template_pool, volume=volume, network=config.network)
            hv.define_domain(xml)  # libvirt gives the template its own MAC
        return {"name": name, "recipe": image.key, "built": built, "defined": not unchanged,
                "domain_type": domain_type, "disk": str(pooled),
                "disk_bytes": pooled.stat().st_size, "seconds": round(time.monotonic() - started, 1)}
    finally:
        hv.close()


# --- doctor ---------------------------------------------------------------------------------
def doctor(config: Config) -> list[dict]:
    """One entry per check: {check, ok, detail, fix}."""
    checks: list[dict] = []

    def add(check: str, ok: bool, detail: str, fix: str = "") -> bool:
        checks.append({"check": check, "ok": ok, "detail": detail, "fix": "" if ok else fix})
        return ok

    hv = Hypervisor(config.uri)
    try:
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
    finally:
        hv.close()

    try:
        client = pdns_client(config)
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
