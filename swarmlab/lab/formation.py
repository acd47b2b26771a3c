"""Forming the swarm on a lab's nodes: engine, firewall, images, init/join, labels.

One SSH connection per node serves the whole command, and one Engine API session per node its
reads, and the init and joins of a new swarm. Join tokens are never printed or logged.
Everything is idempotent: a node that is already where it should be is left alone, so a
rerun completes a half-formed swarm.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Sequence

from fabric import Connection

from swarmlab.adapters.engine_api import KeptEngineAPI
from swarmlab.adapters.hypervisor import Hypervisor
from swarmlab.adapters.remote import RemoteError, read, run
from swarmlab.config import Config
from swarmlab.config_values import NodeLabel
from swarmlab.core import baseline as bl
from swarmlab.core import swarm
from swarmlab.core.command import Secret
from swarmlab.core.swarm import FormReport
from swarmlab.errors import SwarmlabError
from swarmlab.host.hoststate import registry_address
from swarmlab.lab import lab_up
from swarmlab.lab import model as labs
from swarmlab.lab.model import Lab, Node, NodeProgress, each_node, lab_config, lab_lock
from swarmlab.lab.node_prep import prepare_node, read_swarm_state
from swarmlab.lab.session import open_lab
from swarmlab.waiting import Cancelled, cancelled, poll_until


class FormError(SwarmlabError):
    pass


# --- swarm ----------------------------------------------------------------------------------
def _wait_members(session: KeptEngineAPI, roles: dict[str, str], timeout: float = 120, ready: bool = True) -> None:
    """Until the managers list each node with its role: Reachable (or Leader) as a manager, no
    manager status as a worker; and Ready, unless `ready` is False, where a manager being a
    raft member suffices (its agent's session may still be on its way). Read through a
    manager's API `session`: each `docker node ls` would cost the leader ~0.6 s of emulated
    CPU, taken from the very work being waited for."""

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
    poll_until(settled, timeout, 0.5, lambda: FormError(
        f"{', '.join(roles)} not listed as {' and '.join(sorted(set(roles.values())))}"
        f"{' with status Ready' if ready else ''} after "
        f"{timeout:.0f} s: see `swarmlab docker {next(iter(roles))} -- info`"))


# `docker swarm join` gives up waiting after a while under load while the join goes on in
# the background; the managers' node list is the judge then.
JOIN_CONTINUES = "attempt to join the swarm will continue in the background"


def _failed_join(node: str, error: RemoteError) -> FormError | None:
    """What a failed join means: nothing yet when the engine goes on joining by itself."""
    reason = str(error).split(": ", 2)[-1]
    return None if JOIN_CONTINUES in reason else FormError(f"{node}: the swarm rejected the join: {reason}")


def _carry_out(step: swarm.Step, conns: dict[str, Connection], apis: dict[str, KeptEngineAPI], entry: str) -> None:
    try:
        run(conns[step.on], step.command, timeout=180, check=step.kind not in ("leave", "remove"))
    except RemoteError as e:
        if not step.kind.startswith("join"):
            raise FormError(f"{step.node}: `{step.command.shown}` failed: {str(e).split(': ', 2)[-1]}") from None
        failure = _failed_join(step.node, e)
        if failure:
            raise failure from None
    if step.wait:
        # A joining node cannot list the swarm yet; a promotion or demotion ran on a manager.
        _wait_members(apis[step.on if step.kind in ("promote", "demote") else entry], {step.node: step.wait})


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
        self.entry: tuple[KeptEngineAPI, str] | None = None  # the initialised node's API session and address
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
        """Prepares the node and inits or joins it, all through one Engine API session; the
        entry's stays open for the others' waits until close()."""
        api = KeptEngineAPI(conn)
        try:
            self._place(self._role(lab, node), node, conn, api)
        finally:
            if self.entry is None or self.entry[0] is not api:
                api.close()

    def _place(self, role: str, node: Node, conn: Connection, api: KeptEngineAPI) -> None:
        try:
            self.progress(node.name, "engine", "")
            info = prepare_node(self.config, node, conn, api, self.report, self.mirror, self.progress)
            self.prepared.add(node.name)
            if role == "init" and info.state == "inactive":
                self.progress(node.name, "init", node.ip)
                try:
                    api.request("POST", "/swarm/init", swarm.init_request(node.ip), timeout=180)
                    self.tokens = swarm.join_tokens(api.get("/swarm", timeout=60))
                except RemoteError as e:
                    raise FormError(f"{node.name}: `swarm init` failed: {str(e).split(': ', 2)[-1]}") from None
                self.entry = (api, node.ip)
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
        with self.manager_joins if role == "manager" else contextlib.nullcontext():
            if cancelled.is_set():
                raise Cancelled("interrupted")
            self.progress(node.name, "join", role)
            try:
                api.request("POST", "/swarm/join", swarm.join_request(node.ip, self.tokens[role], entry_ip),
                            timeout=180)
            except RemoteError as e:
                failure = _failed_join(node.name, e)
                if failure:
                    raise failure from None
            # The next manager may join once this one is a raft member; bring_up waits for Ready.
            _wait_members(entry, {node.name: role}, ready=False)
        self.report.joined.append(f"{node.name} ({role})")
        self.joined[node.name] = role

    def formed(self, lab: Lab) -> KeptEngineAPI | None:
        """The entry's API session when every node of the lab was initialised or joined here."""
        if self.entry is None or len(self.joined) != len(lab.nodes) - 1:
            return None
        return self.entry[0]

    def close(self) -> None:
        if self.entry is not None:
            self.entry[0].close()


def form(config: Config, lab: Lab, conns: dict[str, Connection], managers: int | None,
         labels: list[NodeLabel], progress: NodeProgress = lambda *_: None,
         report: FormReport | None = None, prepared: set[str] = frozenset()) -> FormReport:
    """Carries out the formation plan: engine, firewall and images on every node (but those
    already `prepared`), then init, joins, promotions and demotions, then labels. Each step is
    computed from facts read just before (swarm.plan_*), so a rerun does only what is still
    missing."""
    check_plan(lab.name, [n.name for n in lab.nodes], managers, labels)
    apis = {name: KeptEngineAPI(conn) for name, conn in conns.items()}  # one Engine API session per node
    try:
        return _form(config, lab, conns, apis, managers, labels, progress, report or FormReport(), prepared)
    finally:
        for api in apis.values():
            api.close()


def _form(config: Config, lab: Lab, conns: dict[str, Connection], apis: dict[str, KeptEngineAPI],
          managers: int | None, labels: list[NodeLabel], progress: NodeProgress, report: FormReport,
          prepared: set[str]) -> FormReport:
    nodes = lab.nodes
    mirror = registry_address(config)

    def prepare(node: Node) -> swarm.SwarmInfo:
        if node.name in prepared:  # its swarm state has changed since: read it afresh
            return read_swarm_state(apis[node.name])
        progress(node.name, "engine", "")
        return prepare_node(config, node, conns[node.name], apis[node.name], report, mirror, progress)

    order = [n.name for n in nodes]
    ips = {n.name: n.ip for n in nodes}
    infos = dict(zip(order, each_node(prepare, nodes)))

    entry, bootstrap = swarm.plan_bootstrap(order, ips, infos)
    for step in bootstrap:
        if step.kind == "init":
            progress(step.node, "init", ips[step.node])
            report.initialized = step.node
        _carry_out(step, conns, apis, entry)
    tokens = swarm.join_tokens(apis[entry].get("/swarm", timeout=60))
    members = swarm.parse_api_nodes(apis[entry].get("/nodes", timeout=60))
    wanted, steps = swarm.plan_membership(order, ips, infos, members, managers, entry, tokens)

    def carry_out(step: swarm.Step) -> None:
        if step.kind.startswith("join"):
            progress(step.node, "join", step.wait)
        _carry_out(step, conns, apis, entry)
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
    # the entry itself may have been demoted
    _finish(apis[wanted[0]], conns, wanted[0], order, labels, report, progress)
    return report


def _finish(api: KeptEngineAPI, conns: dict[str, Connection], manager: str, order: list[str],
            labels: list[NodeLabel], report: FormReport, progress: NodeProgress) -> None:
    """Each node's role as the managers list it (through `api`, the manager's session), then
    the labels it lacks."""
    for lines in (report.engine, report.firewall, report.images, report.joined):
        lines.sort()  # threads finish in any order; reports should not
    for member in swarm.current_members(swarm.parse_api_nodes(api.get("/nodes", timeout=60))).values():
        if member.hostname in order:
            progress(member.hostname, "swarm", member.role)
    current = {name: read(conns[manager], swarm.node_labels(name)) for name in {label.node for label in labels}}
    for step in swarm.plan_labels(labels, current, manager):
        _carry_out(step, conns, {manager: api}, manager)
        report.labels.append(f"{step.node}: {step.detail}")


def _read_baseline(api: KeptEngineAPI) -> bl.SwarmState | None:
    """Through the session formation holds: a new login to guests still settling their swarm
    took 10-15 s under TCG (sshd, then a docker CLI start), the reads themselves ~3 s."""
    try:
        return bl.swarm_state_from(lambda path: api.get(path, timeout=60))
    except (SwarmlabError, KeyError, TypeError):  # e.g. no quorum for a moment
        return None  # the snapshot reads it itself


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


# What a feature above adds to every lab it makes, once its swarm is formed (a class: the
# student's account); returns what it changed. Reset's rebuild runs the same ones.
Finish = Callable[[Config, Lab], list[str]]


def make_lab(config: Config, count: int, lab_name: str, prefix: str, managers: int | None,
             labels: list[NodeLabel], form_swarm: bool, progress: NodeProgress = lambda *_: None,
             finish: Sequence[Finish] = (), read_baseline: bool = False) -> tuple[Lab, FormReport | None, list[str]]:
    """The one way a lab is made, by `up`, `class up` and reset's rebuild: the nodes, the swarm,
    then what the caller adds. Returns (lab, swarm report, what the additions changed). With
    `read_baseline`, for a snapshot next, the report holds the new swarm's state."""
    lab, report = bring_up(config, count, lab_name, prefix, managers, labels, form_swarm, progress, read_baseline)
    scoped = lab_config(config, lab_name)
    return lab, report, [change for add in finish for change in add(scoped, lab)]


def bring_up(config: Config, count: int, lab_name: str, prefix: str, managers: int | None,
             labels: list[NodeLabel], form_swarm: bool, progress: NodeProgress = lambda *_: None,
             read_baseline: bool = False) -> tuple[Lab, FormReport | None]:
    """`up`: the nodes, then (unless told not to) the swarm, over the same SSH connections."""
    config = lab_config(config, lab_name)
    conns: dict[str, Connection] = {}
    pipeline: NewSwarm | None = None
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
                _finish(entry, conns, order[0], order, labels, report, progress)
                if read_baseline:
                    report.baseline = _read_baseline(entry)
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
        if pipeline is not None:
            pipeline.close()
        for c in conns.values():
            c.close()
