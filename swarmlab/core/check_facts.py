"""What exercise checks judge: the swarm's end state as one manager's Engine API reports it
(nodes, services, tasks, configs, secrets, networks) and what checks probed themselves, with the
lookups the verdicts share (core/checks.py). Nothing here does I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from urllib.parse import quote

# What a check run reads, in one Engine API session on a manager.
FACT_REQUESTS = {
    "nodes": "/nodes",
    "services": "/services?status=true",
    "tasks": "/tasks?filters=" + quote(json.dumps({"desired-state": ["running"]})),
    "configs": "/configs",
    "secrets": "/secrets",
    "networks": "/networks?filters=" + quote(json.dumps({"scope": {"swarm": True}})),
}


@dataclass
class Facts:
    """One manager's view of the swarm. `nodes` is empty when no manager answered."""

    nodes: list[dict] = field(default_factory=list)
    services: list[dict] = field(default_factory=list)
    tasks: list[dict] = field(default_factory=list)  # desired state running
    configs: list[dict] = field(default_factory=list)
    secrets: list[dict] = field(default_factory=list)
    networks: list[dict] = field(default_factory=list)
    unavailable: str = ""  # why there are no facts: no manager answered
    leader_at_start: str | None = None
    probes: dict[int, object] = field(default_factory=dict)  # by check index

    @classmethod
    def from_answers(cls, answers: dict, **extra) -> "Facts":
        return cls(**{k: answers.get(k) or [] for k in FACT_REQUESTS}, **extra)

    # --- lookups ---
    def node_by_id(self) -> dict[str, dict]:
        return {n["ID"]: n for n in self.nodes}

    def node(self, hostname: str) -> dict | None:
        found = [n for n in self.nodes if n["Description"]["Hostname"] == hostname]
        # a node that left and rejoined is listed twice: the ready one is the live one
        return next((n for n in found if n.get("Status", {}).get("State") == "ready"), found[0] if found else None)

    def service(self, name: str) -> dict | None:
        return next((s for s in self.services if s["Spec"]["Name"] == name), None)

    def running_tasks(self, service: dict) -> list[dict]:
        return [t for t in self.tasks if t.get("ServiceID") == service["ID"]
                and t.get("Status", {}).get("State") == "running"]

    def task_problem(self, service: dict) -> str:
        """The first task error or pending reason, which tells a student why (no suitable node...)."""
        for t in self.tasks:
            if t.get("ServiceID") == service["ID"] and t.get("Status", {}).get("State") != "running":
                status = t.get("Status", {})
                why = status.get("Err") or status.get("Message") or ""
                if why:
                    return f"{status.get('State')}: {why}"
        return ""

    def leader(self) -> str | None:
        return next((n["Description"]["Hostname"] for n in self.nodes
                     if (n.get("ManagerStatus") or {}).get("Leader")), None)

    def task_hostnames(self, service: dict) -> list[str]:
        by_id = self.node_by_id()
        return sorted(by_id[t["NodeID"]]["Description"]["Hostname"] if t.get("NodeID") in by_id else "?"
                      for t in self.running_tasks(service))
