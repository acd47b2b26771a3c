"""libvirt adapter against libvirt's test:///default driver: clone XML, ownership checks."""

import ipaddress
import xml.etree.ElementTree as ET

import pytest

from swarmlab import config as configuration
from swarmlab.adapters import libvirt_xml
from swarmlab.adapters.hypervisor import Hypervisor, HypervisorError
from swarmlab.adapters.domain_xml import DomainXML
from swarmlab.adapters.libvirt_xml import NS_URI, TemplateError, derive_clone_xml
from swarmlab.errors import Refused
from swarmlab.render import render


@pytest.fixture
def hv():
    h = Hypervisor("test:///default")  # a fresh in-memory host per connection
    yield h
    h.close()


def template_xml() -> str:
    return render("domain.xml.j2", domain_type="qemu", name="debian12", ns_uri=NS_URI, role="template",
                  attrs={"recipe": "abc123"}, memory_mib=1024, vcpus=1, kernel="/k", initrd="/i",
                  cmdline="root=/dev/vda console=ttyS0 systemd.hostname=debian12",
                  pool="swarmlab-templates", volume="debian12-abc123.qcow2", network="default")


def test_clone_xml_gets_new_identity_disk_and_owner():
    xml = derive_clone_xml(template_xml(), "lab1-swr1", "52:54:00:aa:bb:01", "swarmlab-nodes",
                           {"vda": "lab1-swr1.qcow2"}, {"role": "node", "lab": "lab1"}, hostname="swr1")
    root = ET.fromstring(xml)
    assert root.findtext("name") == "lab1-swr1"
    assert root.find("uuid") is None
    assert root.find("devices/interface/mac").get("address") == "52:54:00:aa:bb:01"
    source = root.find("devices/disk/source")
    assert (source.get("pool"), source.get("volume")) == ("swarmlab-nodes", "lab1-swr1.qcow2")
    assert root.find("devices/disk/driver").get("type") == "qcow2"
    owner = root.find(f"metadata/{{{NS_URI}}}resource")
    assert owner.attrib == {"role": "node", "lab": "lab1"}
    assert root.findtext("os/cmdline").split().count("systemd.hostname=swr1") == 1
    assert "systemd.hostname=debian12" not in root.findtext("os/cmdline")


def test_a_class_labs_clone_joins_its_own_network_and_may_size_the_tcg_cache():
    plain = ET.fromstring(derive_clone_xml(template_xml(), "a-swr1", "52:54:00:aa:bb:01", "p", {"vda": "v.qcow2"},
                                           {"role": "node", "lab": "a"}))
    assert plain.find("devices/interface/source").get("network") == "default"
    assert plain.find("features/tcg") is None
    own = ET.fromstring(derive_clone_xml(template_xml(), "a-swr1", "52:54:00:aa:bb:01", "p", {"vda": "v.qcow2"},
                                         {"role": "node", "lab": "a"}, network="swarmlab-a", tb_cache_mib=256))
    assert [s.get("network") for s in own.findall("devices/interface/source")] == ["swarmlab-a"]
    assert own.find("devices/interface/mac").get("address") == "52:54:00:aa:bb:01"
    cache = own.find("features/tcg/tb-cache")
    assert (cache.text, cache.get("unit")) == ("256", "MiB")
    kvm = template_xml().replace('<domain type="qemu">', '<domain type="kvm">')
    assert ET.fromstring(derive_clone_xml(kvm, "a-swr1", "52:54:00:aa:bb:01", "p", {"vda": "v.qcow2"},
                                          {"role": "node"}, tb_cache_mib=256)).find("features/tcg") is None


def test_clone_defines_and_is_owned(hv):
    hv.define_domain(template_xml())
    clone = derive_clone_xml(hv.domain_xml("debian12"), "lab1-swr1", "52:54:00:aa:bb:01", "p", {"vda": "v.qcow2"},
                             {"role": "node", "lab": "lab1"}, hostname="swr1")
    hv.define_domain(clone)
    state = hv.domain_state("lab1-swr1")
    assert state.state == "shut off" and state.owner == {"role": "node", "lab": "lab1"}
    assert [d.name for d in hv.owned_domains()] == ["debian12", "lab1-swr1"]
    assert hv.mac_of("lab1-swr1") == "52:54:00:aa:bb:01"
    # Redefining an owned domain keeps its UUID instead of failing.
    uuid = hv.conn.lookupByName("lab1-swr1").UUIDString()
    hv.define_domain(clone)
    assert hv.conn.lookupByName("lab1-swr1").UUIDString() == uuid
    hv.start("lab1-swr1")
    assert hv.domain_state("lab1-swr1").running
    assert hv.destroy("lab1-swr1") is True
    assert hv.undefine("lab1-swr1") is True
    assert hv.domain_state("lab1-swr1") is None


def test_users_own_template_can_be_cloned(hv):
    # Like the article's debian10template: a plain domain with a file disk, no swarmlab metadata.
    xml = derive_clone_xml(hv.domain_xml("test"), "lab1-swr1", "52:54:00:aa:bb:02", "p", {"vda": "v.qcow2"},
                           {"role": "node", "lab": "lab1"}, hostname="swr1")
    root = ET.fromstring(xml)
    assert root.find("devices/disk").get("type") == "volume"
    assert root.find("devices/disk/source").get("file") is None
    hv.define_domain(xml)
    assert hv.domain_state("lab1-swr1").owner["lab"] == "lab1"


def test_foreign_domains_and_networks_are_never_touched(hv):
    assert hv.domain_state("test").owner is None
    with pytest.raises(Refused, match="not created by swarmlab"):
        hv.destroy("test")
    with pytest.raises(Refused, match="not created by swarmlab"):
        hv.undefine("test")
    with pytest.raises(Refused, match="not created by swarmlab"):
        hv.define_domain(template_xml().replace("<name>debian12</name>", "<name>test</name>"))
    with pytest.raises(HypervisorError, match="without swarmlab ownership"):
        hv.define_domain(hv.domain_xml("test").replace("<name>test</name>", "<name>other</name>"))
    config = configuration.Config(network="default")
    with pytest.raises(Refused, match="network default exists and was not created by swarmlab"):
        hv.ensure_network("default", libvirt_xml.network_xml(config))
    with pytest.raises(Refused):
        hv.remove_network("default")
    assert hv.domain_state("test").running
    assert hv.network_state("default").active


def test_network_from_template_is_idempotent_and_owned(hv):
    config = configuration.Config(network="swl-unit", cidr=ipaddress.IPv4Network("10.79.0.0/24"))
    changes = hv.ensure_network("swl-unit", libvirt_xml.network_xml(config))
    assert changes == ["defined network swl-unit", "started network swl-unit"]
    assert hv.ensure_network("swl-unit", libvirt_xml.network_xml(config)) == []
    state = hv.network_state("swl-unit")
    assert state.active and state.owner == {"role": "network"}
    assert state.gateway == "10.79.0.1" and state.dhcp_ranges == [("10.79.0.128", "10.79.0.254")]
    assert hv.remove_network("swl-unit") == ["stopped network swl-unit", "undefined network swl-unit"]
    assert not hv.network_state("swl-unit").exists


def test_a_network_made_with_stp_is_made_again_without_it_when_no_node_is_attached(hv):
    """With STP, Linux held a reverted node's new port ~4 s before it forwarded a frame."""
    config = configuration.Config(network="swl-unit", cidr=ipaddress.IPv4Network("10.79.0.0/24"))
    xml = libvirt_xml.network_xml(config)
    assert not libvirt_xml.runs_stp(xml)
    hv.ensure_network("swl-unit", xml.replace('stp="off"', 'stp="on"'))
    assert libvirt_xml.runs_stp(hv.conn.networkLookupByName("swl-unit").XMLDesc())
    changes = hv.ensure_network("swl-unit", xml)
    assert changes[0] == "redefined network swl-unit: its bridge forwards a new node's frames at once (no STP)"
    assert not libvirt_xml.runs_stp(hv.conn.networkLookupByName("swl-unit").XMLDesc())
    assert hv.ensure_network("swl-unit", xml) == []


def test_a_networks_dns_forwarder_is_read_from_its_dnsmasq_options():
    config = configuration.Config(network="swl-unit", dns_port=5353)
    assert libvirt_xml.dns_forwarder(libvirt_xml.network_xml(config)) == "127.0.0.1#5353"
    # a libvirt that drops dnsmasq options (test:///) says nothing: the network is left as it is
    assert libvirt_xml.dns_forwarder("<network><name>x</name></network>") is None


def test_disk_path_is_none_when_the_disk_is_gone(hv, tmp_path):
    assert hv.disk_path("test") is None  # test:///default's disk file does not exist
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"")
    xml = hv.domain_xml("test").replace("/guest/diskimage1", str(disk)).replace("<name>test</name>", "<name>mine</name>")
    xml = xml.replace("<uuid>6695eb01-f6a4-8304-79aa-97f2502e193f</uuid>", "")
    hv.conn.defineXML(xml)
    assert hv.disk_path("mine") == str(disk)


def test_addresses_avoid_lingering_leases_and_macs_are_stable():
    from swarmlab.core import addresses
    config = configuration.Config()
    mac = addresses.stable_mac(set(), "swarmlab", "demo", "swr1")
    assert mac == addresses.stable_mac(set(), "swarmlab", "demo", "swr1")
    assert mac != addresses.stable_mac({mac}, "swarmlab", "demo", "swr1")
    assert mac != addresses.stable_mac(set(), "swarmlab", "other", "swr1")
    # .10 is still leased to a MAC whose VM is gone: dnsmasq would not give it to anyone else.
    ips = addresses.assign_addresses(config, [("swr1", "52:54:00:00:00:01"), ("swr2", "52:54:00:00:00:02")],
                                reserved={"52:54:00:00:00:09": "10.77.0.11"},
                                leases={"52:54:00:aa:aa:aa": "10.77.0.10"})
    assert ips == ["10.77.0.12", "10.77.0.13"]
    # A node recreated with its old MAC gets its old address back.
    again = addresses.assign_addresses(config, [("swr1", "52:54:00:00:00:01")], reserved={},
                                  leases={"52:54:00:00:00:01": "10.77.0.42", "52:54:00:aa:aa:aa": "10.77.0.10"})
    assert again == ["10.77.0.42"]


# --- an instructor's own template: several disks, UEFI, an agent socket, a fixed VNC port -----
OWN_TEMPLATE = """<domain type="qemu">
  <name>debian10template</name>
  <memory unit="MiB">1024</memory>
  <os>
    <type arch="x86_64" machine="q35">hvm</type>
    <loader readonly="yes" type="pflash">/usr/share/OVMF/OVMF_CODE.fd</loader>
    <nvram>/var/lib/libvirt/qemu/nvram/debian10template_VARS.fd</nvram>
    <boot dev="hd"/>
  </os>
  <devices>
    <disk type="file" device="disk">
      <driver name="qemu" type="raw"/>
      <source file="/var/lib/libvirt/images/debian10template.img"/>
      <target dev="vda" bus="virtio"/>
    </disk>
    <disk type="file" device="disk">
      <driver name="qemu" type="qcow2"/>
      <source file="/var/lib/libvirt/images/debian10template-data.qcow2"/>
      <target dev="vdb" bus="virtio"/>
    </disk>
    <disk type="file" device="cdrom">
      <source file="/var/lib/libvirt/images/debian-10.iso"/>
      <target dev="sda" bus="sata"/>
      <readonly/>
    </disk>
    <interface type="network">
      <mac address="52:54:00:11:22:33"/>
      <source network="default"/>
      <target dev="vnet7"/>
      <model type="virtio"/>
    </interface>
    <channel type="unix">
      <source mode="bind" path="/var/lib/libvirt/qemu/channel/target/debian10template.org.qemu.guest_agent.0"/>
      <target type="virtio" name="org.qemu.guest_agent.0"/>
    </channel>
    <graphics type="vnc" port="5901" autoport="no" listen="127.0.0.1"/>
  </devices>
</domain>"""


def test_every_writable_disk_of_a_template_gets_its_own_overlay():
    from swarmlab.adapters.libvirt_xml import clone_disks
    plan = {d.target: d.action for d in clone_disks(OWN_TEMPLATE)}
    assert plan == {"vda": "overlay", "vdb": "overlay", "sda": "share"}
    xml = derive_clone_xml(OWN_TEMPLATE, "lab1-swr1", "52:54:00:aa:bb:03", "nodes",
                           {"vda": "lab1-swr1.qcow2", "vdb": "lab1-swr1-vdb.qcow2"}, {"role": "node"}, hostname="swr1")
    root = ET.fromstring(xml)
    sources = {d.find("target").get("dev"): d.find("source").attrib for d in root.findall("devices/disk")}
    assert sources["vda"] == {"pool": "nodes", "volume": "lab1-swr1.qcow2"}
    assert sources["vdb"] == {"pool": "nodes", "volume": "lab1-swr1-vdb.qcow2"}
    assert sources["sda"] == {"file": "/var/lib/libvirt/images/debian-10.iso"}  # read-only media are shared
    # the overlays are qcow2, whatever the template's disks were (raw here)
    assert {d.find("target").get("dev"): d.find("driver").get("type") for d in root.findall("devices/disk")
            if d.get("device") == "disk"} == {"vda": "qcow2", "vdb": "qcow2"}
    with pytest.raises(TemplateError, match="template disk vdb is writable and has no overlay"):
        derive_clone_xml(OWN_TEMPLATE, "x", "52:54:00:aa:bb:04", "nodes", {"vda": "x.qcow2"}, {"role": "node"})


def test_a_clone_gets_its_own_nvram_agent_socket_graphics_port_and_tap():
    root = ET.fromstring(derive_clone_xml(OWN_TEMPLATE, "lab1-swr1", "52:54:00:aa:bb:03", "nodes",
                                          {"vda": "a", "vdb": "b"}, {"role": "node"}, hostname="swr1"))
    nvram = root.find("os/nvram")
    assert not (nvram.text or "").strip()  # libvirt makes lab1-swr1_VARS.fd ...
    assert nvram.get("template") == "/var/lib/libvirt/qemu/nvram/debian10template_VARS.fd"  # ... from the template's
    assert root.find("devices/channel/source").get("path") is None
    graphics = root.find("devices/graphics")
    assert graphics.get("port") is None and graphics.get("autoport") == "yes"
    assert root.find("devices/interface/target") is None
    # no direct kernel: nothing to put the hostname on, `up` sets it over SSH
    assert root.find("os/cmdline") is None


def test_a_template_that_boots_its_own_disk_gets_the_hostname_over_ssh():
    from swarmlab.adapters.libvirt_xml import sets_hostname_at_boot
    assert not sets_hostname_at_boot(OWN_TEMPLATE)
    assert sets_hostname_at_boot(template_xml())


def test_a_network_disk_is_refused_with_the_reason():
    from swarmlab.adapters.libvirt_xml import clone_disks
    xml = OWN_TEMPLATE.replace('<disk type="file" device="disk">\n      <driver name="qemu" type="qcow2"/>\n'
                               '      <source file="/var/lib/libvirt/images/debian10template-data.qcow2"/>',
                               '<disk type="network" device="disk">\n      <driver name="qemu" type="raw"/>\n'
                               '      <source protocol="rbd" name="pool/data"/>')
    with pytest.raises(TemplateError, match="template disk vdb is a network disk: swarmlab can give clones"):
        clone_disks(xml)


def test_an_overlay_declares_the_backing_files_real_format(hv, tmp_path):
    """A raw template's overlay must say raw: qcow2 on a raw file breaks the clone."""
    import subprocess

    from swarmlab.adapters.libvirt_storage import image_info
    from swarmlab.adapters.libvirt_xml import overlay_volume_xml
    raw = tmp_path / "template.img"
    subprocess.run(["qemu-img", "create", "-f", "raw", str(raw), "64M"], check=True, capture_output=True)
    assert image_info(str(raw)) == ("raw", 64 << 20)
    volume = ET.fromstring(overlay_volume_xml("n.qcow2", str(raw), "raw", 64 << 20))
    assert volume.find("backingStore/format").get("type") == "raw"
    assert volume.find("target/format").get("type") == "qcow2"
    pool_dir = tmp_path / "pool"
    hv.ensure_pool("unit-nodes", pool_dir)
    path = hv.create_overlay("unit-nodes", "n.qcow2", str(raw))
    vol_xml = ET.fromstring(hv.pool("unit-nodes").storageVolLookupByName("n.qcow2").XMLDesc())
    assert path.endswith("n.qcow2") and vol_xml.find("backingStore/format").get("type") == "raw"


def test_generated_xml_escapes_what_it_carries_and_pdns_conf_is_not_html():
    from pathlib import Path

    from swarmlab.adapters.libvirt_xml import dhcp_host_xml, dir_pool_xml
    pool = ET.fromstring(dir_pool_xml("p", Path("/srv/a&b <lab>")))
    assert pool.findtext("target/path") == "/srv/a&b <lab>"
    host = ET.fromstring(dhcp_host_xml("52:54:00:aa:bb:cc", "10.77.0.10", "lab'1-swr1"))
    assert host.attrib == {"mac": "52:54:00:aa:bb:cc", "name": "lab'1-swr1", "ip": "10.77.0.10"}
    from swarmlab.adapters.daemons import PdnsServer
    conf = PdnsServer(Path("/var/lib/a&b"), 8081, 5300, "lab.swarmlab.test.", ("10.200.0.1",)).settings("k&<y>")
    assert "api-key=k&<y>\n" in conf and "gsqlite3-database=/var/lib/a&b/pdns.sqlite3\n" in conf
    # DNS also on the services address, for lab hosts on other machines; the API on loopback only
    assert "local-address=127.0.0.1, 10.200.0.1\n" in conf and "webserver-address=127.0.0.1\n" in conf


def test_a_host_that_goes_away_is_an_error_never_a_missing_domain():
    hv = Hypervisor("test:///default")
    assert hv.domain_state("no-such-domain") is None  # missing is an answer
    hv.conn.close()  # as when the host's libvirtd stops under an open connection
    with pytest.raises(HypervisorError):
        hv.domain_state("test")
    with pytest.raises(HypervisorError):
        hv.network_state("default")


def test_a_pools_free_space_is_what_libvirt_on_its_host_reports():
    with Hypervisor("test:///default") as hv:
        directory, free = hv.pool_space("default-pool")
    assert directory == "/default-pool" and free > 0  # the test driver's pool, not this machine's disk


def test_a_pool_busy_building_another_labs_volume_is_waited_for_not_an_error():
    import libvirt

    from swarmlab.adapters.libvirt_storage import refresh

    class BusyPool:  # libvirt refuses a refresh while another volume of the pool is being built
        def __init__(self, busy: int):
            self.busy, self.refreshed = busy, 0

        def refresh(self):
            if self.busy:
                self.busy -= 1
                raise libvirt.libvirtError("internal error: pool 'swl-nodes' has asynchronous jobs running.")
            self.refreshed += 1

    pool = BusyPool(busy=2)
    refresh(pool)
    assert pool.refreshed == 1 and pool.busy == 0
    with pytest.raises(libvirt.libvirtError, match="asynchronous"):
        refresh(BusyPool(busy=10**6), wait=0.5)  # a job that never ends is still reported


def test_a_slow_guest_agent_is_not_taken_for_a_guest_clock_that_is_off():
    from swarmlab.adapters.guest_agent import clock_offset
    assert clock_offset(1005.0, before=1000.0, after=1010.0) == 0.0  # the agent took 10 s: the clock may be right
    assert clock_offset(998.5, before=1000.0, after=1000.2) == -1.5  # behind even the earliest moment
    assert clock_offset(1002.0, before=1000.0, after=1000.2) == pytest.approx(1.8)


def test_a_kvm_template_copied_to_a_host_without_kvm_is_defined_as_a_qemu_domain_there():
    from swarmlab.host.template_build import without_kvm

    def domain(domain_type: str) -> DomainXML:
        return DomainXML(render("domain.xml.j2", domain_type=domain_type, name="swarmlab-template",
                                ns_uri=NS_URI, role="template", attrs={"recipe": "abc", "domain_type": domain_type},
                                memory_mib=1024, vcpus=1, kernel="/k", initrd="/i", cmdline="root=/dev/vda",
                                pool="p", volume="v.qcow2", network="n"))
    kvm = domain("kvm")
    assert not without_kvm(kvm, host_offers_kvm=True) and kvm.domain_type == "kvm"
    assert without_kvm(kvm, host_offers_kvm=False)
    written = ET.fromstring(str(kvm))
    assert written.get("type") == "qemu" and written.find("cpu") is None
    assert written.find(f"metadata/{{{NS_URI}}}resource").attrib == {"role": "template", "recipe": "abc", "domain_type": "qemu"}
    qemu = domain("qemu")
    assert not without_kvm(qemu, host_offers_kvm=True) and qemu.domain_type == "qemu"  # runs anywhere as it is
    with Hypervisor("test:///default") as hv:
        assert hv.offers_kvm() is False  # the test driver offers its own type only


def test_a_pool_left_pointing_at_a_directory_that_is_gone_is_pointed_again(hv, tmp_path):
    """A killed run's pool (its state dir wiped) must not block the next `host up`; a pool whose
    old directory still exists may hold volumes, and is refused."""
    old, new = tmp_path / "old", tmp_path / "new"
    hv.ensure_pool("unit-nodes", old)
    old.rmdir()
    changes = hv.ensure_pool("unit-nodes", new)
    assert changes[0] == f"forgot storage pool unit-nodes: its directory {old} is gone"
    assert ET.fromstring(hv.pool("unit-nodes").XMLDesc()).findtext("target/path") == str(new)
    other = tmp_path / "other"
    with pytest.raises(Refused, match=f"storage pool unit-nodes points at {new}, not {other}"):
        hv.ensure_pool("unit-nodes", other)


def test_the_image_cache_is_taken_over_from_another_configs_template_pool(hv, tmp_path):
    """Every config shares one image cache, and libvirt lets one pool hold a directory: the
    README's lab and the test suite's take turns on it. Other pools on a directory are refused."""
    cache = tmp_path / "images"
    hv.ensure_pool("unit-other-templates", cache)
    changes = hv.ensure_pool("unit-templates", cache, image_cache=True)
    assert changes[:2] == [f"took the image cache {cache} over from storage pool unit-other-templates",
                           "undefined storage pool unit-other-templates (files kept)"]
    assert ET.fromstring(hv.pool("unit-templates").XMLDesc()).findtext("target/path") == str(cache)
    nodes = tmp_path / "volumes"
    hv.ensure_pool("unit-other-nodes", nodes)
    with pytest.raises(HypervisorError, match="another libvirt pool may use that directory"):
        hv.ensure_pool("unit-nodes", nodes)
