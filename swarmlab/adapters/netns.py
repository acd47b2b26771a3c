"""Network namespaces: the isolated lab host's, entered with setns(2), and the one swarmlab
started in, for the commands that need the internet (apt)."""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import shlex
import subprocess
from pathlib import Path

from swarmlab.errors import SwarmlabError

CLONE_NEWNET = 0x40000000


class NamespaceError(SwarmlabError):
    pass


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
            raise NamespaceError(f"cannot enter network namespace {name}: {os.strerror(err)} (swarmlab needs root)")
    finally:
        os.close(fd)


def in_host_netns(cmd: list[str]) -> tuple[list[str], tuple[int, ...]]:
    """The command and the fds to pass so that it runs in the network namespace swarmlab
    started in."""
    if _host_netns_fd is None:
        return cmd, ()
    return ["nsenter", f"--net=/proc/self/fd/{_host_netns_fd}", *cmd], (_host_netns_fd,)


def run_in_host_netns(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """Runs a command in the network namespace swarmlab started in (apt needs the mirror,
    which the lab namespace cannot reach)."""
    cmd, fds = in_host_netns(cmd)
    return subprocess.run(cmd, pass_fds=fds, **kw)


def netns_cmd(namespace: str | None, cmd: list[str]) -> list[str]:
    # `ip netns exec` also remounts /sys for the namespace, which libvirtd's bridge code reads.
    return ["ip", "netns", "exec", namespace, *cmd] if namespace else cmd




CGROUP_ROOT = "/sys/fs/cgroup"


def cgroup_mounts(mounts_text: str) -> list[tuple[str, str, str]]:
    """(type, options, mount point) of each cgroup hierarchy in a /proc/mounts text."""
    out = []
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2] in ("cgroup", "cgroup2") and \
                (fields[1] == CGROUP_ROOT or fields[1].startswith(CGROUP_ROOT + "/")):
            out.append((fields[2], fields[3], fields[1]))
    return out


def with_cgroups(cmd: list[str], mounts: list[tuple[str, str, str]]) -> list[str]:
    """The command, run once the cgroup hierarchies are mounted again in its mount namespace.
    `ip netns exec` gives it a new /sys without them, and libvirt manages a guest's cgroups
    (its CPU cap) only where it sees them. A mount that fails leaves the command uncapped, not
    unstarted: `doctor` tells."""
    lines = []
    if any(point != CGROUP_ROOT for _, _, point in mounts):
        lines.append(f"mount -t tmpfs -o mode=755 cgroup_root {CGROUP_ROOT}")
    for fstype, options, point in mounts:
        q = shlex.quote(point)
        lines.append(f"mkdir -p {q} && mount -t {fstype} -o {shlex.quote(options)} {fstype} {q}")
    if not lines:
        return cmd
    return ["sh", "-c", " ; ".join(f"{{ {line} ; }} 2>/dev/null" for line in lines) + ' ; exec "$@"', "sh", *cmd]


def host_cgroup_mounts() -> list[tuple[str, str, str]]:
    """The cgroup hierarchies this process sees (the machine's, when it runs outside the lab
    host's mount namespace)."""
    try:
        return cgroup_mounts(Path("/proc/self/mounts").read_text())
    except OSError:
        return []


def interface_networks(ip_addr_json: str) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    """The global addresses, with their networks, in `ip -j addr`'s output."""
    out = []
    for link in json.loads(ip_addr_json or "[]"):
        for a in link.get("addr_info", []):
            if a.get("scope") == "global" and a.get("local"):
                out.append(ipaddress.ip_interface(f"{a['local']}/{a.get('prefixlen', 32)}"))
    return out


def machine_networks(lab_namespace: str | None) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface] | None:
    """This machine's own addresses and networks, in the namespace swarmlab started in (not the
    lab host's): where students, and nodes of lab hosts on other machines, may reach it. None
    when this process was started inside the lab host's namespace and cannot tell."""
    if _host_netns_fd is None and lab_namespace and in_netns(lab_namespace):
        return None
    try:
        done = run_in_host_netns(["ip", "-j", "addr"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return interface_networks(done.stdout) if done.returncode == 0 else None
