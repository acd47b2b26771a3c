"""Exercise files and check verdicts, in milliseconds: facts in, verdicts out."""

import json
import shutil
import tarfile
from pathlib import Path

import pytest

from swarmlab.core import check_loop, checks
from swarmlab.host import images
from swarmlab.teach import exercise_files, exercises
from swarmlab.teach.exercise_files import ExerciseFileError

LABS = Path(__file__).parent.parent / "labs"


# --- the files --------------------------------------------------------------------------------
def test_every_exercise_in_labs_loads_and_renders():
    found = exercise_files.load_all(LABS)
    assert [e.id for e in found] == ["cluster", "maintenance", "services", "rescheduling", "configs-secrets",
                                     "placement", "failover", "stack", "publishing", "quorum"]
    for exercise in found:
        ctx = exercise_files.context(exercise, None)
        text = exercise_files.student_text(exercise, ctx)
        assert text.startswith("# ") and "{{ " not in text  # Jinja rendered; docker's own {{.X}} stays
        for step in exercise.setup + exercise.solution:
            if "run" in step:
                exercise_files.render(step["run"], {**ctx, "vars": {"token": "T"}}, exercise.id)
        for check in exercise.checks:
            exercise_files.resolve(check, ctx)
        assert exercise.hints, f"{exercise.id} has no hints"


def test_student_text_never_contains_the_solution():
    for exercise in exercise_files.load_all(LABS):
        text = exercise_files.student_text(exercise, exercise_files.context(exercise, None))
        assert "solution" not in text.lower()


def _bad(tmp_path, body: str) -> Path:
    directory = tmp_path / "broken"
    directory.mkdir()
    path = directory / "exercise.yaml"
    path.write_text(body)
    return path


GOOD = """id: broken
title: t
goal: g
requires: {nodes: 1}
solution:
  - {node: swr1, run: "true"}
checks:
  - {type: service, service: web, running: 2}
"""


def test_a_valid_minimal_file_loads(tmp_path):
    assert exercise_files.load(_bad(tmp_path, GOOD)).checks[0]["running"] == 2


@pytest.mark.parametrize("body, line, words", [
    (GOOD.replace("running: 2", "runing: 2"), 8, "runing"),  # a typo in a check field
    (GOOD.replace("type: service", "type: servce"), 8, "servce"),  # an unknown check type
    (GOOD.replace("nodes: 1", "nodes: 0"), 4, "minimum"),
    (GOOD.replace("node: swr1", "node: node1"), 6, "node1"),  # a node the lab model has no name for
    (GOOD.replace("title: t\n", ""), 1, "'title' is a required property"),
    (GOOD.replace("id: broken", "id: other"), 1, "differs from its directory"),
    (GOOD + "  - {type: placement, service: web, on: {role: manager}}\n", 9, "placement"),  # YAML's `on` is True
    (GOOD.replace("checks:", "checks: [\n"), 9, "not valid YAML"),
])
def test_bad_files_are_refused_with_file_and_line(tmp_path, body, line, words):
    path = _bad(tmp_path, body)
    with pytest.raises(ExerciseFileError) as e:
        exercise_files.load(path)
    message = str(e.value)
    assert message.startswith(f"{path}:{line}:"), message
    assert words in message
    assert e.value.exit_code == 2


def test_a_missing_copy_file_is_refused(tmp_path):
    path = _bad(tmp_path, GOOD.replace('run: "true"}', 'copy: stack.yml, to: /root/stack.yml}'))
    with pytest.raises(ExerciseFileError, match="stack.yml is not in"):
        exercise_files.load(path)


def test_an_unknown_exercise_names_the_known_ones(tmp_path):
    shutil.copytree(LABS / "cluster", tmp_path / "cluster")
    shutil.copy(LABS / "exercise.schema.json", tmp_path)
    with pytest.raises(exercise_files.NotFound, match="exercises: cluster"):
        exercise_files.find("nope", tmp_path)


def test_image_parameters_can_be_overridden():
    stack = exercise_files.find("stack", LABS)
    ctx = exercise_files.context(stack, None, {"dashboard": "portainer/portainer-ce", "unrelated": "x"})
    assert ctx["images"] == {"agent": "swarmlab/agent", "dashboard": "portainer/portainer-ce"}
    assert exercise_files.parse_image_overrides(["whoami=traefik/whoami"]) == {"whoami": "traefik/whoami"}
    with pytest.raises(exercise_files.ConfigError, match="NAME=REFERENCE"):
        exercise_files.parse_image_overrides(["whoami"])


# --- verdicts ---------------------------------------------------------------------------------
def node(id_, host, role="manager", leader=False, availability="active", state="ready", labels=None, addr=None):
    n = {"ID": id_, "Description": {"Hostname": host}, "Status": {"State": state, "Addr": addr or "10.0.0.1"},
         "Spec": {"Role": role, "Availability": availability, "Labels": labels or {}}}
    if role == "manager":
        n["ManagerStatus"] = {"Leader": leader, "Reachability": "reachable", "Addr": f"{addr or '10.0.0.1'}:2377"}
    return n


def service(id_, name, replicas=None, constraints=(), configs=(), secrets=(), ports=(), labels=None):
    mode = {"Global": {}} if replicas is None else {"Replicated": {"Replicas": replicas}}
    return {"ID": id_, "Spec": {"Name": name, "Mode": mode, "Labels": labels or {}, "TaskTemplate": {
        "ContainerSpec": {"Image": "swarmlab/busybox:latest@sha256:ab", "Configs": list(configs), "Secrets": list(secrets)},
        "Placement": {"Constraints": list(constraints)}}},
        "Endpoint": {"Spec": {"Ports": list(ports)}}}


def task(service_id, node_id, state="running", err=""):
    return {"ServiceID": service_id, "NodeID": node_id,
            "Status": {"State": state, "Err": err, "ContainerStatus": {"ContainerID": "c" + node_id}}}


NODES = [node("n1", "swr1", leader=True, labels={"placepoint": "gdc", "env": "dev"}, addr="10.77.0.10"),
         node("n2", "swr2", labels={"placepoint": "rp", "env": "dev"}, addr="10.77.0.11"),
         node("n3", "swr3", addr="10.77.0.12")]


def facts(**kw) -> checks.Facts:
    return checks.Facts(nodes=kw.pop("nodes", NODES), **kw)


def test_the_articles_wrong_label_leaves_tasks_pending_and_the_checks_say_why():
    wrong = service("s1", "HelloWorld", 5, ["node.labels.env==dev", "node.labels.place==gdc"])
    f = facts(services=[wrong], tasks=[task("s1", "", "pending", "no suitable node (scheduling constraints not "
                                                               "satisfied on 3 nodes)")] * 5)
    v = checks.judge(0, {"type": "service", "service": "HelloWorld", "replicas": 5, "running": 5,
                         "constraints": ["node.labels.env==dev", "node.labels.placepoint==gdc"]}, f)
    assert not v.ok
    assert "running tasks 5" in v.expected and "running tasks 0" in v.found
    assert "node.labels.place==gdc" in v.found and "no suitable node" in v.found
    v = checks.judge(1, {"type": "placement", "service": "HelloWorld", "only_on": {"label": "placepoint=gdc"}}, f)
    assert not v.ok and "no running task" in v.found and "no suitable node" in v.found


def test_placement_passes_only_when_every_task_is_on_matching_nodes():
    s = service("s1", "HelloWorld", 5, ["node.labels.env==dev", "node.labels.placepoint==gdc"])
    on_swr1 = facts(services=[s], tasks=[task("s1", "n1")] * 5)
    check = {"type": "placement", "service": "HelloWorld", "only_on": {"label": "placepoint=gdc"}}
    assert checks.judge(0, check, on_swr1).ok
    spread = facts(services=[s], tasks=[task("s1", "n1")] * 3 + [task("s1", "n2")] * 2)
    v = checks.judge(0, check, spread)
    assert not v.ok and "tasks on swr2, swr2" in v.found
    assert not checks.judge(0, {"type": "placement", "service": "HelloWorld", "not_on": {"node": "swr1"}}, on_swr1).ok
    assert checks.judge(0, {"type": "placement", "service": "HelloWorld", "only_on": {"role": "manager"}}, on_swr1).ok


def test_a_global_service_runs_one_task_per_active_node():
    s = service("g", "HelloGlobal")
    check = {"type": "service", "service": "HelloGlobal", "mode": "global", "running": "every-node"}
    assert checks.judge(0, check, facts(services=[s], tasks=[task("g", n) for n in ("n1", "n2", "n3")])).ok
    drained = [*NODES[:2], node("n3", "swr3", availability="drain")]
    assert checks.judge(0, check, facts(nodes=drained, services=[s], tasks=[task("g", "n1"), task("g", "n2")])).ok
    v = checks.judge(0, check, facts(services=[s], tasks=[task("g", "n1"), task("g", "n2")]))
    assert not v.ok and "3 active nodes" in v.expected and "2 running on swr1, swr2" in v.found
    v = checks.judge(0, {**check, "mode": "global"}, facts(services=[service("g", "HelloGlobal", 3)],
                                                          tasks=[task("g", n) for n in ("n1", "n2", "n3")]))
    assert not v.ok and "mode replicated" in v.found


def test_absent_and_missing_services():
    assert checks.judge(0, {"type": "service", "service": "Leftover", "absent": True}, facts()).ok
    v = checks.judge(0, {"type": "service", "service": "Leftover", "absent": True},
                     facts(services=[service("x", "Leftover", 1)]))
    assert not v.ok and v.found == "it exists"
    v = checks.judge(0, {"type": "service", "service": "web"}, facts(services=[service("x", "Leftover", 1)]))
    assert not v.ok and "services: Leftover" in v.found


def test_node_checks_role_availability_labels_and_advertise_address():
    v = checks.judge(0, {"type": "node", "node": "swr1", "role": "manager", "manager_status": "reachable",
                         "labels": {"placepoint": "gdc", "env": "dev"}, "address": "10.77.0.10"}, facts())
    assert v.ok, v.found
    v = checks.judge(0, {"type": "node", "node": "swr3", "availability": "drain"}, facts())
    assert not v.ok and v.found == "availability active"
    v = checks.judge(0, {"type": "node", "node": "swr2", "labels": {"place": "gdc"}}, facts())
    assert not v.ok and "env=dev, placepoint=rp" in v.found
    v = checks.judge(0, {"type": "node", "node": "swr1", "address": "192.168.16.86"}, facts())
    assert not v.ok and "address 10.77.0.10" in v.found
    v = checks.judge(0, {"type": "node", "node": "swr9"}, facts())
    assert not v.ok and "nodes: swr1, swr2, swr3" in v.found


def test_no_manager_answering_fails_every_swarm_check():
    v = checks.judge(0, {"type": "node", "node": "swr1", "role": "manager"},
                     checks.Facts(unavailable="no node answers as a swarm manager"))
    assert not v.ok and "no node answers" in v.found


def test_mounts_compare_digests_and_name_the_articles_mistakes():
    s = service("s", "HelloWorld", 1, configs=[{"ConfigName": "passwdfile", "File": {"Name": "passwdfile"}}],
                secrets=[{"SecretName": "shadowfile", "File": {"Name": "shadowfile"}}])
    f = facts(services=[s], tasks=[task("s", "n2")], configs=[{"Spec": {"Name": "passwdfile"}}],
              secrets=[{"Spec": {"Name": "shadowfile"}}])
    config_check = {"type": "mount", "service": "HelloWorld", "config": "passwdfile", "path": "/passwdfile",
                    "same_as": {"node": "swr1", "file": "/etc/passwd"}}
    f.probes[0] = {"node": "swr2", "inside": "aa", "reference": "aa"}
    assert checks.judge(0, config_check, f).ok
    f.probes[0] = {"node": "swr2", "inside": "aa", "reference": "bb"}
    assert "different content" in checks.judge(0, config_check, f).found
    v = checks.judge(1, {**config_check, "path": "/passwd"}, f)  # the article's path
    assert not v.ok and "mounted at /passwdfile" in v.found
    secret_check = {"type": "mount", "service": "HelloWorld", "secret": "shadow", "path": "/run/secrets/shadow"}
    v = checks.judge(2, secret_check, f)  # the article's secret name
    assert not v.ok and "no secret shadow (secrets: shadowfile)" in v.found
    f.probes[3] = {"node": "swr2", "inside": "cc"}
    assert checks.judge(3, {**secret_check, "secret": "shadowfile", "path": "/run/secrets/shadowfile"}, f).ok


def test_stack_and_network():
    label = {"com.docker.stack.namespace": "portainer"}
    f = facts(services=[service("a", "portainer_agent", labels=label), service("p", "portainer_portainer", 1, labels=label)],
              networks=[{"Name": "portainer_agent_network", "Driver": "overlay", "Attachable": True}])
    assert checks.judge(0, {"type": "stack", "stack": "portainer", "services": ["agent", "portainer"]}, f).ok
    v = checks.judge(0, {"type": "stack", "stack": "portainer", "services": ["agent", "ui"]}, f)
    assert not v.ok and "portainer_portainer" in v.found
    assert checks.judge(0, {"type": "network", "network": "portainer_agent_network", "driver": "overlay",
                            "attachable": True}, f).ok
    f.networks[0]["Attachable"] = False
    v = checks.judge(0, {"type": "network", "network": "portainer_agent_network", "attachable": True}, f)
    assert not v.ok and v.found == "attachable False"


def test_http_needs_every_node_to_answer_and_the_right_publish_mode():
    s = service("w", "whoami-mesh", 1, ports=[{"PublishedPort": 9080, "TargetPort": 80, "PublishMode": "ingress"}])
    f = facts(services=[s], tasks=[task("w", "n1")])
    check = {"type": "http", "port": 9080, "service": "whoami-mesh", "mode": "ingress", "contains": "Hostname:"}
    assert checks.http_targets(check, f) == ["swr1", "swr2", "swr3"]
    f.probes[0] = {h: (200, "Hostname: abc\n") for h in ("swr1", "swr2", "swr3")}
    assert checks.judge(0, check, f).ok
    f.probes[0]["swr3"] = ("ConnectTimeout", "")
    v = checks.judge(0, check, f)
    assert not v.ok and "swr3: ConnectTimeout" in v.found
    v = checks.judge(0, {**check, "mode": "host"}, f)
    assert not v.ok and "9080 (ingress)" in v.found
    assert checks.http_targets({**check, "nodes": "tasks"}, f) == ["swr1"]


def test_leader_changed_or_stayed():
    assert checks.judge(0, {"type": "leader", "changed": True}, facts(leader_at_start="swr2")).ok
    v = checks.judge(0, {"type": "leader", "changed": True}, facts(leader_at_start="swr1"))
    assert not v.ok and v.found == "leader swr1"
    assert checks.judge(0, {"type": "leader", "changed": False}, facts(leader_at_start="swr1")).ok
    assert not checks.judge(0, {"type": "leader", "changed": True}, facts()).ok  # nothing recorded


def test_script_passes_by_exit_code():
    f = facts()
    f.probes[0] = (0, "")
    assert checks.judge(0, {"type": "script", "node": "swr1", "run": "true"}, f).ok
    f.probes[0] = (1, "curl: connection refused")
    v = checks.judge(0, {"type": "script", "node": "swr1", "run": "curl x"}, f)
    assert not v.ok and "exit 1: curl: connection refused" in v.found


def test_junit_report_lists_each_check():
    exercise = exercise_files.find("maintenance", LABS)
    xml = exercises.junit(exercise, "t1", [checks.Verdict(True, "node swr2", "a", ""),
                                           checks.Verdict(False, "node swr3", "availability drain", "availability active")], 1.0)
    assert 'failures="1"' in xml and 'tests="2"' in xml and "expected availability drain; found availability active" in xml


# --- the offline stand-ins --------------------------------------------------------------------
def test_standin_archive_holds_every_image_and_shares_the_busybox_layer(tmp_path):
    archive = images.archive(tmp_path)
    with tarfile.open(archive) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
        assert sorted(m["RepoTags"][0] for m in manifest) == sorted(images.STANDIN_NAMES)
        assert len({m["Layers"][0] for m in manifest}) == 1  # one busybox layer for all
        whoami = next(m for m in manifest if m["RepoTags"] == ["swarmlab/whoami:latest"])
        config = json.loads(tar.extractfile(whoami["Config"]).read())
        assert config["config"]["ExposedPorts"] == {"80/tcp": {}}
    assert images.archive(tmp_path) == archive  # cached by identity


def test_push_into_a_real_registry_is_complete_and_idempotent(tmp_path):
    import subprocess
    import time

    import requests

    from tests.conftest import free_port
    address = f"127.0.0.1:{free_port()}"
    (tmp_path / "config.yml").write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                                         f"    rootdirectory: {tmp_path}/data\nhttp:\n  addr: {address}\n")
    proc = subprocess.Popen(["docker-registry", "serve", str(tmp_path / "config.yml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            try:
                requests.get(f"http://{address}/v2/", timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.1)
        assert images.push(address) == list(images.STANDIN_NAMES)
        assert images.push(address) == []  # same digests: nothing new
        manifest = requests.get(f"http://{address}/v2/swarmlab/dashboard/manifests/latest",
                                headers={"Accept": images.MANIFEST_TYPE}, timeout=5).json()
        assert len(manifest["layers"]) == 2
        for blob in [manifest["config"], *manifest["layers"]]:
            got = requests.get(f"http://{address}/v2/swarmlab/dashboard/blobs/{blob['digest']}", timeout=5)
            assert got.status_code == 200 and len(got.content) == blob["size"]
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_mirror_is_written_once_and_a_users_own_daemon_json_is_kept(tmp_path):
    import subprocess

    from swarmlab.lab.node_prep import MIRROR_SCRIPT
    script = (MIRROR_SCRIPT % {"addr": "10.77.0.1:5000"}).replace("/etc/docker", str(tmp_path)) \
        .replace("systemctl reload docker", "true")
    run = lambda: subprocess.run(["sh", "-c", script], capture_output=True, text=True).stdout.strip()  # noqa: E731
    assert run() == "set"
    assert json.loads((tmp_path / "daemon.json").read_text()) == {
        "registry-mirrors": ["http://10.77.0.1:5000"], "insecure-registries": ["10.77.0.1:5000"]}
    assert run() == "same"
    (tmp_path / "daemon.json").write_text('{"debug": true}\n')
    assert run() == "foreign" and (tmp_path / "daemon.json").read_text() == '{"debug": true}\n'


def test_check_needs_two_readings_in_a_row_so_a_crash_looping_service_fails():
    """A task of `ping docker.com` runs for a moment, exits and restarts: one lucky reading must
    not pass the exercise. The check loop on a clock of its own: no waiting, nothing patched."""
    def settle(readings, wait=True, timeout=0.5):
        it, now, shown = iter(readings), [0.0], []

        def read():
            return [checks.Verdict(next(it), "HelloWorld runs 2 tasks", "2", "?")]

        def sleep(seconds):
            now[0] += seconds
        verdicts = check_loop.settle(read, [timeout], wait, 0.05, shown.append, lambda: now[0], sleep)
        return verdicts[0].ok, now[0], shown
    ok, waited, shown = settle([True, False] * 1000)  # flapping: never two passing readings in a row
    assert not ok and 0.5 <= waited < 0.6 and shown[0] == "waiting for: the same result once more (0 s)"
    assert settle([False, True, True, False]) == (True, 0.1, ["waiting for: HelloWorld runs 2 tasks (0 s)",
                                                              "waiting for: the same result once more (0 s)"])
    assert settle([True], wait=False) == (True, 0.0, [])  # one pass only


def test_the_retry_policy_needs_two_passing_readings_and_stops_at_each_checks_timeout():
    wait = check_loop.still_waiting_for
    assert wait([], passed_before=False, elapsed=0, timeouts=[90]) == []  # all pass once: read once more
    assert wait([], passed_before=True, elapsed=5, timeouts=[90]) is None  # twice in a row: done
    assert wait([0], passed_before=True, elapsed=5, timeouts=[90]) == [0]  # a lucky reading went: wait on
    assert wait([0, 1], passed_before=False, elapsed=30, timeouts=[20, 90]) == [1]  # check 0 is out of time
    assert wait([0, 1], passed_before=False, elapsed=95, timeouts=[20, 90]) is None  # all out of time: fails
    assert wait([0], passed_before=False, elapsed=0, timeouts=[90], wait=False) is None  # one pass only


def test_the_schema_and_the_judges_know_the_same_check_types():
    schema = json.loads((LABS / "exercise.schema.json").read_text())
    assert set(schema["$defs"]["check"]["properties"]["type"]["enum"]) == set(checks.JUDGES)
    # every setup action the schema accepts is carried out (a name only the schema knew was skipped)
    actions = next(step["properties"]["action"]["enum"] for step in schema["$defs"]["step"]["oneOf"]
                   if "action" in step["properties"])
    assert set(actions) == set(exercises.ACTIONS)


def test_exercise_test_takes_several_ids_or_all_and_names_a_wrong_one(tmp_path):
    from tests.conftest import swarmlab, write_config
    path = write_config(tmp_path / "swarmlab.toml", tmp_path / "state")
    for args, words in ((("exercise", "test"), "give exercise IDs or --all"),
                        (("exercise", "test", "services", "--all"), "give exercise IDs or --all"),
                        (("exercise", "test", "services", "nosuch"), "nosuch")):
        proc = swarmlab(*args, config=path)
        assert proc.returncode != 0 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
