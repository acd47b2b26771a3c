"""Docker CLI output as data. Every docker command here uses --format '{{json .}}' (one JSON
object per line) and is parsed by key, never by column position. Pure: no I/O."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

from .errors import SwarmlabError

SWARM_PORTS = ("2377/tcp", "7946/tcp", "7946/udp", "4789/udp")
JSON = "--format '{{json .}}'"

NODE_LS = f"docker node ls {JSON}"
SWARM_INFO = "docker info --format '{{json .Swarm}}'"
SERVICE_LS = f"docker service ls {JSON}"
ENGINE_VERSION = "docker version --format '{{.Server.Version}}'"


class SwarmParseError(SwarmlabError):
    pass


def _json_lines(text: str, what: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            raise SwarmParseError(f"unexpected output from `{what}`: {line[:120]}") from None
    return out


@dataclass(frozen=True)
class SwarmNode:
    id: str
    hostname: str
    status: str  # Ready, Down, Unknown, Disconnected
    availability: str  # Active, Pause, Drain
    manager_status: str  # Leader, Reachable, Unreachable, "" for workers
    engine_version: str
    is_self: bool = False

    @property
    def role(self) -> str:
        return "manager" if self.manager_status else "worker"


def parse_node_ls(text: str) -> list[SwarmNode]:
    return [SwarmNode(d["ID"].rstrip(" *"), d["Hostname"], d.get("Status", ""), d.get("Availability", ""),
                      d.get("ManagerStatus", ""), d.get("EngineVersion", ""), bool(d.get("Self")))
            for d in _json_lines(text, "docker node ls")]


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


def parse_service_ls(text: str) -> list[Service]:
    return [Service(d["ID"], d["Name"], d.get("Mode", ""), d.get("Replicas", ""), d.get("Image", ""))
            for d in _json_lines(text, "docker service ls")]


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


def parse_service_ps(text: str) -> list[Task]:
    return [Task(d["ID"], d["Name"].strip("\\_ ").strip(), d.get("Node", ""), d.get("DesiredState", ""),
                 d.get("CurrentState", ""), d.get("Error", ""))
            for d in _json_lines(text, "docker service ps")]


def service_ps(service: str) -> str:
    return f"docker service ps --no-trunc {JSON} {shlex.quote(service)}"


# --- labels and roles -----------------------------------------------------------------------
LABEL = re.compile(r"^(?P<node>[a-z0-9-]+):(?P<key>[A-Za-z0-9][A-Za-z0-9_.-]*)=(?P<value>[^\s]*)$")


@dataclass(frozen=True)
class NodeLabel:
    node: str
    key: str
    value: str


def parse_label(spec: str) -> NodeLabel:
    m = LABEL.match(spec)
    if not m:
        raise SwarmlabError(f"label {spec!r} is not NODE:KEY=VALUE (e.g. swr1:placepoint=gdc)")
    return NodeLabel(m["node"], m["key"], m["value"])


def default_managers(nodes: int) -> int:
    """As in the article: 3 managers from 3 nodes up, else 1."""
    return 3 if nodes >= 3 else 1


def manager_warning(managers: int) -> str | None:
    if managers % 2 == 0:
        return (f"{managers} managers tolerate no more failures than {managers - 1}: raft needs a majority "
                f"({managers // 2 + 1} of {managers}), so an even count only adds a voter that can fail")
    return None


def parse_labels_json(text: str) -> dict[str, str]:
    text = text.strip()
    return json.loads(text) if text and text != "null" else {}


@dataclass
class FormReport:
    """What `swarm form` did, per node; empty lists mean the swarm was already as asked."""

    initialized: str | None = None
    joined: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    engine: list[str] = field(default_factory=list)
    firewall: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        opened = [line for line in self.firewall if not line.endswith("nothing needed")]
        return bool(self.initialized or self.joined or self.labels or self.engine or opened or self.images)
