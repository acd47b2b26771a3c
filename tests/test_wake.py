"""Waking clones, the pure parts: the XML that lays a clone out to wake, the saved state's
name, which templates can have one, and the identity a woken clone is given."""

import subprocess
import xml.etree.ElementTree as ET

import pytest

from swarmlab.adapters.libvirt_xml import (NS_URI, TemplateError, derive_clone_xml, split_interface, wake_snapshot_xml,
                                           with_kernel_args)
from swarmlab.host.template_wake import WAKE_BOOT_ARGS, machine_shape, wake_volume, wakeable
from swarmlab.lab.wake import FRESH_IDENTITY, cut_short, machine_id
from swarmlab.render import render


def template_xml(extra_disk: str = "") -> str:
    xml = render("domain.xml.j2", domain_type="qemu", name="debian13", ns_uri=NS_URI, role="template",
                 attrs={"recipe": "abc123"}, memory_mib=1024, vcpus=1, kernel="/k", initrd="/i",
                 cmdline="root=/dev/vda console=ttyS0 systemd.hostname=debian13",
                 pool="swarmlab-templates", volume="debian13-abc123.qcow2", network="default")
    return xml.replace("</devices>", extra_disk + "</devices>")


def clone_xml() -> str:
    xml = derive_clone_xml(template_xml(), "lab1-swr1", "52:54:00:aa:bb:01", "swarmlab-nodes",
                           {"vda": "lab1-swr1.qcow2"}, {"role": "node", "lab": "lab1"}, hostname="swr1")
    return xml.replace("<name>", "<uuid>0f8fad5b-d9cb-469f-a165-70867728950e</uuid><name>", 1)


def test_a_woken_clone_is_defined_without_its_nic_and_gets_exactly_that_nic_later():
    bare, interface = split_interface(clone_xml())
    assert ET.fromstring(bare).find("devices/interface") is None
    assert cut_short(bare, [], running=False) and not cut_short(clone_xml(), [], running=False)
    assert cut_short(clone_xml(), ["wake"], running=True)  # the NIC is in, the state not yet dropped
    assert not cut_short(bare, ["formed"], running=True)  # a NIC unplugged by hand: not ours to remake
    nic = ET.fromstring(interface)
    assert nic.tag == "interface" and nic.find("mac").get("address") == "52:54:00:aa:bb:01"
    tags = [d.tag for d in ET.fromstring(clone_xml()).find("devices")]
    assert [d.tag for d in ET.fromstring(bare).find("devices")] == [t for t in tags if t != "interface"]
    assert ET.fromstring(bare).find("devices/disk/source").get("volume") == "lab1-swr1.qcow2"
    with pytest.raises(TemplateError, match="exactly one"):
        split_interface(bare)


def test_the_wake_snapshot_is_redefined_as_the_clones_own_running_state():
    bare, _ = split_interface(clone_xml())
    snapshot = ET.fromstring(wake_snapshot_xml(bare, 1796000000))
    assert snapshot.findtext("name") == "wake" and snapshot.findtext("state") == "running"
    assert snapshot.findtext("creationTime") == "1796000000"  # libvirt refuses a redefinition without it
    assert snapshot.find("memory").get("snapshot") == "internal"
    assert [(d.get("name"), d.get("snapshot")) for d in snapshot.findall("disks/disk")] == [("vda", "internal")]
    domain = snapshot.find("domain")
    assert domain.findtext("name") == "lab1-swr1" and domain.findtext("uuid").startswith("0f8fad5b")
    assert domain.find("devices/interface") is None


def test_the_wake_boot_masks_only_the_wait_for_a_network_it_has_not():
    xml = with_kernel_args(template_xml(), *WAKE_BOOT_ARGS)
    words = ET.fromstring(xml).findtext("os/cmdline").split()
    assert words == ["root=/dev/vda", "console=ttyS0", "systemd.hostname=debian13",
                     "systemd.mask=systemd-networkd-wait-online.service"]
    assert with_kernel_args(xml, *WAKE_BOOT_ARGS) == xml  # once
    own_disk = ET.fromstring(template_xml())
    own_disk.find("os").remove(own_disk.find("os/kernel"))
    with pytest.raises(TemplateError, match="boots from its own disk"):
        with_kernel_args(ET.tostring(own_disk, encoding="unicode"), "x")


def test_a_saved_state_belongs_to_one_recipe_and_accelerator_and_one_disk():
    assert wake_volume("debian13", "abc123", "qemu") != wake_volume("debian13", "abc123", "kvm")
    assert wake_volume("debian13", "abc123", "qemu") != wake_volume("debian13", "abc124", "qemu")
    assert wake_volume("debian13", "abc123", "qemu", machine_shape(1024, 1)) != \
        wake_volume("debian13", "abc123", "qemu", machine_shape(768, 1))
    assert wakeable(template_xml())
    second = "<disk type='file' device='disk'><source file='/x.qcow2'/><target dev='vdb' bus='virtio'/></disk>"
    assert not wakeable(template_xml(second))


def test_machine_id_is_the_domains_uuid_as_systemd_takes_it():
    assert machine_id(clone_xml()) == "0f8fad5bd9cb469fa16570867728950e"


def test_the_identity_script_is_valid_shell_and_keeps_its_order():
    subprocess.run(["sh", "-n", "-c", FRESH_IDENTITY], check=True)
    at = FRESH_IDENTITY.index
    # the random generator is rekeyed before the host key is drawn
    assert at("0x5207") < at("ssh-keygen") < at("systemctl restart ssh")
    # the engine starts with the node's hostname and without the template's engine ID, early,
    # and its stop leaves the images unit alone (no docker CLI run to check baked images)
    assert at('hostname "$1"') < at("rm -f /var/lib/docker/engine-id") < at("--no-block start docker") < at("ssh-keygen")
    assert "systemctl stop --job-mode=ignore-dependencies docker.socket docker" in FRESH_IDENTITY


def test_a_host_on_another_machine_gets_a_copy_backed_by_its_own_template_disk(tmp_path):
    import dataclasses
    import json

    from swarmlab import config as configuration
    from swarmlab.host.template_wake import ensure_wake_copy_for_host, wake_copy_for_host
    config = dataclasses.replace(configuration.Config(), cache_dir=tmp_path, template="debian13")
    (tmp_path / "images").mkdir()
    base = tmp_path / "images" / "debian13-abc123.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    mine = tmp_path / "images" / wake_volume("debian13", "abc123", "qemu")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(mine)], check=True)
    old = wake_copy_for_host(config, "h2", wake_volume("debian13", "old999", "qemu"))
    old.parent.mkdir(parents=True)
    old.write_bytes(b"an older recipe's copy")
    there = "/var/lib/libvirt/lab-pools/templates/debian13-abc123.qcow2"
    assert ensure_wake_copy_for_host(config, "h2", "abc123", "kvm", "", there) is None  # a KVM state stays home
    assert "h2" in ensure_wake_copy_for_host(config, "h2", "abc123", "qemu", "", there)
    copy = wake_copy_for_host(config, "h2", mine.name)
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(copy)], check=True,
                                     capture_output=True, text=True).stdout)
    assert info["backing-filename"] == there
    assert not old.exists() and sorted(p.name for p in copy.parent.iterdir()) == [mine.name]
    assert ensure_wake_copy_for_host(config, "h2", "abc123", "qemu", "", there) is None  # once


def test_a_failed_wake_up_boot_leaves_no_builder_nor_image_and_the_clones_boot(tmp_path):
    """libvirt's test driver has no guest agent: the wake-up boot cannot be confirmed."""
    import dataclasses

    from swarmlab import config as configuration
    from swarmlab.adapters.hypervisor import Hypervisor
    from swarmlab.host.template_wake import builder_domain, ensure_wake_image, wake_image_of
    from tests.conftest import make_test_host
    config = dataclasses.replace(configuration.Config(), uri=make_test_host(tmp_path), template="unit-template",
                                 network="swl-unit")  # its pools: swl-unit-templates and -nodes
    with Hypervisor(config.uri) as hv:
        before = sorted(hv.pool(config.template_pool).listVolumes())
        result = ensure_wake_image(config, hv, "unit-template", "abc123", "qemu", "1024m1c", timeout=0.1)
        assert result["volume"] is None and "guest agent" in result["why"], result
        assert hv.domain_state(builder_domain("unit-template")) is None
        assert sorted(hv.pool(config.template_pool).listVolumes()) == before
        owner = {"role": "template", "recipe": "abc123", "domain_type": "qemu"}
        assert wake_image_of(config, hv, hv.domain_xml("unit-template"), owner) is None
