"""What a lab's swarm looked like when a snapshot was taken, the difference to now, the reset
level that can undo it, the commands of the state-level reset, and the health gate's verdicts.
Pure: facts in (SwarmState, read over SSH in one round trip), decisions out.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Callable
from urllib.parse import quote

from swarmlab.core.command import Command

LEVELS = ("state", "snapshot", "rebuild")

CLOCK_TOLERANCE = 1.0  # seconds a guest clock may be off the host's and the lab still healthy


@dataclass(frozen=True)
class NodeFacts:
    id: str
    hostname: str
    role: str  # manager | worker
    manager_status: str  # Leader | Reachable | Unreachable | "" (worker)
    availability: str  # active | pause | drain
    status: str  # ready | down | unknown | disconnected
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ServiceFacts:
    id: str
    name: str
    version: int
    spec: dict  # the service's Spec, as the Engine API returns and takes it
    replicas: str  # "2/2" from `docker service ls`

    @property
    def running(self) -> int:
        return int(self.replicas.split("/")[0]) if "/" in self.replicas else 0

    @property
    def desired(self) -> int:
        return int(self.replicas.split("/")[1].split()[0]) if "/" in self.replicas else 0

    @property
    def stack(self) -> str | None:
        return (self.spec.get("Labels") or {}).get("com.docker.stack.namespace")


@dataclass
class SwarmState:
    """Everything reset compares, from one manager."""

    nodes: dict[str, NodeFacts]  # by hostname
    services: dict[str, ServiceFacts]  # by name
    configs: list[str]
    secrets: list[str]  # names only: a secret's data is never read
    networks: list[str]  # swarm-scoped, user-made (not ingress)
    node_cert_expiry_s: int = 90 * 86400

    @property
    def leader(self) -> str | None:
        return next((n.hostname for n in self.nodes.values() if n.manager_status == "Leader"), None)

    @property
    def managers_leader_first(self) -> list[str]:
        """Where the swarm's state is read from: the leader, then the other managers."""
        return sorted((n.hostname for n in self.nodes.values() if n.role == "manager"),
                      key=lambda name: (name != self.leader, name))

    @property
    def stacks(self) -> list[str]:
        return sorted({s.stack for s in self.services.values() if s.stack})

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SwarmState":
        return cls({k: NodeFacts(**v) for k, v in data["nodes"].items()},
                   {k: ServiceFacts(**v) for k, v in data["services"].items()},
                   data["configs"], data["secrets"], data["networks"], data.get("node_cert_expiry_s", 90 * 86400))


# What reset reads, in one Engine API session (engine_api.EngineAPI): path per part.
STATE_REQUESTS = {
    "nodes": "/nodes",
    "services": "/services?status=true",  # ServiceStatus: running and desired tasks
    "configs": "/configs",
    "secrets": "/secrets",
    "networks": "/networks?filters=" + quote(json.dumps({"scope": {"swarm": True}})),
    "info": "/info",
}


def swarm_state_from(get: Callable[[str], object]) -> SwarmState:
    """SwarmState from one Engine API session's `get` (a path to its decoded answer)."""
    return parse_swarm_state({part: get(path) for part, path in STATE_REQUESTS.items()})


def parse_swarm_state(answers: dict) -> SwarmState:
    """SwarmState from the Engine API's answers to STATE_REQUESTS."""
    nodes = {}
    for n in answers["nodes"]:
        spec, manager = n.get("Spec", {}), n.get("ManagerStatus") or {}
        status = "Leader" if manager.get("Leader") else \
            {"reachable": "Reachable", "unreachable": "Unreachable"}.get(manager.get("Reachability", ""), "")
        hostname = n["Description"]["Hostname"]
        facts = NodeFacts(n["ID"], hostname, spec.get("Role", "worker"), status, spec.get("Availability", "active"),
                          n.get("Status", {}).get("State", "unknown"), dict(spec.get("Labels") or {}))
        if hostname not in nodes or facts.status == "ready":  # a node that left and rejoined is listed twice
            nodes[hostname] = facts
    services = {}
    for s in answers["services"]:
        name = s["Spec"]["Name"]
        status = s.get("ServiceStatus") or {}
        services[name] = ServiceFacts(s["ID"], name, int(s.get("Version", {}).get("Index", 0)), s["Spec"],
                                      f"{status.get('RunningTasks', 0)}/{status.get('DesiredTasks', 0)}")
    networks = [n["Name"] for n in answers["networks"] if n["Name"] != "ingress"]
    expiry = (((answers.get("info") or {}).get("Swarm") or {}).get("Cluster") or {}).get("Spec", {}) \
        .get("CAConfig", {}).get("NodeCertExpiry")
    return SwarmState(nodes, services, sorted(c["Spec"]["Name"] for c in answers["configs"]),
                      sorted(c["Spec"]["Name"] for c in answers["secrets"]), sorted(networks),
                      int(expiry / 1e9) if expiry else 90 * 86400)


# --- the diff --------------------------------------------------------------------------------
def _spec_without_version_noise(spec: dict) -> dict:
    """A service spec as far as reset compares it (the engine fills in defaults we ignore)."""
    spec = json.loads(json.dumps(spec))
    spec.get("TaskTemplate", {}).pop("ForceUpdate", None)
    return spec


@dataclass
class Diff:
    """How the lab differs from its baseline. Empty means nothing to reset."""

    missing_nodes: list[str] = field(default_factory=list)  # not in the swarm, or under another node ID
    down_nodes: list[str] = field(default_factory=list)
    leader: tuple[str | None, str | None] | None = None  # (baseline, now) when it changed
    roles: dict[str, str] = field(default_factory=dict)  # node -> baseline role
    availability: dict[str, str] = field(default_factory=dict)  # node -> baseline availability
    labels: dict[str, tuple[dict, dict]] = field(default_factory=dict)  # node -> (baseline, now)
    extra_stacks: list[str] = field(default_factory=list)
    extra_services: list[str] = field(default_factory=list)
    missing_services: list[str] = field(default_factory=list)
    changed_services: list[str] = field(default_factory=list)
    extra_configs: list[str] = field(default_factory=list)
    missing_configs: list[str] = field(default_factory=list)
    extra_secrets: list[str] = field(default_factory=list)
    missing_secrets: list[str] = field(default_factory=list)
    extra_networks: list[str] = field(default_factory=list)
    missing_networks: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not any(v for v in asdict(self).values())

    def summary(self) -> list[str]:
        out = []
        for key, value in asdict(self).items():
            if value:
                out.append(f"{key.replace('_', ' ')}: " + (", ".join(value) if isinstance(value, list)
                                                          else f"{value[0]} -> {value[1]}" if key == "leader"
                                                          else ", ".join(sorted(value))))
        return out


def diff(baseline: SwarmState, now: SwarmState) -> Diff:
    d = Diff()
    for name, base in baseline.nodes.items():
        cur = now.nodes.get(name)
        if cur is None or cur.id != base.id:
            d.missing_nodes.append(name)
            continue
        if cur.status != "ready":
            d.down_nodes.append(name)
        if cur.role != base.role:
            d.roles[name] = base.role
        if cur.availability != base.availability:
            d.availability[name] = base.availability
        if cur.labels != base.labels:
            d.labels[name] = (base.labels, cur.labels)
    if baseline.leader != now.leader:
        d.leader = (baseline.leader, now.leader)
    d.extra_stacks = [s for s in now.stacks if s not in baseline.stacks]
    d.extra_services = sorted(n for n, s in now.services.items()
                              if n not in baseline.services and s.stack not in d.extra_stacks)
    d.missing_services = sorted(n for n in baseline.services if n not in now.services)
    d.changed_services = sorted(n for n, s in baseline.services.items() if n in now.services and
                                _spec_without_version_noise(now.services[n].spec) != _spec_without_version_noise(s.spec))
    for kind in ("configs", "secrets", "networks"):
        base, cur = getattr(baseline, kind), getattr(now, kind)
        setattr(d, f"extra_{kind}", sorted(set(cur) - set(base)))
        setattr(d, f"missing_{kind}", sorted(set(base) - set(cur)))
    return d


def choose_level(d: Diff | None, has_snapshot: bool) -> tuple[str, str]:
    """The cheapest level that can work, and why. `d` is None when the swarm could not be read
    (no manager answers, or no quorum)."""
    fallback = "snapshot" if has_snapshot else "rebuild"
    if d is None:
        return fallback, "no manager answered with the swarm's state (no quorum?)"
    why = []
    if d.missing_nodes:
        why.append(f"{', '.join(d.missing_nodes)} left the swarm or rejoined under a new ID")
    if d.down_nodes:
        why.append(f"{', '.join(d.down_nodes)} down")
    if d.leader:
        why.append(f"the leader moved from {d.leader[0]} to {d.leader[1]}")
    for kind in ("configs", "secrets", "networks"):
        missing = getattr(d, f"missing_{kind}")
        if missing:
            why.append(f"{kind} {', '.join(missing)} removed (their content is not kept)")
    if why:
        return fallback, "; ".join(why)
    if d.empty:
        return "state", "the swarm is as at the snapshot"
    return "state", "the swarm can be put back over SSH: " + "; ".join(d.summary())


def choose(has_snapshot: bool, baseline: SwarmState | None, now: SwarmState | None,
           resumed: list[str], stopped: list[str], healed: list[str] = ()) -> tuple[str, str]:
    """Reset's choice from what it found: the cheapest level that can work, and why. `resumed`
    are nodes an interrupted run left paused, `stopped` nodes that are off, `healed` nodes it
    has just put back on the network; `now` is None when the swarm was not (or could not be) read."""
    if not has_snapshot:
        return "rebuild", "the lab has no snapshot"
    if resumed:  # a revert may have stopped halfway: some nodes back in time, others not
        return "snapshot", f"an interrupted run left {', '.join(resumed)} paused"
    if baseline is None:
        return "snapshot", "the lab has no swarm baseline"
    if stopped:
        return "snapshot", f"{', '.join(stopped)} shut off"
    if healed:  # the swarm is still finding itself again: a revert is quicker than waiting for it
        return "snapshot", f"{', '.join(healed)} {'was' if len(healed) == 1 else 'were'} cut off the network"
    return choose_level(diff(baseline, now) if now is not None else None, has_snapshot=True)


def levels_to_run(level: str, forced: bool, has_snapshot: bool) -> list[str]:
    """The levels a reset tries in order: a level the user forced runs alone; one swarmlab chose
    escalates to the next when the health gate fails; with no snapshot only a rebuild can work."""
    if not has_snapshot:
        return ["rebuild"]
    return [level] if forced else list(LEVELS[LEVELS.index(level):])


# --- the state-level reset: commands ---------------------------------------------------------
@dataclass(frozen=True)
class ResetStep:
    what: str
    command: Command | None = None  # run on a manager
    service: str | None = None  # restore this service's baseline spec through the Engine API


def plan_state_reset(baseline: SwarmState, now: SwarmState, d: Diff) -> list[ResetStep]:
    """Removals first (stacks, services, then what they used), then roles, availability,
    labels and the baseline's services."""
    steps = [ResetStep(f"remove stack {s}", Command("docker", "stack", "rm", s)) for s in d.extra_stacks]
    steps += [ResetStep(f"remove service {s}", Command("docker", "service", "rm", s)) for s in d.extra_services]
    # `docker stack rm` removes the stack's own networks, configs and secrets (named <stack>_...)
    # itself: removing them again fails with "not found".
    by_stack = tuple(f"{s}_" for s in d.extra_stacks)
    for kind, noun in (("configs", "config"), ("secrets", "secret"), ("networks", "network")):
        steps += [ResetStep(f"remove {noun} {n}", Command("docker", noun, "rm", n)) for n in getattr(d, f"extra_{kind}")
                  if not (by_stack and n.startswith(by_stack))]
    for node, role in sorted(d.roles.items(), key=lambda item: item[1] != "manager"):  # promotions first
        verb = "promote" if role == "manager" else "demote"
        steps.append(ResetStep(f"{verb} {node}", Command("docker", "node", verb, node)))
    for node, availability in sorted(d.availability.items()):
        steps.append(ResetStep(f"set {node} {availability}",
                               Command("docker", "node", "update", "--availability", availability, node)))
    for node, (base, cur) in sorted(d.labels.items()):
        args: list[str] = []
        for key in sorted(set(cur) - set(base)):
            args += ["--label-rm", key]
        for key, value in sorted(base.items()):
            if cur.get(key) != value:
                args += ["--label-add", f"{key}={value}"]
        steps.append(ResetStep(f"labels of {node}", Command("docker", "node", "update", *args, node)))
    for name in d.missing_services:
        steps.append(ResetStep(f"recreate service {name}", service=name))
    for name in d.changed_services:
        steps.append(ResetStep(f"restore service {name}", service=name))
    return steps


# --- the health gate -------------------------------------------------------------------------
def health_problems(baseline: SwarmState | None, now: SwarmState | None, clock_offsets: dict[str, float | None],
                    dns_ok: dict[str, bool], host_keys_ok: dict[str, bool]) -> list[str]:
    """Everything still wrong after a reset; empty means healthy. Without a baseline (a lab
    with no swarm) only clocks, DNS and host keys are judged."""
    problems = _host_problems(clock_offsets, dns_ok, host_keys_ok)
    if baseline is None:
        return problems
    if now is None:
        return ["no manager answers with the swarm's state"] + problems
    for name, base in baseline.nodes.items():
        cur = now.nodes.get(name)
        if cur is None:
            problems.append(f"{name} is not in the swarm")
            continue
        if cur.status != "ready":
            problems.append(f"{name} is {cur.status}, not ready")
        if base.role == "manager" and cur.manager_status not in ("Leader", "Reachable"):
            problems.append(f"manager {name} is {cur.manager_status or 'a worker'}, not Reachable")
        if cur.availability != base.availability:
            problems.append(f"{name} is {cur.availability}, baseline {base.availability}")
        if cur.labels != base.labels:
            problems.append(f"{name} labels {cur.labels}, baseline {base.labels}")
    leaders = [n.hostname for n in now.nodes.values() if n.manager_status == "Leader"]
    if len(leaders) != 1:
        problems.append(f"{len(leaders)} leaders ({', '.join(leaders) or 'none'}), want exactly one")
    for name, base in baseline.services.items():
        cur = now.services.get(name)
        if cur is None:
            problems.append(f"service {name} is missing")
        elif cur.running != base.desired or cur.desired != base.desired:
            problems.append(f"service {name} runs {cur.replicas}, baseline {base.desired} replicas")
    for name in sorted(set(now.services) - set(baseline.services)):
        problems.append(f"service {name} is not in the baseline")
    return problems


def _host_problems(clock_offsets: dict[str, float | None], dns_ok: dict[str, bool],
                   host_keys_ok: dict[str, bool]) -> list[str]:
    problems = []
    for node, offset in sorted(clock_offsets.items()):
        if offset is None:
            problems.append(f"{node}'s clock could not be read")
        elif abs(offset) > CLOCK_TOLERANCE:
            problems.append(f"{node}'s clock is {offset:+.1f} s off the host's")
    problems += [f"{node}'s DNS name does not resolve to it" for node, ok in sorted(dns_ok.items()) if not ok]
    problems += [f"{node}'s SSH host key changed" for node, ok in sorted(host_keys_ok.items()) if not ok]
    return problems
