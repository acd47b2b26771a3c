"""The engine install path: a template built without Docker, a node cloned from it, and
`up` installing docker.io from a bundle of .deb files that the host's apt collected and
SFTP pushed (the lab network has no route to a mirror), then side-loading the baked image.

The bundle fits the host's own release (Debian 12), so this template is `--suite bookworm`: it
also covers the older suite, which every other VM test no longer boots (trixie is the default)."""

import json

import pytest

from swarmlab.host import images
from swarmlab.host.hoststate import registry_address
from tests.conftest import swarmlab

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1800)]


def test_bundle_install_on_a_template_without_docker(vm_host):
    path, config, _ = vm_host
    assert registry_address(config)  # host up started the registry mirror
    build = swarmlab("template", "build", "--name", "swl-test-noengine", "--no-engine", "--suite", "bookworm",
                     "--json", config=path, timeout=1200)
    assert build.returncode == 0, build.stderr
    assert json.loads(build.stdout)["suite"] == "bookworm"
    try:
        before = swarmlab("up", "1", "--lab", "nb", "--template", "swl-test-noengine", "--no-swarm", config=path)
        assert before.returncode == 0, before.stderr
        missing = swarmlab("ssh", "swr1", "--lab", "nb", "--", "command -v dockerd || echo none", config=path)
        assert missing.stdout.strip() == "none"
        release = swarmlab("ssh", "swr1", "--lab", "nb", "--", ". /etc/os-release; echo $VERSION_CODENAME", config=path)
        assert release.stdout.strip() == "bookworm"

        formed = swarmlab("swarm", "form", "--lab", "nb", "--json", config=path, timeout=1500)
        assert formed.returncode == 0, formed.stderr
        report = json.loads(formed.stdout)
        assert any("installed docker.io from a bundle" in line for line in report["engine"])
        assert sorted(report["images"]) == sorted(f"swr1: {name}" for name in images.STANDIN_NAMES)
        assert "swr1: registry mirror http://" + registry_address(config) in report["engine"]
        assert report["initialized"] == "swr1"

        out = swarmlab("docker", "swr1", "--lab", "nb", "--", "run", "--rm", "swarmlab/busybox:latest",
                       "echo", "bundled", config=path)
        assert out.stdout.strip() == "bundled", out.stderr
        enabled = swarmlab("ssh", "swr1", "--lab", "nb", "--", "systemctl is-enabled docker", config=path)
        assert enabled.stdout.strip() == "enabled"
        again = json.loads(swarmlab("swarm", "form", "--lab", "nb", "--json", config=path).stdout)
        assert again["changed"] is False
    finally:
        swarmlab("down", "--lab", "nb", "--yes", config=path)
