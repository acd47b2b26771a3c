"""The swarm as data, and the formation plan: which node inits, joins, is promoted, demoted or
relabelled, computed from facts. Nodes, services and tasks are read from the Engine API's
answers; the few docker commands that still read state are Facts (a command paired with its
parser, `--format '{{json ...}}'`, parsed by key). Pure: no I/O."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from swarmlab.config_values import NodeLabel
from swarmlab.core.command import Command, Fact, Secret
from swarmlab.errors import SwarmlabError

SWARM_PORTS = ("2377/tcp", "7946/tcp", "7946/udp", "4789/udp")


class SwarmParseError(SwarmlabError):
    pass


@dataclass(frozen=True)
class SwarmNode:
    id: str
    hostname: str
    status: str  # Ready, Down, Unknown, Disconnected
    availability: str  # Active, Pause, Drain
    manager_status: str  # Leader, Reachable, Unreachable, "" for workers
    engine_version: str

    @property
    def role(self) -> str:
        return "manager" if self.manager_status else "worker"


def parse_api_nodes(nodes: list[dict]) -> list[SwarmNode]:
    """The Engine API's GET /nodes, as `docker node ls` lists them."""
    out = []
    for n in nodes:
        manager, description = n.get("ManagerStatus") or {}, n.get("Description") or {}
        out.append(SwarmNode(n["ID"], description.get("Hostname", ""), n.get("Status", {}).get("State", "unknown").capitalize(),
                             n.get("Spec", {}).get("Availability", "active").capitalize(),
                             "Leader" if manager.get("Leader") else manager.get("Reachability", "").capitalize(),
                             description.get("Engine", {}).get("EngineVersion", "")))
    return out


@dataclass(frozen=True)
class SwarmInfo:
    state: str  # inactive, pending, active, error, locked
    node_id: str = ""
    node_addr: str = ""
    is_manager: bool = False
    managers: int = 0
    nodes: int = 0
    error: str = ""
    remote_managers: tuple[str, ...] = ()


def parse_swarm_info(text: str) -> SwarmInfo:
    try:
        d = json.loads(text.strip() or "{}")
    except ValueError:
        raise SwarmParseError(f"unexpected output from `docker info`: {text.strip()[:120]}") from None
    return swarm_info(d)


def swarm_info(d: dict) -> SwarmInfo:
    """`docker info`'s .Swarm, as the CLI prints it or the Engine API's GET /info holds it."""
    return SwarmInfo(d.get("LocalNodeState", "inactive"), d.get("NodeID", ""), d.get("NodeAddr", ""),
                     bool(d.get("ControlAvailable")), d.get("Managers") or 0, d.get("Nodes") or 0,
                     d.get("Error", ""), tuple(m.get("Addr", "") for m in d.get("RemoteManagers") or []))


@dataclass(frozen=True)
class Service:
    id: str
    name: str
    mode: str
    replicas: str  # "2/2"
    image: str

    @property
    def running(self) -> int:
        return int(self.replicas.split("/")[0]) if "/" in self.replicas else 0

    @property
    def desired(self) -> int:
        return int(self.replicas.split("/")[1].split()[0]) if "/" in self.replicas else 0


@dataclass(frozen=True)
class Task:
    id: str
    name: str  # web.1
    node: str
    desired_state: str  # Running, Shutdown
    current_state: str  # "Running 5 seconds ago"
    error: str

    @property
    def state(self) -> str:
        return self.current_state.split()[0] if self.current_state else ""


def parse_api_services(services: list[dict]) -> list[Service]:
    """The Engine API's GET /services?status=true, as `docker service ls` lists them."""
    out = []
    for s in services:
        spec, status = s.get("Spec") or {}, s.get("ServiceStatus") or {}
        mode = next(iter(spec.get("Mode") or {"Replicated": {}})).lower()
        image = ((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Image", "")
        out.append(Service(s["ID"], spec.get("Name", ""), mode,
                           f"{status.get('RunningTasks', 0)}/{status.get('DesiredTasks', 0)}", image.split("@")[0]))
    return out


def parse_api_tasks(tasks: list[dict], services: list[Service], nodes: list[SwarmNode]) -> list[Task]:
    """The Engine API's GET /tasks, as `docker service ps` lists them: named service.slot (a
    global service's task by its node's ID), on the node's hostname."""
    service_names = {s.id: s.name for s in services}
    hostnames = {n.id: n.hostname for n in nodes}
    out = []
    for t in tasks:
        status, service = t.get("Status") or {}, service_names.get(t.get("ServiceID", ""), "")
        suffix = t.get("Slot") or t.get("NodeID", "")
        out.append(Task(t["ID"], f"{service}.{suffix}", hostnames.get(t.get("NodeID", ""), ""),
                        t.get("DesiredState", "").capitalize(), status.get("State", "").capitalize(),
                        status.get("Err", "")))
    return out


def parse_labels_json(text: str) -> dict[str, str]:
    text = text.strip()
    return json.loads(text) if text and text != "null" else {}


# --- facts: a command that reads state, paired with its parser -------------------------------
SWARM = Fact(Command("docker", "info", "--format", "{{json .Swarm}}"), parse_swarm_info)


def node_labels(node: str) -> Fact[dict[str, str]]:
    return Fact(Command("docker", "node", "inspect", "--format", "{{json .Spec.Labels}}", node), parse_labels_json)


# --- labels and roles -----------------------------------------------------------------------
def default_managers(nodes: int) -> int:
    """As in the article: 3 managers from 3 nodes up, else 1."""
    return 3 if nodes >= 3 else 1


def manager_warning(managers: int) -> str | None:
    if managers % 2 == 0:
        return (f"{managers} managers tolerate no more failures than {managers - 1}: raft needs a majority "
                f"({managers // 2 + 1} of {managers}), so an even count only adds a voter that can fail"
                + (" (`swarmlab chaos split` shows it)" if managers >= 4 else ""))
    return None


# --- the formation plan ---------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """One change: `command` runs on node `on`. `wait` is what must hold afterwards before the
    next step (a manager Reachable, a worker Ready). Steps of kind join-worker may run together."""

    kind: str  # init, leave, remove, join-manager, join-worker, promote, demote, label
    node: str  # the node the step is about
    on: str  # the node that runs the command
    command: Command
    wait: str | None = None  # "manager" | "worker" | None
    detail: str = ""

    def __repr__(self):
        return f"Step({self.kind} {self.node} on {self.on}: {self.command.shown})"


def plan_bootstrap(order: list[str], ips: dict[str, str], infos: dict[str, SwarmInfo]) -> tuple[str, list[Step]]:
    """The manager to work through, and the steps that make it one when no swarm exists:
    the first node inits, after leaving a swarm that is gone."""
    entry = next((n for n in order if infos[n].state == "active" and infos[n].is_manager), None)
    if entry is not None:
        return entry, []
    first = order[0]
    steps = []
    if infos[first].state != "inactive":  # half-joined to a swarm that is gone
        steps.append(Step("leave", first, first, Command("docker", "swarm", "leave", "--force")))
    steps.append(Step("init", first, first, Command("docker", "swarm", "init", "--advertise-addr", ips[first])))
    return first, steps


def current_members(members: list[SwarmNode]) -> dict[str, SwarmNode]:
    """By hostname. A node that left and rejoined is listed twice: its Ready entry wins."""
    out: dict[str, SwarmNode] = {}
    for member in members:
        if member.hostname not in out or member.status == "Ready":
            out[member.hostname] = member
    return out


def join_step(node: str, ip: str, role: str, token: Secret, entry_ip: str) -> Step:
    return Step(f"join-{role}", node, node, Command(
        "docker", "swarm", "join", "--advertise-addr", ip, "--token", token, f"{entry_ip}:2377"), wait=role)


# --- the same through the Engine API: one session per node instead of a CLI start per step
# (0.6-0.9 s of emulated CPU each). The bodies are what `docker swarm init/join` send with
# their flags' defaults; the engine fills in the rest of the spec as the CLI leaves it.
LISTEN_ADDR = "0.0.0.0:2377"


def init_request(ip: str) -> dict:
    return {"ListenAddr": LISTEN_ADDR, "AdvertiseAddr": ip, "Availability": "active"}


def join_request(ip: str, token: Secret, entry_ip: str) -> dict:
    """Holds the token's value: for the request body only, never for a message."""
    return {"ListenAddr": LISTEN_ADDR, "AdvertiseAddr": ip, "RemoteAddrs": [f"{entry_ip}:2377"],
            "JoinToken": token.value, "Availability": "active"}


def join_tokens(inspected: dict) -> dict[str, Secret]:
    """The tokens in a manager's GET /swarm, by role."""
    tokens = inspected.get("JoinTokens") or {}
    if not tokens.get("Manager") or not tokens.get("Worker"):
        raise SwarmParseError("the swarm's inspection holds no join tokens: is this node a manager?")
    return {"manager": Secret(tokens["Manager"]), "worker": Secret(tokens["Worker"])}


def image_tags(images: list[dict]) -> set[str]:
    """name:tag of every tagged image in GET /images/json, as `docker image ls` names them."""
    return {tag for image in images for tag in image.get("RepoTags") or () if tag != "<none>:<none>"}


def plan_new_swarm(order: list[str], managers: int | None) -> dict[str, str]:
    """The role of each node of a lab whose swarm does not exist yet: the first inits, the
    next join as managers, the rest as workers; what plan_bootstrap and plan_membership would
    give for nodes that are all outside any swarm."""
    count = default_managers(len(order)) if managers is None else managers
    return {node: "init" if i == 0 else "manager" if i < count else "worker" for i, node in enumerate(order)}


def plan_membership(order: list[str], ips: dict[str, str], infos: dict[str, SwarmInfo],
                    members: list[SwarmNode], managers: int | None, entry: str,
                    tokens: dict[str, Secret]) -> tuple[list[str], list[Step]]:
    """The managers the swarm will have, and the joins, promotions and demotions that give the swarm `managers` managers. Current managers
    are kept first, then nodes are taken in `order`. With managers=None no role changes: new
    nodes join as managers while there are fewer than default_managers(). Managers join or are
    promoted one at a time (each Reachable before the next), workers join together, and
    demotions come last, one at a time, run by a manager that stays, so quorum holds."""
    listed = current_members(members)
    steps: list[Step] = []
    joins: list[str] = []
    for node in order:
        member = listed.get(node)
        if node == entry or (member is not None and member.status != "Down"):
            continue
        if infos[node].state != "inactive":  # thinks it is in a swarm the managers do not list
            steps.append(Step("leave", node, node, Command("docker", "swarm", "leave", "--force")))
        if member is not None:
            steps.append(Step("remove", node, entry, Command("docker", "node", "rm", "--force", member.id)))
        joins.append(node)
    current = [n for n in order if n not in joins and n in listed and listed[n].role == "manager"]
    if entry not in current:
        current.insert(0, entry)  # just initialised
    if managers is None:
        wanted = current + [n for n in joins][:max(0, default_managers(len(order)) - len(current))]
    else:
        wanted = current[:managers]
        wanted += [n for n in order if n not in wanted][:managers - len(wanted)]

    def join(node: str, role: str) -> Step:
        return join_step(node, ips[node], role, tokens[role], ips[entry])

    steps += [join(n, "manager") for n in joins if n in wanted]
    for node in order:
        member = listed.get(node)
        if node in wanted and node not in joins and member is not None and member.role == "worker":
            steps.append(Step("promote", node, entry, Command("docker", "node", "promote", node), wait="manager"))
    steps += [join(n, "worker") for n in joins if n not in wanted]
    for node in order:
        member = listed.get(node)
        if node not in wanted and node not in joins and member is not None and member.role == "manager":
            via = wanted[0]  # a manager by now, and one that stays
            steps.append(Step("demote", node, via, Command("docker", "node", "demote", node), wait="worker"))
    return wanted, steps


def plan_labels(labels: list[NodeLabel], current: dict[str, dict[str, str]], on: str) -> list[Step]:
    """A label-add for each wanted label a node lacks or has with another value."""
    return [Step("label", label.node, on, Command("docker", "node", "update", "--label-add",
                                                  f"{label.key}={label.value}", label.node),
                 detail=f"{label.key}={label.value}")
            for label in labels if current.get(label.node, {}).get(label.key) != label.value]


@dataclass
class FormReport:
    """What `swarm form` did, per node; empty lists mean the swarm was already as asked."""

    initialized: str | None = None
    joined: list[str] = field(default_factory=list)
    promoted: list[str] = field(default_factory=list)
    demoted: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    engine: list[str] = field(default_factory=list)
    firewall: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # The swarm's baseline.SwarmState, when formation read it for a snapshot that follows; not
    # part of what is shown.
    baseline: object = field(default=None, repr=False, compare=False)

    def shown(self) -> dict:
        """The report as --json gives it."""
        return {k: v for k, v in asdict(self).items() if k != "baseline"}

    @property
    def changed(self) -> bool:
        opened = [line for line in self.firewall if not line.endswith("nothing needed")]
        return bool(self.initialized or self.joined or self.promoted or self.demoted or self.labels
                    or self.engine or opened or self.images)
