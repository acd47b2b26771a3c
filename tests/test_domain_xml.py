"""DomainXML: a domain's XML read and changed through one object, written back intact."""

import pytest

from swarmlab.adapters.domain_xml import NS_URI, DomainXML, TemplateError

DISK_BOOT = (f"<domain type='kvm'><name>web</name><uuid>0e1f2a3b-0000-4000-8000-000000000001</uuid>"
             f"<metadata><swarmlab:resource xmlns:swarmlab='{NS_URI}' role='node' lab='a'/></metadata>"
             "<os><type>hvm</type></os><devices><disk type='file'><source file='/d.qcow2'/><target dev='vda'/>"
             "</disk><interface type='network'><mac address='52:54:00:AA:BB:CC'/><source network='n'/>"
             "</interface></devices></domain>")


def test_reads_what_swarmlab_asks_of_a_domain():
    domain = DomainXML(DISK_BOOT)
    assert (domain.name, domain.uuid, domain.domain_type) == ("web", "0e1f2a3b-0000-4000-8000-000000000001", "kvm")
    assert domain.owner == {"role": "node", "lab": "a"}
    assert domain.first_disk_source == {"file": "/d.qcow2"} and [DomainXML.target(d) for d in domain.disks] == ["vda"]
    assert domain.mac == "52:54:00:aa:bb:cc" and not domain.has_nvram and not domain.boots_given_kernel


def test_changes_are_written_back_and_the_owner_is_replaced_not_added():
    domain = DomainXML(DISK_BOOT)
    domain.owner = {"role": "template"}
    domain.uuid = None
    domain.give_interface("52:54:00:00:00:01", network="lab")
    again = DomainXML(str(domain))
    assert again.owner == {"role": "template"} and len(again.root.findall(f"metadata/{{{NS_URI}}}resource")) == 1
    assert again.uuid is None and again.mac == "52:54:00:00:00:01"
    assert again.interfaces[0].find("source").get("network") == "lab"


def test_a_disk_booted_domains_kernel_command_line_is_not_libvirts():
    with pytest.raises(TemplateError, match="boots from its own disk"):
        DomainXML(DISK_BOOT).kernel_args = ["quiet"]
