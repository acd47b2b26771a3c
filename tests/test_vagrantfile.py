"""The Vagrantfile gives a Debian 12 lab host VM, provisioned by the README's installer."""

import re
import shutil
import subprocess

import pytest

from tests.conftest import ROOT


def validate(directory) -> subprocess.CompletedProcess:
    if not shutil.which("vagrant"):
        pytest.fail("vagrant is not installed: run scripts/install-host --dev")
    return subprocess.run(["vagrant", "validate"], cwd=directory, capture_output=True, text=True, timeout=180,
                          env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(directory),
                               "VAGRANT_DEFAULT_PROVIDER": "libvirt"})


def test_vagrantfile_validates(tmp_path):
    shutil.copy(ROOT / "Vagrantfile", tmp_path / "Vagrantfile")
    proc = validate(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "validated successfully" in proc.stdout


def test_a_broken_vagrantfile_is_caught(tmp_path):
    text = (ROOT / "Vagrantfile").read_text().replace("lv.nested = true", "lv.nested_typo = true")
    (tmp_path / "Vagrantfile").write_text(text)
    proc = validate(tmp_path)
    assert proc.returncode != 0 and "nested_typo" in proc.stdout + proc.stderr


def test_vagrant_box_is_debian12_with_nested_kvm_and_the_readme_installer():
    text = (ROOT / "Vagrantfile").read_text()
    assert 'config.vm.box = "debian/bookworm64"' in text
    assert re.search(r"lv\.nested = true", text) and 'lv.cpu_mode = "host-passthrough"' in text
    readme = (ROOT / "README.md").read_text()
    assert "./scripts/install-host" in text and "./scripts/install-host" in readme
