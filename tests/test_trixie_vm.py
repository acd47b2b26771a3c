"""`template build --suite trixie`: Debian 13 with its current engine (docker.io 26), built,
baked and cloned like the default, and a node of it in a swarm that runs the baked image."""

import json

import pytest

from tests.conftest import swarmlab

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1800)]


def test_a_trixie_template_runs_a_swarm_service_of_the_baked_image(vm_host):
    path, _, _ = vm_host
    build = swarmlab("template", "build", "--suite", "trixie", "--name", "swl-test-trixie", "--json",
                     config=path, timeout=1200)
    assert build.returncode == 0, build.stderr
    assert json.loads(build.stdout)["suite"] == "trixie"
    try:
        up = swarmlab("up", "1", "--lab", "tx", "--template", "swl-test-trixie", "--no-snapshot", "--json",
                      config=path, timeout=900)
        assert up.returncode == 0, up.stderr
        assert json.loads(up.stdout)["swarm"]["initialized"] == "swr1"
        release = swarmlab("ssh", "swr1", "--lab", "tx", "--", ". /etc/os-release; echo $VERSION_CODENAME", config=path)
        assert release.stdout.strip() == "trixie"
        engine = swarmlab("docker", "swr1", "--lab", "tx", "--", "version", "--format", "{{.Server.Version}}",
                          config=path)
        assert int(engine.stdout.split(".")[0]) >= 26, engine.stdout + engine.stderr
        made = swarmlab("docker", "swr1", "--lab", "tx", "--", "service", "create", "--name", "hello", "--replicas", "1",
                        "--no-resolve-image", "--detach=false", "--quiet", "swarmlab/busybox:latest",
                        "sleep", "3600", config=path, timeout=300)
        assert made.returncode == 0, made.stderr
        tasks = swarmlab("docker", "swr1", "--lab", "tx", "--", "service", "ps", "hello", "--format",
                         "{{.CurrentState}}", config=path)
        assert tasks.stdout.startswith("Running"), tasks.stdout
    finally:
        swarmlab("down", "--lab", "tx", "--yes", config=path)
