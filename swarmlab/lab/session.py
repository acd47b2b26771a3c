"""One lab opened for a command: its config scoped to the lab, the libvirt connection, the lab
as libvirt knows it, and SSH connections to its nodes opened by one policy. Every feature that
works on an existing lab starts here instead of rebuilding that context by hand."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator, Literal

from fabric import Connection

from swarmlab.adapters.hypervisor import Hypervisor
from swarmlab.adapters.remote import RemoteError, connect
from swarmlab.config import Config
from swarmlab.errors import SwarmlabError
from swarmlab.lab.model import Lab, Node, each_node, jump, known_hosts, lab_config, lab_lock, require_lab, ssh_target

# every: each node must answer (formation works on all of them);
# answering: whoever answers within 10 s (a check or a reset still judges a lab with a node down);
# running: whoever answers among the nodes whose domain runs (chaos does not wait for a node it stopped).
Reach = Literal["every", "answering", "running"]
ANSWER_WITHIN = 10


def connect_nodes(config: Config, lab: Lab, reach: Reach = "every",
                  hv: Hypervisor | None = None) -> tuple[dict[str, Connection], dict[str, RemoteError]]:
    """(connections by node name, why the others did not answer). With `every`, one node that
    does not answer closes the rest and raises."""
    conns: dict[str, Connection] = {}
    errors: dict[str, RemoteError] = {}
    nodes = lab.nodes
    if reach == "running":
        assert hv is not None, "reach='running' asks libvirt which nodes run"
        nodes = [n for n in nodes if (s := hv.domain_state(n.domain)) and s.running]

    def one(node: Node) -> None:
        target = ssh_target(config, lab.name, node)
        if reach == "every":
            conns[node.name] = connect(target)
            return
        try:
            conns[node.name] = connect(target, timeout=ANSWER_WITHIN)
        except RemoteError as e:
            errors[node.name] = e
    try:
        each_node(one, nodes)
    except SwarmlabError:
        close(conns)
        raise
    return conns, errors


def close(conns: dict[str, Connection]) -> None:
    for c in conns.values():
        c.close()


@dataclass
class LabSession:
    config: Config  # scoped to the lab: its host, network and addresses
    hv: Hypervisor
    lab: Lab
    conns: dict[str, Connection] = field(default_factory=dict)
    unreachable: dict[str, RemoteError] = field(default_factory=dict)

    def node(self, name: str) -> Node:
        return self.lab.require_node(name)

    def running(self, node: Node) -> bool:
        state = self.hv.domain_state(node.domain)
        return bool(state and state.running)

    def connect(self, reach: Reach) -> LabSession:
        self.close()
        self.conns, self.unreachable = connect_nodes(self.config, self.lab, reach, self.hv)
        return self

    def close(self) -> None:
        close(self.conns)
        self.conns = {}


@contextlib.contextmanager
def open_lab(config: Config, name: str, reach: Reach | None = None, lock: bool = False,
             hv: Hypervisor | None = None) -> Iterator[LabSession]:
    """The lab `name` (NotFound when it does not exist), with SSH connections when `reach` says
    which, under the lab's lock when `lock`. `hv` is injected by tests and by callers that hold
    a connection already; it is left open."""
    config = lab_config(config, name)
    own = hv is None
    hv = hv if hv is not None else Hypervisor(config.uri)
    try:
        with lab_lock(config, name) if lock else contextlib.nullcontext():
            session = LabSession(config, hv, require_lab(config, hv, name))
            try:
                if reach is not None:
                    session.connect(reach)
                yield session
            finally:
                session.close()
    finally:
        if own:
            hv.close()


def ssh_command(config: Config, lab: str, node_name: str, command: list[str]) -> list[str]:
    """argv for OpenSSH to a node with the lab's key and known_hosts (strict checking)."""
    with open_lab(config, lab) as session:
        config, node = session.config, session.node(node_name)
    tty = ["-t"] if not command else []
    via = jump(config)
    hop = ["-o", f"ProxyCommand={via.proxy_command()}"] if via else []
    return ["ssh", *tty, "-i", str(config.ssh_key_path), "-o", f"UserKnownHostsFile={known_hosts(config, lab)}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", *hop,
            f"{config.ssh_user}@{node.ip}", *command]
