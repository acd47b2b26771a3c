"""An instructor's own template on real VMs: a raw disk and a second data disk, no swarmlab
metadata, cloned by two `up 1` runs started together for two labs (an instructor's
script; two prove the concurrency as well as three, for one boot less), then checked the way the instructor would: every run succeeded, each clone writes
to its own overlays, the template's files are untouched, and strict `swarmlab ssh` works."""

import hashlib
import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from swarmlab.adapters.hypervisor import Hypervisor
from swarmlab.host import hoststate
from tests.conftest import ROOT, swarmlab

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1500)]
LABS = ("c1", "c2")


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read(1 << 20)).hexdigest()


@pytest.fixture(scope="module")
def own_template(vm_host, vm_state_dir):
    """The test template's image converted to raw, plus a 64 MiB qcow2 data disk, defined as a
    plain domain with no swarmlab metadata (like the article's debian10template)."""
    path, config, built = vm_host
    hoststate.enter_host(config)
    images = vm_state_dir / "own-template"
    images.mkdir(exist_ok=True)
    images.chmod(0o755)
    raw, data = images / "root.img", images / "data.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "raw", built["disk"], str(raw)], check=True)
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(data), "64M"], check=True, capture_output=True)
    with Hypervisor(config.uri) as hv:
        root = ET.fromstring(hv.domain_xml(config.template))
        root.find("name").text = "own-template"
        for tag in ("uuid", "metadata"):
            for el in root.findall(tag):
                root.remove(el)
        for el in root.findall("devices/interface/mac"):
            root.find("devices/interface").remove(el)
        disk = root.find("devices/disk")
        disk.set("type", "file")
        for el in list(disk):
            if el.tag in ("source", "driver", "backingStore"):
                disk.remove(el)
        ET.SubElement(disk, "driver", {"name": "qemu", "type": "raw"})
        ET.SubElement(disk, "source", {"file": str(raw)})
        second = ET.SubElement(root.find("devices"), "disk", {"type": "file", "device": "disk"})
        ET.SubElement(second, "driver", {"name": "qemu", "type": "qcow2"})
        ET.SubElement(second, "source", {"file": str(data)})
        ET.SubElement(second, "target", {"dev": "vdb", "bus": "virtio"})
        hv.conn.defineXML(ET.tostring(root, encoding="unicode"))
    yield path, config, raw, data
    for lab in LABS:
        swarmlab("down", "--lab", lab, "--yes", config=path)
    with Hypervisor(config.uri) as hv:
        hv.conn.lookupByName("own-template").undefine()


def test_labs_started_together_all_come_up_on_a_raw_two_disk_template(own_template):
    path, config, raw, data = own_template
    before = {raw: digest(raw), data: digest(data)}
    env = {**__import__("os").environ, "SWARMLAB_CONFIG": str(path)}
    runs = [subprocess.Popen([sys.executable, "-m", "swarmlab", "up", "1", "--lab", lab, "--template", "own-template",
                              "--no-swarm", "--json"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for lab in LABS]
    results = [(p.wait(timeout=900), p.stdout.read(), p.stderr.read()) for p in runs]
    assert [code for code, _, _ in results] == [0] * len(LABS), [err for _, _, err in results]
    nodes = {lab: json.loads(out)["nodes"][0] for lab, (_, out, _) in zip(LABS, results)}
    assert len({n["ip"] for n in nodes.values()}) == len(LABS)
    # A foreign two-disk template has no wake-up state: its clones boot cold, and up says so.
    assert [n["start"] for n in nodes.values()] == ["boot"] * len(LABS), nodes

    with Hypervisor(config.uri) as hv:
        for lab, node in nodes.items():
            xml = ET.fromstring(hv.domain_xml(node["domain"]))
            sources = {d.find("target").get("dev"): d.find("source").attrib for d in xml.findall("devices/disk")}
            assert sources == {"vda": {"pool": config.node_pool, "volume": f"{lab}-swr1.qcow2"},
                               "vdb": {"pool": config.node_pool, "volume": f"{lab}-swr1-vdb.qcow2"}}
            overlay = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json",
                                                 hv.volume_path(config.node_pool, f"{lab}-swr1.qcow2")],
                                                capture_output=True, text=True).stdout)
            assert overlay["backing-filename-format"] == "raw" and overlay["backing-filename"] == str(raw)

    for lab in LABS:
        # strict host key checking against the lab's known_hosts: every parallel first contact was recorded
        write = swarmlab("ssh", "swr1", "--lab", lab, "--", "hostname && echo " + lab +
                         " | dd of=/dev/vdb conv=fsync status=none && head -c 2 /dev/vdb", config=path)
        assert write.returncode == 0, write.stderr
        assert write.stdout.split() == ["swr1", lab[:2]]
    # each clone wrote to its own vdb overlay; the template's files did not change
    assert {raw: digest(raw), data: digest(data)} == before
    for lab in LABS:
        assert swarmlab("ssh", "swr1", "--lab", lab, "--", "head -c 2 /dev/vdb", config=path).stdout == lab[:2]

    down = swarmlab("down", "--lab", "c1", "--yes", "--json", config=path)
    assert down.returncode == 0
    assert {"volume c1-swr1.qcow2", "volume c1-swr1-vdb.qcow2", "domain c1-swr1"} <= set(json.loads(down.stdout)["removed"])
