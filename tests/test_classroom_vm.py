"""A class of two students on the test lab host: each lab whole, on a libvirt network of its
own, reachable by name and by `ssh`/`docker`, checked, reset and removed together; and the
isolation between the two labs, tried from inside a node."""

import json
import subprocess

import pytest

from swarmlab import labhost
from swarmlab.dns import PowerDNS
from swarmlab.hypervisor import Hypervisor
from tests.conftest import swarmlab

pytestmark = [pytest.mark.vm, pytest.mark.timeout(2400)]


def node_sh(path, lab: str, node: str, script: str) -> subprocess.CompletedProcess:
    return swarmlab("ssh", node, "--lab", lab, "--", script, config=path, timeout=120)


def connects(path, lab: str, node: str, ip: str, port: int) -> bool:
    """Whether a TCP connection from the node to ip:port opens within 4 s (bash's /dev/tcp)."""
    out = node_sh(path, lab, node, f"timeout 4 bash -c '</dev/tcp/{ip}/{port}' && echo open || echo closed")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip() == "open"


def qemu_rss_mib() -> list[int]:
    """Resident memory of every qemu process on the machine, in MiB."""
    out = subprocess.run(["ps", "-C", "qemu-system-x86_64", "-o", "rss="], capture_output=True, text=True).stdout
    return [int(line) // 1024 for line in out.split()]


def test_a_class_of_two_isolated_labs_is_made_checked_reset_and_removed(vm_host, tmp_path):
    path, config, _ = vm_host
    roster = tmp_path / "roster.txt"
    roster.write_text("# workshop\nAnn Lee\nBo\n")
    try:
        made = swarmlab("class", "up", "--roster", str(roster), "--nodes", "3", "--json", config=path, timeout=1500)
        assert made.returncode == 0, made.stdout + made.stderr
        results = {r["lab"]: r for r in json.loads(made.stdout)}
        assert set(results) == {"ann-lee", "bo"} and all(r["ok"] and r["host"] == "local" for r in results.values())
        print(f"\nclass up of 2 labs x 3 nodes: {max(r['seconds'] for r in results.values()):.0f} s; "
              f"qemu RSS per node (MiB): {sorted(qemu_rss_mib())}")
        ips = {lab: {n["node"]: n["ip"] for n in r["detail"]["nodes"]} for lab, r in results.items()}

        # each lab on its own network, its /24 from the class range
        with Hypervisor(config.uri) as hv:
            for lab in ("ann-lee", "bo"):
                net = hv.network_state(f"{config.network}-{lab}")
                assert net.active and net.owner == {"role": "network", "lab": lab}
                assert all(ip.startswith(net.gateway.rsplit(".", 1)[0] + ".") for ip in ips[lab].values())
        assert ips["ann-lee"]["swr1"].rsplit(".", 1)[0] != ips["bo"]["swr1"].rsplit(".", 1)[0]

        # own lab, DNS and the registry mirror work; the other lab's nodes do not answer
        assert connects(path, "ann-lee", "swr1", ips["ann-lee"]["swr2"], 22)
        assert connects(path, "ann-lee", "swr1", str(config.gateway), 5000)  # the registry mirror
        resolved = node_sh(path, "ann-lee", "swr1", f"getent hosts swr1.bo.{config.zone.rstrip('.')}")
        assert resolved.stdout.split()[:1] == [ips["bo"]["swr1"]], resolved.stdout + resolved.stderr
        for port in (22, 2377, 7946):
            assert not connects(path, "ann-lee", "swr1", ips["bo"]["swr1"], port), f"bo's swr1:{port} is reachable"
        assert not connects(path, "bo", "swr3", ips["ann-lee"]["swr2"], 2377)
        for lab in ("ann-lee", "bo"):
            nodes = swarmlab("docker", "swr1", "--lab", lab, "--", "node", "ls", "--format", "{{.Hostname}}",
                             config=path)
            assert sorted(nodes.stdout.split()) == ["swr1", "swr2", "swr3"], nodes.stderr

        status = swarmlab("class", "status", "--json", config=path, timeout=300)
        assert status.returncode == 0, status.stdout + status.stderr
        rows = {r["lab"]: r for r in json.loads(status.stdout)}
        assert {lab: (r["student"], r["ready"], r["nodes"], r["swarm"]) for lab, r in rows.items()} == \
            {"ann-lee": ("Ann Lee", 3, 3, "healthy"), "bo": ("Bo", 3, 3, "healthy")}

        # grading: the exercise for everyone, only Ann solves it
        started = swarmlab("class", "start", "services", "--json", config=path, timeout=900)
        assert started.returncode == 0, started.stdout + started.stderr
        assert all(r["detail"]["exercise"] == "services" for r in json.loads(started.stdout))
        solved = swarmlab("exercise", "solve", "services", "--lab", "ann-lee", config=path, timeout=600)
        assert solved.returncode == 0, solved.stderr
        converged = swarmlab("exercise", "check", "services", "--lab", "ann-lee", config=path, timeout=600)
        assert converged.returncode == 0, converged.stdout + converged.stderr
        junit = tmp_path / "grades.xml"
        # one pass: Ann's swarm has converged, and Bo's would only be waited for until the checks time out
        checked = swarmlab("class", "check", "services", "--junit", str(junit), "--json", config=path, timeout=900)
        assert checked.returncode == 1, checked.stdout + checked.stderr  # Bo has not solved it
        verdicts = {r["lab"]: r["detail"]["passed"] for r in json.loads(checked.stdout)}
        assert verdicts == {"ann-lee": True, "bo": False}
        suites = {s.split('"')[1]: s for s in junit.read_text().split("<testsuite ")[1:]}
        assert set(suites) == {"Ann Lee", "Bo"} and 'failures="0"' in suites["Ann Lee"] and \
            'failures="0"' not in suites["Bo"]
        rows = {r["lab"]: r for r in json.loads(swarmlab("class", "status", "--json", config=path, timeout=300).stdout)}
        assert rows["ann-lee"]["last_check"]["ok"] and not rows["bo"]["last_check"]["ok"]
        assert rows["bo"]["exercise"] == "services"

        reset = swarmlab("class", "reset", "--json", config=path, timeout=900)
        assert reset.returncode == 0, reset.stdout + reset.stderr
        services = swarmlab("docker", "swr1", "--lab", "ann-lee", "--", "service", "ls", "-q", config=path)
        assert services.stdout.strip() == "", "the reset left Ann's service"
    finally:
        gone = swarmlab("class", "down", "--yes", "--json", config=path, timeout=600)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    labhost.enter_host(config)  # PowerDNS listens inside the lab host's namespace
    listed = [lab["lab"] for lab in json.loads(swarmlab("ls", "--json", config=path).stdout)]
    assert "ann-lee" not in listed and "bo" not in listed
    with Hypervisor(config.uri) as hv:
        assert not hv.network_state(f"{config.network}-ann-lee").exists
        assert not [d.name for d in hv.owned_domains() if d.owner.get("lab") in ("ann-lee", "bo")]
    assert not [r.name for r in PowerDNS.from_config(config).list_a(config.zone)
                if r.name.endswith((f".ann-lee.{config.zone}", f".bo.{config.zone}"))]
    assert not (config.state_dir / "class.json").exists()
    again = swarmlab("class", "status", config=path)
    assert again.returncode == 3 and "there is no class" in again.stderr
