"""`template build` for real, then the clones of the shared lab `t1` checked over SSH: docker
answers, the baked image runs without a registry, identities differ, and lab names resolve
through PowerDNS. The lab's own clones serve: booting two more would prove the same wiring."""

import json
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from swarmlab.adapters.hypervisor import Hypervisor
from swarmlab.adapters.remote import run
from swarmlab.core.command import Command, sh
from swarmlab.host import hoststate, images
from swarmlab.host.images import BAKED_IMAGE
from swarmlab.host.template_wake import machine_shape
from swarmlab.lab.session import open_lab
from tests.conftest import swarmlab

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module")
def built(vm_host):
    return vm_host


@pytest.fixture(scope="module")
def nodes(lab3):
    """The shared lab's clones; yields ({name: ip}, {name: fabric connection})."""
    path, config, result = lab3
    hoststate.enter_host(config)
    with open_lab(config, "t1", "every") as session:
        yield {n.name: n.ip for n in session.lab.nodes}, session.conns


def test_build_defines_an_owned_shut_off_template(built):
    path, config, result = built
    assert result["name"] == config.template and result["domain_type"] in ("kvm", "qemu")
    hv = Hypervisor(config.uri)
    state = hv.domain_state(config.template)
    assert state.state == "shut off"
    # The shape is what a changed [nodes] memory_mib or vcpus rebuilds: clones restore only into it.
    shape = machine_shape(config.memory_mib, config.vcpus)
    assert state.owner == {"role": "template", "recipe": result["recipe"], "domain_type": result["domain_type"],
                           "shape": shape}
    assert f"<memory unit='KiB'>{config.memory_mib * 1024}</memory>" in hv.domain_xml(config.template)
    assert result["wake"]["volume"].endswith(f"-{shape}-wake.qcow2"), result["wake"]
    hv.close()


def test_unchanged_recipe_rebuild_takes_seconds(built):
    path, _, result = built
    started = time.monotonic()
    again = swarmlab("template", "build", "--json", config=path)
    elapsed = time.monotonic() - started
    data = json.loads(again.stdout)
    assert data["built"] is False and data["defined"] is False and data["recipe"] == result["recipe"]
    assert elapsed < 30, f"cached rebuild took {elapsed:.0f} s"
    doctor = swarmlab("doctor", "--json", config=path)
    assert json.loads(doctor.stdout)["ok"] is True, doctor.stdout


def test_docker_answers_and_the_baked_image_runs(nodes):
    _, conns = nodes
    for name, conn in conns.items():
        assert run(conn, Command("hostname")).strip() == name
        info = json.loads(run(conn, Command("docker", "info", "--format", "{{json .}}")))
        assert info["ServerVersion"] and any("apparmor" in o for o in info["SecurityOptions"])
        # The image is there from boot, by the template's own unit: nothing here starts it.
        run(conn, sh("until systemctl is-active -q swarmlab-images.service; do "
                     "systemctl is-failed -q swarmlab-images.service && exit 1; sleep 1; done"), timeout=240)
        out = run(conn, Command("docker", "run", "--rm", BAKED_IMAGE, "sh", "-c", "echo baked-$((6*7))"), timeout=180)
        assert out.strip() == "baked-42"
        # `sleep` as PID 1 ignores SIGTERM: the image's stop signal ends it without a grace period
        run(conn, Command("docker", "run", "-d", "--name", "stops", BAKED_IMAGE, "sleep", "1d"), timeout=120)
        run(conn, Command("docker", "stop", "-t", "600", "stops"), timeout=60)
        run(conn, Command("docker", "rm", "stops"))
        # In /var/lib/docker since template build (the wake-up boot loaded them under TCG, the
        # bake boot under KVM): no clone loads them itself. A woken clone writes its journal
        # under the builder's machine-id, so every machine's journal is read (-m).
        run(conn, Command("docker", "image", "inspect", *images.STANDIN_NAMES))
        loads = [json.loads(line) for line in run(conn, Command(
            "journalctl", "-m", "-u", "swarmlab-images", "-o", "json", "--output-fields=MESSAGE,_HOSTNAME",
            "--no-pager")).splitlines() if "Loaded image" in line]
        assert loads and {entry["_HOSTNAME"] for entry in loads} <= {"swarmlab-wake", "swarmlab-bake"}, loads
        assert run(conn, Command("journalctl", "-m", f"_HOSTNAME={name}", "-n", "1", "-o", "cat", "--no-pager")).strip()


def test_the_shared_labs_clones_woke_from_the_templates_saved_state(built, lab3):
    _, config, result = built
    assert result["wake"]["volume"], result["wake"]
    _, _, up = lab3
    assert [n["start"] for n in up["nodes"]] == ["wake"] * 3, up["nodes"]
    with Hypervisor(config.uri) as hv:  # the saved state was loaded once and then dropped
        for n in up["nodes"]:
            assert "formed" in hv.snapshot_names(f"t1-{n['node']}")
            assert "wake" not in hv.snapshot_names(f"t1-{n['node']}")


def test_clones_have_their_own_identity(nodes):
    _, conns = nodes
    machine_ids = {name: run(c, Command("cat", "/etc/machine-id")).strip() for name, c in conns.items()}
    host_keys = {name: run(c, Command("ssh-keygen", "-lf", "/etc/ssh/ssh_host_ed25519_key.pub")).split()[1]
                 for name, c in conns.items()}
    assert len(conns) == 3 and all(len(m) == 32 for m in machine_ids.values())
    assert len(set(machine_ids.values())) == len(conns)
    assert len(set(host_keys.values())) == len(conns)
    # The template's bake boot left no engine identity behind either.
    engine_ids = {run(c, Command("docker", "info", "--format", "{{.ID}}")).strip() for c in conns.values()}
    assert len(engine_ids) == len(conns)
    # They woke with one kernel random state: drawn at the same moment, the bytes still differ.
    draws = {}
    with ThreadPoolExecutor(len(conns)) as pool:
        for name, out in zip(conns, pool.map(lambda c: run(c, Command("od", "-An", "-tx1", "-N16", "/dev/urandom")),
                                             conns.values())):
            draws[name] = out.split()
    assert len({tuple(d) for d in draws.values()}) == len(conns), draws
    for name, conn in conns.items():  # and each clock is the host's, not the saved state's
        before = time.time()
        guest = float(run(conn, Command("date", "+%s.%N")))
        assert before - 1 <= guest <= time.time() + 1, f"{name}'s clock is {guest - before:+.1f} s off"


def test_the_nodes_hand_free_memory_back_and_share_identical_pages(built, nodes):
    """Free page reporting on both sides of the balloon, and guest memory KSM may merge while
    ksmd runs. How much that saves is bench/bench_capacity.py's job."""
    _, config, _ = built
    _, conns = nodes
    with Hypervisor(config.uri) as hv:
        for name, conn in conns.items():
            balloon = ET.fromstring(hv.domain_xml(f"t1-{name}")).find("devices/memballoon")
            assert balloon.get("freePageReporting") == "on", ET.tostring(balloon)
            # The guest's driver took the feature (VIRTIO_BALLOON_F_REPORTING is bit 5).
            bits = run(conn, sh("cat /sys/bus/virtio/drivers/virtio_balloon/virtio*/features")).strip()
            assert bits[5] == "1", bits
            pid = int(Path(f"/run/libvirt/qemu/t1-{name}.pid").read_text())
            mergeable = [m for m in Path(f"/proc/{pid}/smaps").read_text().split("VmFlags:")[1:]
                         if " mg" in m.splitlines()[0]]
            assert mergeable, f"t1-{name}'s qemu marks no memory mergeable"
    assert Path("/sys/kernel/mm/ksm/run").read_text().strip() == "1"


def test_guests_resolve_lab_names_through_powerdns(built, nodes):
    _, config, _ = built
    ips, conns = nodes
    for name, ip in ips.items():  # each node's name, as `up` registered it, from every node
        for conn in conns.values():
            assert run(conn, Command("getent", "hosts", f"{name}.t1.{config.zone.rstrip('.')}")).split()[0] == ip
