"""`up` planning and `down`'s refusals on libvirt's test driver, with a test host of our own
(a swarmlab network with DHCP hosts, pools, an owned template, a foreign domain) and a real
PowerDNS. Nothing boots here; the VM tests prove the rest."""

import threading
import time

import pytest

from swarmlab import config as configuration
from swarmlab.adapters.hypervisor import Hypervisor
from swarmlab.errors import NotFound, Refused, SwarmlabError
from swarmlab.lab import lab_down, lab_up, model as labs, node_status
from tests.conftest import make_test_host, write_config


@pytest.fixture
def test_host(tmp_path, pdns_server, monkeypatch):
    """(config, hv): one shared connection to a test:///FILE host (whose state lives per
    connection), handed to every Hypervisor() libvirt.open would connect anew."""
    uri = make_test_host(tmp_path)
    client, server, key = pdns_server
    client.ensure_zone("lab.swarmlab.test.")
    key_file = tmp_path / "api-key"
    key_file.write_text(key)
    key_file.chmod(0o600)
    path = write_config(tmp_path / "swarmlab.toml", tmp_path / "state",
                        libvirt={"uri": uri, "network": "swl-unit", "cidr": "10.79.0.0/24",
                                 "template": "unit-template"},
                        dns={"api_url": client.api_url, "api_key_file": str(key_file)},
                        host={"dns_port": server.dns_port})
    config = configuration.load(path)
    import libvirt
    conn = libvirt.open(config.uri)
    real_open, real_close = libvirt.open, Hypervisor.close

    def close(self):  # the shared connection stays open for the next Hypervisor
        if self._conn is conn:
            self._conn = None
        else:
            real_close(self)
    # every Hypervisor made for this URI, wherever the code makes it, sees the same state
    monkeypatch.setattr(libvirt, "open", lambda uri=None: conn if uri == config.uri else real_open(uri))
    monkeypatch.setattr(Hypervisor, "close", close)
    hv = Hypervisor(config.uri)
    assert not hv.domain_state("unit-template").running
    yield config, hv
    conn.close()


def test_a_foreign_domain_with_a_nodes_name_is_refused_before_anything_is_written(test_host):
    """`up` used to write the journal and the DHCP reservation first; `ls` then listed a lab
    that did not exist and the reservation stayed."""
    config, hv = test_host
    before = hv.dhcp_reservations(config.network)
    with pytest.raises(Refused, match="domain g1-swr1 already exists and was not created by swarmlab"):
        lab_up.up(config, 2, "g1", "swr")
    assert hv.dhcp_reservations(config.network) == before
    assert labs.load_journal(config, "g1") is None
    assert labs.list_labs(config) == []
    assert hv.domain_state("g1-swr2") is None and hv.pool(config.node_pool).listVolumes() == []


def test_a_domain_of_another_lab_is_refused_too(test_host):
    config, hv = test_host
    import re
    owned = re.sub(r"<uuid>.*</uuid>", "", hv.domain_xml("unit-template")).replace(
        "<name>unit-template</name>", "<name>g2-swr1</name>").replace('role="template"', 'role="node" lab="other"')
    hv.define_domain(owned)
    with pytest.raises(Refused, match="domain g2-swr1 already exists and belongs to lab other"):
        lab_up.up(config, 1, "g2", "swr")
    assert labs.load_journal(config, "g2") is None


def test_down_refuses_a_journal_naming_a_domain_it_does_not_own_and_removes_nothing(test_host):
    config, hv = test_host
    labs.save_journal(config, labs.Lab("g1", [
        labs.Node("swr1", "g1-swr1", "g1-swr1.qcow2", "52:54:00:00:00:99", "10.79.0.50", "swr1.g1.lab.swarmlab.test.")]))
    with pytest.raises(Refused, match="domain g1-swr1 does not belong to lab g1; leaving the whole lab alone"):
        lab_down.down(config, "g1")
    assert hv.domain_state("g1-swr1").running
    assert hv.dhcp_reservations(config.network)["52:54:00:00:00:99"] == "10.79.0.50"
    assert labs.load_journal(config, "g1") is not None


def test_status_of_an_unknown_lab_is_one_error_type_with_one_exit_code(test_host):
    config, _ = test_host
    with pytest.raises(labs.LabNotFound) as err:
        node_status.status(config, "nosuch")
    assert err.value.exit_code == NotFound.exit_code == 3
    assert "lab nosuch does not exist" in str(err.value)


def test_other_labs_wait_for_the_address_lock_instead_of_being_refused(tmp_path, monkeypatch):
    import fcntl
    config = configuration.Config(state_dir=tmp_path)
    held, release, acquired = threading.Event(), threading.Event(), threading.Event()
    tries = []
    real_flock = fcntl.flock

    def flock(f, operation):  # counts the waiter's attempts that found the lock taken
        try:
            return real_flock(f, operation)
        except BlockingIOError:
            tries.append(threading.current_thread().name)
            raise
    monkeypatch.setattr(fcntl, "flock", flock)

    def holder():
        with labs.address_lock(config):
            held.set()
            release.wait(30)

    def waiter():
        with labs.address_lock(config):
            acquired.set()

    first = threading.Thread(target=holder)
    first.start()
    held.wait(10)
    second = threading.Thread(target=waiter, name="waiter")
    second.start()
    # a second attempt after one that found the lock taken: the other lab waits, it was not refused
    deadline = time.monotonic() + 10
    while tries.count("waiter") < 2:
        assert time.monotonic() < deadline and second.is_alive(), "the other lab did not try again"
        time.sleep(0.01)
    assert not acquired.is_set()
    release.set()
    assert acquired.wait(10), "the waiting lab never got the lock"
    first.join()
    second.join()
    # the same lab twice is still refused at once
    with labs.lab_lock(config, "g1"):
        with pytest.raises(Refused, match="lab g1 is busy"):
            with labs._flock(config.state_dir / "locks" / "lab-g1.lock", "lab g1"):
                pass


def test_each_node_reports_every_failure():
    def work(n):
        if n in ("a", "c"):
            raise SwarmlabError(f"{n} broke")
        return n.upper()

    assert labs.each_node(work, ["b", "d"]) == ["B", "D"]
    with pytest.raises(labs.NodeErrors, match="2 nodes failed: a broke; c broke"):
        labs.each_node(work, ["a", "b", "c"])
    with pytest.raises(SwarmlabError, match="^a broke$"):
        labs.each_node(work, ["a", "b"])


def test_a_class_lab_is_found_on_its_own_network_and_down_removes_only_that_network(test_host):
    import ipaddress

    from swarmlab.config import HostSpec
    config, hv = test_host
    scoped = labs.scoped(config, HostSpec("local", config.uri), "swl-unit-x", ipaddress.IPv4Network("10.80.3.0/24"))
    assert (scoped.template_pool, str(scoped.host_gateway), str(scoped.gateway)) == \
        ("swl-unit-templates", "10.79.0.1", "10.80.3.1")
    lab_up.ensure_lab_network(scoped, hv, labs.Lab("x", placement=labs.placement_of(scoped)))
    assert hv.network_state("swl-unit-x").owner == {"role": "network", "lab": "x"}
    found = labs.lab_config(config, "x")
    assert (found.network, str(found.cidr), found.lab_host, found.shared_network) == \
        ("swl-unit-x", "10.80.3.0/24", "local", "swl-unit")
    assert labs.lab_config(found, "x") == found  # scoping twice changes nothing
    assert [r["network"] for r in labs.list_labs(config) if r["lab"] == "x"] == ["swl-unit-x"]
    removed = lab_down.down(config, "x")
    assert "undefined network swl-unit-x" in removed
    assert not hv.network_state("swl-unit-x").exists and hv.network_state("swl-unit").exists
    assert labs.lab_config(config, "x") == config  # no journal: the shared network


def test_a_stopped_node_whose_disk_is_gone_gets_a_new_one_on_the_next_up(test_host):
    """A killed run's domains outlive a wiped pool: the rerun clones the disk again instead of
    failing with "storage volume not found" at boot."""
    config, hv = test_host
    node = labs.Node("swr1", "g3-swr1", "g3-swr1.qcow2", "52:54:00:00:00:31", "10.79.0.31", "swr1.g3.lab")
    template_xml = hv.domain_xml(config.template)
    lab_up._create_node(config, hv, "g3", node, template_xml)
    assert hv.delete_volume(config.node_pool, "g3-swr1.qcow2")
    lab_up._create_node(config, hv, "g3", node, template_xml)
    assert hv.volume_path(config.node_pool, "g3-swr1.qcow2").endswith("g3-swr1.qcow2")
    assert hv.domain_state("g3-swr1").owner["volume"] == "g3-swr1.qcow2"


def test_not_enough_disk_is_refused_before_any_vm(test_host, monkeypatch):
    config, hv = test_host
    # the pool's free space as libvirt on the lab's host reports it (a host on another machine too)
    monkeypatch.setattr(Hypervisor, "pool_space", lambda _hv, _pool: ("/srv/nodes", 100 << 20))
    with pytest.raises(labs.LabError, match="not enough free disk in /srv/nodes on this host: 100 MiB free, "
                                            "1024 MiB needed for 2 overlays"):
        lab_up.preflight(config, hv, 2)
    with pytest.raises(labs.LabError, match="not enough free disk"):
        lab_up.up(config, 2, "g4", "swr")
    assert labs.load_journal(config, "g4") is None and hv.domain_state("g4-swr1") is None
