"""A class of two students over two libvirt hosts: Ann's lab on the test lab host, Bo's on a
second libvirtd in namespaces of its own, reached at qemu+tcp over a veth pair as a host on
another machine would be (tests/second_host.py). The second host stops in the middle of
`class up`; a rerun converges. Then both labs are reached by name and by `ssh`/`docker`,
checked, reset and removed together; and the isolation between them (and from the shared
lab t1 on Ann's host) is tried from inside the nodes. Faults mid-class: the portal killed, the
second host's libvirtd lost, a node destroyed, the nodes stopped as a restart leaves them."""

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from swarmlab import config as configuration
from swarmlab.adapters.dns import PowerDNS
from swarmlab.adapters.hypervisor import Hypervisor
from swarmlab.host import hoststate
from swarmlab.waiting import poll_until
from tests import instructor_views as views, laptop
from tests.browser import SCREENSHOTS, fetch, open_browser, type_in_terminal, wait_for
from tests.conftest import TEST_CACHE, Phases, figure, swarmlab
from tests.second_host import SecondHost

pytestmark = [pytest.mark.vm, pytest.mark.timeout(2400)]


def node_sh(path, lab: str, node: str, script: str) -> subprocess.CompletedProcess:
    return swarmlab("ssh", node, "--lab", lab, "--", script, config=path, timeout=120)


def qemu_rss_mib() -> list[int]:
    """Resident memory of every qemu process on the machine, in MiB."""
    out = subprocess.run(["ps", "-C", "qemu-system-x86_64", "-o", "rss="], capture_output=True, text=True).stdout
    return [int(line) // 1024 for line in out.split()]


H2_POOLS = "/var/lib/libvirt/lab-pools"  # the second host's pools: not the default place


@pytest.fixture(scope="module")
def two_hosts(lab3):
    """(class config path, config, the second host): the test lab host, beside the shared lab t1,
    takes one lab of 3 nodes and the second host another."""
    path, config, _ = lab3
    hoststate.enter_host(config)
    second = SecondHost("swl-test-h2", config.namespace, TEST_CACHE / "test-ssh" / "id_ed25519.pub")
    class_path = path.with_name("swarmlab-class.toml")
    try:
        second.start()
        laptop.start()
        with Hypervisor(config.uri) as hv:
            used = hv.node_count()
        text = path.read_text().replace("[host]\n", f'[host]\nservices_address = "{second.controller_ip}"\n')
        text += f"\n[class]\ncpu_cap_percent = {CAP_PERCENT}\n"  # Ann's 2 nodes alone on 2 CPUs: auto caps none
        text += (f'\n[[hosts]]\nname = "local"\nuri = "{config.uri}"\nnodes = {used + 2}\n'
                 f'\n[[hosts]]\nname = "h2"\nuri = "{second.uri}"\nnodes = 2\nssh = "{second.ssh}"\n'
                 f'ssh_key = "{config.ssh_key_path}"\npool_dir = "{H2_POOLS}"\n')
        class_path.write_text(text)
        class_path.chmod(0o600)
        # PowerDNS now also answers on the controller's end of the veth, where h2's labs forward the zone
        up = swarmlab("host", "up", "--isolated", config=class_path)
        assert up.returncode == 0 and "restarting PowerDNS" in up.stdout + up.stderr, up.stdout + up.stderr
        doctor = swarmlab("doctor", "--host", "h2", config=class_path)
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        yield class_path, configuration.load(class_path), second
    finally:
        laptop.remove()
        second.remove()


def test_a_class_over_two_hosts_is_made_isolated_checked_reset_and_removed(two_hosts, lab3, tmp_path):
    path, config, second = two_hosts
    roster = tmp_path / "roster.txt"
    roster.write_text("# workshop\nAnn Lee\nBo\n")
    portal = browser = pages = None
    phases = Phases("the class test's phases")
    try:
        # the second host stops in the middle of `class up`: Bo's lab fails, Ann's is made
        stop = threading.Thread(target=stop_when_bo_boots, args=(config, second))
        stop.start()
        made = swarmlab("class", "up", "--roster", str(roster), "--nodes", "2", "--json", config=path, timeout=1500)
        stop.join()
        assert made.returncode == 1, made.stdout + made.stderr
        results = {r["lab"]: r for r in json.loads(made.stdout)}
        assert results["ann-lee"]["ok"] and results["ann-lee"]["host"] == "local", made.stdout + made.stderr[-3000:]
        assert not results["bo"]["ok"] and second.uri in results["bo"]["error"], results["bo"]
        phases.done("class up with a host lost")
        # once the host is back, a rerun converges
        second.start_libvirtd()
        made = swarmlab("class", "up", "--roster", str(roster), "--nodes", "2", "--json", config=path, timeout=1500)
        assert made.returncode == 0, made.stdout + made.stderr
        results = {r["lab"]: r for r in json.loads(made.stdout)}
        assert {lab: (r["ok"], r["host"]) for lab, r in results.items()} == {"ann-lee": (True, "local"),
                                                                            "bo": (True, "h2")}
        figure(f"class up rerun after the second host came back: {results['bo']['seconds']:.0f} s; "
              f"qemu RSS per node (MiB): {sorted(qemu_rss_mib())}; nodes started by: "
              f"{ {lab: [n['start'] for n in r['detail']['nodes']] for lab, r in results.items()} }")
        # Ann's lab, made on this machine by the first `class up`, woke from the template's state
        assert [n["start"] for n in results["ann-lee"]["detail"]["nodes"]] == ["wake", "wake"], results["ann-lee"]
        ips = {lab: {n["node"]: n["ip"] for n in r["detail"]["nodes"]} for lab, r in results.items()}

        phases.done("class up rerun")
        # each lab on its own network on its own host, with a /24 of its own in the class
        for lab, uri in (("ann-lee", config.host("local").uri), ("bo", second.uri)):
            with Hypervisor(uri) as hv:
                net = hv.network_state(f"{config.network}-{lab}")
                assert net.active and net.owner == {"role": "network", "lab": lab}
                assert all(ip.startswith(net.gateway.rsplit(".", 1)[0] + ".") for ip in ips[lab].values())
                nodes_there = sorted(d.name for d in hv.owned_domains() if d.owner.get("role") == "node")
                assert [n for n in nodes_there if n.startswith(("ann-lee-", "bo-"))] == \
                    [f"{lab}-swr{i}" for i in (1, 2)]
        assert ips["ann-lee"]["swr1"].rsplit(".", 1)[0] != ips["bo"]["swr1"].rsplit(".", 1)[0]
        with Hypervisor(second.uri) as hv:  # the template and Bo's nodes where [[hosts]] pool_dir says
            assert hv.volume_path(config.node_pool, "bo-swr1.qcow2") == f"{H2_POOLS}/nodes/bo-swr1.qcow2"

        # own lab and DNS work from both hosts, the registry mirror from the lab host's labs
        zone = config.zone.rstrip(".")
        # and the other lab's nodes do not answer: not across hosts, nor t1's on Ann's own host
        t1 = {n["node"]: n["ip"] for n in lab3[2]["nodes"]}
        gateway = str(config.gateway)
        ann1 = reachable(path, "ann-lee", "swr1", [(ips["ann-lee"]["swr2"], 22), (gateway, 5000),  # the registry mirror
                                                   (gateway, config.api_port)]  # not the PowerDNS API
                         + [(ips["bo"]["swr1"], port) for port in (22, 2377, 7946)])
        assert [t for t, opened in ann1.items() if opened] == [(ips["ann-lee"]["swr2"], 22), (gateway, 5000)], ann1
        bo1 = reachable(path, "bo", "swr1", [(ips["bo"]["swr2"], 22), (second.controller_ip, config.api_port),
                                             (second.controller_ip, 5000)])  # the mirror, on the services address
        assert [t for t, opened in bo1.items() if opened] == [(ips["bo"]["swr2"], 22), (second.controller_ip, 5000)], bo1
        assert reachable(path, "bo", "swr2", [(ips["ann-lee"]["swr1"], 2377)]) == {(ips["ann-lee"]["swr1"], 2377): False}
        assert reachable(path, "ann-lee", "swr2", [(t1["swr1"], 22)]) == {(t1["swr1"], 22): False}, \
            "t1's swr1 is reachable from Ann's lab"
        mirror = node_sh(path, "bo", "swr2", "cat /etc/docker/daemon.json")
        assert f'"http://{second.controller_ip}:5000"' in mirror.stdout, mirror.stdout + mirror.stderr
        for lab, other in (("ann-lee", "bo"), ("bo", "ann-lee")):
            resolved = node_sh(path, lab, "swr1", f"getent hosts swr1.{other}.{zone}")
            assert resolved.stdout.split()[:1] == [ips[other]["swr1"]], resolved.stdout + resolved.stderr
        for lab in ("ann-lee", "bo"):
            nodes = swarmlab("docker", "swr1", "--lab", lab, "--", "node", "ls", "--format", "{{.Hostname}}",
                             config=path)
            assert sorted(nodes.stdout.split()) == ["swr1", "swr2"], nodes.stderr
        phases.done("isolation")
        # a class drill reaches every lab on both hosts, and says of each why it cannot run there
        drill = swarmlab("class", "chaos", "split", "--json", config=path, timeout=300)
        assert drill.returncode == 1 and json.loads(drill.stdout) == [], drill.stdout + drill.stderr
        said = {line.split(" (lab ")[0]: line for line in drill.stderr.splitlines() if " (lab " in line}
        assert sorted(said) == ["Ann Lee", "Bo"], drill.stderr
        assert all(f"lab {lab} has 1 manager: a split that leaves neither half a majority needs an even number"
                   in said[student] for student, lab in (("Ann Lee", "ann-lee"), ("Bo", "bo"))), drill.stderr
        assert said["Bo"].startswith(f"Bo (lab bo): host h2 ({second.uri}): ")  # which host, for a lab elsewhere
        with Hypervisor(second.uri) as hv:
            assert hv.split_networks("bo") == []  # refused before anything changed
        assert_nodes_reach_no_management_port(path, config, second, ips)
        assert_the_mirror_takes_no_push(path, config)
        phases.done("management ports, mirror")

        # students: each in through the gateway, to their own nodes only
        portal = start_portal(path)
        assert_a_spinning_node_stays_within_its_cpu_cap_and_weighs_less(path, config)
        phases.done("cpu cap and weight")
        folders = tmp_path / "cards"
        cards = swarmlab("class", "cards", "--out", str(folders), "--json", config=path)
        assert cards.returncode == 0, cards.stderr
        assert "PRIVATE KEY" not in cards.stdout + cards.stderr  # keys go only into the folders
        pages = {c["lab"]: c["portal"] for c in json.loads(cards.stdout)}
        ann, bo = folders / "swarmlab-ann-lee", folders / "swarmlab-bo"
        assert (ann / "id_ed25519").stat().st_mode & 0o077 == 0
        card = json.loads(cards.stdout)[0]
        assert card["portal"].startswith(f"https://{laptop.MACHINE}:") and card["gateway"].endswith(
            f"@{laptop.MACHINE}:{config.gateway_port}")
        # the certificate the laptop is shown is the one on the card
        shown = laptop.run("sh", "-c", f"openssl s_client -connect {laptop.MACHINE}:{config.portal_port} </dev/null "
                           "2>/dev/null | openssl x509 -noout -fingerprint -sha256")
        assert shown.stdout.strip().split("=")[-1] == card["fingerprint"], shown.stdout + shown.stderr
        assert_student_ssh(ann, bo, ips, config, second)
        assert_student_tokens_open_nothing_else(pages, config)
        # the gateway's hops to the second host's sshd ended with Bo's sessions
        assert hops_to(second, portal.pid, until=0) == 0, "the gateway left connections to h2's sshd open"

        phases.done("cards, student ssh and tokens")
        status = swarmlab("class", "status", "--json", config=path, timeout=300)
        assert status.returncode == 0, status.stdout + status.stderr
        rows = {r["lab"]: r for r in json.loads(status.stdout)}
        assert {lab: (r["student"], r["host"], r["ready"], r["nodes"], r["swarm"]) for lab, r in rows.items()} == \
            {"ann-lee": ("Ann Lee", "local", 2, 2, "healthy"), "bo": ("Bo", "h2", 2, 2, "healthy")}

        # grading: the exercise for everyone, only Ann solves it
        started = swarmlab("class", "start", "services", "--json", config=path, timeout=900)
        assert started.returncode == 0, started.stdout + started.stderr
        assert all(r["detail"]["exercise"] == "services" for r in json.loads(started.stdout))
        figure(f"class start: {[(r['lab'], r['detail']['reset']) for r in json.loads(started.stdout)]}\n"
              + "".join(line for line in started.stderr.splitlines(True) if "health" in line or "level" in line))
        # Ann does what the checks ask, no more (`exercise test` runs each solution in full)
        solved = node_sh(path, "ann-lee", "swr1", "docker service create --detach --name HelloWorld --replicas 2 "
                         "swarmlab/busybox sleep 1d && docker service create --detach --name HelloGlobal --mode global "
                         "swarmlab/busybox sleep 1d && docker service rm Leftover")
        assert solved.returncode == 0, solved.stderr
        converged = swarmlab("exercise", "check", "services", "--lab", "ann-lee", config=path, timeout=600)
        assert converged.returncode == 0, converged.stdout + converged.stderr
        phases.done("status, class start, solve, check")
        # in a browser: Ann's terminal and Check, Bo's own lab only, a bad token, the instructor's page
        browser = open_browser(tmp_path)
        browse_portal(browser, pages, ips, config)
        phases.done("browser")
        # the instructor's laptop drops the portal mid-class (kill -9) and starts it again:
        # open pages reconnect by themselves, with the same tokens, and no lab is touched
        portal.kill()
        portal.wait(10)
        portal = start_portal(path)
        assert_pages_reconnect(browser, ips)
        assert_a_lost_host_shows_and_recovers(browser, second)
        phases.done("portal killed, host lost")
        # over a student's shoulder: watch, take the keyboard; the board, the history, the report
        views.watch_and_take_the_keyboard(browser)
        views.type_a_secret_and_a_command_over_ssh(browser, ann)
        views.assert_board_history_and_report(path, browser, config, tmp_path)

        phases.done("instructor views")
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

        phases.done("class check, status")
        # the instructor's Reset of Bo's lab ends his open terminal; Ann restarts the exercise herself
        reset_from_the_instructor_page(browser, "bo")
        views.restart_from_the_student_page(path, browser)

        phases.done("resets from the pages")
        assert_a_stopped_node_shows_and_class_up_brings_it_back(path, config, browser, roster, ann)
        phases.done("a node down and back")
        services = swarmlab("docker", "swr1", "--lab", "ann-lee", "--", "service", "ls", "-q", config=path)
        assert services.stdout.strip() == "", "the reset left Ann's service"
        views.assert_the_clock_ends_the_class(path, browser)
        phases.done("the clock")
    finally:
        gone = swarmlab("class", "down", "--yes", "--json", config=path, timeout=600)
        phases.done("class down")
        phases.report()
        if browser is not None:
            browser.quit()
        if portal is not None:
            try:
                # class down revoked Ann's page: the same bare 403 as any wrong token
                assert fetch(pages["ann-lee"]) == (403, "403 forbidden\n")
            finally:
                portal.terminate()
                portal.wait(30)  # open terminals get 3 s to end
    assert gone.returncode == 0, gone.stdout + gone.stderr
    listed = [lab["lab"] for lab in json.loads(swarmlab("ls", "--json", config=path).stdout)]
    assert "ann-lee" not in listed and "bo" not in listed
    for uri in (config.host("local").uri, second.uri):
        with Hypervisor(uri) as hv:
            assert not [n for n in hv.network_ranges() if str(n).startswith("10.80.")], uri
            assert not [d.name for d in hv.owned_domains() if d.owner.get("lab") in ("ann-lee", "bo")], uri
            assert hv.volume_bytes(config.node_pool, "bo-swr1.qcow2") == 0
    assert not [r.name for r in PowerDNS.from_config(config).list_a(config.zone)
                if r.name.endswith((f".ann-lee.{config.zone}", f".bo.{config.zone}"))]
    assert not (config.state_dir / "class.json").exists()
    again = swarmlab("class", "status", config=path)
    assert again.returncode == 3 and "there is no class" in again.stderr


def reachable(path, lab: str, node: str, targets: list[tuple[str, int]]) -> dict:
    """Which ip:port a node opens a TCP connection to (bash's /dev/tcp, 4 s each), in one SSH
    call with every target tried at once: a dropped packet costs its timeout only once."""
    probes = " ".join(f"(timeout 4 bash -c '</dev/tcp/{ip}/{port}' 2>/dev/null && echo {ip}:{port}=open "
                      f"|| echo {ip}:{port}=closed) &" for ip, port in targets)
    out = node_sh(path, lab, node, probes + " wait")
    assert out.returncode == 0, out.stderr
    answers = dict(line.split("=") for line in out.stdout.split())
    return {(ip, port): answers[f"{ip}:{port}"] == "open" for ip, port in targets}


def assert_nodes_reach_no_management_port(path, config, second, ips) -> None:
    """A student is root on their nodes: from there, no host's sshd or libvirt, on any of its
    addresses, and of the class's other hosts only DNS and the mirror. A stand-in for a
    management port listens on every address of the lab host (16509, as libvirt's TCP port)."""
    import socket
    with Hypervisor(config.uri) as hv:
        ann_gateway = str(hv.network_state(f"{config.network}-ann-lee").gateway)
    standin = socket.create_server(("0.0.0.0", 16509))
    try:
        # the premise: each of these answers from the lab host itself
        for target in ((ann_gateway, 16509), (second.controller_ip, 16509), (second.address, 16509),
                       (second.address, 22)):
            socket.create_connection(target, timeout=3).close()
        ann = reachable(path, "ann-lee", "swr1", [(ann_gateway, 16509), (str(config.gateway), 16509),
                                                  (second.controller_ip, 16509), (second.address, 16509),
                                                  (second.address, 22), (str(config.gateway), 5000),
                                                  (ips["ann-lee"]["swr2"], 22)])
        bo = reachable(path, "bo", "swr1", [(second.address, 22), (second.address, 16509),
                                            (second.controller_ip, 16509), (second.controller_ip, 5000),
                                            (ips["bo"]["swr2"], 7946)])  # swr2 is a worker: gossip, no 2377
    finally:
        standin.close()
    assert [t for t, opened in ann.items() if opened] == [(str(config.gateway), 5000), (ips["ann-lee"]["swr2"], 22)], ann
    assert [t for t, opened in bo.items() if opened] == [(second.controller_ip, 5000), (ips["bo"]["swr2"], 7946)], bo


CAP_PERCENT = 70  # low enough to tell from an uncapped node (~100 %), high enough not to slow the rest


def assert_a_spinning_node_stays_within_its_cpu_cap_and_weighs_less(path, config) -> None:
    """Root on Ann's node spins every vCPU: the node (all its QEMU threads) stays within the
    [class] cpu_cap_percent of one host CPU that `class up` set, as libvirt's own count shows;
    and the portal has weighed it down against her other, calm node."""
    import libvirt
    with Hypervisor(config.uri) as hv:
        assert hv.cpu_cap("ann-lee-swr1") == (CAP_PERCENT * 1000, 100_000)
        own = hv.node_cpu()["ann-lee-swr1"][1]
    spin = node_sh(path, "ann-lee", "swr1", "for i in $(seq $(nproc)); do nohup timeout 60 sh -c "
                   "'while :; do :; done' >/dev/null 2>&1 & done; echo spinning")
    assert spin.stdout.strip() == "spinning", spin.stdout + spin.stderr
    conn = libvirt.open(config.uri)
    try:
        dom = conn.lookupByName("ann-lee-swr1")
        time.sleep(5)  # the loops have started
        began, used = time.monotonic(), dom.getCPUStats(True)[0]["cpu_time"]
        time.sleep(15)
        share = (dom.getCPUStats(True)[0]["cpu_time"] - used) / 1e9 / (time.monotonic() - began)
    finally:
        conn.close()
    figure(f"Ann's spinning node used {share * 100:.0f} % of a host CPU under its {CAP_PERCENT} % cap")
    assert CAP_PERCENT / 100 * 0.6 < share < CAP_PERCENT / 100 * 1.1, f"{share * 100:.0f} % of a CPU"
    def ann_weights() -> dict:
        with Hypervisor(config.uri) as hv:
            return {name: weight for name, (_, weight) in hv.node_cpu().items() if name.startswith("ann-lee-")}
    # at 70 % of a CPU the spin counts as one ~13 s after it began, and the portal looks every 5 s
    weighed = {"ann-lee-swr1": own // 16, "ann-lee-swr2": own}
    weights = poll_until(lambda: (w := ann_weights()) == weighed and w, 20, 1,
                         lambda: AssertionError(f"weights {ann_weights()}, not {weighed}"))
    figure(f"the spinning node's CPU weight: {weights['ann-lee-swr1']}, the calm one's {own}")
    node_sh(path, "ann-lee", "swr1", "pkill -f 'while :; do :; done' || true")


def assert_the_mirror_takes_no_push(path, config) -> None:
    """Root on a node writes into the mirror every lab pulls from over the registry API, as
    `docker push` would (an upload starts with a POST, a manifest is a PUT), or deletes a
    manifest: every write refused, and the mirror still serves the original swarmlab/agent.
    (`docker push` itself retries for ~50 s before it gives up; its first request is this POST.)"""
    import requests
    mirror = f"{config.gateway}:5000"

    def digest() -> str:
        return requests.head(f"http://{mirror}/v2/swarmlab/agent/manifests/latest", timeout=5, headers={
            "Accept": "application/vnd.docker.distribution.manifest.v2+json"}).headers["Docker-Content-Digest"]
    before = digest()
    writes = ["POST /v2/swarmlab/agent/blobs/uploads/", "POST /v2/swarmlab/agent/blobs/uploads/?mount=sha256:0",
              "PUT /v2/swarmlab/agent/manifests/latest",
              "DELETE /v2/swarmlab/agent/manifests/latest"]
    script = "".join(
        f"exec 3<>/dev/tcp/{config.gateway}/5000; printf '{w} HTTP/1.0\\r\\nHost: {mirror}\\r\\nContent-Type: "
        "application/vnd.docker.distribution.manifest.v2+json\\r\\nContent-Length: 2\\r\\n\\r\\n{}' >&3; "
        f"echo \"{w} => $(head -n 1 <&3)\"; exec 3>&-; " for w in writes)
    answered = node_sh(path, "ann-lee", "swr1", script)
    assert answered.returncode == 0, answered.stderr
    statuses = dict(line.split(" => ") for line in answered.stdout.strip().splitlines())
    assert {w: statuses[w].split()[1] for w in writes} == {w: "405" for w in writes}, statuses
    assert digest() == before


def assert_student_tokens_open_nothing_else(pages: dict, config) -> None:
    """From the laptop: a student's token opens none of the instructor's endpoints."""
    base, ann = pages["ann-lee"].split("/s/")
    for method, where, body in (("GET", "", None), ("GET", "/status", None), ("POST", "/reset", '{"lab": "bo"}'),
                                ("POST", "/start", '{"exercise": "services"}')):
        assert laptop.fetch(f"{base}/i/{ann}{where}", method, body) == (403, "403 forbidden\n"), where


def stop_when_bo_boots(config, second: SecondHost, timeout: float = 600) -> None:
    """Stops the second host's libvirtd once Bo's first node runs there."""
    deadline = time.monotonic() + timeout
    with Hypervisor(second.uri) as hv:
        while not any(d.name.startswith("bo-") and d.running for d in hv.owned_domains()):
            assert time.monotonic() < deadline, "no node of Bo's ran on the second host"
            time.sleep(0.5)
    second.stop_libvirtd()


def start_portal(path) -> subprocess.Popen:
    """`swarmlab portal` as the instructor runs it on the machine's own network (the lab host is
    isolated), telling students the address their laptops reach; its output in a file."""
    import sys
    log = path.with_name("portal.log")
    cmd, fds = laptop.on_the_machine([sys.executable, "-m", "swarmlab", "portal", "--address", laptop.MACHINE])
    proc = subprocess.Popen(cmd, env={**os.environ, "SWARMLAB_CONFIG": str(path)}, pass_fds=fds,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    while "SSH gateway on" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    return proc


def student_ssh(folder, *args: str) -> subprocess.CompletedProcess:
    """OpenSSH as a student runs it on their laptop, from inside their folder."""
    return laptop.run("ssh", "-F", "ssh_config", *args, cwd=folder)


def hops_to(second: SecondHost, pid: int, until: int, timeout: float = 15) -> int:
    """The portal's established connections to the second host's sshd, once they number
    `until` or the timeout has passed (a closed hop goes a moment after its session)."""
    deadline = time.monotonic() + timeout
    while True:
        listed = subprocess.run(["ip", "netns", "exec", second.controller_namespace, "ss", "-Htnp", "state", "established", "dst", second.address, "dport", "=", ":22"],
                                capture_output=True, text=True).stdout
        count = sum(f"pid={pid}," in line for line in listed.splitlines())
        if count <= until or time.monotonic() > deadline:
            return count
        time.sleep(0.5)


def assert_student_ssh(ann, bo, ips, config, second) -> None:
    # their own nodes, as `student`, with docker
    out = student_ssh(ann, "swr1", "id -un; docker node ls --format '{{.Hostname}}'")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["student", "swr1", "swr2"], out.stdout
    out = student_ssh(bo, "swr2", "docker info --format '{{.Swarm.LocalNodeState}}'")  # on the second host
    assert out.returncode == 0 and out.stdout.strip() == "active", out.stdout + out.stderr
    # nowhere else: another lab's node, a shell on the gateway, root on their nodes,
    # the PowerDNS API (loopback and services address), another student's name
    refused = [
        student_ssh(ann, "-o", f"HostName={ips['bo']['swr1']}", "swr1", "true"),
        student_ssh(ann, "-tt", "swarmlab-gateway"),
        student_ssh(ann, "swarmlab-gateway", "id"),
        student_ssh(ann, "-o", "User=root", "swr1", "true"),
        student_ssh(ann, "-W", f"127.0.0.1:{config.api_port}", "swarmlab-gateway"),
        student_ssh(ann, "-W", f"{second.controller_ip}:{config.api_port}", "swarmlab-gateway"),
        student_ssh(ann, "-W", f"{second.address}:22", "swarmlab-gateway"),
        student_ssh(ann, "-o", "User=bo", "-W", f"{ips['bo']['swr1']}:22", "swarmlab-gateway"),
    ]
    for attempt in refused:
        assert attempt.returncode != 0 and "SSH-2.0" not in attempt.stdout, (attempt.args, attempt.stdout)


# --- the portal in a real browser (Debian's chromium, driven by selenium) ----------------------
def browse_portal(browser, pages: dict, ips: dict, config) -> None:
    from selenium.webdriver.common.by import By
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # Ann: the exercise, a shell on swr1 as `student`, and Check
    browser.get(pages["ann-lee"])
    assert browser.find_element(By.ID, "exercise-title").text == "Services"
    assert not browser.find_elements(By.CSS_SELECTOR, "#exercise-text h1")  # the title once
    wait_for(browser, "#term-swr1 .xterm-rows", "student@swr1")
    type_in_terminal(browser, "swr1", "docker node ls\n")
    rows = wait_for(browser, "#term-swr1 .xterm-rows", "Leader")
    assert all(f"swr{i}" in rows for i in (1, 2)), rows
    browser.find_element(By.ID, "check").click()
    wait_for(browser, "#verdicts", "✓ all checks pass")
    browser.find_element(By.ID, "hint").click()
    wait_for(browser, "#hints", "Hint 1/3: ")
    browser.save_screenshot(str(SCREENSHOTS / "student.png"))
    # Bo's token opens Bo's own lab: his swr1 is not Ann's
    browser.switch_to.new_window("tab")
    browser.get(pages["bo"])
    wait_for(browser, "#term-swr1 .xterm-rows", "student@swr1")
    type_in_terminal(browser, "swr1", "hostname -I\n")
    shown = wait_for(browser, "#term-swr1 .xterm-rows", ips["bo"]["swr1"])
    assert ips["ann-lee"]["swr1"] not in shown
    browser.find_element(By.ID, "check").click()
    wait_for(browser, "#verdicts", "✗ not yet")
    browser.find_element(By.ID, "check").click()  # at once again: the button waits out the rate limit
    assert not browser.find_element(By.ID, "check").is_enabled()
    # a bad token: 403, and nothing else
    token = pages["ann-lee"].rsplit("/", 1)[1]
    assert fetch(pages["ann-lee"].replace(token, token[:-2] + "xx")) == (403, "403 forbidden\n")
    # the instructor's page lists both students, live
    browser.switch_to.new_window("tab")
    instructor = (config.state_dir / "portal" / "instructor-token").read_text().strip()
    browser.get(pages["ann-lee"].split("/s/")[0] + f"/i/{instructor}")
    table = wait_for(browser, "#class tbody", "Bo")
    assert "Ann Lee" in table and "services" in table, table
    wait_for(browser, "#summary", "2/2 swarms healthy")
    browser.save_screenshot(str(SCREENSHOTS / "instructor.png"))
    figure(f"portal screenshots: {SCREENSHOTS}/student.png, {SCREENSHOTS}/instructor.png")


def assert_pages_reconnect(browser, ips: dict) -> None:
    """After the portal came back: Ann's and Bo's terminals are shells again without a reload,
    Ann's on her swr1, and the instructor's page reads the class again."""
    windows = browser.window_handles  # Ann's page, Bo's page, the instructor's page
    for window, lab in ((windows[0], "ann-lee"), (windows[1], "bo")):
        browser.switch_to.window(window)
        wait_for(browser, "#term-swr1 .xterm-rows", "[reconnected]", timeout=60)
    browser.switch_to.window(windows[0])
    type_in_terminal(browser, "swr1", "hostname -I\n")
    wait_for(browser, "#term-swr1 .xterm-rows", ips["ann-lee"]["swr1"], timeout=30)
    browser.switch_to.window(windows[2])
    wait_for(browser, "#summary", "2/2 swarms healthy", timeout=60)


def assert_a_lost_host_shows_and_recovers(browser, second: SecondHost) -> None:
    """The second host's libvirtd stops mid-class (its nodes run on): on the instructor's page
    Bo's row says which libvirt is lost while Ann's goes on, and the page recovers by itself,
    with the same portal, once it is back."""
    from selenium.webdriver.common.by import By
    windows = browser.window_handles  # Ann's page, Bo's page, the instructor's page
    second.stop_libvirtd()
    try:
        bo = wait_for(browser, "#class tr[data-lab='bo']", second.uri, timeout=120)
        ann = browser.find_element(By.CSS_SELECTOR, "#class tr[data-lab='ann-lee']").text
        assert "2/2" in ann and "unhealthy" not in ann and second.uri not in ann, (ann, bo)
        browser.switch_to.window(windows[1])  # Bo's own page says so too
        wait_for(browser, "#lab-health", "your lab's host does not answer", timeout=60)
    finally:
        second.start_libvirtd()
    browser.switch_to.window(windows[2])
    wait_for(browser, "#summary", "2/2 swarms healthy", timeout=120)


def assert_a_stopped_node_shows_and_class_up_brings_it_back(path, config, browser, roster: Path,
                                                            ann_folder: Path) -> None:
    """Ann's swr2 goes off mid-class (destroyed, or stopped as a restart of the instructor's
    machine leaves every node): her page and `class status` name it, Bo's row does not change.
    `class up` again starts it from its own disk (what Ann left there is still there), says what
    it did for each lab, keeps her key and her `formed` snapshot, and leaves Bo's lab as it was.
    A lab whose swarm cannot come back that way goes back to `formed`, which ends her terminal."""
    from selenium.webdriver.common.by import By
    browser.switch_to.window(browser.window_handles[2])
    browser.close()  # the instructor's page is done with: its status reads would only slow the boot below
    began = time.monotonic()
    key = (ann_folder / "id_ed25519").read_bytes()
    formed = swarmlab("snapshot", "ls", "--lab", "ann-lee", "--json", config=path).stdout
    assert node_sh(path, "bo", "swr1", "echo kept > /root/bo-was-here").returncode == 0
    assert node_sh(path, "ann-lee", "swr2", "echo mine > /root/ann-was-here && sync").returncode == 0
    with Hypervisor(config.host("local").uri) as hv:
        assert hv.destroy("ann-lee-swr2")
    browser.switch_to.window(browser.window_handles[0])
    wait_for(browser, "#lab-health", "swr2 is down (shut off)", timeout=60)
    assert "down" in browser.find_element(By.CSS_SELECTOR, ".tab[data-node='swr2']").get_attribute("class")
    rows = {r["lab"]: r for r in json.loads(swarmlab("class", "status", "--json", config=path, timeout=300).stdout)}
    assert (rows["ann-lee"]["down"], rows["ann-lee"]["ready"]) == (["swr2"], 1), rows["ann-lee"]
    assert (rows["bo"]["down"], rows["bo"]["ready"], rows["bo"]["swarm"]) == ([], 2, "healthy"), rows["bo"]
    shown = time.monotonic()

    made = swarmlab("class", "up", "--roster", str(roster), "--nodes", "2", "--json", config=path, timeout=900)
    assert made.returncode == 0, made.stdout + made.stderr
    did = {r["lab"]: r["detail"]["did"] for r in json.loads(made.stdout)}
    assert did == {"ann-lee": "started swr2 from its own disk; the swarm is as it was",
                   "bo": "already running; the swarm is as it was"}, did
    assert node_sh(path, "ann-lee", "swr2", "cat /root/ann-was-here").stdout.strip() == "mine"
    assert (ann_folder / "id_ed25519").read_bytes() == key
    assert swarmlab("snapshot", "ls", "--lab", "ann-lee", "--json", config=path).stdout == formed
    deadline = time.monotonic() + 60
    while browser.find_element(By.ID, "lab-health").is_displayed() and time.monotonic() < deadline:
        time.sleep(1)
    assert not browser.find_element(By.ID, "lab-health").is_displayed(), browser.find_element(By.ID, "lab-health").text
    back = time.monotonic()

    # a lab that cannot come back as it was (its engine masked on a node) goes back to `formed`
    assert node_sh(path, "ann-lee", "swr2", "systemctl mask --now docker.service docker.socket").returncode == 0
    ann_only = roster.with_name("ann.txt")  # `class up` for some students of the class: Bo's lab is not read
    ann_only.write_text("Ann Lee\n")
    made = swarmlab("class", "up", "--roster", str(ann_only), "--nodes", "2", config=path, timeout=900)
    assert made.returncode == 0, made.stdout + made.stderr
    ann_row = next(line for line in made.stdout.splitlines() if "ann-lee" in line)
    assert "ok: back to `formed`: its swarm did not come back (swr2: the Docker engine does not start" in ann_row
    wait_for(browser, "#term-swr1 .xterm-rows", "session ended: the lab was reset", timeout=30)
    rows = {r["lab"]: r for r in json.loads(swarmlab("class", "status", "--json", config=path, timeout=300).stdout)}
    assert {lab: (r["ready"], r["swarm"], r["down"]) for lab, r in rows.items()} == \
        {"ann-lee": (2, "healthy", []), "bo": (2, "healthy", [])}, rows
    assert node_sh(path, "bo", "swr1", "cat /root/bo-was-here").stdout.strip() == "kept"
    figure(f"a node down, shown on the page and in class status: {shown - began:.0f} s; class up brought it back: "
           f"{back - shown:.0f} s; class up back to formed: {time.monotonic() - back:.0f} s")


def reset_from_the_instructor_page(browser, lab: str) -> None:
    from selenium.webdriver.common.by import By
    windows = browser.window_handles  # Ann's page, Bo's page, the instructor's page
    browser.find_element(By.CSS_SELECTOR, f"#class tr[data-lab='{lab}'] button.reset").click()
    wait_for(browser, "#busy", f"{lab}: ok", timeout=600)
    browser.switch_to.window(windows[1])
    wait_for(browser, "#term-swr1 .xterm-rows", "session ended", timeout=30)
    browser.switch_to.window(windows[2])
