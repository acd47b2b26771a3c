"""A second libvirt host on this machine, for the class tests: a libvirtd (and the sshd that SSH
to its nodes jumps through) in a network namespace and a mount namespace of their own, so that
/run, /etc/libvirt, /var/lib/libvirt, /var/cache/libvirt and /var/log/libvirt are its own. The
controller reaches it over a veth pair at qemu+tcp://10.200.0.2/system, as it would reach a
host on another machine. A holder process keeps the mount namespace; every daemon is started
into it with nsenter.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

LIBVIRT_DIRS = ("/etc/libvirt", "/var/lib/libvirt", "/var/cache/libvirt", "/var/log/libvirt")
LIBVIRTD_CONF = """listen_tls = 0
listen_tcp = 1
listen_addr = "{address}"
auth_tcp = "none"
"""


class SecondHost:
    controller_ip = "10.200.0.1"
    address = "10.200.0.2"

    def __init__(self, namespace: str, controller_namespace: str, authorized_key: Path):
        self.namespace = namespace
        self.controller_namespace = controller_namespace
        self.authorized_key = authorized_key
        self.directory = Path(tempfile.mkdtemp(prefix="swarmlab-h2-", dir="/var/tmp"))
        self.holder: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"qemu+tcp://{self.address}/system"

    @property
    def ssh(self) -> str:
        return f"root@{self.address}:22"

    def _inside(self, cmd: list[str], **kw) -> subprocess.CompletedProcess:
        assert self.holder is not None
        return subprocess.run(["nsenter", f"--target={self.holder.pid}", "--mount", "--net", *cmd],
                              check=True, capture_output=True, text=True, **kw)

    def start(self) -> None:
        ip = ["ip", "-n"]
        subprocess.run(["ip", "netns", "add", self.namespace], check=True)
        subprocess.run(ip + [self.namespace, "link", "set", "lo", "up"], check=True)
        subprocess.run(ip + [self.controller_namespace, "link", "add", "swl-h2a", "type", "veth", "peer", "name",
                             "swl-h2b", "netns", self.namespace], check=True)
        subprocess.run(ip + [self.controller_namespace, "addr", "add", f"{self.controller_ip}/30", "dev", "swl-h2a"],
                       check=True)
        subprocess.run(ip + [self.controller_namespace, "link", "set", "swl-h2a", "up"], check=True)
        subprocess.run(ip + [self.namespace, "addr", "add", f"{self.address}/30", "dev", "swl-h2b"], check=True)
        subprocess.run(ip + [self.namespace, "link", "set", "swl-h2b", "up"], check=True)
        mounts = []
        for target in LIBVIRT_DIRS:
            private = self.directory / target.strip("/").replace("/", "-")
            private.mkdir()
            mounts.append(f"mount --bind {private} {target}")
        (self.directory / "etc-libvirt" / "libvirtd.conf").write_text(LIBVIRTD_CONF.format(address=self.address))
        (self.directory / "authorized_keys").write_text(self.authorized_key.read_text())
        # `ip netns exec` remounts /sys for the namespace (libvirt's bridge code reads it); the
        # private mounts go on top in a mount namespace of the holder's own.
        script = "; ".join(["set -e", "mount -t tmpfs tmpfs /run", "mkdir -p /run/sshd", *mounts,
                            "exec sleep infinity"])
        self.holder = subprocess.Popen(["ip", "netns", "exec", self.namespace, "unshare", "--mount",
                                        "--propagation", "private", "sh", "-c", script], start_new_session=True)
        deadline = time.monotonic() + 10
        while not self._mounted():
            assert time.monotonic() < deadline and self.holder.poll() is None, "the second host's mounts failed"
            time.sleep(0.1)
        self.start_libvirtd()
        self._inside(["/usr/sbin/sshd", "-o", f"ListenAddress={self.address}", "-o", "PidFile=/run/sshd.pid",
                      "-o", f"AuthorizedKeysFile={self.directory / 'authorized_keys'}", "-o", "StrictModes=no",
                      "-o", "PasswordAuthentication=no"])

    def _mounted(self) -> bool:
        try:
            return os.stat(f"/proc/{self.holder.pid}/root/run").st_dev != os.stat("/run").st_dev and \
                (Path(f"/proc/{self.holder.pid}/root/etc/libvirt/libvirtd.conf")).exists()
        except OSError:
            return False

    def start_libvirtd(self) -> None:
        if not self._pids("virtlogd"):
            self._inside(["virtlogd", "-d"])
        self._inside(["libvirtd", "-d", "--listen"])
        deadline = time.monotonic() + 20
        while subprocess.run(["ip", "netns", "exec", self.controller_namespace, "virsh", "-c", self.uri,
                              "version"], capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, "the second host's libvirtd did not answer"
            time.sleep(0.2)

    def _pids(self, comm: str) -> list[int]:
        """Processes of that name in this host's mount namespace."""
        mine = os.stat(f"/proc/{self.holder.pid}/ns/mnt").st_ino
        found = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and (entry / "comm").read_text().strip() == comm and \
                        os.stat(entry / "ns/mnt").st_ino == mine:
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    def stop_libvirtd(self) -> None:
        """The host's libvirtd stops, as on a host that goes away; its guests keep running."""
        for pid in self._pids("libvirtd"):
            os.kill(pid, signal.SIGKILL)

    def remove(self) -> None:
        """Everything it ran (guests included) stopped, and its namespaces and files removed."""
        # Every process in its network namespace: qemu runs in a mount namespace of libvirt's own.
        pids = subprocess.run(["ip", "netns", "pids", self.namespace], capture_output=True, text=True).stdout.split()
        for pid in map(int, pids):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.holder is not None:
            self.holder.wait(10)
        subprocess.run(["ip", "-n", self.controller_namespace, "link", "del", "swl-h2a"], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True)
        shutil.rmtree(self.directory, ignore_errors=True)
