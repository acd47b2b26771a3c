"""`host up --isolated` / `host status` / `host down` for real: namespace, libvirtd, network,
dnsmasq, PowerDNS. Each step is checked the way a user would look at it."""

import json
import shutil
import subprocess

import pytest

from swarmlab import config as configuration
from swarmlab.adapters import daemons, ksm, netns
from tests.conftest import lab_host_dir, swarmlab, write_config

pytestmark = [pytest.mark.vm, pytest.mark.timeout(600)]


def netns_run(namespace: str, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", namespace, *cmd], capture_output=True, text=True, timeout=30)


KSM_BEFORE: dict = {}  # the machine's same-page merging settings before the host came up


@pytest.fixture(scope="module")
def host(earlier_runs_cleared):
    tmp = lab_host_dir()
    path = write_config(tmp / "swarmlab.toml", tmp / "state")
    KSM_BEFORE.update(ksm.settings() if ksm.available() else {})  # without KSM, its assertions fail alone
    try:
        proc = swarmlab("host", "up", "--isolated", "--json", config=path)
        assert proc.returncode == 0, proc.stderr
        yield path, json.loads(proc.stdout)
    finally:
        swarmlab("host", "down", config=path)
        shutil.rmtree(tmp, ignore_errors=True)


def test_host_up_builds_everything_inside_the_namespace(host):
    path, first = host
    config = configuration.load(path)
    assert first["changed"] is True
    assert f"created network namespace {config.namespace}" in first["changes"]
    assert config.namespace in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    # The bridge exists in the namespace, with the gateway address, and not on the host.
    bridge = first["status"]["network"]["bridge"]
    inside = netns_run(config.namespace, "ip", "-br", "addr", "show", bridge).stdout
    assert f"{config.gateway}/24" in inside
    assert subprocess.run(["ip", "link", "show", bridge], capture_output=True).returncode != 0
    # without STP: a woken or reverted node's new port forwards at once, not ~4 s later
    assert "stp_state 0" in netns_run(config.namespace, "ip", "-d", "link", "show", bridge).stdout
    # libvirtd and PowerDNS run inside the namespace.
    libvirtd = daemons.find_process("libvirtd")
    assert netns.in_netns(config.namespace, libvirtd)
    assert netns.in_netns(config.namespace, first["status"]["pdns"]["pid"])
    assert netns.in_netns(config.namespace, first["status"]["registry"]["pid"])
    assert any(c.startswith("pushed the offline stand-ins") for c in first["changes"])
    # The network is active for libvirt (virsh as a user would run it).
    info = subprocess.run(["virsh", "-c", config.uri, "net-info", config.network], capture_output=True, text=True)
    assert "Active:         yes" in info.stdout and "Autostart:      yes" in info.stdout
    # Same-page merging runs, at the rate host up sets (here or for another lab host).
    assert ksm.settings() == ksm.LAB_RATE and first["status"]["ksm"]["on"] is True
    shown = swarmlab("host", "status", config=path).stdout
    assert "ksm        on, " in shown and "MiB of guest memory shared" in shown


def test_powerdns_answers_inside_the_namespace_only_on_loopback(host):
    path, _ = host
    config = configuration.load(path)
    soa = netns_run(config.namespace, "dig", "+short", "@127.0.0.1", "-p", str(config.dns_port), config.zone, "SOA")
    assert soa.stdout.startswith(f"ns1.{config.zone}")
    # The API key file is 0600, and the API accepts it from inside the namespace.
    assert config.api_key_path.stat().st_mode & 0o777 == 0o600
    key = config.api_key_path.read_text().strip()
    api = netns_run(config.namespace, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                    f"X-API-Key: {key}", f"{config.api_url}/api/v1/servers/localhost/zones/{config.zone}")
    assert api.stdout == "200"
    listening = netns_run(config.namespace, "ss", "-Hltn").stdout
    assert f"127.0.0.1:{config.api_port}" in listening
    assert f"0.0.0.0:{config.api_port}" not in listening
    # The lab network's dnsmasq forwards the zone to PowerDNS: ask it at the gateway.
    via_dnsmasq = netns_run(config.namespace, "dig", "+short", f"@{config.gateway}", config.zone, "SOA")
    assert via_dnsmasq.stdout.startswith(f"ns1.{config.zone}")


def test_the_registry_mirror_serves_the_standins_on_the_lab_network_only(host):
    config = configuration.load(host[0])
    tags = netns_run(config.namespace, "curl", "-s", f"http://{config.gateway}:5000/v2/swarmlab/whoami/tags/list")
    assert json.loads(tags.stdout) == {"name": "swarmlab/whoami", "tags": ["latest"]}
    listening = netns_run(config.namespace, "ss", "-Hltn").stdout
    assert f"{config.gateway}:5000" in listening and "0.0.0.0:5000" not in listening
    # read-only: a push (as a student's `docker push` starts one) is refused, and the read-write
    # instance the stand-ins went in through is gone
    push = netns_run(config.namespace, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                     f"http://{config.gateway}:5000/v2/swarmlab/agent/blobs/uploads/")
    assert push.stdout == "405"
    registries = [line for line in netns_run(config.namespace, "ss", "-Hltnp").stdout.splitlines()
                  if "docker-registry" in line]
    assert len(registries) == 1 and f"{config.gateway}:5000" in registries[0], registries


def test_the_node_filter_guards_the_hosts_ports_from_its_lab_networks(host):
    config = configuration.load(host[0])
    table = netns_run(config.namespace, "nft", "list", "table", "inet", "swarmlab")
    assert table.returncode == 0 and 'iifname != "sl-*" accept' in table.stdout, table.stderr
    assert "tcp dport { 53, 5000 } accept" in table.stdout and "drop" in table.stdout


def test_a_network_left_forwarding_to_another_powerdns_is_made_again(host, tmp_path):
    """What a host killed half-way (or a changed [host] dns_port) leaves: the network, its dnsmasq
    sending the lab zone to a port no PowerDNS listens on. `host up` makes it again."""
    path, _ = host
    config = configuration.load(path)

    def virsh(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["virsh", "-c", config.uri, *args], capture_output=True, text=True, timeout=60)

    def zone_via_gateway() -> str:
        return netns_run(config.namespace, "dig", "+short", "+time=2", "+tries=1", f"@{config.gateway}",
                         config.zone, "SOA").stdout
    stale = tmp_path / "stale.xml"
    stale.write_text(virsh("net-dumpxml", config.network).stdout.replace(f"#{config.dns_port}'", "#9'"))
    assert virsh("net-destroy", config.network).returncode == 0
    assert virsh("net-define", str(stale)).returncode == 0 and virsh("net-start", config.network).returncode == 0
    assert not zone_via_gateway().startswith(f"ns1.{config.zone}")  # the stale network breaks the nodes' DNS
    proc = swarmlab("host", "up", "--isolated", config=path)
    assert proc.returncode == 0, proc.stderr
    assert f"redefined network {config.network}: the lab zone goes to 127.0.0.1#{config.dns_port}" in proc.stdout
    assert zone_via_gateway().startswith(f"ns1.{config.zone}")


def test_second_host_up_changes_nothing_and_says_so(host):
    path, _ = host
    proc = swarmlab("host", "up", "--isolated", config=path)
    assert proc.returncode == 0
    assert proc.stdout.strip().endswith("lab host is up; nothing changed (namespace swl-test)")
    status = swarmlab("host", "status", "--json", config=path)
    assert status.returncode == 0 and json.loads(status.stdout)["up"] is True


def test_doctor_on_the_host_passes_everything_but_the_template(host):
    path, _ = host
    proc = swarmlab("doctor", "--json", config=path)
    checks = {c["check"]: c["ok"] for c in json.loads(proc.stdout)["checks"]}
    assert set(checks) == {"libvirt", "network", "template", "powerdns", "ssh-key", "ksm", "cpu caps"}  # every part
    # "cpu caps" among the passed: libvirtd in the namespace sees the cgroup hierarchies, so it can cap nodes
    assert {name for name, ok in checks.items() if not ok} <= {"template"}


def test_a_second_isolated_host_is_refused_before_it_creates_anything(host, tmp_path):
    other = write_config(tmp_path / "other.toml", tmp_path / "state", host={"namespace": "swl-other"},
                         libvirt={"network": "swl-other"})
    proc = swarmlab("host", "up", "--isolated", config=other)
    assert proc.returncode == 4 and "already runs outside namespace swl-other" in proc.stderr
    assert "swl-other" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not (tmp_path / "state" / "host.json").exists()


def test_switching_modes_is_refused(host):
    path, _ = host
    proc = swarmlab("host", "up", config=path)
    assert proc.returncode == 4
    assert "already up (isolated): run `swarmlab host down` first" in proc.stderr


def test_host_down_leaves_nothing_behind(host):
    path, first = host
    config = configuration.load(path)
    proc = swarmlab("host", "down", config=path)
    assert proc.returncode == 0, proc.stderr
    assert f"removed network namespace {config.namespace}" in proc.stdout
    assert config.namespace not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for daemon in ("libvirtd", "virtlogd", "pdns_server", "dnsmasq", "docker-registry"):
        assert daemons.find_process(daemon) is None, f"{daemon} still runs"
    assert subprocess.run(["ip", "link", "show", first["status"]["network"]["bridge"]],
                          capture_output=True).returncode != 0
    status = swarmlab("host", "status", config=path)
    assert status.returncode == 3 and "lab host is down" in status.stdout
    assert ksm.settings() == KSM_BEFORE  # same-page merging as the machine had it
    again = swarmlab("host", "down", config=path)
    assert again.returncode == 0 and "it was not up" in again.stdout
