"""The Vagrantfile gives a Debian 12 lab host VM, provisioned by the README's installer."""

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


# Evaluates the Vagrantfile with a stand-in for Vagrant that records what it configures, so the
# test reads the values Vagrant would get, not the text.
RECORDER = r"""
require "json"
class Recorder
  attr_reader :values
  def initialize(values, prefix) @values, @prefix = values, prefix end
  def method_missing(name, *args, **kw, &block)
    key = (@prefix + [name.to_s.chomp("=")]).join(".")
    if name.to_s.end_with?("=") then @values[key] = args.first
    elsif block then block.call(Recorder.new(@values, @prefix + [name.to_s, args.first.to_s]))
    elsif args.empty? && kw.empty? then Recorder.new(@values, @prefix + [name.to_s])
    else (@values[key] ||= []) << [args.map(&:to_s), kw.transform_keys(&:to_s)]
    end
  end
  def respond_to_missing?(*) true end
end
module Vagrant
  def self.configure(_version) values = {}; yield Recorder.new(values, []); puts JSON.generate(values) end
end
load ARGV[0]
"""


def test_vagrant_box_is_debian12_with_nested_kvm_and_the_readme_installer(tmp_path):
    import json
    script = tmp_path / "record.rb"
    script.write_text(RECORDER)
    proc = subprocess.run(["ruby", str(script), str(ROOT / "Vagrantfile")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    values = json.loads(proc.stdout)
    assert values["vm.box"] == "debian/bookworm64"
    assert values["vm.provider.libvirt.nested"] is True
    assert values["vm.provider.libvirt.cpu_mode"] == "host-passthrough"
    [(args, options)] = values["vm.provision"]
    assert args == ["shell"] and options["privileged"] is True
    steps = [line.strip() for line in options["inline"].splitlines() if line.strip()]
    # the README's first command, step by step
    readme = (ROOT / "README.md").read_text()
    first = next(line.strip() for line in readme.splitlines() if line.strip().startswith("./scripts/install-host && "))
    readme_steps = [step.strip() for step in first.split("&&")]
    assert steps[steps.index("./scripts/install-host"):][:3] == readme_steps[:3]
