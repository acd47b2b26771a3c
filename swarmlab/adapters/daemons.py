"""The lab host's daemons as processes: finding and stopping them by name, starting libvirtd
and virtlogd, and the embedded PowerDNS server (sqlite3 backend, API and DNS on loopback)."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from swarmlab.adapters import dns
from swarmlab.adapters.hypervisor import Hypervisor
from swarmlab.adapters.keys import write_private
from swarmlab.adapters.netns import host_cgroup_mounts, in_netns, netns_cmd, with_cgroups
from swarmlab.config import Config
from swarmlab.errors import Refused, SwarmlabError
from swarmlab.render import render
from swarmlab.waiting import poll_until

REGISTRY_PORT = 5000
PDNS_SCHEMA = Path("/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql")

Progress = Callable[[str], None]


class DaemonError(SwarmlabError):
    pass


def _pid_alive(pid: int | None, comm: str) -> bool:
    if not pid:
        return False
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == comm
    except OSError:
        return False


def _run_dir(pid: int | str) -> tuple[int, int] | None:
    try:
        st = os.stat(f"/proc/{pid}/root/run")  # /run as that process sees it
    except OSError:
        return None
    return st.st_dev, st.st_ino


def find_process(comm: str) -> int | None:
    """A process of that name that sees our /run: a libvirtd with a /run of its own (another lab
    host on this machine, in mount namespaces of its own) serves other sockets and pid files."""
    ours = _run_dir("self")
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _pid_alive(int(entry.name), comm) and _run_dir(entry.name) == ours:
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


# --- PowerDNS server ------------------------------------------------------------------------
@dataclass
class PdnsServer:
    """A pdns_server with the sqlite3 backend: API on 127.0.0.1 only, DNS on 127.0.0.1 and on
    the services address that lab hosts on other machines forward the zone to."""

    directory: Path
    api_port: int
    dns_port: int
    zone: str
    also_on: tuple[str, ...] = ()  # DNS (never the API) also on these addresses, for hosts on other machines

    @property
    def database(self) -> Path:
        return self.directory / "pdns.sqlite3"

    @property
    def log(self) -> Path:
        return self.directory / "pdns.log"

    def settings(self, api_key: str) -> str:
        return render("pdns.conf.j2", database=self.database, dns_port=self.dns_port, api_key=api_key,
                      api_port=self.api_port, zone=self.zone, socket_dir=self.directory / "run",
                      dns_addresses=", ".join(["127.0.0.1", *self.also_on]))

    def settings_changed(self, api_key: str) -> bool:
        """Whether a running server was started with other settings (say, a new services address)."""
        try:
            return (self.directory / "pdns.conf").read_text() != self.settings(api_key)
        except FileNotFoundError:
            return True

    def prepare(self, api_key: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        if not self.database.exists():
            if not PDNS_SCHEMA.exists():
                raise DaemonError(f"{PDNS_SCHEMA} is missing: apt install pdns-backend-sqlite3 "
                                "(scripts/install-host does)")
            tmp = self.database.with_suffix(".tmp")
            tmp.unlink(missing_ok=True)
            with sqlite3.connect(tmp) as db:
                db.executescript(PDNS_SCHEMA.read_text())
            tmp.replace(self.database)
        (self.directory / "run").mkdir(exist_ok=True)
        write_private(self.directory / "pdns.conf", self.settings(api_key))

    def start(self, namespace: str | None = None) -> subprocess.Popen:
        if not shutil.which("pdns_server"):
            raise DaemonError("pdns_server not found: apt install pdns-server pdns-backend-sqlite3 "
                            "(scripts/install-host does)")
        with open(self.log, "ab") as log:
            proc = subprocess.Popen(
                netns_cmd(namespace, ["pdns_server", f"--config-dir={self.directory}",
                                       "--daemon=no", "--guardian=no", "--write-pid=no"]),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        return proc

    def wait_ready(self, client: dns.PowerDNS, proc: subprocess.Popen, timeout: float = 15) -> None:
        def failed() -> DaemonError:
            tail = self.log.read_text(errors="replace").strip().splitlines()[-3:] if self.log.exists() else []
            return DaemonError(f"PowerDNS did not start on 127.0.0.1:{self.api_port}: "
                               + (" | ".join(tail) or "no log") + f" (log: {self.log})")

        def answers() -> bool:
            try:
                client.server_info()
                return True
            except dns.ApiKeyRejected:
                raise
            except dns.DnsError:
                if proc.poll() is not None:
                    raise failed() from None
                return False
        poll_until(answers, timeout, 0.2, failed)

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
    return PdnsServer(config.state_dir / "pdns", config.api_port, config.dns_port, config.zone,
                      (config.services_address,) if config.services_address else ())


# --- the registry --------------------------------------------------------------------------
@dataclass
class RegistryServer:
    """Debian's docker-registry (the distribution registry), plain HTTP on the lab network's
    gateway: the nodes' Docker Hub mirror, holding the offline stand-ins. Every student has root
    on a node, so what nodes reach is read-only (distribution's maintenance mode: a push gets
    405); the stand-ins go in through a read-write instance on loopback, which no node reaches."""

    directory: Path
    address: str  # host:port
    data: Path | None = None  # default: <directory>/data; a second instance serves the same images
    readonly: bool = True

    def config_text(self) -> str:
        return render("registry.yml.j2", data=self.data or self.directory / "data", address=self.address,
                      readonly=self.readonly)

    def settings_changed(self) -> bool:
        """Whether the running instance was started with other settings (an older swarmlab's
        registry took pushes)."""
        try:
            return (self.directory / "config.yml").read_text() != self.config_text()
        except OSError:
            return True

    @property
    def log(self) -> Path:
        return self.directory / "registry.log"

    def start(self, namespace: str | None = None) -> subprocess.Popen:
        if not shutil.which("docker-registry"):
            raise DaemonError("docker-registry not found: apt install docker-registry (scripts/install-host does)")
        data = self.data or self.directory / "data"
        data.mkdir(parents=True, exist_ok=True)
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "config.yml"
        config.write_text(self.config_text())
        with open(self.log, "ab") as log:
            return subprocess.Popen(netns_cmd(namespace, ["docker-registry", "serve", str(config)]),
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)

    def wait_ready(self, proc: subprocess.Popen, timeout: float = 15) -> None:
        import requests

        def failed() -> DaemonError:
            tail = self.log.read_text(errors="replace").strip().splitlines()[-2:] if self.log.exists() else []
            return DaemonError(f"the registry did not start on {self.address}: " + (" | ".join(tail) or "no log")
                               + f" (log: {self.log})")

        def answers() -> bool:
            if proc.poll() is not None:
                raise failed()
            try:
                return requests.get(f"http://{self.address}/v2/", timeout=1).status_code == 200
            except requests.RequestException:
                return False
        poll_until(answers, timeout, 0.2, failed)

    def running(self, pid: int | None) -> bool:
        if not _pid_alive(pid, "docker-registry"):
            return False
        return str(self.directory) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")


def registry_server(config: Config) -> RegistryServer:
    return RegistryServer(config.state_dir / "registry", f"{config.host_gateway}:{REGISTRY_PORT}")


def push_registry_server(config: Config, port: int) -> RegistryServer:
    """The read-write instance the stand-ins are pushed through: loopback only, and only while
    `host up` pushes."""
    return RegistryServer(config.state_dir / "registry-push", f"127.0.0.1:{port}", config.state_dir / "registry" / "data",
                          readonly=False)


def services_registry_server(config: Config) -> RegistryServer | None:
    """The same mirror on [host] services_address, for the labs of hosts on other machines
    (distribution's registry binds one address; two instances share the storage)."""
    if not config.services_address:
        return None
    return RegistryServer(config.state_dir / "registry-services", f"{config.services_address}:{REGISTRY_PORT}",
                          config.state_dir / "registry" / "data")


# --- libvirtd -------------------------------------------------------------------------------
def _libvirt_socket_ready(uri: str) -> bool:
    with Hypervisor(uri) as hv:
        try:
            hv.ping()
            return True
        except SwarmlabError:
            return False


def libvirtd_sees_cpu_cgroup() -> bool | None:
    """Whether the local libvirtd sees a cgroup CPU controller (so it can cap guests), None when
    no libvirtd runs here."""
    pid = find_process("libvirtd")
    if pid is None:
        return None
    root = Path(f"/proc/{pid}/root/sys/fs/cgroup")
    return any((root / sub).exists() for sub in ("cpu/cpu.cfs_quota_us", "cpu,cpuacct/cpu.cfs_quota_us", "cpu.max",
                                                  "unified/cgroup.controllers"))


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
                raise DaemonError("libvirtd not found: run scripts/install-host (apt install libvirt-daemon-system)")
            for daemon in ("virtlogd", "libvirtd"):
                if find_process(daemon) is None:
                    progress(f"starting {daemon}" + (f" in namespace {namespace}" if namespace else ""))
                    cmd = [daemon, "-d"]
                    if namespace and daemon == "libvirtd":
                        cmd = with_cgroups(cmd, host_cgroup_mounts())  # so that it can cap guests' CPU
                    subprocess.run(netns_cmd(namespace, cmd), check=True, capture_output=True)
                    started.append(daemon)
    poll_until(lambda: _libvirt_socket_ready(config.uri), 20, 0.2,
               lambda: DaemonError(f"libvirtd did not answer on {config.uri} within 20 s"))
    return started


