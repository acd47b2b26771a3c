"""Exercise checks: verdicts as pure functions of facts.

The facts are the swarm's end state as one manager's Engine API reports it (nodes, services,
tasks, configs, secrets, networks), plus what a few checks must probe themselves (a file's
digest inside a task, HTTP answers, a script's exit code). Each check type asserts one thing and
says what it expected and what it found. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from swarmlab.core.check_facts import FACT_REQUESTS, Facts  # noqa: F401 (the checks' API)

@dataclass
class Verdict:
    ok: bool
    title: str
    expected: str
    found: str

    def as_dict(self) -> dict:
        return {"ok": self.ok, "check": self.title, "expected": self.expected, "found": self.found}


def tally(verdicts: list[Verdict]) -> dict:
    """One check run in brief, as the lab's state and the class's record keep it."""
    return {"ok": all(v.ok for v in verdicts), "passed": sum(v.ok for v in verdicts), "of": len(verdicts)}


# --- helpers ---------------------------------------------------------------------------------
def service_mode(service: dict) -> str:
    mode = service["Spec"].get("Mode", {})
    return "global" if "Global" in mode else "replicated"


def desired_replicas(service: dict) -> int | None:
    return (service["Spec"].get("Mode", {}).get("Replicated") or {}).get("Replicas")


def constraints(service: dict) -> list[str]:
    return list(((service["Spec"].get("TaskTemplate") or {}).get("Placement") or {}).get("Constraints") or [])


def _pairs(labels: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "none"


def _nospace(text: str) -> str:
    return "".join(text.split())


def manager_status(node: dict) -> str:
    manager = node.get("ManagerStatus") or {}
    if manager.get("Leader"):
        return "leader"
    return manager.get("Reachability", "") or "none"


def matches(node: dict, selector: dict) -> bool:
    """A node matches {node: NAME}, {role: manager|worker} or {label: KEY=VALUE}."""
    spec = node.get("Spec", {})
    if "node" in selector:
        return node["Description"]["Hostname"] == selector["node"]
    if "role" in selector:
        return spec.get("Role") == selector["role"]
    key, _, value = selector["label"].partition("=")
    return (spec.get("Labels") or {}).get(key) == value


def describe(selector: dict) -> str:
    kind = next(iter(selector))
    return {"node": "node {}", "role": "{}s", "label": "nodes labelled {}"}[kind].format(selector[kind])


def title(check: dict) -> str:
    kind = check["type"]
    if kind in ("service", "placement", "mount"):
        what = check.get("config") or check.get("secret")
        return f"{kind} {check['service']}" + (f" {'config' if check.get('config') else 'secret'} {what}" if what else "")
    if kind == "node":
        return f"node {check['node']}"
    if kind in ("stack", "network"):
        return f"{kind} {check[kind]}"
    if kind == "http":
        return f"http port {check['port']}" + (f" ({check['service']})" if check.get("service") else "")
    if kind == "leader":
        return "leader " + ("changed" if check.get("changed", True) else "stayed")
    if kind == "nodes":
        return f"{check['count']} nodes listed"
    return f"script on {check['node']}: {check.get('name') or check['run']}"


def _verdict(check: dict, problems: list[str], expected: list[str], found: list[str]) -> Verdict:
    return Verdict(not problems, title(check), ", ".join(expected),
                   "; ".join(problems) if problems else ", ".join(found) or "as expected")


def _want(problems: list[str], expected: list[str], what: str, want, have) -> None:
    expected.append(f"{what} {want}")
    if want != have:
        problems.append(f"{what} {have}")


# --- the check types -------------------------------------------------------------------------
def judge(index: int, check: dict, facts: Facts) -> Verdict:
    if facts.unavailable and check["type"] not in ("http", "script"):
        return Verdict(False, title(check), "a swarm manager answering", facts.unavailable)
    return JUDGES[check["type"]](index, check, facts)


def _service(index: int, check: dict, facts: Facts) -> Verdict:
    service = facts.service(check["service"])
    problems: list[str] = []
    expected: list[str] = []
    if check.get("absent"):
        return _verdict(check, ["it exists"] if service else [], ["no such service"], ["absent"])
    if service is None:
        names = sorted(s["Spec"]["Name"] for s in facts.services)
        return Verdict(False, title(check), "the service exists",
                       "no such service" + (f" (services: {', '.join(names)})" if names else " (no services)"))
    if "mode" in check:
        _want(problems, expected, "mode", check["mode"], service_mode(service))
    if "replicas" in check:
        _want(problems, expected, "replicas", check["replicas"], desired_replicas(service))
    running = len(facts.running_tasks(service))
    if check.get("running") == "every-node":
        active = [n for n in facts.nodes if n.get("Spec", {}).get("Availability") == "active"
                  and n.get("Status", {}).get("State") == "ready"]
        want = len(active)
        expected.append(f"one running task on each of the {want} active nodes")
        hosts = facts.task_hostnames(service)
        if running != want or len(set(hosts)) != running:
            problems.append(f"{running} running on {', '.join(hosts) or 'no node'}")
    elif "running" in check:
        _want(problems, expected, "running tasks", check["running"], running)
    if "image" in check:
        image = service["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].split("@")[0]
        _want(problems, expected, "image", check["image"], image)
    if "constraints" in check:
        want = sorted(_nospace(c) for c in check["constraints"])
        have = sorted(_nospace(c) for c in constraints(service))
        _want(problems, expected, "constraints", " ".join(want) or "none", " ".join(have) or "none")
    if problems:
        why = facts.task_problem(service)
        if why:
            problems.append(f"a task is {why}")
    return _verdict(check, problems, expected, [f"{running} running"])


def _placement(index: int, check: dict, facts: Facts) -> Verdict:
    service = facts.service(check["service"])
    if service is None:
        return Verdict(False, title(check), "the service exists", "no such service")
    by_id = facts.node_by_id()
    tasks = facts.running_tasks(service)
    hosts = facts.task_hostnames(service)
    expected = []
    problems = []
    if not tasks:
        problems.append("no running task" + (f" ({facts.task_problem(service)})" if facts.task_problem(service) else ""))
    if "only_on" in check:
        expected.append(f"every running task on {describe(check['only_on'])}")
        off = [by_id[t["NodeID"]]["Description"]["Hostname"] for t in tasks
               if t.get("NodeID") in by_id and not matches(by_id[t["NodeID"]], check["only_on"])]
        if off:
            problems.append(f"tasks on {', '.join(sorted(off))}")
    if "not_on" in check:
        expected.append(f"no running task on {describe(check['not_on'])}")
        on = [by_id[t["NodeID"]]["Description"]["Hostname"] for t in tasks
              if t.get("NodeID") in by_id and matches(by_id[t["NodeID"]], check["not_on"])]
        if on:
            problems.append(f"tasks on {', '.join(sorted(on))}")
    if problems and hosts:
        problems.append(f"running on {', '.join(hosts)}")
    return _verdict(check, problems, expected, [f"running on {', '.join(hosts)}"])


def _node(index: int, check: dict, facts: Facts) -> Verdict:
    node = facts.node(check["node"])
    if node is None:
        names = sorted(n["Description"]["Hostname"] for n in facts.nodes)
        return Verdict(False, title(check), "the node is in the swarm", f"not in the swarm (nodes: {', '.join(names)})")
    spec = node.get("Spec", {})
    problems: list[str] = []
    expected: list[str] = []
    for key, have in (("role", spec.get("Role")), ("availability", spec.get("Availability")),
                      ("status", node.get("Status", {}).get("State")), ("manager_status", manager_status(node))):
        if key in check:
            want = check[key]
            if key == "manager_status" and want == "reachable":
                expected.append("manager status reachable or leader")
                if have not in ("reachable", "leader"):
                    problems.append(f"manager status {have}")
            else:
                _want(problems, expected, key.replace("_", " "), want, have)
    if "labels" in check:
        labels = spec.get("Labels") or {}
        want = {k: str(v) for k, v in check["labels"].items()}
        expected.append(f"labels {_pairs(want)}")
        if any(labels.get(k) != v for k, v in want.items()):
            problems.append(f"labels {_pairs(labels)}")
    if "address" in check:
        addr = (node.get("ManagerStatus") or {}).get("Addr") or node.get("Status", {}).get("Addr", "")
        _want(problems, expected, "address", check["address"], addr.rsplit(":", 1)[0] if addr.count(":") == 1 else addr)
    return _verdict(check, problems, expected, [])


def _mount(index: int, check: dict, facts: Facts) -> Verdict:
    """A config or secret exists, the service mounts it at `path`, and inside a running task
    the file's content is the expected one (compared by digest: a secret is never shown)."""
    kind = "config" if check.get("config") else "secret"
    name = check[kind]
    objects = facts.configs if kind == "config" else facts.secrets
    expected = [f"{kind} {name} mounted at {check['path']} in a running task"]
    if not any(o["Spec"]["Name"] == name for o in objects):
        have = sorted(o["Spec"]["Name"] for o in objects)
        return _verdict(check, [f"no {kind} {name} ({kind}s: {', '.join(have) or 'none'})"], expected, [])
    service = facts.service(check["service"])
    if service is None:
        return _verdict(check, ["no such service"], expected, [])
    refs = (service["Spec"].get("TaskTemplate", {}).get("ContainerSpec", {}).get("Configs" if kind == "config" else "Secrets")
            or [])
    ref = next((r for r in refs if r.get(f"{kind.capitalize()}Name") == name), None)
    if ref is None:
        used = [r.get(f"{kind.capitalize()}Name") for r in refs]
        return _verdict(check, [f"the service does not use it (it uses: {', '.join(used) or 'none'})"], expected, [])
    target = ref.get("File", {}).get("Name", "")
    target = target if target.startswith("/") else f"/run/secrets/{target}" if kind == "secret" else f"/{target}"
    if target != check["path"]:
        return _verdict(check, [f"mounted at {target}"], expected, [])
    probe = facts.probes.get(index)
    if not isinstance(probe, dict):
        return _verdict(check, ["no running task to look into"], expected, [])
    if probe.get("error"):
        return _verdict(check, [probe["error"]], expected, [])
    if "same_as" in check:
        expected.append(f"the same content as {check['same_as']['file']} on {check['same_as']['node']}")
        if probe.get("inside") != probe.get("reference"):
            return _verdict(check, [f"different content inside the task on {probe.get('node')}"], expected, [])
    elif not probe.get("inside"):
        return _verdict(check, ["the file is empty or missing inside the task"], expected, [])
    return _verdict(check, [], expected, [f"mounted and matching in the task on {probe.get('node')}"])


def _stack(index: int, check: dict, facts: Facts) -> Verdict:
    stack = check["stack"]
    have = sorted(s["Spec"]["Name"] for s in facts.services
                  if (s["Spec"].get("Labels") or {}).get("com.docker.stack.namespace") == stack)
    want = sorted(f"{stack}_{s}" for s in check["services"])
    return _verdict(check, [f"services {', '.join(have) or 'none'}"] if have != want else [],
                    [f"services {', '.join(want)}"], [])


def _network(index: int, check: dict, facts: Facts) -> Verdict:
    network = next((n for n in facts.networks if n["Name"] == check["network"]), None)
    if network is None:
        names = sorted(n["Name"] for n in facts.networks if n["Name"] != "ingress")
        return Verdict(False, title(check), "the network exists", f"no such network (swarm networks: {', '.join(names) or 'none'})")
    problems: list[str] = []
    expected: list[str] = []
    if "driver" in check:
        _want(problems, expected, "driver", check["driver"], network.get("Driver"))
    if "attachable" in check:
        _want(problems, expected, "attachable", check["attachable"], bool(network.get("Attachable")))
    return _verdict(check, problems, expected, [])


def http_targets(check: dict, facts: Facts) -> list[str]:
    """The hostnames an http check asks: every ready node, or the nodes running its service's tasks."""
    if check.get("nodes", "all") == "tasks":
        service = facts.service(check.get("service", ""))
        return sorted(set(facts.task_hostnames(service))) if service else []
    return sorted(n["Description"]["Hostname"] for n in facts.nodes if n.get("Status", {}).get("State") == "ready")


def _http(index: int, check: dict, facts: Facts) -> Verdict:
    problems: list[str] = []
    expected: list[str] = []
    if check.get("service"):
        service = facts.service(check["service"])
        if service is None:
            return Verdict(False, title(check), "the service exists", "no such service")
        ports = (service.get("Endpoint", {}).get("Spec") or service["Spec"].get("EndpointSpec") or {}).get("Ports") or []
        published = {(p.get("PublishedPort"), p.get("PublishMode", "ingress")) for p in ports}
        if "mode" in check:
            expected.append(f"port {check['port']} published in {check['mode']} mode")
            if (check["port"], check["mode"]) not in published:
                problems.append("published: " + (", ".join(f"{p} ({m})" for p, m in sorted(published)) or "nothing"))
    answers: dict = facts.probes.get(index) or {}
    where = "every node running a task" if check.get("nodes") == "tasks" else "every node"
    expected.append(f"HTTP 200 on {where}" + (f" containing {check['contains']!r}" if check.get("contains") else ""))
    if not answers:
        problems.append("no node to ask")
    for host, (status, body) in sorted(answers.items()):
        if status != 200:
            problems.append(f"{host}: {status}")
        elif check.get("contains") and check["contains"] not in body:
            problems.append(f"{host}: answered {body.strip().splitlines()[-1][:60] if body.strip() else 'nothing'!r}")
    return _verdict(check, problems, expected, [f"{len(answers)} nodes answered"])


def _nodes(index: int, check: dict, facts: Facts) -> Verdict:
    """The swarm lists exactly `count` nodes, every one ready: none left behind Down (a dead
    manager that was never removed, or a node listed twice after it joined again)."""
    listed = sorted(n["Description"]["Hostname"] for n in facts.nodes)
    not_ready = sorted(n["Description"]["Hostname"] for n in facts.nodes
                       if n.get("Status", {}).get("State") != "ready")
    problems = [f"{len(listed)} nodes ({', '.join(listed)})"] if len(listed) != check["count"] else []
    problems += [f"not ready: {', '.join(not_ready)}"] if not_ready else []
    return _verdict(check, problems, [f"{check['count']} nodes, every one ready"], [", ".join(listed)])


def _leader(index: int, check: dict, facts: Facts) -> Verdict:
    now = facts.leader()
    before = facts.leader_at_start
    changed = check.get("changed", True)
    expected = [f"a leader other than {before}" if changed else f"leader still {before}"]
    if before is None:
        return _verdict(check, ["no leader was recorded when the exercise started (`exercise start` again)"],
                        expected, [])
    if now is None:
        return _verdict(check, ["no leader"], expected, [])
    ok = (now != before) if changed else (now == before)
    return _verdict(check, [] if ok else [f"leader {now}"], expected, [f"leader {now}"])


def _script(index: int, check: dict, facts: Facts) -> Verdict:
    probe = facts.probes.get(index)
    expected = ["exit 0"]
    if not isinstance(probe, tuple):
        return _verdict(check, ["did not run"], expected, [])
    code, tail = probe
    return _verdict(check, [] if code == 0 else [f"exit {code}" + (f": {tail}" if tail else "")], expected, ["exit 0"])


JUDGES = {"service": _service, "placement": _placement, "node": _node, "nodes": _nodes, "mount": _mount, "stack": _stack,
          "network": _network, "http": _http, "leader": _leader, "script": _script}
