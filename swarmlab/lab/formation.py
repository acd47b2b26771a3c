"""Forming the swarm on a lab's nodes: engine, firewall, images, init/join, labels.

One SSH connection per node serves the whole command. Join tokens are read with
`docker swarm join-token -q` and never printed or logged. Everything is idempotent: a node
that is already where it should be is left alone, so a rerun completes a half-formed swarm.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Sequence

from fabric import Connection

from swarmlab.adapters.hypervisor import Hypervisor
from swarmlab.adapters.remote import KeptEngineAPI, RemoteError, connect, read, run
from swarmlab.config import Config
from swarmlab.config_values import NodeLabel
from swarmlab.core import swarm
from swarmlab.core.command import Command, Secret
from swarmlab.core.swarm import FormReport
from swarmlab.errors import SwarmlabError
from swarmlab.host.hoststate import registry_address
from swarmlab.lab import lab_up, model as labs
from swarmlab.lab.model import Lab, Node, NodeProgress, each_node, lab_config, lab_lock, ssh_target
from swarmlab.lab.node_prep import prepare_node
from swarmlab.lab.session import open_lab
from swarmlab.waiting import Cancelled, cancelled, poll_until


class FormError(SwarmlabError):
    pass


# --- swarm ----------------------------------------------------------------------------------
def _wait_members(entry: Connection, roles: dict[str, str], timeout: float = 120, ready: bool = True) -> None:
    """Until the managers list each node with its role: Reachable (or Leader) as a manager, no
    manager status as a worker; and Ready, unless `ready` is False, where a manager being a
    raft member suffices (its agent's session may still be on its way)."""
    # One API session for the whole wait: each `docker node ls` would cost the leader ~0.6 s
    # of emulated CPU, taken from the very work being waited for.
    session = KeptEngineAPI(entry)

    def settled() -> bool:
        try:  # e.g. no leader for a moment while a manager joins: not yet
            members = swarm.current_members(swarm.parse_api_nodes(session.get("/nodes", timeout=30)))
        except RemoteError:
            return False
        for hostname, role in roles.items():
            member = members.get(hostname)
            if not (member and (member.manager_status in ("Reachable", "Leader") if role == "manager"
                                else not member.manager_status)
                    and (member.status == "Ready" or not ready and role == "manager")):
                return False
        return True
    try:
        poll_until(settled, timeout, 0.5, lambda: FormError(
            f"{', '.join(roles)} not listed as {' and '.join(sorted(set(roles.values())))}"
            f"{' with status Ready' if ready else ''} after "
            f"{timeout:.0f} s: see `swarmlab docker {next(iter(roles))} -- info`"))
    finally:
        session.close()


# `docker swarm join` gives up waiting after a while under load while the join goes on in
# the background; the managers' node list is the judge then.
JOIN_CONTINUES = "attempt to join the swarm will continue in the background"


def _carry_out(step: swarm.Step, conns: dict[str, Connection], entry: Connection, ready: bool = True) -> None:
    try:
        run(conns[step.on], step.command, timeout=180, check=step.kind not in ("leave", "remove"))
    except RemoteError as e:
        reason = str(e).split(": ", 2)[-1]
        if step.kind.startswith("join") and JOIN_CONTINUES not in reason:
            raise FormError(f"{step.node}: the swarm rejected the join: {reason}") from None
        if not step.kind.startswith("join"):
            raise FormError(f"{step.node}: `{step.command.shown}` failed: {reason}") from None
    if step.wait:
        # A joining node cannot list the swarm yet; a promotion or demotion ran on a manager.
        _wait_members(conns[step.on] if step.kind in ("promote", "demote") else entry, {step.node: step.wait},
                      ready=ready)


class NewSwarm:
    """Forms a new lab's swarm while its nodes come up, instead of after the last one: each
    node is prepared as soon as it answers SSH, the first inits as soon as it is prepared, and
    every further node joins as soon as it is prepared and the swarm exists. Managers join one
    at a time, each Reachable in the managers' list before the next (raft takes one membership
    change at a time); workers join together. A node found already in a swarm is left alone
    here: form(), which runs afterwards in any case, sorts it out."""

    def __init__(self, config: Config, managers: int | None, report: FormReport, progress: NodeProgress):
        self.config, self.managers, self.report, self.progress = config, managers, report, progress
        self.mirror = registry_address(config)
        self.prepared: set[str] = set()
        self.entry: tuple[Connection, str] | None = None  # the initialised node's connection and address
        self.tokens: dict[str, Secret] = {}
        self.settled = threading.Event()  # the first node has initialised, or will not
        self.manager_joins = threading.Lock()
        self.joined: dict[str, str] = {}  # node -> role

    def _role(self, lab: Lab, node: Node) -> str:
        return swarm.plan_new_swarm([n.name for n in lab.nodes], self.managers)[node.name]

    def node_failed(self, lab: Lab, node: Node) -> None:
        """The node did not come up: when it was to init, nobody waits for it any longer."""
        if self._role(lab, node) == "init":
            self.settled.set()

    def node_ready(self, lab: Lab, node: Node, conn: Connection) -> None:
        role = self._role(lab, node)
        try:
            self.progress(node.name, "engine", "")
            info = prepare_node(self.config, node, conn, self.report, self.mirror, self.progress)
            self.prepared.add(node.name)
            if role == "init" and info.state == "inactive":
                self.progress(node.name, "init", node.ip)
                run(conn, Command("docker", "swarm", "init", "--advertise-addr", node.ip), timeout=180)
                self.tokens = {r: read(conn, swarm.join_token(r)) for r in ("manager", "worker")}
                self.entry = (conn, node.ip)
                self.report.initialized = node.name
        finally:
            if role == "init":  # done, or failed: either way the others stop waiting
                self.settled.set()
        if role == "init":
            return
        poll_until(self.settled.is_set, 2 * self.config.boot_timeout, 0.2, lambda: FormError(
            f"{node.name}: the first node did not initialise the swarm in time"))
        if self.entry is None or info.state != "inactive":
            return
        entry, entry_ip = self.entry
        step = swarm.join_step(node.name, node.ip, role, self.tokens[role], entry_ip)
        with self.manager_joins if role == "manager" else contextlib.nullcontext():
            if cancelled.is_set():
                raise Cancelled("interrupted")
            self.progress(node.name, "join", role)
            # The next manager may join once this one is a raft member; form() waits for Ready.
            _carry_out(step, {node.name: conn}, entry, ready=False)
        self.report.joined.append(f"{node.name} ({role})")
        self.joined[node.name] = role

    def formed(self, lab: Lab) -> Connection | None:
        """The entry's connection when every node of the lab was initialised or joined here."""
        if self.entry is None or len(self.joined) != len(lab.nodes) - 1:
            return None
        return self.entry[0]


def form(config: Config, lab: Lab, conns: dict[str, Connection], managers: int | None,
         labels: list[NodeLabel], progress: NodeProgress = lambda *_: None,
         report: FormReport | None = None, prepared: set[str] = frozenset()) -> FormReport:
    """Carries out the formation plan: engine, firewall and images on every node (but those
    already `prepared`), then init, joins, promotions and demotions, then labels. Each step is
    computed from facts read just before (swarm.plan_*), so a rerun does only what is still
    missing."""
    report = report or FormReport()
    nodes = lab.nodes
    check_plan(lab.name, [n.name for n in nodes], managers, labels)
    mirror = registry_address(config)

    def prepare(node: Node) -> swarm.SwarmInfo:
        if node.name in prepared:  # its swarm state has changed since: read it afresh
            return read(conns[node.name], swarm.SWARM)
        progress(node.name, "engine", "")
        return prepare_node(config, node, conns[node.name], report, mirror, progress)

    order = [n.name for n in nodes]
    ips = {n.name: n.ip for n in nodes}
    infos = dict(zip(order, each_node(prepare, nodes)))

    entry, bootstrap = swarm.plan_bootstrap(order, ips, infos)
    for step in bootstrap:
        if step.kind == "init":
            progress(step.node, "init", ips[step.node])
            report.initialized = step.node
        _carry_out(step, conns, conns[entry])
    tokens = {role: read(conns[entry], swarm.join_token(role)) for role in ("manager", "worker")}
    wanted, steps = swarm.plan_membership(order, ips, infos, read(conns[entry], swarm.NODES), managers, entry, tokens)

    def carry_out(step: swarm.Step) -> None:
        if step.kind.startswith("join"):
            progress(step.node, "join", step.wait)
        _carry_out(step, conns, conns[entry])
        if step.kind.startswith("join"):
            report.joined.append(f"{step.node} ({step.wait})")
        elif step.kind in ("promote", "demote"):
            getattr(report, f"{step.kind}d").append(step.node)

    workers = [s for s in steps if s.kind == "join-worker"]
    warning = swarm.manager_warning(len(wanted))
    if warning:
        report.warnings.append(warning)
    for step in steps:  # in order, one at a time, except that workers join together
        if step.kind != "join-worker":
            carry_out(step)
        elif step is workers[0]:
            each_node(carry_out, workers)
    _finish(conns, wanted[0], order, labels, report, progress)  # the entry itself may have been demoted
    return report


def _finish(conns: dict[str, Connection], manager: str, order: list[str], labels: list[NodeLabel],
            report: FormReport, progress: NodeProgress) -> None:
    """Each node's role as the managers list it, then the labels it lacks."""
    for lines in (report.engine, report.firewall, report.images, report.joined):
        lines.sort()  # threads finish in any order; reports should not
    for member in swarm.current_members(read(conns[manager], swarm.NODES)).values():
        if member.hostname in order:
            progress(member.hostname, "swarm", member.role)
    current = {name: read(conns[manager], swarm.node_labels(name)) for name in {label.node for label in labels}}
    for step in swarm.plan_labels(labels, current, manager):
        _carry_out(step, conns, conns[manager])
        report.labels.append(f"{step.node}: {step.detail}")


def check_plan(lab: str, node_names: list[str], managers: int | None, labels: list[NodeLabel]) -> None:
    if managers is not None and not 1 <= managers <= len(node_names):
        raise FormError(f"--managers {managers} is out of range: use 1 to {len(node_names)} for {len(node_names)} nodes")
    for label in labels:
        if label.node not in node_names:
            raise FormError(f"label {label.node}:{label.key}={label.value} names node {label.node}, which lab {lab} "
                            f"does not have (nodes: {', '.join(node_names)})")


def form_lab(config: Config, lab_name: str, managers: int | None, labels: list[NodeLabel],
             progress: NodeProgress = lambda *_: None) -> FormReport:
    """`swarm form`: (re)forms the swarm of an existing lab."""
    with open_lab(config, lab_name, lock=True) as session:
        found = session.lab
        stopped = [n.name for n in found.nodes if not session.running(n)]
        if stopped:
            raise FormError(f"nodes {', '.join(stopped)} of lab {lab_name} are not running: "
                            f"`swarmlab up {len(found.nodes)} --lab {lab_name}` starts them")
        return form(session.config, found, session.connect("every").conns, managers, labels, progress)


class KeptSwarmView:
    """One lab's manager session kept between reads of its swarm, for a reader that asks every
    few seconds (the portal's instructor page): under load an SSH login to a TCG guest took
    5-8 s, a read over a kept session a fraction of that. A session that breaks (the lab was
    reverted, the node went down) is dropped, and the next read logs in again."""

    def __init__(self):
        self.node: str | None = None
        self.conn: Connection | None = None
        self.api: KeptEngineAPI | None = None

    def hold(self, node: str, conn: Connection, api: KeptEngineAPI) -> None:
        self.close()
        self.node, self.conn, self.api = node, conn, api

    def close(self) -> None:
        if self.api is not None:
            self.api.close()
        if self.conn is not None:
            self.conn.close()
        self.node = self.conn = self.api = None


def swarm_view(config: Config, lab: Lab, running: list[Node], kept: KeptSwarmView | None = None
               ) -> tuple[dict[str, swarm.SwarmNode], str | None]:
    """The swarm's nodes as the first running manager lists them: one Engine API read (a
    worker refuses it, and the next node is asked), where `docker info` and `docker node ls`
    cost two CLI starts, seconds each on a loaded TCG host. With `kept`, the session is kept
    for the next read. Returns (by hostname, error)."""
    if kept is not None and kept.api is not None:
        if kept.node in {n.name for n in running}:
            try:
                return swarm.current_members(swarm.parse_api_nodes(kept.api.get("/nodes", timeout=15))), None
            except SwarmlabError:
                pass  # broken, or no longer a manager: log in afresh below
        kept.close()
    tried = []
    for node in running:
        tried.append(node.name)
        try:
            conn = connect(ssh_target(config, lab.name, node), timeout=5)
        except RemoteError:
            continue
        api = KeptEngineAPI(conn)
        try:
            members = swarm.current_members(swarm.parse_api_nodes(api.get("/nodes", timeout=15)))
        except SwarmlabError:
            api.close()
            conn.close()
            continue
        if kept is not None:
            kept.hold(node.name, conn, api)
        else:
            api.close()
            conn.close()
        return members, None
    return {}, f"no manager answered (tried {', '.join(tried) or 'no running node'})"


# What a feature above adds to every lab it makes, once its swarm is formed (a class: the
# student's account); returns what it changed. Reset's rebuild runs the same ones.
Finish = Callable[[Config, Lab], list[str]]


def make_lab(config: Config, count: int, lab_name: str, prefix: str, managers: int | None,
             labels: list[NodeLabel], form_swarm: bool, progress: NodeProgress = lambda *_: None,
             finish: Sequence[Finish] = ()) -> tuple[Lab, FormReport | None, list[str]]:
    """The one way a lab is made, by `up`, `class up` and reset's rebuild: the nodes, the swarm,
    then what the caller adds. Returns (lab, swarm report, what the additions changed)."""
    lab, report = bring_up(config, count, lab_name, prefix, managers, labels, form_swarm, progress)
    scoped = lab_config(config, lab_name)
    return lab, report, [change for add in finish for change in add(scoped, lab)]


def bring_up(config: Config, count: int, lab_name: str, prefix: str, managers: int | None,
             labels: list[NodeLabel], form_swarm: bool, progress: NodeProgress = lambda *_: None
             ) -> tuple[Lab, FormReport | None]:
    """`up`: the nodes, then (unless told not to) the swarm, over the same SSH connections."""
    config = lab_config(config, lab_name)
    conns: dict[str, Connection] = {}
    try:
        report = FormReport()
        with Hypervisor(config.uri) as hv:
            new_lab = labs.find_lab(config, hv, lab_name) is None
        # A lab made from scratch forms its swarm while its nodes come up; any other goes
        # through the full plan once every node is up.
        pipeline = NewSwarm(config, managers, report, progress) if form_swarm and new_lab else None
        found = lab_up.up(config, count, lab_name, prefix, progress,
                        validate=lambda names: check_plan(lab_name, names, managers, labels)
                        if form_swarm else None,
                        connections=conns, on_ready=pipeline.node_ready if pipeline else None,
                        on_failed=pipeline.node_failed if pipeline else None)
        if not form_swarm:
            return found, None
        with lab_lock(config, lab_name):
            entry = pipeline.formed(found) if pipeline else None
            if entry is not None:  # every node inited or joined as planned: only Ready is left to see
                order = [n.name for n in found.nodes]
                roles = {n: "manager" if r == "init" else r for n, r in swarm.plan_new_swarm(order, managers).items()}
                _wait_members(entry, roles)
                warning = swarm.manager_warning(sum(r == "manager" for r in roles.values()))
                report.warnings += [warning] if warning else []
                _finish(conns, order[0], order, labels, report, progress)
            else:
                report = form(config, found, conns, managers, labels, progress, report,
                              pipeline.prepared if pipeline else frozenset())
            # what `up` was asked, so that a rebuild without a snapshot forms the same swarm
            if managers is not None:
                found.managers = managers
            found.labels = sorted({*found.labels, *(f"{lb.node}:{lb.key}={lb.value}" for lb in labels)})
            labs.save_journal(config, found)
            return found, report
    finally:
        for c in conns.values():
            c.close()


def status_with_swarm(config: Config, lab_name: str, kept: KeptSwarmView | None = None) -> dict:
    """`status`: the lab's rows, plus each node's swarm columns read from one manager (over the
    session `kept` holds, when given)."""
    data = labs.status(config, lab_name)
    with open_lab(config, lab_name) as session:
        config, found = session.config, session.lab
    running = [found.node(r["node"]) for r in data["nodes"] if r["ssh"]]
    view, error = swarm_view(config, found, running, kept)
    for row in data["nodes"]:
        member = view.get(row["node"])
        row.update({"role": member.role if member else None,
                    "manager_status": member.manager_status if member else None,
                    "availability": member.availability if member else None,
                    "node_status": member.status if member else None,
                    "engine": member.engine_version if member else None})
    if error:
        data["swarm_error"] = error
    return data
