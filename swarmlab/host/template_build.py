"""`swarmlab template build`: the image that template.py builds, defined as the shut-off
domain that nodes are cloned from, with kvm or qemu (TCG) chosen by a probe; and the same
template pushed to a lab host on another machine."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from swarmlab.adapters.daemons import Progress
from swarmlab.adapters.domain_xml import DomainXML
from swarmlab.adapters.hypervisor import Hypervisor
from swarmlab.adapters.keys import ensure_ssh_key
from swarmlab.adapters.libvirt_xml import NS_URI
from swarmlab.adapters.qemu_probe import kvm_works
from swarmlab.config import Config, HostSpec
from swarmlab.errors import NotFound, Refused
from swarmlab.host import template
from swarmlab.host.template_wake import ensure_wake_copy_for_host, ensure_wake_image, machine_shape
from swarmlab.render import render


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
                   progress: Progress = lambda _m: None, suite: str = template.DEFAULT_SUITE,
                   wake: bool = True) -> dict:
    """Builds (or finds in the cache) the template image, defines its shut-off domain and saves
    the state its clones wake from (unless `wake` is False: then they boot)."""
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
            lambda kernel: "kvm" if resolve_domain_type(config, kernel, progress) == "kvm" else "tcg",
            wake_follows=wake)
        hv.ensure_pool(config.template_pool, config.cache_dir / "images", image_cache=True)
        volume = f"{name}-{image.key}.qcow2"
        pooled = config.cache_dir / "images" / volume
        if not pooled.exists():
            os.link(image.disk, pooled)  # same file system: instant, no second copy
            hv.refresh_pool(config.template_pool)
        domain_type = resolve_domain_type(config, image.kernel, progress)
        attrs = {"recipe": image.key, "domain_type": domain_type,
                 "shape": machine_shape(config.memory_mib, config.vcpus)}
        # A changed [nodes] memory_mib or vcpus redefines the template (its clones copy it).
        unchanged = bool(existing and all(existing.owner.get(k) == v for k, v in attrs.items()))
        if not unchanged:
            xml = render("domain.xml.j2", domain_type=domain_type, name=name, ns_uri=NS_URI, role="template", attrs=attrs,
                         memory_mib=config.memory_mib, vcpus=config.vcpus, kernel=image.kernel,
                         initrd=image.initrd, cmdline=f"root=/dev/vda rw console=ttyS0 quiet systemd.hostname={name}",
                         pool=config.template_pool, volume=volume, network=config.network)
            hv.define_domain(xml)  # libvirt gives the template its own MAC
        woken = ensure_wake_image(config, hv, name, image.key, domain_type, attrs["shape"], progress) if wake else \
            {"volume": None, "why": "--no-wake"}
        return {"name": name, "suite": suite, "recipe": image.key, "built": built, "defined": not unchanged,
                "domain_type": domain_type, "disk": str(pooled), "wake": woken,
                "disk_bytes": pooled.stat().st_size, "seconds": round(time.monotonic() - started, 1)}




def without_kvm(domain: DomainXML, host_offers_kvm: bool) -> bool:
    """A KVM template's domain made a QEMU (TCG) one for a host without KVM: the type, no
    host-passthrough CPU, and its recorded domain type. True if it changed. A QEMU template
    stays QEMU on any host (it runs everywhere)."""
    if domain.domain_type != "kvm" or host_offers_kvm:
        return False
    domain.domain_type = "qemu"
    domain.drop_host_passthrough_cpu()
    owner = domain.owner
    if owner and owner.get("domain_type"):
        domain.owner = {**owner, "domain_type": "qemu"}
    return True


def push_template(config: Config, host: HostSpec, progress: Progress = lambda _m: None) -> list[str]:
    """The controller's template on a host on another machine: its disk, kernel and initrd
    copied through libvirt's upload stream into the host's template pool, and the same domain
    defined there. Skipped when the host has this recipe. The domain is defined last, so an
    interrupted push is redone by the next one. Returns the changes."""
    with Hypervisor(config.uri) as here:
        state = here.domain_state(config.template)
        if state is None or not state.owner or not state.owner.get("recipe"):
            raise NotFound(f"template {config.template} is not a swarmlab template on this host: "
                           "`swarmlab template build` first, then it is copied to the other hosts")
        xml = DomainXML(here.domain_xml(config.template))
        disk = here.disk_path(config.template)
    recipe = state.owner["recipe"]
    source = xml.first_disk_source
    if disk is None or source is None or not source.get("volume") or not xml.kernel or not xml.initrd:
        raise Refused(f"template {config.template} is not in a pool with its own kernel: rebuild it "
                      "with `swarmlab template build`")
    with Hypervisor(host.uri) as there:
        existing = there.domain_state(config.template)
        if existing and existing.owner is None:
            raise Refused(f"domain {config.template} on host {host.name} was not created by swarmlab: "
                          "remove it there, or set [libvirt] template to another name")
        if existing and existing.owner.get("recipe") == recipe and \
                existing.owner.get("shape", "") == state.owner.get("shape", ""):
            woken = ensure_wake_copy_for_host(config, host.name, recipe, existing.owner.get("domain_type", ""),
                                              existing.owner.get("shape", ""),
                                              there.disk_path(config.template))
            return [woken] if woken else []
        if existing and existing.running:
            raise Refused(f"template {config.template} runs on host {host.name}: shut it down there first")
        changes = there.ensure_pool(config.template_pool, Path(host.pools_at / "templates"))
        changes += there.ensure_pool(config.node_pool, Path(host.pools_at / "nodes"))
        started = time.monotonic()
        progress(f"uploading template {config.template} ({Path(disk).stat().st_size >> 20} MiB)")
        there.upload_volume(config.template_pool, source.get("volume"), Path(disk))
        xml.kernel = there.upload_volume(config.template_pool, f"{config.template}-{recipe}.vmlinuz",
                                         Path(xml.kernel))
        xml.initrd = there.upload_volume(config.template_pool, f"{config.template}-{recipe}.initrd",
                                         Path(xml.initrd))
        xml.uuid = None  # the host gives its copy an identity of its own
        xml.forget_mac()
        if without_kvm(xml, there.offers_kvm()):
            progress(f"host {host.name} has no KVM: its copy of the template runs under QEMU (TCG)")
        there.define_domain(str(xml))
        changes.append(f"copied template {config.template} (recipe {recipe}) to host {host.name} "
                       f"in {time.monotonic() - started:.1f} s")
        woken = ensure_wake_copy_for_host(config, host.name, recipe, xml.domain_type, state.owner.get("shape", ""),
                                          there.disk_path(config.template))
        changes += [woken] if woken else []
    return changes
