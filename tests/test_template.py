"""The template recipe: what its cache key covers, and cleanup after a killed build."""

import os
import subprocess

import pytest

from swarmlab.host import template
from swarmlab.host.template import Recipe


def test_key_follows_content_not_name():
    a = Recipe("debian12", "ssh-ed25519 AAAA key-a")
    assert a.key() == Recipe("other-name", "ssh-ed25519 AAAA key-a").key()
    assert a.key() != Recipe("debian12", "ssh-ed25519 AAAA key-b").key()
    assert a.key() != Recipe("debian12", "ssh-ed25519 AAAA key-a", with_engine=False).key()
    # The bootstrap stage is shared by every recipe with the same packages.
    assert a.base_key() == Recipe("x", "ssh-ed25519 AAAA key-b").base_key()
    assert a.base_key() != Recipe("x", "k", extra_packages=("curl",)).base_key()


def test_guest_files_carry_identity_hygiene_and_dhcp_by_mac():
    files = template.guest_files(Recipe("debian12", "ssh-ed25519 AAAA key-a"))
    assert "ClientIdentifier=mac" in files["/etc/systemd/network/10-lab.network"]
    # the hostname is swarmlab's, not dnsmasq's; no multicast name probing between nodes
    assert "UseHostname=no" in files["/etc/systemd/network/10-lab.network"]
    assert "LLMNR=no" in files["/etc/systemd/resolved.conf.d/swarmlab.conf"]
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


def test_the_resolver_leaves_the_boot_path_and_keeps_the_rest_of_its_unit(tmp_path):
    """sshd waits for network.target, which systemd-resolved orders itself before: the copy in
    /etc drops that ordering (and sysinit's), and nothing else."""
    upstream = ("[Unit]\nDefaultDependencies=no\nAfter=systemd-sysctl.service\n"
                "Before=sysinit.target network.target nss-lookup.target shutdown.target\n\n"
                "[Service]\nExecStart=!!/lib/systemd/systemd-resolved\nType=notify\n\n"
                "[Install]\nWantedBy=sysinit.target\nAlias=dbus-org.freedesktop.resolve1.service\n")
    (tmp_path / "lib/systemd/system").mkdir(parents=True)
    (tmp_path / "lib/systemd/system/systemd-resolved.service").write_text(upstream)
    wants = tmp_path / "etc/systemd/system/sysinit.target.wants"
    wants.mkdir(parents=True)
    (wants / "systemd-resolved.service").symlink_to("/lib/systemd/system/systemd-resolved.service")
    template._resolver_off_the_boot_path(tmp_path)
    copy = (tmp_path / "etc/systemd/system/systemd-resolved.service").read_text()
    assert "Before=nss-lookup.target shutdown.target\n" in copy
    assert "WantedBy=multi-user.target\n" in copy and "sysinit" not in copy
    assert copy.replace("Before=nss-lookup.target", "Before=sysinit.target network.target nss-lookup.target") \
        .replace("multi-user", "sysinit") == upstream
    assert not (wants / "systemd-resolved.service").is_symlink()
    assert "After=ssh.service systemd-resolved.service" in \
        template.guest_files(Recipe(name="t", ssh_public_key="k"))["/etc/systemd/system/docker.service.d/swarmlab-after-ssh.conf"]


def test_each_suite_gets_the_docker_cli_and_bookworms_package_list_is_unchanged():
    bookworm = Recipe(name="t", ssh_public_key="k", suite="bookworm")
    trixie = Recipe(name="t", ssh_public_key="k", suite="trixie")
    assert "docker-cli" in trixie.packages and "docker-cli" not in bookworm.packages  # bookworm's docker.io has it
    assert bookworm.base_key() != trixie.base_key() and bookworm.key() != trixie.key()
    assert set(template.ENGINE_PACKAGES) == set(template.SUITES) == set(template.SUITE_PACKAGES)
    assert "util-linux-extra" in trixie.packages  # hwclock, which the guest agent's clock sync runs


def test_the_bake_boot_runs_only_where_no_wake_up_boot_loads_the_images():
    engine, bare = Recipe("t", "k"), Recipe("t", "k", with_engine=False)
    assert not template.bake_boot_needed(engine, wake_follows=True, accel="tcg")  # one boot less under TCG
    assert template.bake_boot_needed(engine, wake_follows=False, accel="tcg")  # --no-wake: clones boot
    assert template.bake_boot_needed(engine, wake_follows=True, accel="kvm")
    assert not template.bake_boot_needed(bare, wake_follows=False, accel="kvm")
    # The bake unit runs on the bake boot's command line only: a clone or the wake-up boot of an
    # unbaked disk loads the images by swarmlab-images and never powers itself off.
    unit = template.guest_files(engine)["/etc/systemd/system/swarmlab-bake.service"]
    assert f"ConditionKernelCommandLine={template.BAKE_ARG}" in unit
