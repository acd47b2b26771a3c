"""The template's wake image: an overlay of the template's disk that holds, as an internal
snapshot, the template booted once without a network interface, its engine and images loaded.
Clones start from a copy of it instead of booting (see lab/wake.py); `template build` makes it
once per recipe and accelerator."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from swarmlab.adapters.daemons import Progress
from swarmlab.adapters.hypervisor import Hypervisor
from swarmlab.adapters.libvirt_xml import (WAKE_SNAPSHOT, clone_disks, derive_clone_xml, random_mac, split_interface,
                                           with_kernel_args)
from swarmlab.config import Config
from swarmlab.errors import NotFound, SwarmlabError

# With no NIC there is no link to wait for: without this the engine would wait two minutes.
WAKE_BOOT_ARGS = ("systemd.mask=systemd-networkd-wait-online.service",)
SETTLED = ("running", "degraded")  # `systemctl is-system-running`: every boot job is done


def wake_volume(template: str, recipe: str, domain_type: str, shape: str = "") -> str:
    """The wake image's volume in the template pool: a saved state runs only under the
    accelerator, template and machine shape (memory and vCPUs, see `machine_shape`) it was made
    with."""
    return f"{template}-{recipe}-{domain_type}{'-' + shape if shape else ''}-wake.qcow2"


def machine_shape(memory_mib: int, vcpus: int) -> str:
    """What a saved state fixes besides the disk: a guest restores only with the memory and
    vCPUs it was saved with. Recorded in the template's metadata as `shape`."""
    return f"{memory_mib}m{vcpus}c"


def builder_domain(template: str) -> str:
    return f"{template}-wake"


def wakeable(template_xml: str) -> bool:
    """One writable disk and nothing shared: the saved state covers exactly one image."""
    return [d.action for d in clone_disks(template_xml)] == ["overlay"]


def ensure_wake_image(config: Config, hv: Hypervisor, template: str, recipe: str, domain_type: str, shape: str,
                      progress: Progress = lambda _m: None, timeout: float = 900) -> dict:
    """Boots the template once more (as a domain of its own, without NIC), waits until every
    boot job is done, drops the guest's page cache (a smaller state) and saves memory and disk
    as an internal snapshot of a new overlay. Idempotent; an interrupted build is redone."""
    volume = wake_volume(template, recipe, domain_type, shape)
    try:
        return {"volume": volume, "path": hv.volume_path(config.template_pool, volume), "built": False}
    except NotFound:
        pass
    template_xml = hv.domain_xml(template)
    if not wakeable(template_xml):
        return {"volume": None, "why": "the template has more than one disk: its clones boot"}
    builder = builder_domain(template)
    hv.undefine(builder)  # what an interrupted build left
    partial = volume.replace(".qcow2", ".partial.qcow2")
    hv.delete_volume(config.template_pool, partial)
    started = time.monotonic()
    progress(f"saving a wake-up state of {template}: one more boot, without network (once per recipe)")
    path = hv.create_overlay(config.template_pool, partial, hv.disk_path(template))
    target = clone_disks(template_xml)[0].target
    xml = derive_clone_xml(template_xml, builder, random_mac(), config.template_pool, {target: partial},
                           {"role": "wake-builder", "template": template, "recipe": recipe},
                           hostname="swarmlab-wake", tb_cache_mib=config.tb_cache_mib)
    xml, _interface = split_interface(xml)
    try:
        hv.define_domain(with_kernel_args(xml, *WAKE_BOOT_ARGS))
        hv.start(builder)
        hv.wait_for_agent(builder, timeout)
        _, state = hv.guest_exec(builder, ["/bin/systemctl", "is-system-running", "--wait"], timeout=timeout)
        if state.strip() not in SETTLED:
            raise SwarmlabError(f"the wake-up boot of {template} ended {state.strip()!r}: see "
                                f"`virsh console {builder}` while it runs, or rebuild the template")
        hv.guest_exec(builder, ["/bin/sh", "-c", "sync; echo 3 > /proc/sys/vm/drop_caches"])
        hv.create_snapshot(builder, WAKE_SNAPSHOT, "swarmlab: the template, booted, without network")
    except BaseException as e:  # Ctrl-C included: no builder is left running
        hv.undefine(builder)
        hv.delete_volume(config.template_pool, partial)
        if not isinstance(e, SwarmlabError):
            raise
        return {"volume": None, "why": f"the wake-up boot failed: {e}"}  # the template is fine: clones boot
    hv.undefine(builder)  # the image keeps the state; libvirt forgets the builder
    final = str(Path(path).with_name(volume))
    os.rename(path, final)  # last: only a finished image has the name clones look for
    hv.refresh_pool(config.template_pool)
    return {"volume": volume, "path": final, "built": True, "seconds": round(time.monotonic() - started, 1),
            "bytes": Path(final).stat().st_size}


def wake_copy_for_host(config: Config, host: str, volume: str) -> Path:
    """Where this machine keeps the wake image made for a lab host on another machine: the
    same image, its backing file the host's copy of the template's disk."""
    return config.cache_dir / "wake" / host / volume


def ensure_wake_copy_for_host(config: Config, host: str, recipe: str, domain_type: str, shape: str,
                              backing: str) -> str | None:
    """The host's wake image, made from this machine's when the host runs the template under
    QEMU (TCG) as this machine does: a saved TCG state runs on any CPU, a KVM one only on the
    CPU model it was saved on. Older recipes' copies go. Returns what changed, if anything."""
    volume = wake_volume(config.template, recipe, domain_type, shape)
    mine = config.cache_dir / "images" / volume
    target = wake_copy_for_host(config, host, volume)
    if domain_type != "qemu" or not mine.is_file() or target.is_file():
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f"{config.template}-*-wake.qcow2"):  # an older recipe's or shape's
        stale.unlink()
    partial = target.with_suffix(".partial")
    try:
        shutil.copyfile(mine, partial)
        subprocess.run(["qemu-img", "rebase", "-u", "-F", "qcow2", "-b", backing, str(partial)], check=True,
                       capture_output=True)
        os.rename(partial, target)
    except (OSError, subprocess.CalledProcessError) as e:  # optional: without it the host's nodes boot
        partial.unlink(missing_ok=True)
        return f"no wake-up state for host {host} ({e}): its nodes boot"
    return f"prepared the wake-up state for host {host} ({target.stat().st_size >> 20} MiB, sent per node)"


def wake_image_of(config: Config, hv: Hypervisor, template_xml: str, owner: dict | None) -> str | None:
    """The local path of the wake image that clones of this template start from, or None when
    they boot: `[nodes] wake = false`, no image for its recipe and accelerator, or a template
    that is not swarmlab's or has several disks. For a lab host on another machine it is this
    machine's copy made for that host (`ensure_wake_copy_for_host`), sent once per node."""
    if not config.wake or not owner or not owner.get("recipe") or not wakeable(template_xml):
        return None
    volume = wake_volume(config.template, owner["recipe"], owner.get("domain_type", ""), owner.get("shape", ""))
    if config.host_remote:
        copy = wake_copy_for_host(config, config.lab_host, volume)
        return str(copy) if copy.is_file() else None
    try:
        path = hv.volume_path(config.template_pool, volume)
    except NotFound:
        return None
    return path if os.path.exists(path) else None
