"""The registry mirror is read-only for the nodes: every student has root on a node, so a push
into the mirror every lab pulls from would change what the other labs run. Debian's
docker-registry on loopback, as `host up` runs it: the node-facing instance refuses a push,
and the stand-ins go in through a read-write instance on the same storage."""

import pytest
import requests

from swarmlab.adapters.daemons import RegistryServer
from swarmlab.host import images
from tests.conftest import free_port


@pytest.fixture
def mirror(tmp_path):
    data = tmp_path / "data"
    served = RegistryServer(tmp_path / "served", f"127.0.0.1:{free_port()}", data)  # read-only by default
    pushing = RegistryServer(tmp_path / "push", f"127.0.0.1:{free_port()}", data, readonly=False)
    procs = []
    try:
        for server in (served, pushing):
            procs.append(server.start())
            server.wait_ready(procs[-1])
        yield served, pushing
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def digest(address: str, name: str) -> str:
    r = requests.head(f"http://{address}/v2/{name}/manifests/latest", headers={"Accept": images.MANIFEST_TYPE},
                      timeout=5)
    return r.headers.get("Docker-Content-Digest", f"HTTP {r.status_code}")


def test_a_push_to_the_mirror_is_refused_and_the_standins_go_in_through_loopback(mirror):
    served, pushing = mirror
    with pytest.raises(images.ImageError, match="refused an upload of swarmlab/busybox: HTTP 405"):
        images.push(served.address)  # what a student's `docker push` to the gateway meets
    assert images.push(pushing.address) == list(images.STANDIN_NAMES)
    original = digest(served.address, "swarmlab/agent")
    assert original.startswith("sha256:")  # the mirror serves what went in through loopback
    # a student's own image under the agent's name: refused, and every lab still gets the original
    own = images.build_all()[0]
    own.name = "swarmlab/agent:latest"
    with pytest.raises(images.ImageError, match="HTTP 405"):
        images.push(served.address, [own])
    assert digest(served.address, "swarmlab/agent") == original


def test_a_registry_started_with_other_settings_is_told_apart(tmp_path):
    server = RegistryServer(tmp_path, "127.0.0.1:5000")
    assert server.settings_changed()  # never started
    (tmp_path / "config.yml").write_text(server.config_text().replace("enabled: true", "enabled: false"))
    assert server.settings_changed()  # an older swarmlab's registry took pushes: restarted read-only
    (tmp_path / "config.yml").write_text(server.config_text())
    assert not server.settings_changed()
