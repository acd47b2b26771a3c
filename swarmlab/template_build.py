"""`swarmlab template build`: the image that template.py builds, defined as the shut-off
domain that nodes are cloned from, with kvm or qemu (TCG) chosen by a probe."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from . import template
from .config import Config
from .daemons import Progress
from .errors import Refused
from .hypervisor import NS_URI, Hypervisor, kvm_works
from .keys import ensure_ssh_key
from .render import render


def resolve_domain_type(config: Config, kernel: Path, progress: Progress) -> str:
    """kvm where guests really run under it, else qemu (TCG). The probe's answer is cached
    per host kernel, since `host down` must not make the next `template build` probe again."""
    if config.domain_type != "auto":
        return config.domain_type
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
                   progress: Progress = lambda _m: None, suite: str = template.DEFAULT_SUITE) -> dict:
    """Builds (or finds in the cache) the template image and defines its shut-off domain."""
    with Hypervisor(config.uri) as hv:
        hv.ping()  # fail before a 3-minute build when libvirt is not there
        existing = hv.domain_state(name)
        if existing and existing.owner is None:
            raise Refused(f"domain {name} exists and was not created by swarmlab: use it as your template "
                          f"([libvirt] template = \"{name}\") or build under another --name")
        if existing and existing.running:
            raise Refused(f"template {name} is running: shut it down first (`virsh shutdown {name}`); "
                          "clones need an unchanging backing disk")
        ensure_ssh_key(config)
        recipe = template.Recipe(name=name, with_engine=with_engine, suite=suite,
                                 ssh_public_key=config.ssh_key_path.with_suffix(".pub").read_text())
        started = time.monotonic()
        image, built = template.build(
            recipe, config.cache_dir, progress,
            lambda kernel: "kvm" if resolve_domain_type(config, kernel, progress) == "kvm" else "tcg")
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
        return {"name": name, "suite": suite, "recipe": image.key, "built": built, "defined": not unchanged,
                "domain_type": domain_type, "disk": str(pooled),
                "disk_bytes": pooled.stat().st_size, "seconds": round(time.monotonic() - started, 1)}


