"""Forming the swarm on a lab's nodes: engine, firewall, images, init/join, labels.

One SSH connection per node serves the whole command. Join tokens are read with
`docker swarm join-token -q` and never printed or logged. Everything is idempotent: a node
that is already where it should be is left alone, so a rerun completes a half-formed swarm.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
from pathlib import Path
from typing import Callable, Sequence

import paramiko
from fabric import Connection

from . import images, lab as labs, lab_up, swarm
from .config import Config
from .errors import SwarmlabError
from .lab import Lab, Node, NodeProgress, each_node, lab_config, lab_lock, require_lab, ssh_target
from .hoststate import registry_address
from .hypervisor import Hypervisor
from .netns import run_in_host_netns
from .command import Command, Raw, Secret, sh, then
from .remote import EngineAPI, RemoteError, connect, read, run
from .session import open_lab
from .waiting import Cancelled, cancelled, poll_until
from .swarm import FormReport, NodeLabel

BUNDLE_DIR = "/var/cache/swarmlab-bundle"


class FormError(SwarmlabError):
    pass


# --- engine ---------------------------------------------------------------------------------
def _download_bundle(config: Config, guest_status: str) -> list[Path]:
    """The .deb files the guest lacks for the engine, resolved by the host's apt against the
    guest's own dpkg status, and cached by that status."""
    import hashlib
    key = hashlib.sha256((config.engine_package + guest_status).encode()).hexdigest()[:16]
    directory = config.cache_dir / "bundles" / key
    if (directory / "complete").exists():
        return sorted(directory.glob("*.deb"))
    (directory / "partial").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        status = Path(tmp) / "status"
        status.write_text(guest_status)
        (Path(tmp) / "cache").mkdir()
        proc = run_in_host_netns(
            ["apt-get", "-q", "-y", "--download-only", "--no-install-recommends",
             "-o", f"Dir::State::status={status}", "-o", f"Dir::Cache={tmp}/cache",
             "-o", f"Dir::Cache::archives={directory}", "-o", "Debug::NoLocking=1",
             "install", config.engine_package], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-2:])
        raise FormError(f"collecting the {config.engine_package} bundle with the host's apt failed: {tail} "
                        "(run `apt-get update` on the host)")
    (directory / "complete").write_text("")
    return sorted(directory.glob("*.deb"))


def _release(os_release: str) -> str:
    for line in os_release.splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return "unknown"


def bundle_refusal(node: str, host_release: str, node_release: str) -> str | None:
    """The bundle is resolved by the host's apt, so it fits a node of the host's release only."""
    if host_release == node_release:
        return None
    return (f"{node} runs Debian {node_release} but the engine bundle comes from this host's apt "
            f"({host_release}): set [engine] install = \"apt\" in swarmlab.toml, or use a template of "
            f"{host_release} (`template build --suite {host_release} --no-engine`)")


def install_engine(config: Config, node: Node, conn: Connection) -> list[str]:
    """Installs the engine on a node that has none (a user's own template)."""
    if config.engine_install == "apt":
        env = Raw("DEBIAN_FRONTEND=noninteractive")
        run(conn, then(Command(env, "apt-get", "-q", "update"),
                       Command(env, "apt-get", "-q", "-y", "install", "--no-install-recommends",
                               config.engine_package,
                               # Debian 13's CLI is its own package, which docker.io only recommends
                               Raw("$(apt-cache show docker-cli >/dev/null 2>&1 && echo docker-cli)"))),
            timeout=900)
        return [f"{node.name}: installed {config.engine_package} with apt"]
    refusal = bundle_refusal(node.name, _release(Path("/etc/os-release").read_text()),
                             _release(run(conn, Command("cat", "/etc/os-release"))))
    if refusal:
        raise FormError(refusal)
    debs = _download_bundle(config, run(conn, Command("cat", "/var/lib/dpkg/status")))
    run(conn, Command("mkdir", "-p", BUNDLE_DIR))
    sftp = conn.sftp()
    for deb in debs:
        sftp.put(str(deb), f"{BUNDLE_DIR}/{deb.name}")
    run(conn, then(Command(Raw("DEBIAN_FRONTEND=noninteractive"), "dpkg", "-i",
                           *[f"{BUNDLE_DIR}/{deb.name}" for deb in debs]),
                   Command("rm", "-rf", BUNDLE_DIR)), timeout=900)
    return [f"{node.name}: installed {config.engine_package} from a bundle of {len(debs)} packages"]


# --- firewall -------------------------------------------------------------------------------
FIREWALL_SCRIPT = r"""
tcp="2377 7946"; udp="7946 4789"
if command -v ufw >/dev/null && ufw status | grep -q 'Status: active'; then
  for p in $tcp; do ufw allow $p/tcp >/dev/null; done; for p in $udp; do ufw allow $p/udp >/dev/null; done
  echo ufw
elif command -v firewall-cmd >/dev/null && firewall-cmd --state >/dev/null 2>&1; then
  for p in $tcp; do firewall-cmd -q --permanent --add-port=$p/tcp; done
  for p in $udp; do firewall-cmd -q --permanent --add-port=$p/udp; done
  firewall-cmd -q --reload; echo firewalld
elif command -v nft >/dev/null && nft list chains 2>/dev/null | grep -q 'hook input.*policy drop'; then
  nft list chains | awk '/^table/{fam=$2; tbl=$3} /^\tchain/{ch=$2} /hook input.*policy drop/{print fam, tbl, ch}' |
  while read fam tbl ch; do
    nft list chain $fam $tbl $ch | grep -q 'dport 2377' ||
      nft insert rule $fam $tbl $ch tcp dport '{ 2377, 7946 }' accept \; insert rule $fam $tbl $ch udp dport '{ 7946, 4789 }' accept
  done; echo nftables
else
  echo none
fi
"""


# The registry mirror in /etc/docker/daemon.json, written only where the file is absent or is
# one swarmlab wrote (a user's own daemon.json is left alone). SIGHUP (`systemctl reload`)
# applies registry settings without restarting the engine, so the swarm is not disturbed.
MIRROR_SCRIPT = r"""
f=/etc/docker/daemon.json; want='{"registry-mirrors": ["http://%(addr)s"], "insecure-registries": ["%(addr)s"]}'
if [ -e $f ] && [ "$(cat $f)" = "$want" ]; then echo same
elif [ -e $f ] && ! grep -qx '{"registry-mirrors": \["http://[0-9.:]*"\], "insecure-registries": \["[0-9.:]*"\]}' $f; then echo foreign
else mkdir -p /etc/docker && printf '%%s\n' "$want" > $f.new && mv $f.new $f && systemctl reload docker && echo set
fi
"""

# Everything a node needs before it joins, and the facts formation reads, in one SSH round
# trip (each exec costs ~0.5 s of emulated CPU under TCG): engine enabled and running (waiting
# for the template's image unit), swarm ports open, registry mirror, then the images present
# and the swarm state. Output: key=value lines.
PREPARE_SCRIPT = r"""
say() { printf '%%s=%%s\n' "$1" "$2"; }
firewall() {%(firewall)s}
mirror() {%(mirror)s}
command -v dockerd >/dev/null || { say engine missing; exit 0; }
systemctl is-enabled -q docker 2>/dev/null || { systemctl enable -q docker 2>/dev/null && say change 'enabled docker at boot'; }
state=$(systemctl is-active docker)
if [ "$state" != active ]; then  # "activating" at boot: wait for it, it is no change of ours
  if systemctl start docker; then [ "$state" = activating ] || say change 'started docker'
  else say engine failed; journalctl -u docker -n 5 --no-pager -o cat | tail -n 3 | sed 's/^/journal=/'; exit 0; fi
fi
say engine running
systemctl start swarmlab-images 2>/dev/null
say firewall "$(firewall)"
[ -z "%(addr)s" ] || say mirror "$(mirror)"
docker image ls --format 'image={{.Repository}}:{{.Tag}}'
printf 'swarm='; docker info --format '{{json .Swarm}}'
"""


def prepare_script(mirror: str | None) -> str:
    return PREPARE_SCRIPT % {"firewall": FIREWALL_SCRIPT, "addr": mirror or "",
                             "mirror": MIRROR_SCRIPT % {"addr": mirror} if mirror else "\n:\n"}


def parse_prepared(text: str) -> dict[str, list[str]]:
    """PREPARE_SCRIPT's output by key, each key's values in order."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def prepare_node(config: Config, node: Node, conn: Connection, report: FormReport,
                 mirror: str | None, progress: NodeProgress) -> swarm.SwarmInfo:
    """Engine, firewall, images and registry mirror on one node; returns its swarm state."""
    script = sh(prepare_script(mirror))
    found = parse_prepared(run(conn, script, timeout=300))
    if found.get("engine") == ["missing"]:
        report.engine.extend(install_engine(config, node, conn))
        found = parse_prepared(run(conn, script, timeout=300))
    if found.get("engine") != ["running"]:
        raise FormError(f"{node.name}: the Docker engine does not start: " + " | ".join(found.get("journal", [])))
    report.engine.extend(f"{node.name}: {change}" for change in found.get("change", []))
    firewall = found.get("firewall", ["none"])[0]
    report.firewall.append(f"{node.name}: " + ("no firewall, nothing needed" if firewall == "none"
                                               else f"opened swarm ports in {firewall}"))
    mirror_state = found.get("mirror", [""])[0]
    if mirror_state == "set":
        report.engine.append(f"{node.name}: registry mirror http://{mirror}")
    elif mirror_state == "foreign":
        report.engine.append(f"{node.name}: kept its own /etc/docker/daemon.json (no registry mirror)")
    if side_load_images(config, node, conn, set(found.get("image", [])), report, progress):
        return read(conn, swarm.SWARM)
    return swarm.parse_swarm_info(found.get("swarm", [""])[0])


def side_load_images(config: Config, node: Node, conn: Connection, present: set[str], report: FormReport,
                     progress: NodeProgress) -> bool:
    """The stand-ins, when the template did not bake them (an engine installed later, or the
    user's own template), and any `[engine] images` archives. Returns whether it loaded any."""
    archives = [images.archive(config.cache_dir), *config.engine_images]
    loaded = False
    for archive in archives:
        if archive == archives[0] and present >= set(images.STANDIN_NAMES):
            continue  # baked into the template already
        if not archive.is_file():
            raise FormError(f"image tarball {archive} (from [engine] images) not found")
        progress(node.name, "images", archive.name)
        remote = f"/tmp/swarmlab-{archive.name}"
        conn.sftp().put(str(archive), remote)
        out = run(conn, then(Command("docker", "load", "-i", remote), Command("rm", "-f", remote)), timeout=600)
        report.images.extend(f"{node.name}: {line.split(':', 1)[1].strip()}"
                             for line in out.splitlines() if "Loaded image" in line)
        loaded = True
    return loaded


# --- swarm ----------------------------------------------------------------------------------
def _wait_members(entry: Connection, roles: dict[str, str], timeout: float = 120, ready: bool = True) -> None:
    """Until the managers list each node with its role: Reachable (or Leader) as a manager, no
    manager status as a worker; and Ready, unless `ready` is False, where a manager being a
    raft member suffices (its agent's session may still be on its way)."""
    # One API session for the whole wait: each `docker node ls` would cost the leader ~0.6 s
    # of emulated CPU, taken from the very work being waited for.
    session: list[EngineAPI] = []

    def settled() -> bool:
        try:
            if not session:
                session.append(EngineAPI(entry, timeout=30))
            members = swarm.current_members(swarm.parse_api_nodes(session[0].get("/nodes")))
        except (RemoteError, paramiko.SSHException):
            if session:  # e.g. no leader for a moment while a manager joins: a new session next time
                session.pop().__exit__()
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
        for api in session:
            api.__exit__()


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


def swarm_view(config: Config, lab: Lab, running: list[Node]) -> tuple[dict[str, swarm.SwarmNode], str | None]:
    """`docker node ls` from the first manager that answers. Returns (by hostname, error)."""
    tried = []
    for node in running:
        tried.append(node.name)
        try:
            conn = connect(ssh_target(config, lab.name, node), timeout=5)
        except RemoteError:
            continue
        try:
            if not read(conn, swarm.SWARM).is_manager:
                continue
            return swarm.current_members(read(conn, swarm.NODES, timeout=15)), None
        except SwarmlabError:
            continue
        finally:
            conn.close()
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


def status_with_swarm(config: Config, lab_name: str) -> dict:
    """`status`: the lab's rows, plus each node's swarm columns read from one manager."""
    config = lab_config(config, lab_name)
    data = labs.status(config, lab_name)
    with Hypervisor(config.uri) as hv:
        found = require_lab(config, hv, lab_name)
    running = [found.node(r["node"]) for r in data["nodes"] if r["ssh"]]
    view, error = swarm_view(config, found, running)
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
