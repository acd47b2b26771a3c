"""Builds the Debian template image: mmdebstrap, then the swarmlab recipe, then a qcow2.

Two cache stages, both keyed by a hash of what goes into them:
- base/<key>/rootfs: the bootstrapped root file system (~30 s), keyed by suite and package list;
- templates/<key>/: disk.qcow2 + kernel + initrd, keyed by the whole recipe.
An unchanged recipe therefore costs only a hash and a lookup.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from swarmlab import config_values
from swarmlab.errors import SwarmlabError
from swarmlab.host import images

# Bump when the build steps below change in a way the recipe fields do not show, or the
# template domain's devices do (the wake-up state holds them). 9: the bake boot is asked for on the
# kernel command line, and under TCG the wake-up boot loads the images instead.
RECIPE_VERSION = 9

SUITES, DEFAULT_SUITE = config_values.SUITES, config_values.DEFAULT_SUITE
BASE_PACKAGES = (
    "systemd-sysv", "systemd-resolved", "udev", "dbus", "apparmor", "iproute2", "procps",
    "ca-certificates", "openssh-server", "qemu-guest-agent", "linux-image-cloud-amd64",
)
# From Debian 13 hwclock is its own package: the guest agent's guest-set-time runs it, and
# every reset syncs the guest clocks through it.
SUITE_PACKAGES = {"bookworm": (), "trixie": ("util-linux-extra",)}
# From Debian 13 the docker CLI is its own package, which docker.io only recommends.
ENGINE_PACKAGES = {"bookworm": ("docker.io",), "trixie": ("docker.io", "docker-cli")}
BAKED_IMAGES_TAR = "/usr/share/swarmlab/images/standins.tar"
BAKE_ARG = "swarmlab.bake"  # on the bake boot's kernel command line only
BAKE_DONE = "swarmlab-bake: done"
DISK_SIZE = "8G"
# Only the suite's main archive, as debootstrap used: no second host the build depends on.
DEBIAN_MIRROR = "http://deb.debian.org/debian"
MASKED_UNITS = ("apparmor.service", "apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer",
                "e2scrub_all.timer", "e2scrub_reap.service", "fstrim.timer", "systemd-pstore.service",
                # modules for disks, displays and file systems a lab node does not have
                "modprobe@dm_mod.service", "modprobe@drm.service", "modprobe@fuse.service",
                "modprobe@loop.service", "modprobe@configfs.service", "sys-fs-fuse-connections.mount",
                "sys-kernel-config.mount")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Recipe:
    name: str
    ssh_public_key: str
    suite: str = DEFAULT_SUITE
    with_engine: bool = True
    extra_packages: tuple[str, ...] = ()

    @property
    def packages(self) -> tuple[str, ...]:
        engine = ENGINE_PACKAGES[self.suite] if self.with_engine else ()
        return tuple(sorted({*BASE_PACKAGES, *SUITE_PACKAGES[self.suite], *engine, *self.extra_packages}))

    def base_key(self) -> str:
        return _digest({"suite": self.suite, "variant": "minbase", "packages": self.packages})

    def key(self) -> str:
        # The name is the domain's, not the image's: templates with equal recipes share a disk.
        content = {k: v for k, v in asdict(self).items() if k != "name"}
        return _digest({"v": RECIPE_VERSION, "base": self.base_key(), **content,
                        "files": guest_files(self), "images": images.identity()})


@dataclass
class TemplateImage:
    """A built template in the cache: what the hypervisor needs to define its domain."""

    key: str
    directory: Path
    disk: Path = field(init=False)
    kernel: Path = field(init=False)
    initrd: Path = field(init=False)

    def __post_init__(self):
        self.disk = self.directory / "disk.qcow2"
        self.kernel = self.directory / "vmlinuz"
        self.initrd = self.directory / "initrd.img"

    @property
    def complete(self) -> bool:
        return (self.directory / "complete").exists()


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def guest_files(recipe: Recipe) -> dict[str, str]:
    """Files the recipe writes into the guest, by absolute path."""
    files = {
        # The hostname is swarmlab's to give (kernel command line, or the wake-up's identity):
        # taking dnsmasq's made networkd wake systemd-hostnamed over D-Bus only to be refused,
        # ~1.5 s of emulated CPU per node.
        "/etc/systemd/network/10-lab.network": (
            "[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\n\n[DHCPv4]\nClientIdentifier=mac\nUseHostname=no\n"
        ),
        # Names come from the lab's PowerDNS; multicast name probing between nodes is only work.
        "/etc/systemd/resolved.conf.d/swarmlab.conf": "[Resolve]\nLLMNR=no\nMulticastDNS=no\n",
        "/etc/fstab": "/dev/vda / ext4 defaults,errors=remount-ro 0 1\n",
        "/etc/hosts": "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
        "/etc/ssh/sshd_config.d/swarmlab.conf": (
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\nUseDNS no\n"
        ),
        # Clones must not share host keys: generate them at first boot, before sshd's own check.
        # Ed25519 only: an RSA key costs many seconds of emulated CPU under TCG.
        "/etc/systemd/system/ssh.service.d/swarmlab-hostkeys.conf": (
            "[Service]\nExecStartPre=\nExecStartPre=/bin/sh -c 'test -s /etc/ssh/ssh_host_ed25519_key || "
            "ssh-keygen -q -t ed25519 -N \"\" -f /etc/ssh/ssh_host_ed25519_key'\n"
            "ExecStartPre=/usr/sbin/sshd -t\n"
        ),
        "/etc/ssh/sshd_config.d/swarmlab-hostkey.conf": "HostKey /etc/ssh/ssh_host_ed25519_key\n",
        "/root/.ssh/authorized_keys": recipe.ssh_public_key.strip() + "\n",
        # The initrd needs only the domain's virtio disk (ext4 is built into Debian's kernels):
        # ~6 MB instead of ~15 MB, about 1 s less of every boot under TCG.
        "/etc/initramfs-tools/conf.d/swarmlab.conf": "MODULES=list\n",
        "/etc/initramfs-tools/modules": "virtio_pci\nvirtio_blk\n",
    }
    if recipe.with_engine:
        # sshd first: on an emulated CPU the engine's start would otherwise delay SSH-ready by
        # tens of seconds; swarmlab waits for the engine itself before it forms the swarm.
        for unit in ("docker", "containerd"):
            files[f"/etc/systemd/system/{unit}.service.d/swarmlab-after-ssh.conf"] = (
                "[Unit]\nAfter=ssh.service systemd-resolved.service\n")
        standins = " ".join(images.STANDIN_NAMES)
        files["/etc/systemd/system/swarmlab-images.service"] = (
            "[Unit]\nDescription=Load swarmlab's baked container images (the offline stand-ins)\n"
            "After=docker.service\nRequires=docker.service\n\n"
            "[Service]\nType=oneshot\nRemainAfterExit=yes\n"
            f"ExecStart=/bin/sh -c 'docker image inspect {standins} >/dev/null 2>&1 || "
            f"docker load -i {BAKED_IMAGES_TAR}'\n\n"
            "[Install]\nWantedBy=multi-user.target\n"
        )
        # The template's one boot at build time (`bake`): the images land in /var/lib/docker once,
        # instead of being loaded at every clone's first boot; then every trace of identity that
        # boot made is removed before it powers off.
        files["/etc/systemd/system/swarmlab-bake.service"] = (
            "[Unit]\nDescription=swarmlab: bake the template (images into /var/lib/docker), then power off\n"
            f"ConditionKernelCommandLine={BAKE_ARG}\nAfter=swarmlab-images.service\nRequires=swarmlab-images.service\n\n"
            "[Service]\nType=oneshot\nExecStart=/bin/sh -x /usr/lib/swarmlab/bake\n"
            "StandardOutput=journal+console\nStandardError=journal+console\n\n"
            "[Install]\nWantedBy=multi-user.target\n"
        )
        files["/usr/lib/swarmlab/bake"] = (
            "set -e\n"
            f"docker image inspect {standins} >/dev/null\n"
            # the engine ID: key.json up to Docker 20.10, engine-id from 23 on
            "rm -f /etc/ssh/ssh_host_* /etc/docker/key.json /var/lib/docker/engine-id /var/lib/systemd/random-seed "
            "/var/lib/dbus/machine-id\n"
            ": > /etc/machine-id\n"
            "sync\n"
            f"echo '{BAKE_DONE}'\n"
            "systemctl --no-block poweroff\n"
        )
    return files


def _run(cmd: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise SwarmlabError(f"{what} failed ({cmd[0]} exit {proc.returncode}): {' | '.join(tail)}")
    return proc


def _unmount_under(path: Path) -> None:
    """The bootstrap mounts /proc, /sys (and sometimes /dev) inside its target; a killed run
    leaves them there, and deleting the target must never reach into them."""
    prefix = str(path.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True)


def _remove_tree(path: Path) -> None:
    if path.exists():
        _unmount_under(path)
        shutil.rmtree(path, ignore_errors=True)


def _remove_stale_builds(parent: Path) -> None:
    """Work directories of builds that were killed: .build-<pid>-*, pid no longer alive."""
    for work in parent.glob(".build-*"):
        pid = work.name.split("-")[1]
        if not pid.isdigit() or not Path(f"/proc/{pid}").exists():
            _remove_tree(work)


def build_base(recipe: Recipe, cache_dir: Path, progress: Progress) -> Path:
    """The bootstrapped root file system, once per package list; returns its cached directory."""
    base = cache_dir / "base" / recipe.base_key()
    rootfs = base / "rootfs"
    if (base / "complete").exists():
        return rootfs
    if not shutil.which("mmdebstrap"):
        raise SwarmlabError("mmdebstrap not found: run scripts/install-host (apt install mmdebstrap)")
    _remove_tree(base)
    base.mkdir(parents=True)
    progress(f"mmdebstrap {recipe.suite} with {len(recipe.packages)} packages (about a minute)")
    # mmdebstrap, not debootstrap: apt resolves and fetches in parallel and dpkg runs without
    # fsync (the tree only feeds mkfs), 31 s here where debootstrap took 59 s.
    _run(["mmdebstrap", "--variant=minbase", "--include=" + ",".join(recipe.packages),
          "--dpkgopt=force-unsafe-io", recipe.suite, str(rootfs), DEBIAN_MIRROR], "mmdebstrap")
    (base / "complete").write_text(json.dumps({"packages": recipe.packages}) + "\n")
    return rootfs


def _customize(recipe: Recipe, rootfs: Path, cache_dir: Path) -> None:
    for path, content in guest_files(recipe).items():
        target = rootfs / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    (rootfs / "root/.ssh").chmod(0o700)
    (rootfs / "root/.ssh/authorized_keys").chmod(0o600)
    if recipe.with_engine:
        tar = rootfs / BAKED_IMAGES_TAR.lstrip("/")
        tar.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(images.archive(cache_dir), tar)
    units = ["systemd-networkd", "systemd-resolved", "ssh"]
    if recipe.with_engine:
        units += ["docker", "swarmlab-images", "swarmlab-bake"]
    _resolver_off_the_boot_path(rootfs)
    _run(["chroot", str(rootfs), "update-initramfs", "-u", "-k", "all"], "update-initramfs in the image")
    _run(["chroot", str(rootfs), "systemctl", "enable", *units], "systemctl enable in the image")
    # Work a lab node never needs, on an emulated CPU that three booting nodes share: the
    # distribution's AppArmor profiles (Docker loads its own docker-default itself), periodic
    # maintenance timers, and the pstore archiver.
    _run(["chroot", str(rootfs), "systemctl", "mask", *MASKED_UNITS], "systemctl mask in the image")
    resolv = rootfs / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.symlink_to("/run/systemd/resolve/stub-resolv.conf")
    # Identity hygiene: every clone gets its own machine-id and host keys at first boot.
    (rootfs / "etc/machine-id").write_text("")
    (rootfs / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (rootfs / "etc/hostname").unlink(missing_ok=True)
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (rootfs / junk).glob("*"):
            if entry.is_file():
                entry.unlink()


def _resolver_off_the_boot_path(rootfs: Path) -> None:
    """systemd-resolved orders itself before sysinit.target and network.target, so sshd (after
    network.target) waited ~5 s of emulated CPU for a resolver it does not use. The unit,
    copied to /etc with those two orderings dropped, starts alongside instead; containerd and
    docker wait for it (guest_files)."""
    unit = next((d / "systemd-resolved.service" for d in (rootfs / "usr/lib/systemd/system", rootfs / "lib/systemd/system")
                 if (d / "systemd-resolved.service").exists()), None)
    if unit is None:
        return
    lines = []
    for line in unit.read_text().splitlines():
        if line.startswith("Before="):
            line = "Before=" + " ".join(u for u in line[7:].split() if u not in ("sysinit.target", "network.target"))
        elif line.strip() == "WantedBy=sysinit.target":
            line = "WantedBy=multi-user.target"
        lines.append(line)
    (rootfs / "etc/systemd/system/systemd-resolved.service").write_text("\n".join(lines) + "\n")
    (rootfs / "etc/systemd/system/sysinit.target.wants/systemd-resolved.service").unlink(missing_ok=True)


def bake(image: TemplateImage, accel: str, progress: Progress = lambda _m: None, timeout: float = 900) -> bool:
    """Boots the built image once, with qemu alone and no network beyond qemu's own (restricted
    user-mode networking: no packet leaves the emulator), so that its bake unit loads the
    images into /var/lib/docker and powers off. Idempotent: True when it baked now."""
    marker = image.directory / "baked"
    if marker.exists():
        return False
    progress("booting the template once to put the images into /var/lib/docker (about a minute under TCG)")
    console = image.directory / "bake-console.log"
    proc = subprocess.Popen(
        ["qemu-system-x86_64", "-accel", accel, "-m", "1024", "-smp", "1", "-display", "none", "-no-reboot",
         "-serial", f"file:{console}", "-kernel", str(image.kernel), "-initrd", str(image.initrd),
         "-append", f"root=/dev/vda rw console=ttyS0 quiet systemd.hostname=swarmlab-bake {BAKE_ARG}",
         "-drive", f"file={image.disk},if=virtio,format=qcow2", "-nic", "user,restrict=on,model=virtio-net-pci"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        if console.exists():
            console = Path(shutil.copy(console, image.directory.parent / "bake-console.log"))
        raise SwarmlabError(f"the template's bake boot did not power off within {timeout:g} s: see {console}") from None
    text = console.read_text(errors="replace") if console.exists() else ""
    if proc.returncode != 0 or BAKE_DONE not in text:
        if console.exists():  # the build directory goes; its console log is what explains the failure
            console = Path(shutil.copy(console, image.directory.parent / "bake-console.log"))
        tail = (err.decode(errors="replace").strip() or text.strip()).splitlines()[-3:]
        raise SwarmlabError(f"the template's bake boot failed (qemu exit {proc.returncode}): {' | '.join(tail)} "
                            f"(console: {console})")
    marker.write_text("")
    return True


def build(recipe: Recipe, cache_dir: Path, progress: Progress = lambda _m: None,
          accel: Callable[[Path], str] = lambda _kernel: "tcg", wake_follows: bool = False) -> tuple[TemplateImage, bool]:
    """Returns the cached image for the recipe, building it when missing. bool: built now.
    accel(kernel) names the qemu accelerator (kvm or tcg); it is asked while the image is made.
    wake_follows: a wake-up boot comes next, and under TCG it loads the images itself, so the
    bake boot, ~70 s there, is left out (clones that boot instead load them, ~10 s each)."""
    image = TemplateImage(recipe.key(), cache_dir / "templates" / recipe.key())
    if image.complete:
        return image, False
    base = build_base(recipe, cache_dir, progress)
    kernels = sorted((base / "boot").glob("vmlinuz-*"))
    if not kernels or not sorted((base / "boot").glob("initrd.img-*")):
        raise SwarmlabError(f"no kernel or initrd in the base image: delete {base.parent} and rebuild")
    image.directory.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(image.directory.parent)
    work = Path(tempfile.mkdtemp(dir=image.directory.parent, prefix=f".build-{os.getpid()}-"))
    # The KVM probe waits up to 10 s where KVM hangs: it runs while the disk is made.
    with ThreadPoolExecutor(1) as pool:
        accelerator = pool.submit(accel, kernels[-1])
        try:
            _make_disk(recipe, base, work, cache_dir, progress)
            if bake_boot_needed(recipe, wake_follows, accelerator.result()):
                # Before the entry is complete: a backing file must never change under clones.
                bake(TemplateImage(image.key, work), accelerator.result(), progress)
            accelerator.result()
            (work / "complete").write_text(image.key + "\n")
            os.chmod(work, 0o755)
            _remove_tree(image.directory)
            os.rename(work, image.directory)  # atomic: a cache entry is whole or absent
        finally:
            _remove_tree(work)
    return image, True


def bake_boot_needed(recipe: Recipe, wake_follows: bool, accel: str) -> bool:
    """The images go into /var/lib/docker by a boot of their own unless a wake-up boot follows
    under TCG and loads them itself. Under KVM that boot is ~10 s, and a host on another machine
    whose clones boot (a saved KVM state is not sent) then finds them in the template's disk."""
    return recipe.with_engine and (not wake_follows or accel == "kvm")


def _make_disk(recipe: Recipe, base: Path, work: Path, cache_dir: Path, progress: Progress) -> None:
    """The recipe applied to a copy of the base, as work/disk.qcow2 with its kernel and initrd."""
    rootfs = work / "rootfs"
    progress("copying the base root filesystem")
    _run(["cp", "-a", "--reflink=auto", str(base), str(rootfs)], "copying the base rootfs")
    progress("applying the swarmlab recipe")
    _customize(recipe, rootfs, cache_dir)
    shutil.copy2(sorted((rootfs / "boot").glob("vmlinuz-*"))[-1], work / "vmlinuz")
    shutil.copy2(sorted((rootfs / "boot").glob("initrd.img-*"))[-1], work / "initrd.img")
    progress("making the ext4 image and converting it to qcow2")
    raw = work / "disk.raw"
    # Inode tables are zeroed here, once: left lazy, every clone's kernel would zero them
    # at first mount and write ~130 MB into its overlay.
    _run(["mkfs.ext4", "-q", "-F", "-L", "swarmlab-root", "-E",
          "lazy_itable_init=0,lazy_journal_init=0", "-d", str(rootfs), str(raw), DISK_SIZE],
         "mkfs.ext4")
    _run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(work / "disk.qcow2")], "qemu-img convert")
    raw.unlink()
    _remove_tree(rootfs)
    (work / "recipe.json").write_text(json.dumps(asdict(recipe), indent=2) + "\n")
