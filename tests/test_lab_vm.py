"""`swarmlab up` / `status` / `down` / `ls` on real VMs (TCG) in the isolated test lab host.
One 3-node lab is shared by the read-only checks; the destructive ones come last."""

import json
import os
import signal
import subprocess
import sys
import time

import dns.message
import dns.query
import dns.rdatatype
import pytest

from swarmlab.adapters.dns import PowerDNS
from swarmlab.adapters.engine_api import EngineAPI
from swarmlab.adapters.hypervisor import Hypervisor
from swarmlab.adapters.remote import run, wait_for_ssh
from swarmlab.core.command import Command
from swarmlab.lab import model as labs
from tests.conftest import ROOT, docker_json, swarmlab

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1800)]


def resolve(server: tuple[str, int], name: str) -> set[str]:
    reply = dns.query.udp(dns.message.make_query(name, "A"), server[0], port=server[1], timeout=3)
    return {rr.address for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A for rr in rrset}


def leftovers(config, lab: str, macs: list[str]) -> dict:
    """Everything of a lab a user could still find: domains, volumes, reservations, records, state."""
    hv = Hypervisor(config.uri)
    try:
        return {
            "domains": [d.name for d in hv.owned_domains() if d.owner.get("lab") == lab]
                       + [d.name() for d in hv.conn.listAllDomains() if d.name().startswith(f"{lab}-")],
            "volumes": [v for v in hv.pool(config.node_pool).listVolumes() if v.startswith(f"{lab}-")],
            "reservations": [m for m in hv.dhcp_reservations(config.network) if m in macs],
            "records": [r.name for r in PowerDNS.from_config(config).list_a(config.zone)
                        if r.name.endswith(f".{lab}.{config.zone}")],
            "state": (labs.lab_dir(config, lab)).exists(),
        }
    finally:
        hv.close()


NOTHING = {"domains": [], "volumes": [], "reservations": [], "records": [], "state": False}


def test_up_3_gives_three_running_owned_nodes_with_leases(lab3):
    _, config, result = lab3
    assert [n["node"] for n in result["nodes"]] == ["swr1", "swr2", "swr3"]
    hv = Hypervisor(config.uri)
    owned = labs.owned_nodes(hv, "t1")
    assert sorted(d.name for d in owned) == ["t1-swr1", "t1-swr2", "t1-swr3"]
    assert all(d.running for d in owned)
    leases = hv.dhcp_leases(config.network)
    reservations = hv.dhcp_reservations(config.network)
    for node in result["nodes"]:
        assert leases[node["mac"]] == node["ip"]
        assert reservations[node["mac"]] == node["ip"]
    hv.close()


def test_records_resolve_through_powerdns_to_exactly_those_ips(lab3):
    _, config, result = lab3
    for node in result["nodes"]:
        assert node["dns"] == f"{node['node']}.t1.{config.zone}"
        assert resolve(config.dns_server, node["dns"]) == {node["ip"]}
        # and through the lab network's dnsmasq, which is what the nodes themselves ask
        assert resolve((str(config.gateway), 53), node["dns"]) == {node["ip"]}


def test_ssh_to_each_node_prints_its_name(lab3):
    path, config, result = lab3
    found = labs.load_journal(config, "t1")
    for node in found.nodes:
        conn = wait_for_ssh(labs.ssh_target(config, "t1", node), 60)
        assert run(conn, Command("hostname")).strip() == node.name
        # the lab's nodes can reach each other by their lab names
        other = found.nodes[(found.nodes.index(node) + 1) % 3]
        assert run(conn, Command("getent", "hosts", other.fqdn.rstrip("."))).split()[0] == other.ip
        conn.close()
    lines = labs.known_hosts(config, "t1").read_text().splitlines()
    assert {line.split()[0] for line in lines} >= {n.ip for n in found.nodes}
    # each key was read inside the guest through its agent before the first contact, and is the one sshd uses
    assert {n["host_key"] for n in result["nodes"]} == {"guest agent"}
    for node in found.nodes:
        conn = wait_for_ssh(labs.ssh_target(config, "t1", node), 60)
        served = run(conn, Command("cat", "/etc/ssh/ssh_host_ed25519_key.pub")).split()[1]
        conn.close()
        assert f"{node.ip} ssh-ed25519 {served}" in lines


def test_an_engine_api_session_starts_no_process_in_the_guest(lab3):
    """sshd connects to the engine's socket itself, where `docker system dial-stdio` cost each
    session 0.8-1 s of emulated CPU: no docker CLI process runs while the session reads."""
    path, config, _ = lab3
    node = labs.load_journal(config, "t1").nodes[0]
    conn = wait_for_ssh(labs.ssh_target(config, "t1", node), 60)
    try:
        with EngineAPI(conn, timeout=30) as api:
            assert api.get("/info")["Swarm"]["LocalNodeState"] == "active"
            assert run(conn, Command("pgrep", "-c", "-x", "docker"), check=False).strip() == "0"
            assert api.get("/nodes")  # the session still reads after the check's own channel
    finally:
        conn.close()


def test_status_json_agrees(lab3):
    path, _, result = lab3
    proc = swarmlab("status", "--lab", "t1", "--json", config=path)
    assert proc.returncode == 0
    rows = {r["node"]: r for r in json.loads(proc.stdout)["nodes"]}
    for node in result["nodes"]:
        row = rows[node["node"]]
        assert (row["state"], row["ip"], row["dns"], row["dns_ip"], row["ssh"]) == \
               ("running", node["ip"], node["dns"], node["ip"], True)
    text = swarmlab("status", "--lab", "t1", config=path).stdout
    assert "swr2" in text and result["nodes"][1]["ip"] in text


def test_up_forms_a_three_manager_swarm(lab3):
    path, _, result = lab3
    assert result["swarm"]["initialized"] == "swr1"
    nodes = docker_json(path, "swr2", "node", "ls")
    assert sorted(n["Hostname"] for n in nodes) == ["swr1", "swr2", "swr3"]
    assert all(n["Status"] == "Ready" and n["Availability"] == "Active" for n in nodes)
    assert sorted(n["ManagerStatus"] for n in nodes) == ["Leader", "Reachable", "Reachable"]


def test_labels_are_visible_in_node_inspect(lab3):
    path, _, _ = lab3
    labels = {n: docker_json(path, "swr1", "node", "inspect", n)[0]["Spec"]["Labels"] for n in ("swr1", "swr2", "swr3")}
    assert labels == {"swr1": {"placepoint": "gdc"}, "swr2": {"env": "dev"}, "swr3": {}}


def test_a_replicated_service_of_the_baked_image_runs(lab3):
    path, _, _ = lab3
    create = swarmlab("docker", "swr1", "--lab", "t1", "--", "service", "create", "--detach", "--name", "hello",
                      "--replicas", "2", "--no-resolve-image", "swarmlab/busybox:latest", "sleep", "1d", config=path)
    assert create.returncode == 0, create.stderr
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        tasks = docker_json(path, "swr1", "service", "ps", "hello")
        running = [t for t in tasks if t["CurrentState"].startswith("Running") and t["DesiredState"] == "Running"]
        if len(running) == 2:
            break
        time.sleep(3)
    assert len(running) == 2, tasks
    swarmlab("docker", "swr1", "--lab", "t1", "--", "service", "rm", "hello", config=path)


def test_swarm_form_twice_changes_nothing(lab3):
    path, _, _ = lab3
    proc = swarmlab("swarm", "form", "--lab", "t1", "--label", "swr1:placepoint=gdc", "--json", config=path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["changed"] is False and report["joined"] == [] and report["initialized"] is None
    assert report["firewall"] == [f"swr{i}: no firewall, nothing needed" for i in (1, 2, 3)]
    text = swarmlab("swarm", "form", "--lab", "t1", config=path).stdout
    assert "swarm already formed; nothing changed" in text


def test_status_shows_the_swarm_columns(lab3):
    path, _, _ = lab3
    rows = json.loads(swarmlab("status", "--lab", "t1", "--json", config=path).stdout)["nodes"]
    assert sorted(r["manager_status"] for r in rows) == ["Leader", "Reachable", "Reachable"]
    assert {(r["role"], r["availability"], r["node_status"]) for r in rows} == {("manager", "Active", "Ready")}
    assert all(int(r["engine"].split(".")[0]) >= 26 for r in rows)  # Debian 13's docker.io
    text = swarmlab("status", "--lab", "t1", config=path).stdout
    assert "Leader" in text and "Reachable" in text


def test_ssh_runs_one_command_with_the_labs_known_hosts(lab3):
    path, _, _ = lab3
    proc = swarmlab("ssh", "swr3", "--lab", "t1", "--", "hostname", config=path)
    assert (proc.returncode, proc.stdout.strip()) == (0, "swr3")
    failing = swarmlab("ssh", "swr3", "--lab", "t1", "--", "exit 7", config=path)
    assert failing.returncode == 7
    unknown = swarmlab("ssh", "swr9", "--lab", "t1", config=path)
    assert unknown.returncode == 3 and "lab t1 has no node swr9 (nodes: swr1, swr2, swr3)" in unknown.stderr


def test_swarm_input_errors_create_nothing(lab3):
    path, config, _ = lab3
    too_many = swarmlab("up", "2", "--lab", "bad", "--managers", "3", config=path)
    assert too_many.returncode == 1 and "--managers 3 is out of range: use 1 to 2 for 2 nodes" in too_many.stderr
    unknown = swarmlab("up", "2", "--lab", "bad", "--label", "swr7:env=dev", config=path)
    assert "names node swr7, which lab bad does not have" in unknown.stderr
    malformed = swarmlab("up", "2", "--lab", "bad", "--label", "swr1-env-dev", config=path)
    assert "is not NODE:KEY=VALUE" in malformed.stderr
    assert leftovers(config, "bad", []) == NOTHING


def without_times(nodes: list[dict]) -> list[dict]:
    """`up --json` nodes without their phase times, which differ from run to run."""
    return [{k: v for k, v in n.items() if k != "phases"} for n in nodes]


def test_rerun_changes_nothing_and_fewer_is_refused(lab3):
    path, config, result = lab3
    again = swarmlab("up", "3", "--lab", "t1", "--json", config=path)
    assert again.returncode == 0, again.stderr
    assert without_times(json.loads(again.stdout)["nodes"]) == without_times(result["nodes"])
    assert all(n["phases"]["ready"] <= n["phases"]["swarm"] for n in result["nodes"])  # each node's phase times
    assert json.loads(again.stdout)["swarm"]["joined"] == []
    fewer = swarmlab("up", "2", "--lab", "t1", config=path)
    assert fewer.returncode == 4
    assert "lab t1 has 3 nodes; `up 2` would have to remove some: run `swarmlab down --lab t1` first" in fewer.stderr


@pytest.mark.parametrize("args, code, message", [
    (["up", "0"], 1, "node count 0 is out of range: use 1 to 6"),
    (["up", "7"], 1, "node count 7 is out of range: use 1 to 6"),
    (["up", "two"], 2, "Invalid value for 'N'"),
    (["up", "1", "--lab", "Bad_Lab"], 1, "lab name 'Bad_Lab' is not a DNS label"),
    (["up", "1", "--prefix", "node9"], 1, "prefix 'node9' is not a DNS label that can take a number"),
    (["up", "1", "--template", "nosuch"], 3, "template nosuch not found"),
    (["up", "1", "--template", "t1-swr1"], 4, "template t1-swr1 is running: shut it down first"),
])
def test_bad_input_is_one_line_and_creates_nothing(lab3, args, code, message):
    path, config, _ = lab3
    full = args if "--lab" in args else [*args, "--lab", "bad"]
    proc = swarmlab(*full, config=path)
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    lab = full[full.index("--lab") + 1]
    assert leftovers(config, lab, []) == NOTHING


def test_powerdns_problems_are_caught_before_any_vm(lab3, tmp_path):
    path, config, _ = lab3
    wrong_key = swarmlab("up", "1", "--lab", "bad", config=path, env={"SWARMLAB_PDNS_API_KEY": "wrong"})
    assert wrong_key.returncode == 1
    assert "PowerDNS rejected the API key" in wrong_key.stderr and "before creating any VM" in wrong_key.stderr
    down_url = tmp_path / "down.toml"
    down_url.write_text(path.read_text().replace(config.api_url, "http://127.0.0.1:9"))
    unreachable = swarmlab("up", "1", "--lab", "bad", config=down_url)
    assert "PowerDNS API at http://127.0.0.1:9 refused the connection" in unreachable.stderr
    no_net = tmp_path / "nonet.toml"
    no_net.write_text(path.read_text().replace(f'network = "{config.network}"', 'network = "nosuchnet"'))
    missing = swarmlab("up", "1", "--lab", "bad", config=no_net)
    assert "network nosuchnet is missing: run `swarmlab host up`" in missing.stderr
    assert leftovers(config, "bad", []) == NOTHING


def test_down_of_an_unknown_lab_says_so_and_exits_0(lab3):
    path, _, _ = lab3
    proc = swarmlab("down", "--lab", "nosuchlab", "--yes", config=path)
    assert proc.returncode == 0 and "lab nosuchlab does not exist; nothing to remove" in proc.stdout
    assert swarmlab("status", "--lab", "nosuchlab", config=path).returncode == 3


@pytest.mark.last
def test_second_lab_survives_the_first_labs_down_and_grows(lab3):
    path, config, result = lab3
    second = swarmlab("up", "1", "--lab", "t2", "--json", config=path)
    assert second.returncode == 0, second.stderr
    t2 = json.loads(second.stdout)["nodes"]
    assert t2[0]["ip"] not in {n["ip"] for n in result["nodes"]}
    listing = json.loads(swarmlab("ls", "--json", config=path).stdout)
    assert {(r["lab"], r["nodes"], r["running"]) for r in listing} >= {("t1", 3, 3), ("t2", 1, 1)}

    proc = swarmlab("down", "--lab", "t1", "--yes", config=path)
    assert proc.returncode == 0, proc.stderr
    assert leftovers(config, "t1", [n["mac"] for n in result["nodes"]]) == NOTHING
    status = json.loads(swarmlab("status", "--lab", "t2", "--json", config=path).stdout)["nodes"]
    assert status[0]["state"] == "running" and status[0]["dns_ip"] == t2[0]["ip"] and status[0]["ssh"]
    assert Hypervisor(config.uri).dhcp_reservations(config.network)[t2[0]["mac"]] == t2[0]["ip"]
    again = swarmlab("down", "--lab", "t1", "--yes", config=path)
    assert again.returncode == 0 and "does not exist" in again.stdout

    grown = swarmlab("up", "4", "--lab", "t2", "--managers", "1", "--json", config=path)
    assert grown.returncode == 0, grown.stderr
    nodes = json.loads(grown.stdout)["nodes"]
    assert [n["node"] for n in nodes] == ["swr1", "swr2", "swr3", "swr4"]
    assert without_times(nodes)[0] == without_times(t2)[0]
    assert resolve(config.dns_server, nodes[3]["dns"]) == {nodes[3]["ip"]}
    members = {n["Hostname"]: n for n in docker_json(path, "swr1", "node", "ls", lab="t2")}
    assert {h: m["ManagerStatus"] for h, m in members.items()} == {"swr1": "Leader", "swr2": "", "swr3": "", "swr4": ""}
    assert all(m["Status"] == "Ready" for m in members.values())
    # One manager: killing it would lose the quorum, so chaos refuses without --force.
    refused = swarmlab("chaos", "kill-leader", "--lab", "t2", config=path)
    assert refused.returncode == 4 and "leaves 0 of 1 managers" in refused.stderr
    assert swarmlab("status", "--lab", "t2", "--json", config=path).returncode == 0

    # `swarm form --managers 4` promotes the workers (it used to say "nothing changed")
    promoted = swarmlab("swarm", "form", "--lab", "t2", "--managers", "4", "--json", config=path)
    assert promoted.returncode == 0, promoted.stderr
    assert json.loads(promoted.stdout)["promoted"] == ["swr2", "swr3", "swr4"]
    members = {n["Hostname"]: n["ManagerStatus"] for n in docker_json(path, "swr1", "node", "ls", lab="t2")}
    assert sorted(members.values()) == ["Leader", "Reachable", "Reachable", "Reachable"]


@pytest.mark.last
def test_four_managers_split_in_halves_leave_neither_half_a_leader_until_healed(lab3):
    """t2, four managers since the test above, split by the hypervisor into two halves of two:
    the leader's half loses its leader, the half out of sight (read through its guest agent)
    has none either, a write is refused, each inside swarmkit's window; `chaos heal --all`
    joins the halves and removes the split network. (Timing the return after a heal is the
    same code as lose-quorum's `--restore`, which test_chaos_vm times.)"""
    path, config, _ = lab3
    four = swarmlab("up", "4", "--lab", "t2", "--managers", "4", config=path)  # a no-op after the test above
    assert four.returncode == 0, four.stderr
    proc = swarmlab("chaos", "split", "--lab", "t2", "--json", config=path, timeout=900)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    data = json.loads(proc.stdout)
    events = {e["event"]: e for e in data["events"]}
    assert set(events) == {"split", "leader-lost", "no-leader", "other-half-no-leader", "writes-refused",
                           "tasks-running"}, events
    away = data["target"].split(", ")
    assert len(away) == 2 and data["old_leader"] not in away and data["missing"] == []
    assert "does not have a leader" in events["writes-refused"]["detail"]
    for e in events.values():
        if e["expected"]:
            low, high = e["expected"]
            assert low - 1 <= e["t"] <= high + 5, f"{e['event']} at {e['t']} s, expected {low}-{high} s"
    rows = json.loads(swarmlab("status", "--lab", "t2", "--json", config=path).stdout)["nodes"]
    assert sorted(r["node"] for r in rows if r["cut_off"]) == sorted(away)
    # a snapshot would keep the NICs on the split's network: a revert could not even start them
    kept = swarmlab("snapshot", "save", "halves", "--lab", "t2", "--force", config=path)
    assert kept.returncode == 4 and "cut off the lab network" in kept.stderr, kept.stderr

    healed = swarmlab("chaos", "heal", "--all", "--lab", "t2", "--json", config=path)
    assert healed.returncode == 0 and sorted(json.loads(healed.stdout)["healed"]) == sorted(away), healed.stderr
    with Hypervisor(config.uri) as hv:
        assert hv.split_networks("t2") == []
        assert not any(hv.cable(f"t2-{name}").cut_off for name in ("swr1", "swr2", "swr3", "swr4"))


@pytest.mark.last
def test_sigkill_during_up_then_down_leaves_nothing(lab3):
    path, config, _ = lab3
    env = {**os.environ, "SWARMLAB_CONFIG": str(path)}
    proc = subprocess.Popen([sys.executable, "-m", "swarmlab", "up", "2", "--lab", "t3", "--no-swarm"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    hv = Hypervisor(config.uri)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:  # kill once the VMs are booting
        if sum(d.running for d in labs.owned_nodes(hv, "t3")) == 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "swarmlab up ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    journal = labs.load_journal(config, "t3")
    assert journal is not None and len(journal.nodes) == 2
    assert len(labs.owned_nodes(hv, "t3")) == 2
    hv.close()
    down = swarmlab("down", "--lab", "t3", "--yes", config=path)
    assert down.returncode == 0, down.stderr
    assert leftovers(config, "t3", [n.mac for n in journal.nodes]) == NOTHING
