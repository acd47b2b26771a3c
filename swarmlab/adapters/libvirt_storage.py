"""Storage pools and volumes through libvirt: swarmlab's own directory pools, qcow2 overlays
on a template (linked clones), uploads to a host on another machine. Mixed into Hypervisor."""

from __future__ import annotations

import json
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt

from swarmlab.adapters.libvirt_errors import HypervisorError, libvirt_errors_as_ours, only_missing
from swarmlab.adapters.libvirt_xml import dir_pool_xml, overlay_volume_xml
from swarmlab.errors import NotFound, Refused


def image_info(path: str) -> tuple[str, int]:
    """(format, virtual size in bytes) of a disk image, read by qemu-img (-U: it may be in use)."""
    proc = subprocess.run(["qemu-img", "info", "--output=json", "-U", path], capture_output=True, text=True)
    if proc.returncode != 0:
        raise HypervisorError(f"cannot read disk image {path}: {proc.stderr.strip().splitlines()[-1:] or '?'}")
    info = json.loads(proc.stdout)
    return info["format"], int(info["virtual-size"])


def refresh(pool, wait: float = 60) -> None:
    """pool.refresh(), which libvirt refuses while a volume of the pool is being built (another
    lab's clone made at the same moment): waits for that to end instead of failing."""
    deadline = time.monotonic() + wait
    while True:
        try:
            pool.refresh()
            return
        except libvirt.libvirtError as e:
            if "asynchronous jobs running" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@libvirt_errors_as_ours
class StorageMixin:
    """Needs `conn` and `remote` of the Hypervisor it is mixed into."""

    def ensure_pool(self, name: str, path: Path, image_cache: bool = False) -> list[str]:
        """A directory pool swarmlab owns (pools carry no metadata; the name and path say it).
        image_cache: the directory is the template cache that every config on this machine may
        share; another config's template pool on it is forgotten (its files stay) for ours."""
        changes = []
        try:
            pool = self.conn.storagePoolLookupByName(name)
        except libvirt.libvirtError as e:
            only_missing(e)
            if not self.remote:
                path.mkdir(parents=True, exist_ok=True)
            other = self._template_pool_at(path) if image_cache else None
            if other:
                changes += [f"took the image cache {path} over from storage pool {other}"] + self.remove_pool(other)
            try:
                pool = self.conn.storagePoolDefineXML(dir_pool_xml(name, path))
                if self.remote:
                    pool.build(0)  # libvirtd makes the directory on its own machine
            except libvirt.libvirtError as e:
                raise HypervisorError(f"defining storage pool {name} at {path} failed: {e.get_error_message()}; "
                                      "another libvirt pool may use that directory (`virsh pool-list --all`)") from None
            changes.append(f"defined storage pool {name} at {path}")
        target = ET.fromstring(pool.XMLDesc()).findtext("target/path")
        if Path(target) != path and not self.remote and not Path(target).exists():
            # left by a run whose directory is gone (a killed test, a wiped state dir): it holds nothing
            self.remove_pool(name)
            changes.append(f"forgot storage pool {name}: its directory {target} is gone")
            return changes + self.ensure_pool(name, path)
        if Path(target) != path:
            raise Refused(f"storage pool {name} points at {target}, not {path}: "
                          f"remove it (`virsh pool-undefine {name}`) or change [host] cache_dir or state_dir")
        if not pool.isActive():
            pool.create()
            changes.append(f"started storage pool {name}")
        if not pool.autostart():
            pool.setAutostart(True)
        refresh(pool)
        return changes

    def _template_pool_at(self, path: Path) -> str | None:
        """Another config's template pool on this directory (libvirt lets one pool hold a directory)."""
        for pool in self.conn.listAllStoragePools():
            target = ET.fromstring(pool.XMLDesc()).findtext("target/path")
            if target and Path(target) == path and pool.name().endswith("-templates"):
                return pool.name()
        return None

    def remove_pool(self, name: str) -> list[str]:
        """Forgets the pool; its files (cached images, volumes) stay on disk."""
        try:
            pool = self.conn.storagePoolLookupByName(name)
        except libvirt.libvirtError as e:
            only_missing(e)
            return []
        if pool.isActive():
            pool.destroy()
        pool.undefine()
        return [f"undefined storage pool {name} (files kept)"]

    def pool(self, name: str):
        try:
            pool = self.conn.storagePoolLookupByName(name)
        except libvirt.libvirtError as e:
            only_missing(e)
            raise NotFound(f"storage pool {name} not found: run `swarmlab template build`") from None
        if not pool.isActive():
            pool.create()
        return pool

    def refresh_pool(self, name: str) -> None:
        """libvirt looks at the pool's directory again (files put there by hand)."""
        refresh(self.pool(name))

    def pool_space(self, name: str) -> tuple[str, int]:
        """(directory, free bytes) of a pool, as libvirt on its host reports them."""
        pool = self.pool(name)
        refresh(pool)
        return ET.fromstring(pool.XMLDesc()).findtext("target/path"), int(pool.info()[3])

    def pool_held_bytes(self, name: str) -> int:
        """What the pool's volumes take on disk now, together."""
        return sum(vol.info()[2] for vol in self.pool(name).listAllVolumes())

    def volume_path(self, pool: str, volume: str) -> str:
        try:
            return self.pool(pool).storageVolLookupByName(volume).path()
        except libvirt.libvirtError as e:
            only_missing(e)
            raise NotFound(f"volume {volume} not found in pool {pool}") from None

    def backing_info(self, path: str) -> tuple[str, int]:
        """(format, virtual size) of an image: from libvirt when it is a volume (also on a host
        on another machine), else read by qemu-img here."""
        try:
            vol = self.conn.storageVolLookupByPath(path)
        except libvirt.libvirtError as e:
            only_missing(e)
            return image_info(path)
        fmt = ET.fromstring(vol.XMLDesc(0)).find("target/format")
        return (fmt.get("type") if fmt is not None else "raw"), int(vol.info()[1])

    def upload_volume(self, pool: str, name: str, path: Path) -> str:
        """Copies a local file into a new volume through libvirt's upload stream: the way in to
        a host on another machine. A volume of that name is replaced (an interrupted upload
        leaves one behind). Returns the volume's path on its host."""
        p = self.pool(pool)
        self.delete_volume(pool, name)
        size = path.stat().st_size
        volume = ET.Element("volume")
        ET.SubElement(volume, "name").text = name
        ET.SubElement(volume, "capacity", {"unit": "bytes"}).text = str(size)
        ET.SubElement(ET.SubElement(volume, "target"), "format", {"type": "raw"})
        vol = p.createXML(ET.tostring(volume, encoding="unicode"), 0)
        stream = self.conn.newStream(0)
        try:
            vol.upload(stream, 0, size, 0)
            with open(path, "rb") as f:
                stream.sendAll(lambda _s, n, source: source.read(n), f)
            stream.finish()
        except BaseException:
            try:
                stream.abort()
            except libvirt.libvirtError:
                pass
            raise
        refresh(p)  # libvirt probes the uploaded file's real format (qcow2)
        return p.storageVolLookupByName(name).path()

    def create_overlay(self, pool: str, name: str, backing_path: str) -> str:
        """A qcow2 volume backed by backing_path (a linked clone), whatever the backing file's
        format (qcow2, raw, ...). Returns its path."""
        p = self.pool(pool)
        backing_format, capacity = self.backing_info(backing_path)
        try:
            return p.createXML(overlay_volume_xml(name, backing_path, backing_format, capacity), 0).path()
        except libvirt.libvirtError as e:
            raise HypervisorError(f"creating volume {name} in pool {pool} failed: {e.get_error_message()}") from None

    def delete_volume(self, pool: str, name: str) -> bool:
        try:
            vol = self.pool(pool).storageVolLookupByName(name)
        except NotFound:
            return False
        except libvirt.libvirtError as e:
            only_missing(e)
            return False
        vol.delete(0)
        return True

    def volume_bytes(self, pool: str, volume: str) -> int:
        """Space a volume takes on disk."""
        try:
            return self.pool(pool).storageVolLookupByName(volume).info()[2]
        except libvirt.libvirtError as e:
            only_missing(e)
            return 0
