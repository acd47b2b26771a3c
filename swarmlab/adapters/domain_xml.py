"""One libvirt domain's XML as an object: every path swarmlab reads or changes in a domain is
named here, once (virtinst's XMLBuilder is the model). Pure: parsed from and written back to a
string, tested without libvirt."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from swarmlab.errors import SwarmlabError

NS_URI = "https://swarmlab.dev/xmlns/resource/1"
NS_PREFIX = "swarmlab"
ET.register_namespace(NS_PREFIX, NS_URI)
OWNER = f"metadata/{{{NS_URI}}}resource"


class TemplateError(SwarmlabError):
    """A template whose XML swarmlab cannot clone as it is."""


def owner_of(root: ET.Element) -> dict[str, str] | None:
    """swarmlab's metadata attributes of a domain or network element, or None if not ours."""
    element = root.find(OWNER)
    return dict(element.attrib) if element is not None else None


class DomainXML:
    def __init__(self, xml: str):
        self.root = ET.fromstring(xml)

    def __str__(self) -> str:
        return ET.tostring(self.root, encoding="unicode")

    def _child(self, parent: ET.Element, tag: str) -> ET.Element:
        found = parent.find(tag)
        return found if found is not None else ET.SubElement(parent, tag)

    def _drop(self, parent: ET.Element, *tags: str) -> None:
        for tag in tags:
            for element in parent.findall(tag):
                parent.remove(element)

    # --- identity and ownership ----------------------------------------------------------
    @property
    def name(self) -> str:
        return self.root.findtext("name")

    @name.setter
    def name(self, value: str) -> None:
        self.root.find("name").text = value

    @property
    def uuid(self) -> str | None:
        return self.root.findtext("uuid")

    @uuid.setter
    def uuid(self, value: str | None) -> None:
        self._drop(self.root, "uuid")
        if value:
            ET.SubElement(self.root, "uuid").text = value

    def forget_identity(self) -> None:
        """No UUID, title or description: libvirt gives a copy its own."""
        self._drop(self.root, "uuid", "title", "description")

    @property
    def domain_type(self) -> str:
        return self.root.get("type")

    @domain_type.setter
    def domain_type(self, value: str) -> None:
        self.root.set("type", value)

    @property
    def owner(self) -> dict[str, str] | None:
        return owner_of(self.root)

    @owner.setter
    def owner(self, attrs: dict[str, str]) -> None:
        metadata = self._child(self.root, "metadata")
        self._drop(metadata, f"{{{NS_URI}}}resource")
        ET.SubElement(metadata, f"{{{NS_URI}}}resource", {k: str(v) for k, v in attrs.items()})

    # --- devices ------------------------------------------------------------------------
    @property
    def devices(self) -> ET.Element | None:
        return self.root.find("devices")

    @property
    def disks(self) -> list[ET.Element]:
        return self.root.findall("devices/disk")

    @property
    def first_disk_source(self) -> dict[str, str] | None:
        source = self.root.find("devices/disk/source")
        return None if source is None else dict(source.attrib)

    @staticmethod
    def target(disk: ET.Element) -> str:
        """A disk's device name in the guest: vda, vdb, ..."""
        target = disk.find("target")
        return target.get("dev") if target is not None else "?"

    def put_on_volume(self, disk: ET.Element, pool: str, volume: str) -> None:
        """The disk as a qcow2 volume of a pool, with no backing chain of its own to carry over."""
        disk.set("type", "volume")
        self._drop(disk, "source", "backingStore")
        disk.insert(1, ET.Element("source", {"pool": pool, "volume": volume}))
        driver = disk.find("driver")
        if driver is None:
            driver = ET.SubElement(disk, "driver", {"name": "qemu"})
        driver.set("type", "qcow2")

    @property
    def interfaces(self) -> list[ET.Element]:
        return self.root.findall("devices/interface")

    def the_interface(self) -> ET.Element:
        interfaces = self.interfaces
        if len(interfaces) != 1:
            raise TemplateError(f"domain has {len(interfaces)} network interfaces; swarmlab needs exactly one")
        return interfaces[0]

    def give_interface(self, mac: str, network: str | None = None) -> None:
        """The one interface with this MAC and no tap name of its own (libvirt names one), on
        `network` when given."""
        interface = self.the_interface()
        self._drop(interface, "mac", "target")
        ET.SubElement(interface, "mac", {"address": mac})
        if network:
            interface.set("type", "network")
            self._drop(interface, "source")
            interface.insert(0, ET.Element("source", {"network": network}))

    def take_interface(self) -> ET.Element:
        """Removes the one interface and returns it."""
        interface = self.the_interface()
        self.devices.remove(interface)
        return interface

    @property
    def mac(self) -> str | None:
        mac = self.root.find("devices/interface/mac")
        return None if mac is None else mac.get("address").lower()

    def forget_mac(self) -> None:
        for interface in self.interfaces:
            self._drop(interface, "mac")

    @property
    def has_nvram(self) -> bool:
        return self.root.find("os/nvram") is not None

    def own_nvram(self) -> None:
        """No NVRAM path: libvirt creates <name>_VARS.fd for a copy from the template file (the
        original's own variables when it names no other), instead of sharing one."""
        nvram = self.root.find("os/nvram")
        if nvram is not None:
            if nvram.text and not nvram.get("template"):
                nvram.set("template", nvram.text.strip())
            nvram.text = None

    def forget_fixed_endpoints(self) -> None:
        """No agent socket path (libvirt makes one per domain) and no fixed graphics ports."""
        for channel in self.root.findall("devices/channel"):
            for source in channel.findall("source"):
                source.attrib.pop("path", None)
        for graphics in self.root.findall("devices/graphics"):
            for attr in ("port", "tlsPort", "websocket"):
                graphics.attrib.pop(attr, None)
            graphics.set("autoport", "yes")

    def set_tcg_cache(self, mib: int) -> None:
        """QEMU's TCG translation cache size (its default is 1 GiB of host memory per guest)."""
        features = self._child(self.root, "features")
        self._drop(features, "tcg")
        ET.SubElement(ET.SubElement(features, "tcg"), "tb-cache", {"unit": "MiB"}).text = str(mib)

    def drop_host_passthrough_cpu(self) -> None:
        cpu = self.root.find("cpu")
        if cpu is not None and cpu.get("mode") == "host-passthrough":
            self.root.remove(cpu)

    # --- direct kernel boot -------------------------------------------------------------
    @property
    def boots_given_kernel(self) -> bool:
        """libvirt hands the guest its kernel (and command line), rather than the disk's."""
        return self.root.find("os/kernel") is not None

    @property
    def kernel(self) -> str | None:
        return self.root.findtext("os/kernel")

    @kernel.setter
    def kernel(self, path: str) -> None:
        self.root.find("os/kernel").text = path

    @property
    def initrd(self) -> str | None:
        return self.root.findtext("os/initrd")

    @initrd.setter
    def initrd(self, path: str) -> None:
        self.root.find("os/initrd").text = path

    @property
    def kernel_args(self) -> list[str]:
        return (self.root.findtext("os/cmdline") or "").split()

    @kernel_args.setter
    def kernel_args(self, words: list[str]) -> None:
        if not self.boots_given_kernel:
            raise TemplateError("the domain boots from its own disk: its kernel command line is not libvirt's to change")
        self._child(self.root.find("os"), "cmdline").text = " ".join(words)
