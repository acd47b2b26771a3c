"""doctor: one ✓/✗ line per check with a fix for each ✗, --json, exit codes.
libvirt is the test:///default driver; PowerDNS is real."""

import json
from pathlib import Path

from swarmlab.lab.doctor import KSM_FIX, ksm_verdict
from tests.conftest import make_test_host, swarmlab


def doctor_config(tmp_path, pdns_server, template="test", zone_created=True, key_mode=0o600):
    client, server, key = pdns_server
    if zone_created:
        client.ensure_zone("lab.swarmlab.test.")
    key_file = tmp_path / "api-key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    ssh_key = tmp_path / "id_ed25519"
    ssh_key.write_text("not a real key\n")
    ssh_key.chmod(key_mode)
    path = tmp_path / "swarmlab.toml"
    path.write_text(f"""[libvirt]
uri = "test:///default"
network = "default"
template = "{template}"
[dns]
api_url = "{client.api_url}"
api_key_file = "{key_file}"
[ssh]
key = "{ssh_key}"
[host]
state_dir = "{tmp_path / 'state'}"
ksm = false
""")
    return path


def test_doctor_reports_each_failure_with_a_fix(tmp_path, pdns_server):
    # "test" is running: a template must be shut off. The SSH key is 0644. The zone is missing.
    path = doctor_config(tmp_path, pdns_server, zone_created=False, key_mode=0o644)
    proc = swarmlab("doctor", config=path)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("✓ libvirt ") and "test:///default answers" in lines[0]
    assert lines[1].startswith("✓ network ") and "default active" in lines[1]
    assert lines[2].startswith("✗ template ") and "test is running" in lines[2]
    assert lines[3] == "  fix: shut it down: `virsh shutdown test`"
    assert lines[4].startswith("✗ powerdns ") and "zone lab.swarmlab.test. is missing" in lines[4]
    assert lines[5].startswith("  fix: run `swarmlab host up`")
    assert lines[6].startswith("✗ ssh-key ") and "mode 644" in lines[6]
    assert lines[7] == f"  fix: chmod 600 {tmp_path / 'id_ed25519'}"
    assert pdns_server[2] not in proc.stdout + proc.stderr


def test_doctor_json_matches_and_all_green_exits_0(tmp_path, pdns_server):
    # Our own test host: a shut-off template whose disk exists, and a network with DHCP.
    path = doctor_config(tmp_path, pdns_server, template="unit-template")
    text = path.read_text().replace('uri = "test:///default"', f'uri = "{make_test_host(tmp_path)}"') \
        .replace('network = "default"', 'network = "swl-unit"')
    path.write_text(text)
    proc = swarmlab("doctor", "--json", config=path)
    data = json.loads(proc.stdout)
    assert [c["check"] for c in data["checks"]] == ["libvirt", "network", "template", "powerdns", "ssh-key", "ksm"]
    assert [c["check"] for c in data["checks"] if not c["ok"]] == []
    assert data["ok"] is True and proc.returncode == 0
    assert all(c["fix"] == "" for c in data["checks"])
    human = swarmlab("doctor", config=path)
    assert human.returncode == 0 and human.stdout.count("✓") == 6 and "✗" not in human.stdout


def test_doctor_says_when_the_template_was_built_for_other_memory(tmp_path, pdns_server):
    path = doctor_config(tmp_path, pdns_server, template="unit-template")
    host = make_test_host(tmp_path)
    xml = Path(host.removeprefix("test://"))
    xml.write_text(xml.read_text().replace('role="template"/>', 'role="template" recipe="abc123" shape="1024m1c"/>'))
    path.write_text(path.read_text().replace('uri = "test:///default"', f'uri = "{host}"')
                    .replace('network = "default"', 'network = "swl-unit"'))
    proc = swarmlab("doctor", "--json", config=path)
    checks = {c["check"]: c for c in json.loads(proc.stdout)["checks"]}
    assert not checks["template"]["ok"] and proc.returncode == 1
    assert checks["template"]["detail"] == ("unit-template was built for 1024m1c (MiB, vCPUs); "
                                            "[nodes] asks 512m1c, and clones copy the template")
    assert checks["template"]["fix"] == "run `swarmlab template build --name unit-template`"


def test_doctor_names_a_missing_template_and_an_unreachable_libvirt(tmp_path, pdns_server):
    path = doctor_config(tmp_path, pdns_server, template="debian10template")
    proc = swarmlab("doctor", "--json", config=path)
    checks = {c["check"]: c for c in json.loads(proc.stdout)["checks"]}
    assert checks["template"]["detail"] == "domain debian10template not found"
    assert "swarmlab template build --name debian10template" in checks["template"]["fix"]

    path.write_text(path.read_text().replace("test:///default", "qemu+unix:///system?socket=/nonexistent"))
    proc = swarmlab("doctor", "--json", config=path)
    checks = {c["check"]: c for c in json.loads(proc.stdout)["checks"]}
    assert not checks["libvirt"]["ok"] and "is not reachable" in checks["libvirt"]["detail"]
    assert checks["powerdns"]["ok"]
    assert proc.returncode == 1


def test_doctor_with_powerdns_down_names_the_url(tmp_path, pdns_server):
    path = doctor_config(tmp_path, pdns_server)
    client = pdns_server[0]
    path.write_text(path.read_text().replace(client.api_url, "http://127.0.0.1:9"))
    proc = swarmlab("doctor", config=path)
    assert "✗ powerdns  PowerDNS API at http://127.0.0.1:9 refused the connection" in proc.stdout
    assert proc.returncode == 1


def test_doctor_says_when_a_host_does_not_merge_its_clones_pages():
    ok, detail = ksm_verdict("0")
    assert not ok and "same-page merging (KSM) is off: clones of the template do not share" in detail
    assert ksm_verdict("0", wanted=False) == (True, "same-page merging (KSM) is off, as [host] ksm = false asks")
    assert ksm_verdict("1", 2048) == (True, "same-page merging (KSM) on, 2048 MiB shared")
    ok, detail = ksm_verdict(None)
    assert not ok and "no same-page merging" in detail
    assert "echo 1 > /sys/kernel/mm/ksm/run" in KSM_FIX


def test_a_class_host_whose_libvirt_takes_plain_tcp_on_a_students_network_is_named():
    import ipaddress
    from swarmlab.lab.doctor import libvirt_tcp_verdict
    class_lan = [ipaddress.ip_interface("192.168.10.5/24")]
    ok, detail = libvirt_tcp_verdict("qemu+tcp://192.168.10.7/system", class_lan)
    assert not ok and "192.168.10.0/24" in detail and "controls the host" in detail
    assert libvirt_tcp_verdict("qemu+tcp://10.200.0.2/system", class_lan)[0]  # a private link of its own
    assert libvirt_tcp_verdict("qemu+ssh://root@192.168.10.7/system", class_lan) is None
    assert libvirt_tcp_verdict("qemu+tcp://h2.example/system", class_lan)[0] is False  # a name: cannot tell
