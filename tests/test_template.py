"""The template recipe: what its cache key covers, and cleanup after a killed build."""

import os
import subprocess

import pytest

from swarmlab import template
from swarmlab.template import Recipe


def test_key_follows_content_not_name():
    a = Recipe("debian12", "ssh-ed25519 AAAA key-a")
    assert a.key() == Recipe("other-name", "ssh-ed25519 AAAA key-a").key()
    assert a.key() != Recipe("debian12", "ssh-ed25519 AAAA key-b").key()
    assert a.key() != Recipe("debian12", "ssh-ed25519 AAAA key-a", with_engine=False).key()
    # The debootstrap stage is shared by every recipe with the same packages.
    assert a.base_key() == Recipe("x", "ssh-ed25519 AAAA key-b").base_key()
    assert a.base_key() != Recipe("x", "k", extra_packages=("curl",)).base_key()


def test_guest_files_carry_identity_hygiene_and_dhcp_by_mac():
    files = template.guest_files(Recipe("debian12", "ssh-ed25519 AAAA key-a"))
    assert "ClientIdentifier=mac" in files["/etc/systemd/network/10-lab.network"]
    assert "ssh-keygen -q -t ed25519" in files["/etc/systemd/system/ssh.service.d/swarmlab-hostkeys.conf"]
    assert files["/root/.ssh/authorized_keys"] == "ssh-ed25519 AAAA key-a\n"
    assert "swarmlab-images.service" in "".join(files)
    assert "/etc/systemd/system/swarmlab-images.service" not in template.guest_files(
        Recipe("debian12", "k", with_engine=False))


def test_killed_build_is_cleaned_without_reaching_into_its_mounts(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("a bind mount needs root; CI runs as root")
    precious = tmp_path / "host-dir"
    precious.mkdir()
    (precious / "keep-me").write_text("host data")
    stale = tmp_path / ".build-999999-x"  # no such pid
    (stale / "rootfs" / "dev").mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(precious), str(stale / "rootfs" / "dev")], check=True)
    live = tmp_path / f".build-{os.getpid()}-y"
    live.mkdir()
    template._remove_stale_builds(tmp_path)
    assert not stale.exists()
    assert (precious / "keep-me").read_text() == "host data"
    assert live.exists()  # a build that is still running is left alone
