"""`template build` for real, then two linked clones booted under libvirt (TCG) in the test
namespace and checked over SSH: docker answers, the baked image runs without a registry,
identities differ, and lab names resolve through PowerDNS."""

import json
import time
import xml.etree.ElementTree as ET

import pytest

from swarmlab.dns import PowerDNS
from swarmlab import hoststate
from swarmlab.hypervisor import Hypervisor
from swarmlab.libvirt_xml import derive_clone_xml, random_mac
from swarmlab.command import Command, sh
from swarmlab.remote import SshTarget, run, wait_for_ssh
from swarmlab import images
from swarmlab.images import BAKED_IMAGE
from tests.conftest import swarmlab

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1500)]
NODES = ("swl-t1", "swl-t2")


@pytest.fixture(scope="module")
def built(vm_host):
    path, config, result = vm_host
    yield path, config, result
    hoststate.enter_host(config)
    hv = Hypervisor(config.uri)
    for name in NODES:
        hv.undefine(name)
        hv.delete_volume(config.node_pool, f"{name}.qcow2")
    hv.close()


@pytest.fixture(scope="module")
def nodes(built):
    """Two clones booted in parallel; yields {name: fabric connection}."""
    path, config, _ = built
    hoststate.enter_host(config)
    hv = Hypervisor(config.uri)
    template_xml = hv.domain_xml(config.template)
    volume = ET.fromstring(template_xml).find("devices/disk/source").get("volume")
    backing = hv.volume_path(config.template_pool, volume)
    macs = {}
    for name in NODES:
        hv.create_overlay(config.node_pool, f"{name}.qcow2", backing)
        mac = random_mac()
        macs[mac] = name
        hv.define_domain(derive_clone_xml(template_xml, name, mac, config.node_pool, {"vda": f"{name}.qcow2"},
                                          {"role": "node", "lab": "template-test"}, hostname=name))
        hv.start(name)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ips = {macs[m]: ip for m, ip in hv.dhcp_leases(config.network).items() if m in macs}
        if len(ips) == len(NODES):
            break
        time.sleep(2)
    assert len(ips) == len(NODES), f"no DHCP lease for {set(NODES) - set(ips)} within 300 s"
    conns = {name: wait_for_ssh(SshTarget(ip, config.ssh_user, config.ssh_key_path, path.parent / "known_hosts"), 400)
             for name, ip in ips.items()}
    yield ips, conns
    for c in conns.values():
        c.close()
    hv.close()


def test_build_defines_an_owned_shut_off_template(built):
    path, config, result = built
    assert result["name"] == config.template and result["domain_type"] in ("kvm", "qemu")
    hv = Hypervisor(config.uri)
    state = hv.domain_state(config.template)
    assert state.state == "shut off"
    assert state.owner == {"role": "template", "recipe": result["recipe"], "domain_type": result["domain_type"]}
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
        # Baked into /var/lib/docker at template build: no clone loads them at boot.
        run(conn, Command("docker", "image", "inspect", *images.STANDIN_NAMES))
        journal = run(conn, Command("journalctl", "-b", "-u", "swarmlab-images", "-o", "cat", "--no-pager"))
        assert "Loaded image" not in journal


def test_clones_have_their_own_identity(nodes):
    _, conns = nodes
    machine_ids = {name: run(c, Command("cat", "/etc/machine-id")).strip() for name, c in conns.items()}
    host_keys = {name: run(c, Command("ssh-keygen", "-lf", "/etc/ssh/ssh_host_ed25519_key.pub")).split()[1]
                 for name, c in conns.items()}
    assert all(len(m) == 32 for m in machine_ids.values())
    assert len(set(machine_ids.values())) == len(NODES)
    assert len(set(host_keys.values())) == len(NODES)
    # The template's bake boot left no engine identity behind either.
    engine_ids = {run(c, Command("docker", "info", "--format", "{{.ID}}")).strip() for c in conns.values()}
    assert len(engine_ids) == len(NODES)


def test_guests_resolve_lab_names_through_powerdns(built, nodes):
    _, config, _ = built
    ips, conns = nodes
    client = PowerDNS.from_config(config)
    names = {f"{name}.{config.zone}": ip for name, ip in ips.items()}
    client.replace_a(config.zone, names, ttl=60)
    try:
        conn = conns[NODES[0]]
        for fqdn, ip in names.items():
            assert run(conn, Command("getent", "hosts", fqdn.rstrip("."))).split()[0] == ip
    finally:
        client.delete_a(config.zone, list(names))
